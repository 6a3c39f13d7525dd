//! The channels' providers, behind one trait: email over SMTP (lettre), SMS and push over
//! HTTP in the shape of common SMS and push APIs, and the `log` provider, which only logs
//! what it would send.
//!
//! Every request carries the notification's idempotency key, `<eventId>:<channel>`: the
//! `Idempotency-Key` header over HTTP; over SMTP a Message-ID derived from it (and the same
//! header), so that a provider or a mailbox can drop a repeat (a dispatcher that crashed
//! after sending and before recording that it did sends again).
//!
//! Errors are sorted by whether they can pass: timeouts, refused connections, HTTP 5xx
//! (and 408, 429) and SMTP 4xx are transient (retried later); HTTP 4xx and SMTP 5xx are
//! permanent (the notification fails and goes to the dead letters).

use std::time::Duration;

use async_trait::async_trait;
use cornershop_store::Notification;
use lettre::message::header::{ContentType, Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde_json::json;

use super::Channel;

/// Why a send failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// May pass later: retried with backoff.
    #[error("{0}")]
    Transient(String),
    /// Will not pass: the notification fails and is dead-lettered.
    #[error("{0}")]
    Permanent(String),
}

impl SendError {
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::Transient(_) => "transient",
            Self::Permanent(_) => "permanent",
        }
    }
}

/// A provider's settings are wrong (a bad URL or address): the process does not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ProviderConfigError(pub String);

/// The certificate authorities the providers' TLS connections trust: the public web roots
/// (Mozilla's, built in), plus those of a PEM file for a private CA
/// (`--provider-ca-file`).
#[derive(Debug, Clone, Default)]
pub(crate) struct TrustedRoots {
    /// The extra certificates, PEM, as read from the file (for SMTP, which parses its own).
    pem: Option<Vec<u8>>,
    /// The same certificates, parsed once, for the HTTP providers.
    http: Vec<reqwest::Certificate>,
}

impl TrustedRoots {
    /// Reads and checks a PEM file of one or more CA certificates.
    pub(crate) fn from_pem_file(path: &std::path::Path) -> Result<Self, ProviderConfigError> {
        let bad = |why: String| {
            ProviderConfigError(format!("--provider-ca-file {}: {why}", path.display()))
        };
        let pem = std::fs::read(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
        let http = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| bad(format!("not PEM certificates: {e}")))?;
        if http.is_empty() {
            return Err(bad("it holds no PEM certificate".to_string()));
        }
        Ok(Self {
            pem: Some(pem),
            http,
        })
    }

    fn smtp_parameters(&self, host: &str) -> Result<TlsParameters, String> {
        let mut builder = TlsParameters::builder(host.to_string());
        if let Some(pem) = &self.pem {
            builder = builder
                .add_root_certificate(Certificate::from_pem(pem).map_err(|e| e.to_string())?);
        }
        builder.build_rustls().map_err(|e| e.to_string())
    }
}

/// Sends the notifications of one channel.
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    fn channel(&self) -> Channel;

    /// What delivers: `smtp`, `http` or `log` (for logs).
    fn kind(&self) -> &'static str;

    /// Sends one notification; returns the provider's id for the message when it gives one.
    async fn send(&self, notification: &Notification) -> Result<Option<String>, SendError>;
}

/// The key a provider can deduplicate by: one per (event, channel).
pub fn idempotency_key(notification: &Notification) -> String {
    format!("{}:{}", notification.event_id, notification.channel)
}

// ---- log ------------------------------------------------------------------------------

/// Logs what it would send and counts it as sent: the default of every channel without a
/// provider URL, so that the shop runs with no mail server.
pub(crate) struct LogProvider {
    channel: Channel,
}

impl LogProvider {
    pub(crate) fn new(channel: Channel) -> Self {
        Self { channel }
    }
}

#[async_trait]
impl Provider for LogProvider {
    fn channel(&self) -> Channel {
        self.channel
    }

    fn kind(&self) -> &'static str {
        "log"
    }

    async fn send(&self, n: &Notification) -> Result<Option<String>, SendError> {
        let key = idempotency_key(n);
        // The recipient and the body are personal data: the log shows neither (the
        // body's length only).
        tracing::info!(
            channel = %n.channel,
            template = %n.template,
            orderId = %n.order_id,
            subject = %n.subject,
            bodyChars = n.body_text.chars().count(),
            idempotencyKey = %key,
            "notification (log provider: not sent anywhere)"
        );
        Ok(Some(format!("log:{key}")))
    }
}

// ---- email over SMTP --------------------------------------------------------------------

/// The `Idempotency-Key` header on an email.
#[derive(Debug, Clone)]
struct IdempotencyKeyHeader(String);

