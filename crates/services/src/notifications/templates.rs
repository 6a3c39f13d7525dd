//! The messages: one template per occasion, with a subject, a text and an HTML body for
//! email, a short text for SMS, and a title and body for push.
//!
//! A template is a plain string with `{name}` placeholders, filled by [`fill`]. In HTML,
//! every value is escaped, except the ones whose name ends in `_html`, which this module
//! builds itself from escaped pieces (the list of an order's lines).

use std::collections::BTreeMap;

use cornershop_domain::{Currency, CustomerId, LineItem, OrderId, Phone};
use rust_decimal::Decimal;

/// What the messages of one order say about it and where they go. Taken from OrderCreated
/// (which carries the checkout's contact details) or from the Order aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderFacts {
    pub order_id: OrderId,
    pub customer_id: CustomerId,
    pub email: cornershop_domain::Email,
    pub phone: Option<Phone>,
    /// The name on the shipping address, for the greeting.
    pub name: String,
    pub items: Vec<LineItem>,
    pub total: Decimal,
    /// What the lines, the total and the payment are in.
    pub currency: Currency,
}

/// Why a notification is sent: one per event type the notification service handles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Occasion {
    OrderCreated,
    OrderConfirmed,
    OrderShipped {
        carrier: String,
        tracking_number: String,
    },
    OrderDelivered,
    PaymentCompleted {
        amount: Decimal,
        transaction_id: String,
    },
    PaymentFailed {
        code: String,
        reason: String,
    },
}

/// An email, rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// A push notification, rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    pub title: String,
    pub body: String,
}

struct EmailTemplate {
    subject: &'static str,
    text: &'static str,
    html: &'static str,
}

const SIGNATURE_TEXT: &str = "\n\nCornerShop";
const SIGNATURE_HTML: &str = "<p>CornerShop</p>";

const ORDER_CREATED: EmailTemplate = EmailTemplate {
    subject: "We received your order {order_id}",
    text: "Hello {name},\n\nthank you for your order {order_id}. We are checking stock and \
           payment now.\n\n{items}\nTotal: {total}\n\nWe will write again once your payment is \
           confirmed.",
    html: "<p>Hello {name},</p><p>thank you for your order <strong>{order_id}</strong>. We are \
           checking stock and payment now.</p>{items_html}<p>Total: <strong>{total}</strong></p>\
           <p>We will write again once your payment is confirmed.</p>",
};

const ORDER_CONFIRMED: EmailTemplate = EmailTemplate {
    subject: "Your order {order_id} is confirmed",
    text: "Hello {name},\n\nyour payment went through and order {order_id} is confirmed. We are \
           getting it ready to ship.\n\n{items}\nTotal: {total}",
    html: "<p>Hello {name},</p><p>your payment went through and order \
           <strong>{order_id}</strong> is confirmed. We are getting it ready to ship.</p>\
           {items_html}<p>Total: <strong>{total}</strong></p>",
};

const ORDER_SHIPPED: EmailTemplate = EmailTemplate {
    subject: "Your order {order_id} has shipped",
    text: "Hello {name},\n\norder {order_id} is on its way with {carrier}.\nTracking number: \
           {tracking_number}",
    html: "<p>Hello {name},</p><p>order <strong>{order_id}</strong> is on its way with \
           {carrier}.</p><p>Tracking number: <strong>{tracking_number}</strong></p>",
};

const ORDER_DELIVERED: EmailTemplate = EmailTemplate {
    subject: "Your order {order_id} has been delivered",
    text: "Hello {name},\n\norder {order_id} has been delivered. We hope you enjoy it!",
    html: "<p>Hello {name},</p><p>order <strong>{order_id}</strong> has been delivered. We hope \
           you enjoy it!</p>",
};

const PAYMENT_COMPLETED: EmailTemplate = EmailTemplate {
    subject: "Payment received for order {order_id}",
    text: "Hello {name},\n\nwe received your payment of {amount} for order {order_id} \
           (transaction {transaction_id}).",
    html: "<p>Hello {name},</p><p>we received your payment of <strong>{amount}</strong> for \
           order <strong>{order_id}</strong> (transaction {transaction_id}).</p>",
};

