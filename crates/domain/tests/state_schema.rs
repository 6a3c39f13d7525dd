//! Each aggregate's state as JSON is pinned to its `STATE_SCHEMA`: the bus keeps snapshots
//! of states in that shape and reads back only those written under the same number, so a
//! shape that changes without its number would read an old snapshot into a new shape.
//!
//! When `the_shape_of_each_state_is_the_one_its_schema_names` fails, the state's shape
//! changed: bump the aggregate's `STATE_SCHEMA` and write the new shape under the new
//! number in `SHAPES`. (Every sample below is a struct literal, so a new field also stops
//! this file compiling until the sample names it.)

use std::collections::BTreeMap;

use cornershop_domain::*;
use rust_decimal_macros::dec;
use serde_json::Value;

fn sealed(n: u8) -> Personal {
    Personal::Sealed(Sealed {
        key_id: "dk_1".into(),
        sealed: format!("c2VhbGVk{n}"),
    })
}

fn line() -> LineItem {
    LineItem {
        sku: "MUG".into(),
        name: "Mug".into(),
        quantity: 2,
        unit_price: dec!(12.50),
    }
}

/// One aggregate's sample state: its kind, its schema number, its JSON, and whether a JSON
/// reads back as the same state.
struct Sample {
    kind: AggregateType,
    schema: u32,
    json: Value,
    round_trips: Box<dyn Fn(&Value) -> bool>,
}

/// A state of each aggregate with every field holding a value (options set, lists and
/// maps not empty), as the bus holds it (personal values sealed).
fn samples() -> Vec<Sample> {
    fn entry<A: Aggregate>(state: A) -> Sample {
        let json = serde_json::to_value(&state).expect("a state serializes");
        // Reads back as the same state, and writes the same JSON again (scales of
        // decimals included).
        let round_trips = Box::new(move |json: &Value| {
            serde_json::from_value::<A>(json.clone()).is_ok_and(|back| {
                back == state && serde_json::to_value(&back).ok().as_ref() == Some(json)
            })
        });
        Sample {
            kind: A::TYPE,
            schema: A::STATE_SCHEMA,
            json,
            round_trips,
        }
    }
    vec![
        entry(Cart {
            cart_id: "cart-1".into(),
            customer_id: "cust-1".into(),
            status: CartStatus::CheckedOut,
            items: vec![line()],
            total_amount: dec!(25.00),
            order_id: Some("order-1".into()),
            currency: Some(money::SHOP_CURRENCY),
        }),
        entry(Order {
            order_id: "order-1".into(),
            cart_id: "cart-1".into(),
            customer_id: "cust-1".into(),
            status: OrderStatus::Shipped,
            items: vec![line()],
            total_amount: dec!(25.00),
            payment_method: "pm_1".into(),
            shipping_address: Some(PersonalAddress {
                name: sealed(1),
                line1: sealed(2),
                line2: Some(sealed(3)),
                city: sealed(4),
                postal_code: sealed(5),
                country_code: Some(CountryCode::parse("countryCode", "GB").expect("a country")),
                unrecognised_country: Some("Albion".into()),
            }),
            email: sealed(6),
            phone: Some(sealed(7)),
            payment_id: Some("pay-1".into()),
            carrier: Some("DHL".into()),
            tracking_number: Some("T1".into()),
            cancel_reason: Some("no".into()),
            currency: Some(money::SHOP_CURRENCY),
        }),
        entry(Payment {
            payment_id: "pay-1".into(),
            order_id: "order-1".into(),
            customer_id: "cust-1".into(),
            amount: dec!(25.00),
            status: PaymentStatus::Refunded,
            authorization_code: Some("A1".into()),
            transaction_id: Some("T1".into()),
            failure_code: Some("F".into()),
            failure_reason: Some("f".into()),
            refund_reason: Some("r".into()),
            currency: Some(money::SHOP_CURRENCY),
        }),
        entry(Inventory {
            sku: "MUG".into(),
            name: "Mug".into(),
            unit_price: dec!(12.50),
            available: 7,
            reserved: 2,
            low_stock_threshold: 3,
            low_stock_alerted: true,
            reservations: BTreeMap::from([("order-1".into(), 2)]),
            exists: true,
            currency: Some(money::SHOP_CURRENCY),
        }),
        entry(Customer {
            customer_id: "cust-1".into(),
            erased: true,
            erased_key_ids: vec!["dk_1".into()],
        }),
    ]
}