impl Header for IdempotencyKeyHeader {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Idempotency-Key")
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self(s.to_string()))
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

/// Email over SMTP: a multipart message with the text and the HTML body.
pub(crate) struct SmtpProvider {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// The domain of Message-IDs (the sender's).
    domain: String,
}

impl SmtpProvider {
    /// `url` is `smtp://[user[:password]@]host[:port][?tls=required|opportunistic]` or
    /// `smtps://[user[:password]@]host[:port]`, as lettre reads them:
    /// - `smtp://` alone is a plain connection (port 25), for a trusted local relay;
    /// - `?tls=required` upgrades it with STARTTLS and refuses to send without (port 587
    ///   is the usual one); `?tls=opportunistic` upgrades when the server offers it;
    /// - `smtps://` is TLS from the first byte (port 465 by default).
    ///
    /// Certificates are checked against `roots`. `from` is a mailbox such as
    /// `CornerShop <orders@cornershop.local>`.
    pub(crate) fn new(
        url: &str,
        from: &str,
        timeout: Duration,
        roots: &TrustedRoots,
    ) -> Result<Self, ProviderConfigError> {
        let bad = |why: String| ProviderConfigError(format!("--smtp-url: {why}"));
        let parsed =
            reqwest::Url::parse(url).map_err(|e| bad(format!("'{url}' is not a URL: {e}")))?;
        let host = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad(format!("'{url}' names no host")))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let tls_mode = parsed
            .query_pairs()
            .find(|(key, _)| key == "tls")
            .map(|(_, value)| value.into_owned());
        let tls = |host: &str| {
            roots
                .smtp_parameters(host)
                .map_err(|e| bad(format!("TLS: {e}")))
        };
        let (security, default_port) = match (parsed.scheme(), tls_mode.as_deref()) {
            ("smtp", None | Some("none")) => (Tls::None, 25),
            ("smtp", Some("required")) => (Tls::Required(tls(host)?), 587),
            ("smtp", Some("opportunistic")) => (Tls::Opportunistic(tls(host)?), 587),
            ("smtps", None) => (Tls::Wrapper(tls(host)?), 465),
            ("smtp", Some(other)) => {
                return Err(bad(format!(
                    "tls={other} is not known: use tls=required or tls=opportunistic"
                )))
            }
            ("smtps", Some(_)) => {
                return Err(bad(
                    "smtps:// is always TLS; tls= belongs to smtp:// (STARTTLS)".to_string(),
                ))
            }
            (scheme, _) => {
                return Err(bad(format!(
                    "the scheme must be smtp:// or smtps://, not {scheme}://"
                )))
            }
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(parsed.port().unwrap_or(default_port))
            .tls(security)
            .timeout(Some(timeout));
        if !parsed.username().is_empty() {
            builder = builder.credentials(Credentials::new(
                percent_decode(parsed.username()),
                percent_decode(parsed.password().unwrap_or("")),
            ));
        }
        let from: Mailbox = from.parse().map_err(|e| {
            ProviderConfigError(format!("--mail-from: '{from}' is not a mailbox: {e}"))
        })?;
        let domain = from.email.domain().to_string();
        Ok(Self {
            transport: builder.build(),
            from,
            domain,
        })
    }

    /// The Message-ID of a notification's email: the same for every attempt.
    pub(crate) fn message_id(&self, n: &Notification) -> String {
        format!("<{}.{}@{}>", n.event_id, n.channel, self.domain)
    }

    fn message(&self, n: &Notification) -> Result<Message, SendError> {
        let to: Mailbox = n.recipient.parse().map_err(|e| {
            SendError::Permanent(format!("the recipient is not an email address: {e}"))
        })?;
        let builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(n.subject.clone())
            .message_id(Some(self.message_id(n)))
            .header(IdempotencyKeyHeader(idempotency_key(n)));
        let text = SinglePart::builder()
            .header(ContentType::TEXT_PLAIN)
            .body(n.body_text.clone());
        let built = match &n.body_html {
            Some(html) => builder.multipart(
                MultiPart::alternative().singlepart(text).singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_HTML)
                        .body(html.clone()),
                ),
            ),
            None => builder.singlepart(text),
        };
        built.map_err(|e| SendError::Permanent(format!("cannot build the email: {e}")))
    }
}

#[async_trait]
impl Provider for SmtpProvider {
    fn channel(&self) -> Channel {
        Channel::Email
    }