const PAYMENT_FAILED: EmailTemplate = EmailTemplate {
    subject: "Payment failed for order {order_id}",
    text: "Hello {name},\n\nthe payment for order {order_id} did not go through: {reason} \
           ({code}).\nThe order has been cancelled and you have not been charged.",
    html: "<p>Hello {name},</p><p>the payment for order <strong>{order_id}</strong> did not go \
           through: {reason} ({code}).</p><p>The order has been cancelled and you have not been \
           charged.</p>",
};

const SMS_ORDER_SHIPPED: &str =
    "CornerShop: order {order_id} has shipped with {carrier}. Tracking number: {tracking_number}";
const SMS_PAYMENT_FAILED: &str = "CornerShop: the payment for order {order_id} failed \
                                  ({reason}). The order has been cancelled.";

const PUSH_ORDER_DELIVERED: (&str, &str) = (
    "Order delivered",
    "Your order {order_id} has been delivered.",
);

impl Occasion {
    /// The template's name, as recorded with each notification.
    pub fn template(&self) -> &'static str {
        match self {
            Self::OrderCreated => "order-created",
            Self::OrderConfirmed => "order-confirmed",
            Self::OrderShipped { .. } => "order-shipped",
            Self::OrderDelivered => "order-delivered",
            Self::PaymentCompleted { .. } => "payment-completed",
            Self::PaymentFailed { .. } => "payment-failed",
        }
    }

    fn email_template(&self) -> &'static EmailTemplate {
        match self {
            Self::OrderCreated => &ORDER_CREATED,
            Self::OrderConfirmed => &ORDER_CONFIRMED,
            Self::OrderShipped { .. } => &ORDER_SHIPPED,
            Self::OrderDelivered => &ORDER_DELIVERED,
            Self::PaymentCompleted { .. } => &PAYMENT_COMPLETED,
            Self::PaymentFailed { .. } => &PAYMENT_FAILED,
        }
    }

    fn vars(&self, facts: &OrderFacts) -> BTreeMap<&'static str, String> {
        let mut vars = BTreeMap::from([
            ("order_id", facts.order_id.to_string()),
            ("customer_id", facts.customer_id.to_string()),
            ("name", facts.name.clone()),
            ("total", priced(facts.total, facts.currency)),
            ("items", items_text(&facts.items, facts.currency)),
            ("items_html", items_html(&facts.items, facts.currency)),
        ]);
        match self {
            Self::OrderShipped {
                carrier,
                tracking_number,
            } => {
                vars.insert("carrier", carrier.clone());
                vars.insert("tracking_number", tracking_number.clone());
            }
            Self::PaymentCompleted {
                amount,
                transaction_id,
            } => {
                vars.insert("amount", priced(*amount, facts.currency));
                vars.insert("transaction_id", transaction_id.clone());
            }
            Self::PaymentFailed { code, reason } => {
                vars.insert("code", code.clone());
                vars.insert("reason", reason.clone());
            }
            _ => {}
        }
        vars
    }

    /// The email of this occasion.
    pub fn email(&self, facts: &OrderFacts) -> Email {
        let template = self.email_template();
        let vars = self.vars(facts);
        Email {
            subject: fill(template.subject, &vars, Escape::None),
            text: fill(template.text, &vars, Escape::None) + SIGNATURE_TEXT,
            html: format!(
                "<!DOCTYPE html><html><body>{}{SIGNATURE_HTML}</body></html>",
                fill(template.html, &vars, Escape::Html)
            ),
        }
    }

    /// The SMS of this occasion, if it has one (shipped: with the tracking number; payment
    /// failed).
    pub fn sms(&self, facts: &OrderFacts) -> Option<String> {
        let template = match self {
            Self::OrderShipped { .. } => SMS_ORDER_SHIPPED,
            Self::PaymentFailed { .. } => SMS_PAYMENT_FAILED,
            _ => return None,
        };
        Some(fill(template, &self.vars(facts), Escape::None))
    }

    /// The push notification of this occasion, if it has one (delivered).
    pub fn push(&self, facts: &OrderFacts) -> Option<Push> {
        let (title, body) = match self {
            Self::OrderDelivered => PUSH_ORDER_DELIVERED,
            _ => return None,
        };
        let vars = self.vars(facts);
        Some(Push {
            title: fill(title, &vars, Escape::None),
            body: fill(body, &vars, Escape::None),
        })
    }
}

