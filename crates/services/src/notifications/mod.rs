//! The notification service (`notification-service`): tells the customer what happens to
//! their order, by email, SMS and push.
//!
//! | event | channels |
//! |---|---|
//! | OrderCreated | email |
//! | OrderConfirmed | email |
//! | OrderShipped | email, SMS (with the tracking number) |
//! | OrderDelivered | email, push |
//! | PaymentCompleted | email |
//! | PaymentFailed | email, SMS |
//!
//! Two halves, so that no provider ever holds up a consumer:
//!
//! 1. The consumer ([`NotificationService`]) renders the messages of an event and records
//!    them in the store, one per (eventId, channel); the store keeps the first and ignores
//!    repeats, so a redelivered event records nothing new. Contact details come from
//!    OrderCreated (which carries the checkout's email and phone) or, for later events,
//!    from the Order aggregate loaded from the store; both hold them sealed, and the
//!    consumer opens them with the customer's key to render, then seals the rendered
//!    recipient and bodies before it records them (nothing personal is stored in clear).
//!    A customer whose data was erased gets nothing; on `CustomerDataErased` the
//!    consumer cancels what is still queued for them.
//! 2. A [`Dispatcher`] per channel opens each due notification (one of an erased customer
//!    is cancelled instead) and sends it through the channel's
//!    [`Provider`](providers::Provider) and records the outcome: sent, retrying (transient
//!    error, exponential backoff with jitter) or failed (permanent error or out of
//!    attempts, with a dead letter). See [`dispatcher`].
//!
//! Exactly once per (eventId, channel): one record per pair, one sender per channel at a
//! time (a lease), and the provider request carries `<eventId>:<channel>` as idempotency
//! key for the one case left, a crash between a send and its record.

pub mod dispatcher;
pub mod providers;
pub mod templates;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cornershop_app::CommandBus;
use cornershop_app::Opened;
use cornershop_domain::{
    Currency, CustomerId, DomainEvent, Email, EventType, LineItem, Order, OrderId, OrderStatus,
    Personal, Phone,
};
use cornershop_messaging::HandlerError;
use cornershop_store::{EventStore, NewNotification, StoredEvent};
use tokio::sync::Notify;

use crate::{handler_error, Reaction, Reactor};
pub use dispatcher::{dead_letter_consumer, DispatchPolicy, Dispatcher, FailedNotifications};
use providers::{
    HttpProvider, LogProvider, Provider, ProviderConfigError, SmtpProvider, TrustedRoots,
};
pub use templates::{Occasion, OrderFacts};

pub const NAME: &str = "notification-service";

/// A channel a notification goes out on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    Email,
    Sms,
    Push,
}

impl Channel {
    pub const ALL: [Channel; 3] = [Self::Email, Self::Sms, Self::Push];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Sms => "sms",
            Self::Push => "push",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// The store lease that makes one dispatcher send this channel.
    pub fn lease(self) -> String {
        format!("notifications-{}", self.as_str())
    }
}

impl std::fmt::Display for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Wakes this process's dispatchers when its consumer has recorded new notifications.
/// (Notifications recorded by another process are found by polling.)
#[derive(Debug, Clone, Default)]
pub struct Wakeup(Arc<Notify>);

impl Wakeup {
    pub fn wake(&self) {
        self.0.notify_waiters();
    }
}

/// The push topic of a customer's devices.
pub(crate) fn push_topic(customer_id: &str) -> String {
    format!("/topics/customer-{customer_id}")
}

