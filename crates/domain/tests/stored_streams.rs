//! The committed streams of schema 1 and 2 (tests/fixtures, written by those releases)
//! decode as today's events: every step of the upcaster chain on real stored data, and
//! the aggregates folded from them are what the shop's day left behind.

use std::collections::BTreeMap;

use cornershop_domain::fixtures::{envelopes, lines, STREAMS};
use cornershop_domain::*;

/// The country each customer's checkout wrote, and what it loads as.
const COUNTRIES: [(&str, &str, Option<&str>); 5] = [
    ("cust-ada", "GB", Some("GB")),
    ("cust-bob", "gb", Some("GB")),
    ("cust-cy", "XX", None),
    ("cust-dee", "UK", Some("GB")),
    ("cust-eve", "US", Some("US")),
];

fn decoded(stream: &str) -> Vec<(EventEnvelope, DomainEvent)> {
    envelopes(stream)
        .into_iter()
        .map(|envelope| {
            let event = envelope
                .decode()
                .unwrap_or_else(|e| panic!("{} does not decode: {e}", envelope.event_id));
            (envelope, event)
        })
        .collect()
}

fn address_of(event: &DomainEvent) -> Option<(&CustomerId, &PersonalAddress)> {
    match event {
        DomainEvent::CartCheckedOut(e) => Some((&e.customer_id, &e.shipping_address)),
        DomainEvent::OrderCreated(e) => Some((&e.customer_id, &e.shipping_address)),
        _ => None,
    }
}

#[test]
fn every_stored_event_of_every_old_schema_decodes_as_the_current_shape() {
    for (version, stream) in STREAMS {
        let events = decoded(stream);
        assert_eq!(events.len(), 64, "schema {version}: the whole day");
        let mut addresses = 0;
        for (envelope, event) in &events {
            assert_eq!(envelope.schema_version, version);
            // Every price says its currency: the pound, which every older price was in.
            let currency = match event {
                DomainEvent::StockUpdated(e) => Some(e.currency),
                DomainEvent::ItemAddedToCart(e) => Some(e.currency),
                DomainEvent::CartCheckedOut(e) => Some(e.currency),
                DomainEvent::OrderCreated(e) => Some(e.currency),
                DomainEvent::PaymentInitiated(e) => Some(e.currency),
                _ => None,
            };
            if let Some(currency) = currency {
                assert_eq!(currency, Currency::GBP, "{}", envelope.event_type);
            }
            // Every address has a checked code, or says it could not be read.
            if let Some((customer, address)) = address_of(event) {
                addresses += 1;
                let (_, written, code) = COUNTRIES
                    .iter()
                    .find(|(c, ..)| customer == c)
                    .expect("a customer of the day");
                assert_eq!(
                    address.country_code.map(|c| c.to_string()).as_deref(),
                    *code,
                    "schema {version}, {customer}: '{written}'"
                );
                let unrecognised = code.is_none().then(|| written.to_string());
                assert_eq!(address.unrecognised_country, unrecognised);
            }
            // The current shape written and read again is the same event.
            assert_eq!(
                &DomainEvent::decode(&envelope.event_type, event.data()).unwrap(),
                event
            );
        }
        assert_eq!(addresses, 10, "five checkouts, five orders");
    }
}

#[test]
fn schema_1_personal_fields_are_clear_and_the_token_is_the_method() {
    for (_, event) in decoded(STREAMS[0].1) {
        if let DomainEvent::OrderCreated(e) = &event {
            assert!(e.email.is_clear() && e.shipping_address.name.is_clear());
            assert!(e.payment_method.starts_with("tok_"), "{}", e.payment_method);
        }
        if let DomainEvent::PaymentInitiated(e) = &event {
            assert!(e.payment_method.starts_with("tok_"));
        }
    }
    for (_, event) in decoded(STREAMS[1].1) {
        if let DomainEvent::OrderCreated(e) = &event {
            assert!(matches!(e.email, Personal::Sealed(_)));
            assert!(matches!(e.shipping_address.city, Personal::Sealed(_)));
            assert!(e.payment_method.starts_with("pm_"), "{}", e.payment_method);
        }
    }
}