    fn kind(&self) -> &'static str {
        "smtp"
    }

    async fn send(&self, n: &Notification) -> Result<Option<String>, SendError> {
        let message = self.message(n)?;
        match self.transport.send(message).await {
            Ok(_) => Ok(Some(self.message_id(n))),
            // 5xx: the server refuses this message for good (no such mailbox, ...).
            Err(e) if e.is_permanent() => Err(SendError::Permanent(format!(
                "SMTP: {}",
                cornershop_domain::causes::with_causes(&e)
            ))),
            // 4xx, timeouts, refused or broken connections, TLS failures: may pass later.
            Err(e) => Err(SendError::Transient(format!(
                "SMTP: {}",
                cornershop_domain::causes::with_causes(&e)
            ))),
        }
    }
}

/// A URL's user or password, percent-decoded ("user%40x" is "user@x"); a malformed escape
/// stays as written, and bytes that are not UTF-8 become U+FFFD.
fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

// ---- SMS and push over HTTP -----------------------------------------------------------

/// SMS or push through an HTTP API: `POST <url>` with a JSON body, `Authorization: Bearer
/// <token>` and `Idempotency-Key: <eventId>:<channel>`.
///
/// - SMS, in the shape of a common SMS API: `{"to": "+44…", "from": "CornerShop",
///   "body": "…"}`.
/// - Push, in the shape of a common push API (topic messaging): `{"to":
///   "/topics/customer-<customerId>", "notification": {"title", "body"}, "data":
///   {"orderId", "eventType"}}`.
///
/// The provider's message id is read from the answer's `id`, `sid`, `messageId`,
/// `message_id` or `name`, whichever it has.
pub(crate) struct HttpProvider {
    channel: Channel,
    client: reqwest::Client,
    url: reqwest::Url,
    token: Option<String>,
    /// The SMS sender.
    from: String,
}

impl HttpProvider {
    pub(crate) fn new(
        channel: Channel,
        url: &str,
        token: Option<String>,
        from: String,
        timeout: Duration,
        roots: &TrustedRoots,
    ) -> Result<Self, ProviderConfigError> {
        let flag = match channel {
            Channel::Sms => "--sms-url",
            Channel::Push => "--push-url",
            Channel::Email => "--smtp-url",
        };
        let url = reqwest::Url::parse(url)
            .map_err(|e| ProviderConfigError(format!("{flag}: '{url}' is not a URL: {e}")))?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(ProviderConfigError(format!(
                "{flag}: the scheme must be https:// or http://, not {}://",
                url.scheme()
            )));
        }
        let mut client = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(timeout)
            .connect_timeout(timeout);
        for root in &roots.http {
            client = client.add_root_certificate(root.clone());
        }
        let client = client
            .build()
            .map_err(|e| ProviderConfigError(format!("{flag}: cannot build a client: {e}")))?;
        Ok(Self {
            channel,
            client,
            url,
            token: token.filter(|t| !t.is_empty()),
            from,
        })
    }

    /// The request body for a notification.
    pub(crate) fn body(&self, n: &Notification) -> serde_json::Value {
        match self.channel {
            Channel::Push => json!({
                "to": n.recipient,
                "notification": { "title": n.subject, "body": n.body_text },
                "data": { "orderId": n.order_id, "eventType": n.event_type },
            }),
            Channel::Sms | Channel::Email => json!({
                "to": n.recipient,
                "from": self.from,
                "body": n.body_text,
            }),
        }
    }
}

#[async_trait]
impl Provider for HttpProvider {
    fn channel(&self) -> Channel {
        self.channel
    }