/// The notifications an event asks for, rendered, as the store records them.
pub fn plan(
    event: &StoredEvent,
    occasion: &Occasion,
    facts: &OrderFacts,
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<NewNotification> {
    let record =
        |channel: Channel, recipient: String, subject, body_text, body_html| NewNotification {
            event_id: event.envelope.event_id,
            event_type: event.envelope.event_type.clone(),
            channel: channel.as_str().to_string(),
            template: occasion.template().to_string(),
            order_id: facts.order_id.to_string(),
            customer_id: facts.customer_id.to_string(),
            recipient,
            subject,
            body_text,
            body_html,
            created_at: now,
            correlation_id: event.envelope.metadata.correlation_id.clone(),
            trace_id: event.trace_id.clone(),
        };
    // Every order has a (parsed) e-mail address; a phone number is optional.
    let email = occasion.email(facts);
    let mut planned = vec![record(
        Channel::Email,
        facts.email.to_string(),
        email.subject,
        email.text,
        Some(email.html),
    )];
    if let Some(text) = occasion.sms(facts) {
        match &facts.phone {
            Some(phone) => planned.push(record(
                Channel::Sms,
                phone.to_string(),
                String::new(),
                text,
                None,
            )),
            None => tracing::info!(
                orderId = %facts.order_id,
                template = occasion.template(),
                "no SMS: the order has no phone number"
            ),
        }
    }
    if let Some(push) = occasion.push(facts) {
        planned.push(record(
            Channel::Push,
            push_topic(&facts.customer_id),
            push.title,
            push.body,
            None,
        ));
    }
    planned
}

/// The consumer: records the notifications of each event it handles.
pub struct NotificationService {
    bus: CommandBus,
    wakeup: Wakeup,
}

impl NotificationService {
    pub fn new(bus: CommandBus, wakeup: Wakeup) -> Self {
        Self { bus, wakeup }
    }

    /// The facts a notification is rendered from, its personal values opened; `None`
    /// when the customer's personal data was erased (nothing is sent then).
    async fn facts_of(
        &self,
        order_id: &OrderId,
        customer_id: &CustomerId,
        contact: Contact<'_>,
        items: Vec<LineItem>,
        total: rust_decimal::Decimal,
        currency: Currency,
    ) -> Result<Option<OrderFacts>, HandlerError> {
        let keyring = self.bus.keyring();
        let open = |value: &Personal| {
            let value = value.clone();
            async move {
                keyring
                    .open_value(&value)
                    .await
                    .map(Opened::into_clear)
                    .map_err(|e| handler_error(e.into()))
            }
        };
        let Some(email) = open(contact.email).await? else {
            return Ok(None);
        };
        // (The parse error repeats the value: a dead letter's reason must not.)
        let email = Email::parse(&email).map_err(|_| {
            HandlerError::Permanent(format!("order {order_id} has no usable e-mail address"))
        })?;
        let phone = match contact.phone {
            Some(phone) => match open(phone).await? {
                Some(phone) => Phone::parse(&phone).ok(),
                None => return Ok(None),
            },
            None => None,
        };
        let name = match contact.name {
            Some(name) => match open(name).await? {
                Some(name) => name,
                None => return Ok(None),
            },
            None => String::new(),
        };
        Ok(Some(OrderFacts {
            order_id: order_id.clone(),
            customer_id: customer_id.clone(),
            email,
            phone,
            name,
            items,
            total,
            currency,
        }))
    }

    /// The order's facts from the store (the source of truth).
    async fn order_facts(&self, order_id: &str) -> Result<Option<OrderFacts>, HandlerError> {
        let (order, _) = self
            .bus
            .load::<Order>(order_id)
            .await
            .map_err(handler_error)?;
        if order.status == OrderStatus::New {
            return Err(HandlerError::Permanent(format!(
                "order {order_id} is not in the store"
            )));
        }
        let contact = Contact {
            email: &order.email,
            phone: order.phone.as_ref(),
            name: order.shipping_address.as_ref().map(|a| &a.name),
        };
        let currency = order
            .currency
            .ok_or_else(|| HandlerError::Permanent(format!("order {order_id} has no currency")))?;
        self.facts_of(
            &order.order_id,
            &order.customer_id,
            contact,
            order.items.clone(),
            order.total_amount,
            currency,
        )
        .await
    }

    /// Seals a rendered notification's personal parts (recipient and bodies) with the
    /// customer's key before it is stored; the dispatcher opens them to send.
    async fn seal(&self, planned: &mut [NewNotification]) -> Result<(), HandlerError> {
        let keyring = self.bus.keyring();
        for n in planned {
            let seal = |text: String| {
                let customer = n.customer_id.clone();
                async move {
                    keyring
                        .seal(&customer, &text)
                        .await
                        .map(|sealed| stored_text(&sealed))
                        .map_err(|e| handler_error(e.into()))
                }
            };
            n.recipient = seal(std::mem::take(&mut n.recipient)).await?;
            n.body_text = seal(std::mem::take(&mut n.body_text)).await?;
            if let Some(html) = n.body_html.take() {
                n.body_html = Some(seal(html).await?);
            }
        }
        Ok(())
    }
}

/// The personal values of an order that a notification uses.
struct Contact<'a> {
    email: &'a Personal,
    phone: Option<&'a Personal>,
    name: Option<&'a Personal>,
}