/// Each aggregate of the stream folded with the write side's `evolve`.
fn folded<A: Aggregate>(events: &[(EventEnvelope, DomainEvent)]) -> BTreeMap<String, A> {
    let mut streams: BTreeMap<String, Vec<&DomainEvent>> = BTreeMap::new();
    for (envelope, event) in events {
        if envelope.aggregate_type == A::TYPE {
            streams
                .entry(envelope.aggregate_id.clone())
                .or_default()
                .push(event);
        }
    }
    streams
        .into_iter()
        .map(|(id, events)| (id, fold::<A>(events)))
        .collect()
}

#[test]
fn the_days_aggregates_fold_from_either_schema_to_the_same_states() {
    for (version, stream) in STREAMS {
        let events = decoded(stream);
        let orders = folded::<Order>(&events);
        let mut statuses: Vec<(String, OrderStatus, Option<String>)> = orders
            .values()
            .map(|o| {
                let code = o
                    .shipping_address
                    .as_ref()
                    .and_then(|a| a.country_code)
                    .map(|c| c.to_string());
                (o.customer_id.to_string(), o.status, code)
            })
            .collect();
        statuses.sort_by(|a, b| a.0.cmp(&b.0));
        let gb = || Some("GB".to_string());
        assert_eq!(
            statuses,
            [
                ("cust-ada".into(), OrderStatus::Delivered, gb()),
                ("cust-bob".into(), OrderStatus::Cancelled, gb()),
                ("cust-cy".into(), OrderStatus::Confirmed, None),
                ("cust-dee".into(), OrderStatus::Cancelled, gb()),
                ("cust-eve".into(), OrderStatus::Cancelled, Some("US".into())),
            ],
            "schema {version}"
        );
        assert!(orders.values().all(|o| o.currency == Some(Currency::GBP)));

        let stock = folded::<Inventory>(&events);
        let levels: Vec<(&str, u32, u32, Option<Currency>)> = stock
            .iter()
            .map(|(sku, s)| (sku.as_str(), s.available, s.reserved, s.currency))
            .collect();
        let gbp = Some(Currency::GBP);
        assert_eq!(
            levels,
            [
                ("KETTLE", 0, 1, gbp),
                ("MUG", 8, 0, gbp),
                ("TEA", 4, 0, gbp)
            ],
            "schema {version}"
        );

        let payments = folded::<Payment>(&events);
        let mut outcomes: Vec<PaymentStatus> = payments.values().map(|p| p.status).collect();
        outcomes.sort_by_key(|s| format!("{s:?}"));
        assert_eq!(
            outcomes,
            [
                PaymentStatus::Completed,
                PaymentStatus::Completed,
                PaymentStatus::Failed,
                PaymentStatus::Refunded
            ]
        );
        assert!(payments.values().all(|p| p.currency == gbp));

        let carts = folded::<Cart>(&events);
        let open: Vec<&Cart> = carts
            .values()
            .filter(|c| c.status == CartStatus::Open)
            .collect();
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].customer_id, "cust-fay");
        assert_eq!(open[0].items.len(), 1, "TEA stays, MUG was removed");
        assert_eq!(open[0].currency, gbp);
    }
}

#[test]
fn schema_2_written_again_in_schema_2_is_what_was_stored_byte_for_byte() {
    // What a writer told to write schema 2 (a rolling upgrade) makes of today's events is
    // what the release before wrote: the step down undoes the step up, but for the
    // country codes the step up recognised (`gb` and `UK` go back as `GB`).
    let write_v2 = WriteSchema::new(2).unwrap();
    for (line, envelope) in lines(STREAMS[1].1).zip(envelopes(STREAMS[1].1)) {
        let event = envelope.decode().unwrap();
        let written = serde_json::to_string(&write_v2.encode(&event).unwrap()).unwrap();
        let stored = serde_json::to_string(&envelope.data).unwrap();
        assert!(line.contains(&stored), "the fixture holds the stored bytes");
        let normalized = stored
            .replace(r#""country":"gb""#, r#""country":"GB""#)
            .replace(r#""country":"UK""#, r#""country":"GB""#);
        assert_eq!(written, normalized, "{}", envelope.event_type);
        // And the current writer's bytes decode to the same event.
        let current = WriteSchema::CURRENT.encode(&event).unwrap();
        assert_eq!(
            DomainEvent::decode(&envelope.event_type, current).unwrap(),
            event
        );
    }
}