    fn kind(&self) -> &'static str {
        "http"
    }

    async fn send(&self, n: &Notification) -> Result<Option<String>, SendError> {
        let mut request = self
            .client
            .post(self.url.clone())
            .header("Idempotency-Key", idempotency_key(n))
            .json(&self.body(n));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|e| {
            if e.is_builder() {
                SendError::Permanent(format!("cannot build the request: {e}"))
            } else {
                // Timeouts, refused and broken connections, TLS failures.
                SendError::Transient(format!(
                    "{} provider unreachable: {}",
                    self.channel,
                    cornershop_domain::causes::with_causes(&e)
                ))
            }
        })?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if status.is_success() {
            let answer: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            let id = ["id", "sid", "messageId", "message_id", "name"]
                .iter()
                .find_map(|field| match &answer[*field] {
                    serde_json::Value::String(s) => Some(s.clone()),
                    serde_json::Value::Number(n) => Some(n.to_string()),
                    _ => None,
                });
            return Ok(id);
        }
        let mut snippet: String = text.chars().take(200).collect();
        if snippet.is_empty() {
            snippet = status.canonical_reason().unwrap_or("").to_string();
        }
        let error = format!(
            "{} provider answered HTTP {}: {snippet}",
            self.channel,
            status.as_u16()
        );
        // 408 and 429 ask to try again later; other 4xx say the request itself is wrong.
        let transient = status.is_server_error()
            || status == reqwest::StatusCode::REQUEST_TIMEOUT
            || status == reqwest::StatusCode::TOO_MANY_REQUESTS;
        if status.is_client_error() && !transient {
            Err(SendError::Permanent(error))
        } else {
            Err(SendError::Transient(error))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use uuid::Uuid;

    fn notification(channel: &str, recipient: &str) -> Notification {
        let now = Utc::now();
        Notification {
            id: 1,
            event_id: Uuid::from_u128(7),
            event_type: "OrderDelivered".into(),
            channel: channel.into(),
            template: "order-delivered".into(),
            order_id: "ord-1".into(),
            customer_id: "cust-1".into(),
            recipient: recipient.into(),
            subject: "Order delivered".into(),
            body_text: "Your order ord-1 has been delivered.".into(),
            body_html: None,
            correlation_id: Some("corr-1".into()),
            trace_id: None,
            status: "pending".into(),
            attempts: 0,
            provider_message_id: None,
            last_error: None,
            next_attempt_at: now,
            created_at: now,
            updated_at: now,
        }
    }

    #[test]
    fn http_bodies_have_the_shape_of_common_sms_and_push_apis() {
        let second = Duration::from_secs(1);
        let push = HttpProvider::new(
            Channel::Push,
            "http://127.0.0.1:1/push",
            None,
            "x".into(),
            second,
            &TrustedRoots::default(),
        )
        .unwrap();
        assert_eq!(
            push.body(&notification("push", "/topics/customer-cust-1")),
            json!({
                "to": "/topics/customer-cust-1",
                "notification": {"title": "Order delivered", "body": "Your order ord-1 has been delivered."},
                "data": {"orderId": "ord-1", "eventType": "OrderDelivered"},
            })
        );
        let sms = HttpProvider::new(
            Channel::Sms,
            "http://127.0.0.1:1/sms",
            Some("t".into()),
            "CornerShop".into(),
            second,
            &TrustedRoots::default(),
        )
        .unwrap();
        let n = notification("sms", "+15550001");
        assert_eq!(
            sms.body(&n),
            json!({"to": "+15550001", "from": "CornerShop", "body": "Your order ord-1 has been delivered."})
        );
        assert_eq!(
            idempotency_key(&n),
            "00000000-0000-0000-0000-000000000007:sms"
        );
        let roots = TrustedRoots::default();
        let http =
            |url: &str| HttpProvider::new(Channel::Sms, url, None, "x".into(), second, &roots);
        assert!(http("https://sms.example.com/send").is_ok());
        assert!(http("ftp://x").is_err());
        assert!(http("not a url").is_err());
    }

    #[test]
    fn smtp_settings_are_checked_and_the_message_id_is_deterministic() {
        let second = Duration::from_secs(1);
        let roots = TrustedRoots::default();
        let smtp = SmtpProvider::new(
            "smtp://user%40x:p%3Ass@127.0.0.1:2525",
            "CornerShop <orders@cornershop.local>",
            second,
            &roots,
        )
        .unwrap();
        let n = notification("email", "ada@example.com");
        assert_eq!(
            smtp.message_id(&n),
            "<00000000-0000-0000-0000-000000000007.email@cornershop.local>"
        );
        let mut formatted = String::from_utf8(smtp.message(&n).unwrap().formatted()).unwrap();
        formatted.make_ascii_lowercase();
        assert!(formatted
            .contains("message-id: <00000000-0000-0000-0000-000000000007.email@cornershop.local>"));
        assert!(formatted.contains("idempotency-key: 00000000-0000-0000-0000-000000000007:email"));
        assert!(matches!(
            smtp.message(&notification("email", "not an address")),
            Err(SendError::Permanent(_))
        ));
        let smtp = |url: &str, from: &str| SmtpProvider::new(url, from, second, &roots);
        for url in [
            "smtps://mail.example.com",
            "smtp://mail.example.com:587?tls=required",
            "smtp://mail.example.com?tls=opportunistic",
        ] {
            assert!(smtp(url, "a@b.c").is_ok(), "{url}");
        }
        assert!(smtp("smtp://h?tls=sometimes", "a@b.c").is_err());
        assert!(smtp("smtps://h?tls=required", "a@b.c").is_err());
        assert!(smtp("http://h", "a@b.c").is_err());
        assert!(smtp("smtp://h", "not a mailbox").is_err());
        assert_eq!(percent_decode("user%40x"), "user@x");
        assert_eq!(percent_decode("p%3Ass%"), "p:ss%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }
}