/// A personal value as a notification's column holds it: the JSON of a sealed one, the
/// text itself for a clear one (rows recorded before sealing existed).
pub fn stored_text(value: &Personal) -> String {
    match value {
        Personal::Clear(clear) => clear.clone(),
        other => serde_json::to_string(other).expect("a personal value serializes"),
    }
}

/// The personal value a notification's column holds (see [`stored_text`]).
pub fn stored_personal(text: &str) -> Personal {
    if text.starts_with('{') {
        if let Ok(value) = serde_json::from_str::<Personal>(text) {
            return value;
        }
    }
    Personal::Clear(text.to_string())
}

#[async_trait]
impl Reaction for NotificationService {
    const NAME: &'static str = NAME;
    const REACTS_TO: &'static [EventType] = &[
        EventType::OrderCreated,
        EventType::OrderConfirmed,
        EventType::OrderShipped,
        EventType::OrderDelivered,
        EventType::PaymentCompleted,
        EventType::PaymentFailed,
        EventType::CustomerDataErased,
    ];

    fn bus(&self) -> &CommandBus {
        &self.bus
    }

    async fn react(&self, decoded: DomainEvent, react: &Reactor<'_>) -> Result<(), HandlerError> {
        let (occasion, facts) = match decoded {
            DomainEvent::OrderCreated(e) => {
                let contact = Contact {
                    email: &e.email,
                    phone: e.phone.as_ref(),
                    name: Some(&e.shipping_address.name),
                };
                let facts = self
                    .facts_of(
                        &e.order_id,
                        &e.customer_id,
                        contact,
                        e.items.clone(),
                        e.total_amount,
                        e.currency,
                    )
                    .await?;
                (Occasion::OrderCreated, facts)
            }
            DomainEvent::OrderConfirmed(e) => (
                Occasion::OrderConfirmed,
                self.order_facts(&e.order_id).await?,
            ),
            DomainEvent::OrderShipped(e) => (
                Occasion::OrderShipped {
                    carrier: e.carrier,
                    tracking_number: e.tracking_number,
                },
                self.order_facts(&e.order_id).await?,
            ),
            DomainEvent::OrderDelivered(e) => (
                Occasion::OrderDelivered,
                self.order_facts(&e.order_id).await?,
            ),
            DomainEvent::PaymentCompleted(e) => (
                Occasion::PaymentCompleted {
                    amount: e.amount,
                    transaction_id: e.transaction_id,
                },
                self.order_facts(&e.order_id).await?,
            ),
            DomainEvent::PaymentFailed(e) => (
                Occasion::PaymentFailed {
                    code: e.code,
                    reason: e.reason,
                },
                self.order_facts(&e.order_id).await?,
            ),
            DomainEvent::CustomerDataErased(e) => {
                // The API that erased the customer cancelled what was queued then; this
                // repeat (harmless) also cancels what another process recorded meanwhile,
                // and makes this process forget the key at once.
                let erasure = self
                    .bus
                    .keyring()
                    .erase(&e.customer_id)
                    .await
                    .map_err(|e| handler_error(e.into()))?;
                tracing::info!(
                    cancelled = erasure.notifications_cancelled,
                    "customer's data erased: their notifications still to be sent are cancelled"
                );
                return Ok(());
            }
            _ => return Ok(()),
        };
        let Some(facts) = facts else {
            tracing::info!(
                eventType = %react.cause.envelope.event_type,
                "no notification: the customer's personal data was erased"
            );
            return Ok(());
        };
        let mut planned = plan(react.cause, &occasion, &facts, self.bus.clock().now());
        self.seal(&mut planned).await?;
        let recorded = self.bus.store().record_notifications(&planned).await?;
        if recorded > 0 {
            self.wakeup.wake();
        }
        tracing::debug!(
            eventType = %react.cause.envelope.event_type,
            orderId = %facts.order_id,
            planned = planned.len(),
            recorded,
            "notifications recorded"
        );
        Ok(())
    }
}

