//! The notification service against real receivers: a real SMTP server (Debian's
//! python3-aiosmtpd, tests/support/smtp_sink.py, delivering into a Maildir) and an HTTP
//! sink (a small axum server) standing in for the SMS and push providers.
//!
//! On the embedded default (the application in this process), and once on PostgreSQL +
//! Kafka with the notification role in processes of its own.

mod common;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{Path as AxumPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use common::{cluster, spawn_app_with, TestApp};
use cornershop_app::{CommandBus, SystemClock};
use cornershop_messaging::Handler;
use cornershop_server::config::ServeArgs;
use cornershop_services::notifications::{NotificationService, Wakeup};
use cornershop_services::Reacting;
use cornershop_store::{EventStore, SqliteEventStore};
use serde::Deserialize;
use serde_json::{json, Value};

// ---- the SMTP server ------------------------------------------------------------------

/// A Python interpreter that has aiosmtpd (Debian's python3-aiosmtpd installs it for
/// /usr/bin/python3, which may not be the first python3 on the PATH).
fn python() -> &'static str {
    static PYTHON: OnceLock<&'static str> = OnceLock::new();
    PYTHON.get_or_init(|| {
        ["/usr/bin/python3", "python3"]
            .into_iter()
            .find(|python| {
                Command::new(python)
                    .args(["-c", "import aiosmtpd"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            })
            .unwrap_or_else(|| {
                panic!(
                    "no python3 with aiosmtpd: install Debian's python3-aiosmtpd \
                     (apt-get install -y python3-aiosmtpd; scripts/stack.sh start does)"
                )
            })
    })
}

fn support_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/smtp_sink.py")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// An email as it arrived in the Maildir, decoded by smtp_sink.py.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Mail {
    rcpt_to: String,
    from: String,
    to: String,
    subject: String,
    message_id: Option<String>,
    idempotency_key: Option<String>,
    content_type: String,
    text: Option<String>,
    html: Option<String>,
}

/// aiosmtpd on a port of its own, delivering into a Maildir.
struct SmtpServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Certificate and key: the server requires STARTTLS.
    tls: Option<(PathBuf, PathBuf)>,
}

impl SmtpServer {
    /// A port for the server, not listening yet.
    fn reserve() -> Self {
        Self {
            port: free_port(),
            dir: tempfile::tempdir().expect("temp dir"),
            child: None,
            tls: None,
        }
    }

    /// A server that takes mail only after STARTTLS, with the PKI's server certificate.
    async fn started_with_starttls(pki: &TestPki) -> Self {
        let mut server = Self::reserve();
        server.tls = Some((pki.server_cert(), pki.server_key()));
        server.start().await;
        server
    }

    async fn started() -> Self {
        let mut server = Self::reserve();
        server.start().await;
        server
    }

    fn maildir(&self) -> PathBuf {
        self.dir.path().join("maildir")
    }

    fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    async fn start(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("smtp.log")).expect("log file");
        let child = Command::new(python())
            .arg(support_script())
            .args(["serve", "127.0.0.1", &self.port.to_string()])
            .arg(self.maildir())
            .args(self.tls.iter().flat_map(|(cert, key)| [cert, key]))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("the SMTP server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            let log = std::fs::read_to_string(self.dir.path().join("smtp.log")).unwrap_or_default();
            assert!(
                Instant::now() < deadline,
                "the SMTP server never listened on {}: {log}",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// How many messages have been delivered.
    fn count(&self) -> usize {
        ["new", "cur"]
            .iter()
            .filter_map(|sub| std::fs::read_dir(self.maildir().join(sub)).ok())
            .map(|entries| entries.count())
            .sum()
    }

    /// Every delivered message, decoded.
    fn messages(&self) -> Vec<Mail> {
        let output = Command::new(python())
            .arg(support_script())
            .arg("read")
            .arg(self.maildir())
            .output()
            .expect("smtp_sink.py read runs");
        assert!(
            output.status.success(),
            "reading the Maildir failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout)
            .expect("UTF-8")
            .lines()
            .map(|line| serde_json::from_str(line).expect("a message as JSON"))
            .collect()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---- TLS: a private CA and an HTTPS front for the sink ----------------------------------

/// A private certificate authority and a server certificate it signed for 127.0.0.1, made
/// with the openssl command line tool.
struct TestPki {
    dir: tempfile::TempDir,
}

impl TestPki {
    fn create() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let openssl = |args: &[&str]| {
            let output = Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .output()
                .expect("openssl runs (Debian's openssl package; scripts/stack.sh installs it)");
            assert!(
                output.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        };
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
        openssl(
            &[
                &["req", "-x509", "-nodes", "-days", "2"][..],
                &ec,
                &["-subj", "/CN=CornerShop test CA"],
                &["-keyout", "ca.key", "-out", "ca.pem"],
            ]
            .concat(),
        );
        openssl(
            &[
                &["req", "-new", "-nodes"][..],
                &ec,
                &["-subj", "/CN=127.0.0.1"],
                &["-keyout", "server.key", "-out", "server.csr"],
            ]
            .concat(),
        );
        std::fs::write(
            dir.path().join("server.ext"),
            "basicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth\n\
             subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .expect("extensions file");
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ]);
        Self { dir }
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn server_cert(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }

    fn server_key(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }
}

/// Terminates TLS (the PKI's server certificate) in front of a plain local port.
struct TlsProxy {
    port: u16,
    child: Child,
}

impl TlsProxy {
    async fn start(upstream: &str, pki: &TestPki) -> Self {
        let upstream_port = upstream.rsplit(':').next().unwrap().to_string();
        let port = free_port();
        let child = Command::new(python())
            .arg(support_script())
            .args(["tls-proxy", "127.0.0.1", &port.to_string(), &upstream_port])
            .arg(pki.server_cert())
            .arg(pki.server_key())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("the TLS proxy starts");
        let deadline = Instant::now() + Duration::from_secs(15);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "the TLS proxy never listened");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self { port, child }
    }

    fn url(&self, channel: &str) -> String {
        format!("https://127.0.0.1:{}/{channel}", self.port)
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- the HTTP sink (SMS and push providers) -------------------------------------------

/// A request as the sink received it, and what it answered.
#[derive(Debug, Clone)]
struct Received {
    channel: String,
    authorization: Option<String>,
    idempotency_key: Option<String>,
    body: Value,
    status: u16,
    at: Instant,
}

#[derive(Default)]
struct SinkState {
    received: Mutex<Vec<Received>>,
    /// Per recipient ("to"): statuses to answer first, one per request; then 200.
    scripted: Mutex<HashMap<String, VecDeque<u16>>>,
    /// Per recipient: a status to answer every time.
    always: Mutex<HashMap<String, u16>>,
}

#[derive(Clone)]
struct HttpSink {
    base: String,
    state: Arc<SinkState>,
}

async fn receive(
    State(state): State<Arc<SinkState>>,
    AxumPath(channel): AxumPath<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let to = body["to"].as_str().unwrap_or_default().to_string();
    let status = state
        .always
        .lock()
        .unwrap()
        .get(&to)
        .copied()
        .or_else(|| {
            state
                .scripted
                .lock()
                .unwrap()
                .get_mut(&to)
                .and_then(VecDeque::pop_front)
        })
        .unwrap_or(200);
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let mut received = state.received.lock().unwrap();
    received.push(Received {
        channel: channel.clone(),
        authorization: header("authorization"),
        idempotency_key: header("idempotency-key"),
        body,
        status,
        at: Instant::now(),
    });
    let answer = if status == 200 {
        json!({ "id": format!("{channel}-{}", received.len()), "status": "queued" })
    } else {
        json!({ "error": format!("scripted answer {status}") })
    };
    (StatusCode::from_u16(status).unwrap(), Json(answer))
}

impl HttpSink {
    async fn start() -> Self {
        let state = Arc::new(SinkState::default());
        let router = axum::Router::new()
            .route("/{channel}", axum::routing::post(receive))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the sink");
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            axum::serve(listener, router)
                .await
                .expect("the sink serves");
        });
        Self { base, state }
    }

    fn sms_url(&self) -> String {
        format!("{}/sms", self.base)
    }

    fn push_url(&self) -> String {
        format!("{}/push", self.base)
    }

    fn answer_always(&self, recipient: &str, status: u16) {
        self.state
            .always
            .lock()
            .unwrap()
            .insert(recipient.to_string(), status);
    }

    /// Stops refusing `recipient` (the provider's cause is fixed).
    fn answer_normally(&self, recipient: &str) {
        self.state.always.lock().unwrap().remove(recipient);
    }

    fn answer_first(&self, recipient: &str, statuses: &[u16]) {
        self.state
            .scripted
            .lock()
            .unwrap()
            .insert(recipient.to_string(), statuses.iter().copied().collect());
    }

    /// Every request on a channel (`sms` or `push`), in order of arrival.
    fn requests(&self, channel: &str) -> Vec<Received> {
        self.state
            .received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.channel == channel)
            .cloned()
            .collect()
    }

    /// The requests on a channel that the sink accepted (answered 200).
    fn delivered(&self, channel: &str) -> Vec<Received> {
        self.requests(channel)
            .into_iter()
            .filter(|r| r.status == 200)
            .collect()
    }
}

// ---- the shop -------------------------------------------------------------------------

const SMS_TOKEN: &str = "sms-secret";
const PUSH_TOKEN: &str = "push-secret";

/// The application with its notification providers pointed at the receivers.
async fn spawn_shop(
    smtp: &SmtpServer,
    sink: &HttpSink,
    configure: impl FnOnce(&mut ServeArgs),
) -> TestApp {
    let smtp_url = smtp.url();
    let (sms_url, push_url) = (sink.sms_url(), sink.push_url());
    let app = spawn_app_with(
        move |args| {
            let n = &mut args.notifications;
            n.smtp_url = Some(smtp_url);
            n.sms_url = Some(sms_url);
            n.sms_token = Some(SMS_TOKEN.into());
            n.push_url = Some(push_url);
            n.push_token = Some(PUSH_TOKEN.into());
            n.notification_retry_delay = Duration::from_millis(100).into();
            configure(args);
        },
        Vec::new(),
    )
    .await;
    app.stock("MUG-1", "9.99", 1000).await;
    app
}

/// A checked-out cart of one customer with their contact details; returns the order id.
async fn place_order(
    base: &str,
    client: &reqwest::Client,
    customer: &str,
    email: &str,
    phone: Option<&str>,
    token: &str,
) -> String {
    let post = |path: String, body: Value| {
        let request = client.post(format!("{base}{path}")).json(&body);
        async move { request.send().await.expect("request sent") }
    };
    let cart: Value = post("/api/carts".into(), json!({ "customerId": customer }))
        .await
        .json()
        .await
        .unwrap();
    let cart = cart["cartId"].as_str().expect("cartId").to_string();
    let added = post(
        format!("/api/carts/{cart}/items"),
        json!({"sku": "MUG-1", "quantity": 2}),
    )
    .await;
    assert_eq!(added.status(), StatusCode::OK.as_u16());
    let checkout = post(
        format!("/api/carts/{cart}/checkout"),
        json!({"paymentToken": token, "shippingAddress": common::address(),
               "email": email, "phone": phone}),
    )
    .await;
    assert_eq!(checkout.status(), StatusCode::ACCEPTED.as_u16());
    let body: Value = checkout.json().await.unwrap();
    body["orderId"].as_str().unwrap().to_string()
}

async fn order(
    app: &TestApp,
    customer: &str,
    email: &str,
    phone: Option<&str>,
    token: &str,
) -> String {
    place_order(&app.base, &app.client, customer, email, phone, token).await
}

async fn ship_and_deliver(app: &TestApp, order_id: &str, tracking_number: &str) {
    app.wait_for_order(order_id, &["Confirmed"]).await;
    let shipped = app
        .post(
            &format!("/api/orders/{order_id}/ship"),
            &json!({"carrier": "DHL", "trackingNumber": tracking_number}),
        )
        .await;
    assert_eq!(shipped.status(), StatusCode::OK.as_u16());
    let delivered = app
        .post(&format!("/api/orders/{order_id}/deliver"), &json!({}))
        .await;
    assert_eq!(delivered.status(), StatusCode::OK.as_u16());
}

/// The id of the order's event of this type (the first, if several).
async fn event_id(app: &TestApp, order_id: &str, event_type: &str) -> String {
    app.timeline(order_id)
        .await
        .iter()
        .find(|e| e["eventType"] == event_type)
        .unwrap_or_else(|| panic!("order {order_id} has no {event_type}"))["eventId"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn notifications(app: &TestApp, query: &str) -> Vec<Value> {
    app.json(&format!("/api/notifications?{query}"))
        .await
        .as_array()
        .expect("a list")
        .clone()
}

/// Polls `check` until it holds or `within` has passed.
async fn wait_until(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the notifications matching `query` are all settled (sent or failed), at
/// least `count` of them.
async fn wait_settled(app: &TestApp, query: &str, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = notifications(app, query).await;
        if list.len() >= count
            && list
                .iter()
                .all(|n| n["status"] == "sent" || n["status"] == "failed")
        {
            return list;
        }
        assert!(
            Instant::now() < deadline,
            "notifications {query} never settled: {list:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn mail_for<'a>(mails: &'a [Mail], event_id: &str) -> &'a Mail {
    let id = format!("<{event_id}.email@cornershop.local>");
    let matching: Vec<&Mail> = mails
        .iter()
        .filter(|m| m.message_id.as_deref() == Some(id.as_str()))
        .collect();
    assert_eq!(matching.len(), 1, "exactly one email {id}: {mails:#?}");
    matching[0]
}

/// Checks one email: envelope and header recipient, subject, and both parts.
fn assert_mail(mail: &Mail, event_id: &str, to: &str, subject: &str, says: &[&str]) {
    assert_eq!(mail.rcpt_to, to, "envelope recipient of {subject}");
    assert_eq!(mail.to, to, "To: of {subject}");
    assert_eq!(mail.from, "CornerShop <orders@cornershop.local>");
    assert_eq!(mail.subject, subject);
    assert_eq!(
        mail.idempotency_key.as_deref(),
        Some(format!("{event_id}:email").as_str())
    );
    assert_eq!(mail.content_type, "multipart/alternative", "{subject}");
    let text = mail.text.as_deref().expect("a text part");
    let html = mail.html.as_deref().expect("an HTML part");
    assert!(text.starts_with("Hello Ada Lovelace,"), "{text}");
    assert!(html.contains("<p>Hello Ada Lovelace,</p>"), "{html}");
    for phrase in says {
        assert!(
            text.contains(phrase),
            "text of '{subject}' lacks '{phrase}':\n{text}"
        );
        assert!(
            html.contains(phrase),
            "HTML of '{subject}' lacks '{phrase}':\n{html}"
        );
    }
}

fn assert_http(request: &Received, token: &str, key: &str) {
    assert_eq!(
        request.authorization.as_deref(),
        Some(format!("Bearer {token}").as_str())
    );
    assert_eq!(request.idempotency_key.as_deref(), Some(key));
}

// ---- the tests ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_order_event_reaches_the_customer_on_its_channels() {
    let smtp = SmtpServer::started().await;
    let sink = HttpSink::start().await;
    let app = spawn_shop(&smtp, &sink, |_| {}).await;

    let paid = order(
        &app,
        "cust-paid",
        "ada@example.com",
        Some("+15550001"),
        "tok_visa",
    )
    .await;
    ship_and_deliver(&app, &paid, "TRK-12345").await;
    let declined = order(
        &app,
        "cust-declined",
        "ada.declined@example.com",
        Some("+15550002"),
        "tok_chargeDeclined",
    )
    .await;
    app.wait_for_order(&declined, &["Cancelled"]).await;

    // Paid: created, payment completed, confirmed, shipped, delivered; declined: created,
    // payment failed. SMS: shipped, payment failed. Push: delivered.
    wait_until(
        "7 emails, 2 SMS and a push",
        Duration::from_secs(30),
        || {
            smtp.count() >= 7
                && sink.delivered("sms").len() >= 2
                && !sink.delivered("push").is_empty()
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(smtp.count(), 7, "{:#?}", smtp.messages());
    assert_eq!(sink.requests("sms").len(), 2);
    assert_eq!(sink.requests("push").len(), 1);

    let mails = smtp.messages();
    let id = |order: &str, event_type: &str| {
        let (order, event_type) = (order.to_string(), event_type.to_string());
        let app = &app;
        async move { event_id(app, &order, &event_type).await }
    };
    let total = "19.98";
    let line = "2 x Product MUG-1 (MUG-1) at 9.99 GBP = 19.98 GBP";
    let created = id(&paid, "OrderCreated").await;
    assert_mail(
        mail_for(&mails, &created),
        &created,
        "ada@example.com",
        &format!("We received your order {paid}"),
        &[&paid, total, "checking stock and payment"],
    );
    let created_text = mail_for(&mails, &created).text.clone().unwrap();
    assert!(created_text.contains(line), "{created_text}");
    assert!(created_text.contains("Total: 19.98 GBP"), "{created_text}");
    let completed = id(&paid, "PaymentCompleted").await;
    assert_mail(
        mail_for(&mails, &completed),
        &completed,
        "ada@example.com",
        &format!("Payment received for order {paid}"),
        &["your payment of", "19.98", "transaction ch_"],
    );
    let confirmed = id(&paid, "OrderConfirmed").await;
    assert_mail(
        mail_for(&mails, &confirmed),
        &confirmed,
        "ada@example.com",
        &format!("Your order {paid} is confirmed"),
        &[&paid, "is confirmed", total],
    );
    let shipped = id(&paid, "OrderShipped").await;
    assert_mail(
        mail_for(&mails, &shipped),
        &shipped,
        "ada@example.com",
        &format!("Your order {paid} has shipped"),
        &["on its way with DHL", "TRK-12345"],
    );
    let delivered = id(&paid, "OrderDelivered").await;
    assert_mail(
        mail_for(&mails, &delivered),
        &delivered,
        "ada@example.com",
        &format!("Your order {paid} has been delivered"),
        &["has been delivered"],
    );
    let declined_created = id(&declined, "OrderCreated").await;
    assert_mail(
        mail_for(&mails, &declined_created),
        &declined_created,
        "ada.declined@example.com",
        &format!("We received your order {declined}"),
        &[&declined, total],
    );
    let failed = id(&declined, "PaymentFailed").await;
    assert_mail(
        mail_for(&mails, &failed),
        &failed,
        "ada.declined@example.com",
        &format!("Payment failed for order {declined}"),
        &["did not go through", "card_declined", "not been charged"],
    );

    // SMS: the tracking number when shipped; the failure when the payment failed.
    let sms = sink.delivered("sms");
    let shipped_sms = sms
        .iter()
        .find(|r| r.body["to"] == "+15550001")
        .expect("the shipping SMS");
    assert_http(shipped_sms, SMS_TOKEN, &format!("{shipped}:sms"));
    assert_eq!(shipped_sms.body["from"], "CornerShop");
    assert_eq!(
        shipped_sms.body["body"],
        format!("CornerShop: order {paid} has shipped with DHL. Tracking number: TRK-12345")
    );
    let failed_sms = sms
        .iter()
        .find(|r| r.body["to"] == "+15550002")
        .expect("the payment-failed SMS");
    assert_http(failed_sms, SMS_TOKEN, &format!("{failed}:sms"));
    assert!(failed_sms.body["body"]
        .as_str()
        .unwrap()
        .contains(&format!("the payment for order {declined} failed")));

    // Push: delivered, to the customer's topic.
    let push = &sink.delivered("push")[0];
    assert_http(push, PUSH_TOKEN, &format!("{delivered}:push"));
    assert_eq!(
        push.body,
        json!({
            "to": "/topics/customer-cust-paid",
            "notification": {
                "title": "Order delivered",
                "body": format!("Your order {paid} has been delivered."),
            },
            "data": { "orderId": paid, "eventType": "OrderDelivered" },
        })
    );

    // The notification log.
    let log = wait_settled(&app, &format!("orderId={paid}"), 7).await;
    assert_eq!(log.len(), 7, "{log:#?}");
    for n in &log {
        assert_eq!(n["status"], "sent", "{n}");
        assert_eq!(n["attempts"], 1, "{n}");
        assert_eq!(n["customerId"], "cust-paid");
        assert!(n["providerMessageId"].is_string(), "{n}");
        assert!(n["lastError"].is_null(), "{n}");
        assert!(n["createdAt"].is_string() && n["updatedAt"].is_string());
    }
    let by_channel = |channel: &str| log.iter().filter(|n| n["channel"] == channel).count();
    assert_eq!(
        (by_channel("email"), by_channel("sms"), by_channel("push")),
        (5, 1, 1)
    );
    let sms_log = notifications(&app, &format!("orderId={paid}&channel=sms")).await;
    assert_eq!(sms_log.len(), 1);
    assert_eq!(sms_log[0]["recipient"], "+15550001");
    assert_eq!(sms_log[0]["template"], "order-shipped");
    assert_eq!(sms_log[0]["eventId"], shipped.as_str());
    assert!(
        sms_log[0]["providerMessageId"]
            .as_str()
            .is_some_and(|id| id.starts_with("sms-")),
        "the id the SMS provider answered: {sms_log:#?}"
    );
    let email_log = notifications(&app, &format!("orderId={paid}&channel=email&status=sent")).await;
    assert!(email_log
        .iter()
        .any(|n| n["providerMessageId"] == format!("<{confirmed}.email@cornershop.local>")));
    assert_eq!(
        notifications(&app, "customerId=cust-declined").await.len(),
        3
    );
    common::assert_problem(
        app.get("/api/notifications?channel=fax").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    common::assert_problem(
        app.get("/api/notifications?status=lost").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(app
        .json("/api/deadletters")
        .await
        .as_array()
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_delivered_twice_sends_one_message_per_channel() {
    let smtp = SmtpServer::started().await;
    let sink = HttpSink::start().await;
    let app = spawn_shop(&smtp, &sink, |_| {}).await;
    let paid = order(
        &app,
        "cust-twice",
        "twice@example.com",
        Some("+15550003"),
        "tok_visa",
    )
    .await;
    ship_and_deliver(&app, &paid, "TRK-TWICE").await;
    wait_until(
        "5 emails, an SMS and a push",
        Duration::from_secs(30),
        || {
            smtp.count() >= 5
                && !sink.delivered("sms").is_empty()
                && !sink.delivered("push").is_empty()
        },
    )
    .await;
    wait_settled(&app, &format!("orderId={paid}"), 7).await;

    // Deliver OrderShipped and OrderDelivered again: through the handler itself (as a
    // redelivery would), and through the application's own consumer by re-driving a dead
    // letter of each event.
    let store: Arc<dyn EventStore> = Arc::new(
        SqliteEventStore::open(app.data_dir.path())
            .await
            .expect("open the application's store"),
    );
    let handler = Reacting(NotificationService::new(
        CommandBus::new(
            store.clone(),
            Arc::new(SystemClock),
            // The application's own master key, so that its customers' keys open.
            Arc::new(
                cornershop_app::Keyring::open(
                    store.clone(),
                    cornershop_app::MasterKey::read(&app.data_dir.path().join("master.key"))
                        .expect("the shop's master key"),
                )
                .await
                .expect("the keyring"),
            ),
        ),
        Wakeup::default(),
    ));
    for event_type in ["OrderShipped", "OrderDelivered"] {
        let id = event_id(&app, &paid, event_type).await;
        let event = store
            .find_event(id.parse().unwrap())
            .await
            .unwrap()
            .expect("the event");
        handler.handle(&event).await.expect("handled again");
        handler.handle(&event).await.expect("and again");
        let letter = store
            .record_dead_letter(
                "notification-service",
                &event,
                "delivered twice on purpose",
                1,
                chrono::Utc::now(),
            )
            .await
            .unwrap();
        let redriven = app
            .post(&format!("/api/deadletters/{letter}/retry"), &json!({}))
            .await;
        assert_eq!(
            redriven.status(),
            StatusCode::OK.as_u16(),
            "re-drive {event_type}"
        );
    }
    // The dispatchers look for work at least every second: give them a few rounds.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert_eq!(smtp.count(), 5, "{:#?}", smtp.messages());
    assert_eq!(sink.requests("sms").len(), 1, "{:#?}", sink.requests("sms"));
    assert_eq!(
        sink.requests("push").len(),
        1,
        "{:#?}",
        sink.requests("push")
    );
    let log = notifications(&app, &format!("orderId={paid}")).await;
    assert_eq!(log.len(), 7, "one record per (event, channel): {log:#?}");
    assert!(log
        .iter()
        .all(|n| n["status"] == "sent" && n["attempts"] == 1));
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_smtp_outage_delays_only_email_which_arrives_once_after_recovery() {
    let mut smtp = SmtpServer::reserve(); // down: nothing listens on its port yet
    let sink = HttpSink::start().await;
    let app = spawn_shop(&smtp, &sink, |args| {
        args.notifications.notification_retry_delay = Duration::from_millis(200).into();
        args.notifications.notification_max_attempts = 50;
    })
    .await;
    let started = Instant::now();
    let declined = order(
        &app,
        "cust-outage",
        "outage@example.com",
        Some("+15550004"),
        "tok_chargeDeclined",
    )
    .await;

    // The SMS of PaymentFailed goes out while the mail server is down.
    wait_until("the SMS during the outage", Duration::from_secs(8), || {
        !sink.delivered("sms").is_empty()
    })
    .await;
    let sms_at = sink.delivered("sms")[0].at;
    assert!(sms_at.duration_since(started) < Duration::from_secs(8));
    let failed = event_id(&app, &declined, "PaymentFailed").await;
    assert_eq!(
        sink.delivered("sms")[0].idempotency_key.as_deref(),
        Some(format!("{failed}:sms").as_str())
    );

    // Meanwhile both emails wait, retrying.
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let emails = notifications(&app, &format!("orderId={declined}&channel=email")).await;
        if emails.len() == 2
            && emails
                .iter()
                .all(|n| n["status"] == "retrying" && n["attempts"].as_u64().unwrap() >= 2)
        {
            assert!(emails[0]["lastError"].as_str().unwrap().contains("SMTP"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "emails not retrying: {emails:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let down_for = Duration::from_secs(10).saturating_sub(started.elapsed());
    tokio::time::sleep(down_for).await;
    assert_eq!(smtp.count(), 0);

    smtp.start().await;
    let up_at = Instant::now();
    wait_until(
        "both emails after recovery",
        Duration::from_secs(30),
        || smtp.count() >= 2,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(sms_at < up_at, "the SMS was not held back by the outage");
    let mails = smtp.messages();
    assert_eq!(mails.len(), 2, "each email once: {mails:#?}");
    let failed_mail = mail_for(&mails, &failed);
    assert_eq!(
        failed_mail.subject,
        format!("Payment failed for order {declined}")
    );
    mail_for(&mails, &event_id(&app, &declined, "OrderCreated").await);
    let emails = wait_settled(&app, &format!("orderId={declined}&channel=email"), 2).await;
    for n in &emails {
        assert_eq!(n["status"], "sent", "{n}");
        assert!(n["attempts"].as_u64().unwrap() > 2, "{n}");
    }
    assert_eq!(sink.requests("sms").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_provider_fails_the_notification_into_the_dead_letters_and_the_rest_goes_on() {
    let smtp = SmtpServer::started().await;
    let sink = HttpSink::start().await;
    let app = spawn_shop(&smtp, &sink, |_| {}).await;
    sink.answer_always("+15550400", 400);

    // The SMS provider answers 400 for this number; the mail server refuses this mailbox
    // with 550.
    let refused_sms = order(
        &app,
        "cust-400",
        "fine@example.com",
        Some("+15550400"),
        "tok_chargeDeclined",
    )
    .await;
    let refused_mail = order(
        &app,
        "cust-550",
        "reject@example.com",
        Some("+15550005"),
        "tok_chargeDeclined",
    )
    .await;
    let sms = wait_settled(&app, &format!("orderId={refused_sms}&channel=sms"), 1).await;
    assert_eq!(sms[0]["status"], "failed", "{sms:#?}");
    assert_eq!(sms[0]["attempts"], 1, "a permanent error is not retried");
    assert!(
        sms[0]["lastError"].as_str().unwrap().contains("HTTP 400"),
        "{sms:#?}"
    );
    let mail = wait_settled(&app, &format!("orderId={refused_mail}&channel=email"), 2).await;
    assert!(
        mail.iter()
            .all(|n| n["status"] == "failed" && n["attempts"] == 1),
        "{mail:#?}"
    );
    assert!(
        mail[0]["lastError"].as_str().unwrap().contains("550"),
        "{mail:#?}"
    );

    let letters = app.json("/api/deadletters").await;
    let letters = letters.as_array().unwrap();
    let sms_failed = event_id(&app, &refused_sms, "PaymentFailed").await;
    let sms_letter = letters
        .iter()
        .find(|l| l["consumer"] == "notification-service:sms")
        .unwrap_or_else(|| panic!("no SMS dead letter: {letters:#?}"));
    assert_eq!(sms_letter["eventId"], sms_failed.as_str());
    assert_eq!(sms_letter["eventType"], "PaymentFailed");
    assert_eq!(sms_letter["status"], "pending");
    assert!(sms_letter["error"].as_str().unwrap().contains("HTTP 400"));
    let email_letters: Vec<&Value> = letters
        .iter()
        .filter(|l| l["consumer"] == "notification-service:email")
        .collect();
    assert_eq!(email_letters.len(), 2, "{letters:#?}");
    assert_eq!(letters.len(), 3, "{letters:#?}");

    // The other channel of the refused SMS's event, and later notifications, still go out.
    let later = order(
        &app,
        "cust-later",
        "later@example.com",
        Some("+15550006"),
        "tok_chargeDeclined",
    )
    .await;
    let sent = wait_settled(&app, &format!("orderId={later}"), 3).await;
    assert!(sent.iter().all(|n| n["status"] == "sent"), "{sent:#?}");
    let fine = wait_settled(&app, &format!("orderId={refused_sms}&channel=email"), 2).await;
    assert!(fine.iter().all(|n| n["status"] == "sent"), "{fine:#?}");
    assert!(sink
        .delivered("sms")
        .iter()
        .any(|r| r.body["to"] == "+15550006"));
    let mails = smtp.messages();
    assert!(mails.iter().any(|m| m.rcpt_to == "later@example.com"));
    assert!(mails.iter().all(|m| m.rcpt_to != "reject@example.com"));
    // The consumers are not held up either: the workflow went on for every order.
    for order_id in [&refused_sms, &refused_mail, &later] {
        app.wait_for_order(order_id, &["Cancelled"]).await;
    }
}

/// Providers behind TLS: the mail server requires STARTTLS and the SMS and push endpoints
/// are https://, all with certificates of a private CA that `--provider-ca-file` trusts.
/// Without that file the same certificates are refused, and nothing is sent in plain text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_every_channel_reaches_providers_whose_ca_is_trusted() {
    let pki = TestPki::create();
    let smtp = SmtpServer::started_with_starttls(&pki).await;
    let sink = HttpSink::start().await;
    let https = TlsProxy::start(&sink.base, &pki).await;
    let tls_settings = |args: &mut ServeArgs, trust: bool| {
        let n = &mut args.notifications;
        n.smtp_url = Some(format!("smtp://127.0.0.1:{}?tls=required", smtp.port));
        n.sms_url = Some(https.url("sms"));
        n.push_url = Some(https.url("push"));
        n.provider_ca_file = trust.then(|| pki.ca());
    };

    let app = spawn_shop(&smtp, &sink, |args| tls_settings(args, true)).await;
    let order_id = order(
        &app,
        "cust-tls",
        "secure@example.com",
        Some("+15550443"),
        "tok_visa",
    )
    .await;
    ship_and_deliver(&app, &order_id, "TRK-TLS").await;
    // OrderCreated, PaymentCompleted, OrderConfirmed, OrderShipped and OrderDelivered by
    // email; the shipment by SMS; the delivery by push.
    let sent = wait_settled(&app, &format!("orderId={order_id}"), 7).await;
    assert!(sent.iter().all(|n| n["status"] == "sent"), "{sent:#?}");
    let mails = smtp.messages();
    assert_eq!(mails.len(), 5, "{mails:#?}");
    assert!(mails.iter().all(|m| m.rcpt_to == "secure@example.com"));
    let sms = sink.delivered("sms");
    assert_eq!(sms.len(), 1, "{sms:#?}");
    assert!(sms[0].body["body"].as_str().unwrap().contains("TRK-TLS"));
    assert_eq!(sink.delivered("push").len(), 1);

    // The same providers, their CA not trusted: every channel refuses to send.
    let untrusting = spawn_shop(&smtp, &sink, |args| {
        tls_settings(args, false);
        args.notifications.notification_max_attempts = 1;
    })
    .await;
    let refused = order(
        &untrusting,
        "cust-untrusted",
        "untrusted@example.com",
        Some("+15550444"),
        "tok_chargeDeclined",
    )
    .await;
    let failed = wait_settled(&untrusting, &format!("orderId={refused}"), 3).await;
    for n in &failed {
        assert_eq!(n["status"], "failed", "{n:#?}");
        let error = n["lastError"].as_str().unwrap().to_lowercase();
        assert!(error.contains("certificate"), "{n:#?}");
    }
    assert_eq!(smtp.messages().len(), 5, "no mail went out untrusted");
    assert_eq!(sink.delivered("sms").len(), 1);
}

/// The operator fixes the cause (the SMS provider accepts the number again) and re-drives
/// the dead letter: the SMS goes out once, with the same idempotency key, and the dead
/// letter is resolved. A re-drive while the cause is not fixed fails again into the same,
/// pending dead letter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_notification_is_sent_once_when_re_driven_after_the_fix() {
    let smtp = SmtpServer::started().await;
    let sink = HttpSink::start().await;
    let app = spawn_shop(&smtp, &sink, |_| {}).await;
    sink.answer_always("+15550401", 400);
    let order_id = order(
        &app,
        "cust-401",
        "fixed@example.com",
        Some("+15550401"),
        "tok_chargeDeclined",
    )
    .await;
    let sms = wait_settled(&app, &format!("orderId={order_id}&channel=sms"), 1).await;
    assert_eq!(sms[0]["status"], "failed", "{sms:#?}");
    let letter_of_sms = || async {
        let letters = app.json("/api/deadletters").await;
        letters
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["consumer"] == "notification-service:sms")
            .cloned()
            .unwrap_or_else(|| panic!("no SMS dead letter: {letters:#?}"))
    };
    let letter = letter_of_sms().await;
    let retry = format!("/api/deadletters/{}/retry", letter["id"]);

    // Not fixed yet: the re-drive is taken, the send fails again, the letter is pending.
    let response = app.post(&retry, &json!({})).await;
    assert_eq!(response.status(), StatusCode::OK);
    let deadline = Instant::now() + Duration::from_secs(30);
    while sink.requests("sms").len() < 2 || letter_of_sms().await["status"] != "pending" {
        assert!(
            Instant::now() < deadline,
            "the second refusal never came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(letter_of_sms().await["attempts"], 2, "one more attempt");
    assert!(sink.delivered("sms").is_empty());

    // Fixed: the re-drive sends it once, and the dead letter is resolved.
    sink.answer_normally("+15550401");
    let response = app.post(&retry, &json!({})).await;
    assert_eq!(response.status(), StatusCode::OK);
    let resolved: Value = response.json().await.unwrap();
    assert_eq!(resolved["status"], "resolved", "{resolved:#?}");
    assert_eq!(resolved["id"], letter["id"]);
    let sms = wait_settled(&app, &format!("orderId={order_id}&channel=sms"), 1).await;
    assert_eq!(sms[0]["status"], "sent", "{sms:#?}");
    let delivered = sink.delivered("sms");
    assert_eq!(delivered.len(), 1, "{delivered:#?}");
    assert_eq!(delivered[0].body["to"], "+15550401");
    let requests = sink.requests("sms");
    assert_eq!(requests.len(), 3, "two refusals and one delivery");
    assert!(
        requests
            .iter()
            .all(|r| r.idempotency_key == requests[0].idempotency_key),
        "one idempotency key for every attempt: {requests:#?}"
    );
    assert_eq!(letter_of_sms().await["status"], "resolved");
    // A letter already resolved: re-driving it again sends nothing more.
    let response = app.post(&retry, &json!({})).await;
    assert_eq!(response.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(sink.requests("sms").len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_error_that_can_pass_is_retried_with_the_same_idempotency_key() {
    let smtp = SmtpServer::started().await;
    let sink = HttpSink::start().await;
    let app = spawn_shop(&smtp, &sink, |_| {}).await;
    sink.answer_first("+15550503", &[503, 500]);
    let declined = order(
        &app,
        "cust-503",
        "flaky@example.com",
        Some("+15550503"),
        "tok_chargeDeclined",
    )
    .await;
    let sms = wait_settled(&app, &format!("orderId={declined}&channel=sms"), 1).await;
    assert_eq!(sms[0]["status"], "sent", "{sms:#?}");
    assert_eq!(sms[0]["attempts"], 3);
    assert!(sms[0]["lastError"].is_null());
    let requests = sink.requests("sms");
    let statuses: Vec<u16> = requests.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [503, 500, 200]);
    let key = format!("{}:sms", event_id(&app, &declined, "PaymentFailed").await);
    assert!(requests
        .iter()
        .all(|r| r.idempotency_key.as_deref() == Some(key.as_str())));
    assert!(requests[1].at.duration_since(requests[0].at) >= Duration::from_millis(50));
    assert!(app
        .json("/api/deadletters")
        .await
        .as_array()
        .unwrap()
        .is_empty());
}

/// The last lines of every process log in `dir` (for failure messages).
fn log_tails(dir: &std::path::Path) -> String {
    let mut out = String::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(15)..].join("\n");
        out.push_str(&format!(
            "--- {} ---\n{tail}\n",
            entry.file_name().to_string_lossy()
        ));
    }
    out
}

/// On PostgreSQL + Kafka, with the notification role in two processes of its own (they
/// share the consumer group and compete for the channels' leases).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_kafka_the_confirmation_email_arrives_exactly_once() {
    // Fails with a clear message when the stack is not there (scripts/test.sh sets both).
    cluster::required_env(cluster::DATABASE_ENV);
    cluster::required_env(cluster::BROKERS_ENV);
    let smtp = SmtpServer::started().await;
    let sink = HttpSink::start().await;
    let logs = tempfile::tempdir().expect("temp dir");
    let mut flags = cluster::workflow_flags(&ServeArgs::for_data_dir(logs.path()));
    flags.extend([
        format!("--smtp-url={}", smtp.url()),
        format!("--sms-url={}", sink.sms_url()),
        format!("--push-url={}", sink.push_url()),
        "--notification-retry-delay=200ms".to_string(),
    ]);
    let layout: &[&[&str]] = &[
        &["api", "relay"],
        &["order", "inventory", "payment"],
        &["notification"],
        &["notification", "relay"],
    ];
    let shop = cluster::Cluster::start(layout, &flags, logs.path()).await;
    let base = shop.api_base();
    let client = common::admin_client(&shop.signing_key);
    let stocked = client
        .put(format!("{base}/api/inventory/MUG-1"))
        .json(&json!({"name": "Product MUG-1", "unitPrice": "9.99", "quantity": 100}))
        .send()
        .await
        .unwrap();
    assert_eq!(stocked.status(), StatusCode::OK.as_u16());
    let order_id = place_order(
        &base,
        &client,
        "cust-kafka",
        "kafka@example.com",
        Some("+15550007"),
        "tok_visa",
    )
    .await;

    let subject = format!("Your order {order_id} is confirmed");
    let deadline = Instant::now() + Duration::from_secs(45);
    while !smtp.messages().iter().any(|m| m.subject == subject) {
        assert!(
            Instant::now() < deadline,
            "the confirmation email never arrived; the processes' logs:\n{}",
            log_tails(logs.path())
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Time for a duplicate to show up, were there one (a rebalance redelivers, and both
    // processes record).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mails = smtp.messages();
    let confirmations: Vec<&Mail> = mails.iter().filter(|m| m.subject == subject).collect();
    assert_eq!(confirmations.len(), 1, "{mails:#?}");
    assert_eq!(confirmations[0].rcpt_to, "kafka@example.com");
    assert!(confirmations[0]
        .text
        .as_deref()
        .unwrap()
        .contains("is confirmed"));
    // Created, payment completed and confirmed: each once.
    assert_eq!(mails.len(), 3, "{mails:#?}");
    let log: Vec<Value> = client
        .get(format!("{base}/api/notifications?orderId={order_id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(log.len(), 3, "{log:#?}");
    assert!(
        log.iter()
            .all(|n| n["status"] == "sent" && n["attempts"] == 1),
        "{log:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_queued_before_an_erasure_is_cancelled_and_never_sent() {
    let mut smtp = SmtpServer::reserve(); // down: the emails wait, retrying
    let sink = HttpSink::start().await;
    let app = spawn_shop(&smtp, &sink, |args| {
        args.notifications.notification_retry_delay = Duration::from_millis(200).into();
        args.notifications.notification_max_attempts = 100;
    })
    .await;
    let erased = order(
        &app,
        "cust-forget",
        "forget.me@example.com",
        None,
        "tok_visa",
    )
    .await;
    let kept = order(&app, "cust-keep", "keep.me@example.com", None, "tok_visa").await;
    for order in [&erased, &kept] {
        app.wait_for_order(order, &["Confirmed"]).await;
    }
    app.settle().await;
    let queued = notifications(&app, &format!("orderId={erased}&channel=email")).await;
    assert_eq!(queued.len(), 3, "{queued:#?}");
    assert!(
        queued.iter().all(|n| n["status"] != "sent"),
        "nothing went out while the mail server was down: {queued:#?}"
    );
    // The customer is erased while their emails wait.
    let report: Value = app
        .client
        .delete(app.url("/api/customers/cust-forget/personal-data"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(report["notificationsCancelled"], 3, "{report:#}");
    let cancelled = notifications(&app, &format!("orderId={erased}&channel=email")).await;
    assert!(
        cancelled.iter().all(|n| n["status"] == "cancelled"),
        "{cancelled:#?}"
    );
    // The mail server comes back: the other customer's emails arrive, the erased
    // customer's never do.
    smtp.start().await;
    wait_settled(&app, &format!("orderId={kept}&channel=email"), 3).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mails = smtp.messages();
    assert_eq!(mails.len(), 3, "{mails:#?}");
    assert!(
        mails
            .iter()
            .all(|m| m.rcpt_to.contains("keep.me@example.com")),
        "{mails:#?}"
    );
    let after = notifications(&app, &format!("orderId={erased}&channel=email")).await;
    assert!(
        after.iter().all(|n| n["status"] == "cancelled"),
        "{after:#?}"
    );
    assert!(
        after.iter().all(|n| n["recipient"] == "[erased]"),
        "the admin sees the erased marker, not an address: {after:#?}"
    );
}
