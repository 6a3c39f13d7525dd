//! The cost of sealing personal data: what the command bus adds to a checkout's event
//! (`Keyring::seal_event`: the seven personal values of a CartCheckedOut sealed with the
//! customer's data key, the key already opened) and what the notification sender adds to
//! read one back (`Keyring::open_value` of each), beside the baseline measured in the same
//! run: writing the same event's payload as JSON (`DomainEvent::data` then to text), which
//! every append does anyway. Also a new customer's first seal, which makes, wraps and
//! stores their data key (one store write, on SQLite in a temporary directory).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use cornershop_app::{Keyring, MasterKey, Opened};
use cornershop_domain::{
    CartCheckedOut, DomainEvent, LineItem, Personal, PersonalAddress, ShippingAddress,
};
use cornershop_store::{EventLog, SqliteEventStore};
use serde_json::json;

use crate::cli::SealArgs;
use crate::{emit, measure, round1, round3, Count};

fn checkout(customer: &str) -> DomainEvent {
    let address = ShippingAddress {
        name: "Grace Brewster Hopper".into(),
        line1: "17 Cobol Lane".into(),
        line2: Some("Apartment 1906".into()),
        city: "Arlington".into(),
        postal_code: "22209".into(),
        country_code: cornershop_domain::CountryCode::parse("countryCode", "US")
            .expect("a country code"),
    };
    CartCheckedOut {
        cart_id: "cart-bench".into(),
        order_id: "order-bench".into(),
        customer_id: customer.into(),
        items: vec![LineItem {
            sku: "MUG".into(),
            name: "Mug".into(),
            quantity: 2,
            unit_price: "12.50".parse().expect("a price"),
        }],
        total_amount: "25.00".parse().expect("a total"),
        currency: cornershop_domain::money::SHOP_CURRENCY,
        payment_method: "pm_visa_0123456789abcdef".into(),
        shipping_address: PersonalAddress::from(&address),
        email: Personal::clear("grace.hopper@navy.example"),
        phone: Some(Personal::clear("+1 202 555 0147")),
    }
    .into()
}

/// `seal [--seconds S] [--rounds R]`: the cases take turns in R rounds of S/R seconds.
pub(crate) async fn seal(args: &SealArgs) -> anyhow::Result<()> {
    let rounds = args.rounds.max(1);
    let slice = Duration::from_secs_f64(args.seconds / f64::from(rounds));
    let dir = tempfile::tempdir()?;
    let store = Arc::new(SqliteEventStore::open(dir.path()).await?);
    let keyring = Keyring::open(store.clone(), MasterKey::generate()).await?;

    let clear = checkout("cust-bench");
    let mut sealed = clear.clone();
    if !keyring.seal_event(&mut sealed).await? {
        bail!("the checkout had nothing to seal");
    }
    let values: Vec<Personal> = sealed
        .clone()
        .personal_data_mut()
        .context("a checkout holds personal data")?
        .values
        .into_iter()
        .map(|v| v.clone())
        .collect();
    for value in &values {
        match keyring.open_value(value).await? {
            Opened::Clear(_) => {}
            Opened::Erased => bail!("a value sealed just now opens as erased"),
        }
    }

    let (keyring, clear, values) = (&keyring, &clear, &values);
    let seal_once = move || async move {
        let mut event = clear.clone();
        keyring
            .seal_event(black_box(&mut event))
            .await
            .unwrap_or(false)
    };
    let open_once = move || async move {
        for value in values {
            if !matches!(
                keyring.open_value(black_box(value)).await,
                Ok(Opened::Clear(_))
            ) {
                return false;
            }
        }
        true
    };
    let encode_once = move || async move {
        let event = clear.clone();
        serde_json::to_string(&black_box(&event).data()).is_ok_and(|text| !text.is_empty())
    };
    let mut ignored = Count::default();
    let warm = Duration::from_millis(100);
    measure(&mut ignored, warm, seal_once).await?;
    measure(&mut ignored, warm, open_once).await?;
    measure(&mut ignored, warm, encode_once).await?;
    let (mut sealing, mut opening, mut encoding) =
        (Count::default(), Count::default(), Count::default());
    for _ in 0..rounds {
        measure(&mut sealing, slice, seal_once).await?;
        measure(&mut opening, slice, open_once).await?;
        measure(&mut encoding, slice, encode_once).await?;
    }

    // A new customer each time: the key is made, wrapped and stored (one group commit).
    let mut first = Count::default();
    let mut customer = 0u64;
    let new_customer = || {
        customer += 1;
        let id = format!("cust-new-{customer}");
        async move {
            let mut event = checkout(&id);
            keyring.seal_event(&mut event).await.unwrap_or(false)
        }
    };
    measure(
        &mut first,
        Duration::from_secs_f64(args.seconds / 3.0),
        new_customer,
    )
    .await?;

    let cases = [
        (
            "seal-checkout",
            "Keyring::seal_event of a CartCheckedOut (7 values, key cached)",
            sealing,
        ),
        (
            "open-checkout",
            "Keyring::open_value of its 7 sealed values (key cached)",
            opening,
        ),
        (
            "encode-checkout",
            "the same event's payload to JSON text (the baseline)",
            encoding,
        ),
        (
            "seal-new-customer",
            "the first seal of a new customer: key made, wrapped, stored on SQLite",
            first,
        ),
    ];
    for (case, label, count) in cases {
        emit(json!({
            "kind": "seal", "case": case, "label": label, "ops": count.ops,
            "seconds": round3(count.seconds), "rounds": rounds,
            "opsPerSecond": round1(count.ops as f64 / count.seconds),
            "nsPerOp": round1(count.seconds * 1e9 / count.ops as f64),
        }));
    }
    store.close().await;
    Ok(())
}