/// An amount as a message shows it: with its currency's code (`19.98 GBP`), never a
/// symbol that several currencies share.
fn priced(amount: Decimal, currency: Currency) -> String {
    format!("{amount} {currency}")
}

fn items_text(items: &[LineItem], currency: Currency) -> String {
    items
        .iter()
        .map(|line| {
            format!(
                "- {} x {} ({}) at {} = {}\n",
                line.quantity,
                line.name,
                line.sku,
                priced(line.unit_price, currency),
                line_total_text(line, currency)
            )
        })
        .collect()
}

/// A line's total as a message shows it (an overflowing one, from an event no bounded
/// writer made, is shown as unknown rather than failing the whole message).
fn line_total_text(line: &LineItem, currency: Currency) -> String {
    line.line_total()
        .map_or_else(|| "?".to_string(), |total| priced(total, currency))
}

fn items_html(items: &[LineItem], currency: Currency) -> String {
    if items.is_empty() {
        return String::new();
    }
    let rows: String = items
        .iter()
        .map(|line| {
            format!(
                "<li>{} &times; {} ({}) at {} = {}</li>",
                line.quantity,
                escape_html(&line.name),
                escape_html(&line.sku),
                priced(line.unit_price, currency),
                line_total_text(line, currency)
            )
        })
        .collect();
    format!("<ul>{rows}</ul>")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Escape {
    None,
    Html,
}

/// Replaces every `{name}` in `template` with its value; a placeholder without a value is
/// left as it is (the unit tests check that every template is fully filled).
fn fill(template: &str, vars: &BTreeMap<&'static str, String>, escape: Escape) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close) if vars.contains_key(&after[..close]) => {
                let name = &after[..close];
                let value = &vars[name];
                if escape == Escape::Html && !name.ends_with("_html") {
                    out.push_str(&escape_html(value));
                } else {
                    out.push_str(value);
                }
                rest = &after[close + 1..];
            }
            _ => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Escapes text for HTML element content and attribute values.
pub(crate) fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn facts() -> OrderFacts {
        OrderFacts {
            order_id: "ord-1".into(),
            customer_id: "cust-1".into(),
            email: "ada@example.com".into(),
            phone: Some("+44 20 7946 0000".into()),
            name: "Ada <Lovelace> & Co".into(),
            items: vec![LineItem {
                sku: "MUG-1".into(),
                name: "Mug \"Classic\"".into(),
                quantity: 2,
                unit_price: dec!(9.99),
            }],
            total: dec!(19.98),
            currency: Currency::GBP,
        }
    }

    fn every_occasion() -> Vec<Occasion> {
        vec![
            Occasion::OrderCreated,
            Occasion::OrderConfirmed,
            Occasion::OrderShipped {
                carrier: "DHL".into(),
                tracking_number: "TRK-42".into(),
            },
            Occasion::OrderDelivered,
            Occasion::PaymentCompleted {
                amount: dec!(19.98),
                transaction_id: "ch_1".into(),
            },
            Occasion::PaymentFailed {
                code: "card_declined".into(),
                reason: "Your card was declined.".into(),
            },
        ]
    }

    #[test]
    fn every_template_is_filled_completely() {
        for occasion in every_occasion() {
            let email = occasion.email(&facts());
            for (part, text) in [
                ("subject", &email.subject),
                ("text", &email.text),
                ("html", &email.html),
            ] {
                assert!(
                    !text.contains('{') && !text.contains('}'),
                    "{} {part} has an unfilled placeholder: {text}",
                    occasion.template()
                );
                assert!(
                    text.contains("ord-1"),
                    "{} {part} names the order",
                    occasion.template()
                );
            }
            assert!(email.text.starts_with("Hello Ada <Lovelace> & Co,"));
            for text in occasion.sms(&facts()).into_iter().chain(
                occasion
                    .push(&facts())
                    .into_iter()
                    .flat_map(|p| [p.title, p.body]),
            ) {
                assert!(!text.contains('{'), "{text}");
            }
        }
    }

    #[test]
    fn html_escapes_values_but_text_keeps_them() {
        let email = Occasion::OrderCreated.email(&facts());
        assert!(email
            .html
            .contains("<p>Hello Ada &lt;Lovelace&gt; &amp; Co,</p>"));
        assert!(!email.html.contains("<Lovelace>"));
        assert!(email.html.contains(
            "<li>2 &times; Mug &quot;Classic&quot; (MUG-1) at 9.99 GBP = 19.98 GBP</li>"
        ));
        assert!(email
            .text
            .contains("- 2 x Mug \"Classic\" (MUG-1) at 9.99 GBP = 19.98 GBP\n"));
        assert!(email.text.contains("Total: 19.98 GBP"));
        assert!(email.html.starts_with("<!DOCTYPE html><html><body>"));
        assert!(email.html.ends_with("</body></html>"));
        assert_eq!(email.subject, "We received your order ord-1");
    }

    #[test]
    fn shipping_carries_the_tracking_number_by_email_and_sms() {
        let shipped = Occasion::OrderShipped {
            carrier: "DHL".into(),
            tracking_number: "TRK-42".into(),
        };
        let email = shipped.email(&facts());
        assert_eq!(email.subject, "Your order ord-1 has shipped");
        assert!(email.text.contains("Tracking number: TRK-42"));
        assert!(email
            .html
            .contains("Tracking number: <strong>TRK-42</strong>"));
        assert_eq!(
            shipped.sms(&facts()).unwrap(),
            "CornerShop: order ord-1 has shipped with DHL. Tracking number: TRK-42"
        );
        assert_eq!(shipped.push(&facts()), None);
    }

    #[test]
    fn each_occasion_has_the_seed_channels() {
        let channels = |o: &Occasion| {
            (
                o.sms(&facts()).is_some(),
                o.push(&facts()).is_some(),
                o.template(),
            )
        };
        let got: Vec<_> = every_occasion().iter().map(channels).collect();
        assert_eq!(
            got,
            [
                (false, false, "order-created"),
                (false, false, "order-confirmed"),
                (true, false, "order-shipped"),
                (false, true, "order-delivered"),
                (false, false, "payment-completed"),
                (true, false, "payment-failed"),
            ]
        );
        let push = Occasion::OrderDelivered.push(&facts()).unwrap();
        assert_eq!(push.title, "Order delivered");
        assert_eq!(push.body, "Your order ord-1 has been delivered.");
        let failed = every_occasion().pop().unwrap();
        assert!(failed
            .sms(&facts())
            .unwrap()
            .contains("failed (Your card was declined.)"));
        assert!(failed
            .email(&facts())
            .text
            .contains("did not go through: Your card was declined. (card_declined)"));
    }

    #[test]
    fn fill_leaves_unknown_placeholders_and_lone_braces_alone() {
        let vars = BTreeMap::from([("a", "<1>".to_string()), ("b_html", "<b>".to_string())]);
        assert_eq!(fill("{a}{b_html}", &vars, Escape::Html), "&lt;1&gt;<b>");
        assert_eq!(fill("{a} {x} { {", &vars, Escape::None), "<1> {x} { {");
        assert_eq!(
            fill("no placeholders", &vars, Escape::None),
            "no placeholders"
        );
        assert_eq!(escape_html("'\"&"), "&#39;&quot;&amp;");
    }
}