/// Where the providers are and how to reach them. A channel without a URL uses the `log`
/// provider.
#[derive(Debug, Clone)]
pub struct NotificationSettings {
    /// `smtp://[user[:password]@]host[:port][?tls=required]` or `smtps://…`.
    pub smtp_url: Option<String>,
    pub mail_from: String,
    pub sms_url: Option<String>,
    pub sms_token: Option<String>,
    pub sms_from: String,
    pub push_url: Option<String>,
    pub push_token: Option<String>,
    /// A PEM file of CA certificates the providers trust besides the public roots.
    pub provider_ca_file: Option<std::path::PathBuf>,
    pub policy: DispatchPolicy,
}

/// For this module's tests: a running shop takes its settings from the command line,
/// whose defaults are clap's.
#[cfg(test)]
impl Default for NotificationSettings {
    fn default() -> Self {
        Self {
            smtp_url: None,
            mail_from: "CornerShop <orders@cornershop.local>".to_string(),
            sms_url: None,
            sms_token: None,
            sms_from: "CornerShop".to_string(),
            push_url: None,
            push_token: None,
            provider_ca_file: None,
            policy: DispatchPolicy::with_retries(Duration::from_secs(1), 8),
        }
    }
}

fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// One provider per channel, from the settings.
pub fn providers(
    settings: &NotificationSettings,
) -> Result<Vec<Arc<dyn Provider>>, ProviderConfigError> {
    let timeout = settings
        .policy
        .send_timeout
        .saturating_sub(Duration::from_millis(500))
        .max(Duration::from_millis(500));
    let roots = match &settings.provider_ca_file {
        Some(path) => TrustedRoots::from_pem_file(path)?,
        None => TrustedRoots::default(),
    };
    let email: Arc<dyn Provider> = match given(&settings.smtp_url) {
        Some(url) => Arc::new(SmtpProvider::new(
            url,
            &settings.mail_from,
            timeout,
            &roots,
        )?),
        None => Arc::new(LogProvider::new(Channel::Email)),
    };
    let sms: Arc<dyn Provider> = match given(&settings.sms_url) {
        Some(url) => Arc::new(HttpProvider::new(
            Channel::Sms,
            url,
            settings.sms_token.clone(),
            settings.sms_from.clone(),
            timeout,
            &roots,
        )?),
        None => Arc::new(LogProvider::new(Channel::Sms)),
    };
    let push: Arc<dyn Provider> = match given(&settings.push_url) {
        Some(url) => Arc::new(HttpProvider::new(
            Channel::Push,
            url,
            settings.push_token.clone(),
            String::new(),
            timeout,
            &roots,
        )?),
        None => Arc::new(LogProvider::new(Channel::Push)),
    };
    Ok(vec![email, sms, push])
}