/// The shape of each state under its schema number: its fields, sorted, each with the
/// shape of its value (`string`, `number`, `bool`, `[item]`, `{fields}`). A map's entry
/// shows under its sample key (`reservations` has the key `order-1`).
const SHAPES: &[(AggregateType, u32, &str)] = &[
    (
        AggregateType::Cart,
        1,
        "{cartId:string,customerId:string,items:[{name:string,quantity:number,sku:string,\
         unitPrice:string}],orderId:string,status:string,totalAmount:string}",
    ),
    (
        AggregateType::Order,
        1,
        "{cancelReason:string,carrier:string,cartId:string,customerId:string,\
         email:{keyId:string,sealed:string},items:[{name:string,quantity:number,sku:string,\
         unitPrice:string}],orderId:string,paymentId:string,paymentMethod:string,\
         phone:{keyId:string,sealed:string},shippingAddress:{city:{keyId:string,\
         sealed:string},country:string,line1:{keyId:string,sealed:string},line2:{keyId:string,\
         sealed:string},name:{keyId:string,sealed:string},postalCode:{keyId:string,\
         sealed:string}},status:string,totalAmount:string,trackingNumber:string}",
    ),
    (
        AggregateType::Payment,
        1,
        "{amount:string,authorizationCode:string,customerId:string,failureCode:string,\
         failureReason:string,orderId:string,paymentId:string,refundReason:string,\
         status:string,transactionId:string}",
    ),
    (
        AggregateType::Inventory,
        1,
        "{available:number,exists:bool,lowStockAlerted:bool,lowStockThreshold:number,\
         name:string,reservations:{order-1:number},reserved:number,sku:string,\
         unitPrice:string}",
    ),
    (
        AggregateType::Cart,
        2,
        "{cartId:string,currency:string,customerId:string,items:[{name:string,\
         quantity:number,sku:string,unitPrice:string}],orderId:string,status:string,\
         totalAmount:string}",
    ),
    (
        AggregateType::Order,
        2,
        "{cancelReason:string,carrier:string,cartId:string,currency:string,\
         customerId:string,email:{keyId:string,sealed:string},items:[{name:string,\
         quantity:number,sku:string,unitPrice:string}],orderId:string,paymentId:string,\
         paymentMethod:string,phone:{keyId:string,sealed:string},\
         shippingAddress:{city:{keyId:string,sealed:string},countryCode:string,\
         line1:{keyId:string,sealed:string},line2:{keyId:string,sealed:string},\
         name:{keyId:string,sealed:string},postalCode:{keyId:string,sealed:string},\
         unrecognisedCountry:string},status:string,totalAmount:string,\
         trackingNumber:string}",
    ),
    (
        AggregateType::Payment,
        2,
        "{amount:string,authorizationCode:string,currency:string,customerId:string,\
         failureCode:string,failureReason:string,orderId:string,paymentId:string,\
         refundReason:string,status:string,transactionId:string}",
    ),
    (
        AggregateType::Inventory,
        2,
        "{available:number,currency:string,exists:bool,lowStockAlerted:bool,\
         lowStockThreshold:number,name:string,reservations:{order-1:number},\
         reserved:number,sku:string,unitPrice:string}",
    ),
    (
        AggregateType::Customer,
        1,
        "{customerId:string,erased:bool,erasedKeyIds:[string]}",
    ),
];

fn shape(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(_) => "bool".into(),
        Value::Number(_) => "number".into(),
        Value::String(_) => "string".into(),
        Value::Array(items) => format!("[{}]", items.first().map(shape).unwrap_or_default()),
        // Sorted here: serde_json keeps the fields in order written when another crate of
        // the build turns its `preserve_order` on.
        Value::Object(fields) => {
            let mut fields: Vec<String> = fields
                .iter()
                .map(|(name, value)| format!("{name}:{}", shape(value)))
                .collect();
            fields.sort();
            format!("{{{}}}", fields.join(","))
        }
    }
}

#[test]
fn the_shape_of_each_state_is_the_one_its_schema_names() {
    for Sample {
        kind, schema, json, ..
    } in samples()
    {
        let pinned = SHAPES
            .iter()
            .find(|(k, s, _)| *k == kind && *s == schema)
            .unwrap_or_else(|| {
                panic!(
                    "{kind}'s STATE_SCHEMA is {schema}, which SHAPES does not list: write \
                     its shape there ({})",
                    shape(&json)
                )
            });
        assert_eq!(
            shape(&json),
            pinned.2,
            "{kind}'s state changed its shape under STATE_SCHEMA {schema}: bump \
             {kind}::STATE_SCHEMA (old snapshots are then ignored) and pin the new shape \
             under the new number"
        );
    }
}

#[test]
fn every_state_reads_back_as_itself() {
    for Sample {
        kind,
        json,
        round_trips,
        ..
    } in samples()
    {
        assert!(round_trips(&json), "{kind}: {json}");
    }
}

#[test]
fn a_state_with_a_field_it_does_not_have_is_refused() {
    let mut json = serde_json::to_value(Inventory::default()).unwrap();
    json["sku"] = "MUG".into();
    assert!(serde_json::from_value::<Inventory>(json.clone()).is_ok());
    json["warehouse"] = "north".into();
    assert!(serde_json::from_value::<Inventory>(json).is_err());
}