/// The dispatchers of every channel, ready to run.
pub fn dispatchers(
    store: Arc<dyn EventStore>,
    keyring: Arc<cornershop_app::Keyring>,
    settings: &NotificationSettings,
    wakeup: &Wakeup,
) -> Result<Vec<Dispatcher>, ProviderConfigError> {
    Ok(providers(settings)?
        .into_iter()
        .map(|provider| {
            Dispatcher::new(
                store.clone(),
                keyring.clone(),
                provider,
                settings.policy,
                wakeup.clone(),
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use cornershop_domain::{EventEnvelope, LineItem, Metadata, Phone};
    use rust_decimal_macros::dec;
    use uuid::Uuid;

    fn event(event_type: &str) -> StoredEvent {
        StoredEvent {
            position: 1,
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            envelope: EventEnvelope {
                event_id: Uuid::from_u128(9),
                event_type: event_type.into(),
                aggregate_id: "ord-1".into(),
                aggregate_type: cornershop_domain::AggregateType::Order,
                timestamp: Utc::now(),
                version: 1,
                schema_version: 1,
                data: serde_json::json!({}),
                metadata: Metadata {
                    correlation_id: "c".into(),
                    causation_id: "c".into(),
                    user_id: None,
                    source: "test".into(),
                },
            },
            topic: None,
            partition: None,
            offset: None,
        }
    }

    fn facts(phone: Option<&str>) -> OrderFacts {
        OrderFacts {
            order_id: "ord-1".into(),
            customer_id: "cust-1".into(),
            email: " ada@example.com ".into(),
            phone: phone.map(Phone::from),
            name: "Ada".into(),
            items: vec![LineItem {
                sku: "MUG-1".into(),
                name: "Mug".into(),
                quantity: 1,
                unit_price: dec!(9.99),
            }],
            total: dec!(9.99),
            currency: Currency::GBP,
        }
    }

    fn channels(planned: &[NewNotification]) -> Vec<(&str, &str)> {
        planned
            .iter()
            .map(|n| (n.channel.as_str(), n.recipient.as_str()))
            .collect()
    }

    #[test]
    fn a_plan_records_one_notification_per_channel_with_its_recipient() {
        let shipped = Occasion::OrderShipped {
            carrier: "DHL".into(),
            tracking_number: "TRK-9".into(),
        };
        let now = Utc::now();
        let planned = plan(
            &event("OrderShipped"),
            &shipped,
            &facts(Some("+15550001")),
            now,
        );
        assert_eq!(
            channels(&planned),
            [("email", "ada@example.com"), ("sms", "+15550001")]
        );
        let sms = &planned[1];
        assert_eq!(sms.event_id, Uuid::from_u128(9));
        assert_eq!(sms.event_type, "OrderShipped");
        assert_eq!(sms.template, "order-shipped");
        assert_eq!(
            (sms.order_id.as_str(), sms.customer_id.as_str()),
            ("ord-1", "cust-1")
        );
        assert!(sms.body_text.contains("TRK-9"));
        assert_eq!(sms.body_html, None);
        assert_eq!(sms.created_at, now);
        assert!(planned[0].body_html.as_deref().unwrap().contains("TRK-9"));

        // No phone: no SMS.
        let planned = plan(&event("OrderShipped"), &shipped, &facts(None), now);
        assert_eq!(channels(&planned), [("email", "ada@example.com")]);

        let planned = plan(
            &event("OrderDelivered"),
            &Occasion::OrderDelivered,
            &facts(None),
            now,
        );
        assert_eq!(
            channels(&planned),
            [
                ("email", "ada@example.com"),
                ("push", "/topics/customer-cust-1")
            ]
        );
        assert_eq!(planned[1].subject, "Order delivered");
    }

    #[test]
    fn channels_name_their_leases_and_dead_letters() {
        for channel in Channel::ALL {
            assert_eq!(Channel::parse(channel.as_str()), Some(channel));
            assert_eq!(channel.lease(), format!("notifications-{channel}"));
            assert_eq!(
                dead_letter_consumer(channel),
                format!("notification-service:{channel}")
            );
        }
        assert_eq!(Channel::parse("fax"), None);
    }

    #[test]
    fn channels_without_a_url_log() {
        let kinds = |s: &NotificationSettings| -> Vec<(Channel, &'static str)> {
            providers(s)
                .unwrap()
                .iter()
                .map(|p| (p.channel(), p.kind()))
                .collect()
        };
        let default = NotificationSettings::default();
        assert_eq!(
            kinds(&default),
            [
                (Channel::Email, "log"),
                (Channel::Sms, "log"),
                (Channel::Push, "log")
            ]
        );
        let configured = NotificationSettings {
            smtp_url: Some("smtp://127.0.0.1:2525".into()),
            sms_url: Some("http://127.0.0.1:1/sms".into()),
            push_url: Some("http://127.0.0.1:1/push".into()),
            ..NotificationSettings::default()
        };
        assert_eq!(
            kinds(&configured),
            [
                (Channel::Email, "smtp"),
                (Channel::Sms, "http"),
                (Channel::Push, "http")
            ]
        );
        let bad = NotificationSettings {
            smtp_url: Some("smtp+tls://mail.example.com".into()),
            ..NotificationSettings::default()
        };
        assert!(providers(&bad).is_err());
        let missing_ca = NotificationSettings {
            provider_ca_file: Some("/no/such/ca.pem".into()),
            ..NotificationSettings::default()
        };
        let error = providers(&missing_ca)
            .err()
            .expect("a missing CA file is refused");
        assert!(
            error.0.contains("--provider-ca-file /no/such/ca.pem"),
            "{error}"
        );
        let dir = tempfile::tempdir().unwrap();
        let not_pem = dir.path().join("ca.pem");
        std::fs::write(&not_pem, "not a certificate").unwrap();
        let not_pem = NotificationSettings {
            provider_ca_file: Some(not_pem),
            ..NotificationSettings::default()
        };
        assert!(providers(&not_pem).is_err());
    }
}
