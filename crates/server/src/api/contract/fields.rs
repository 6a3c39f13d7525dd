//! The rules of the bodies' fields and the operations' parameters (lengths, patterns,
//! bounds, enums), from the constants the checks use.

use cornershop_domain::aggregates::cart::MAX_LINE_QUANTITY;
use cornershop_domain::aggregates::inventory::MAX_STOCK;
use cornershop_domain::money::{MAX_AMOUNT, MAX_UNIT_PRICE};
use cornershop_domain::values::SKU_PATTERN;
use cornershop_domain::{AggregateType, DomainEvent};
use cornershop_readmodels::PROJECTIONS;
use cornershop_store::notification_status;
use serde_json::{json, Value};

use super::*;
use crate::api::eventstore::MAX_PAGE;
use crate::api::orders::MAX_ORDERS_PAGE;

// ---- The rules of fields and parameters ------------------------------------------------

pub(super) fn body_rules(doc: &mut Value) {
    let stock = json!({ "minimum": 0, "maximum": MAX_STOCK });

    property(
        doc,
        "CreateCart/customerId",
        example(text(200), json!("cust-1")),
    );

    property(
        doc,
        "AddItem/sku",
        example(json!({ "pattern": SKU_PATTERN }), json!("SKU-1")),
    );
    property(
        doc,
        "AddItem/quantity",
        example(
            json!({ "minimum": 1, "maximum": MAX_LINE_QUANTITY }),
            json!(2),
        ),
    );

    property(
        doc,
        "Checkout/paymentToken",
        example(text(200), json!("tok_visa")),
    );
    property(
        doc,
        "Checkout/email",
        example(email(), json!("ada@example.com")),
    );
    property(
        doc,
        "Checkout/phone",
        example(phone(), json!("+44 20 7946 0958")),
    );
    property(
        doc,
        "ShippingAddress/name",
        example(text(200), json!("Ada Lovelace")),
    );
    property(
        doc,
        "ShippingAddress/line1",
        example(text(200), json!("12 St James's Square")),
    );
    property(
        doc,
        "ShippingAddress/line2",
        example(plain_text(200), json!("Flat 3")),
    );
    property(
        doc,
        "ShippingAddress/city",
        example(text(100), json!("London")),
    );
    property(
        doc,
        "ShippingAddress/postalCode",
        example(text(20), json!("SW1Y 4JH")),
    );
    // The country, by either name (never null: a given field holds a code), and at least
    // one of them. (That two given fields agree is a rule between fields, which
    // scripts/fuzz/hooks.py teaches the fuzzer.)
    for field in ["ShippingAddress/countryCode", "ShippingAddress/country"] {
        replace_property(doc, field, example(country_code(), json!("GB")));
    }
    at(doc, "/components/schemas/ShippingAddress")["anyOf"] =
        json!([{ "required": ["countryCode"] }, { "required": ["country"] }]);

    property(
        doc,
        "PutStock/name",
        example(text(200), json!("Espresso beans, 1 kg")),
    );
    replace_property(doc, "PutStock/unitPrice", money(MAX_UNIT_PRICE));
    property(
        doc,
        "PutStock/quantity",
        example(stock.clone(), json!(100_000)),
    );
    property(doc, "PutStock/lowStockThreshold", example(stock, json!(5)));

    property(doc, "ShipOrder/carrier", example(text(100), json!("UPS")));
    property(
        doc,
        "ShipOrder/trackingNumber",
        example(text(100), json!("1Z999AA10123456784")),
    );
    property(
        doc,
        "CancelOrder/reason",
        example(text(500), json!("ordered by mistake")),
    );
}

pub(super) fn parameter_rules(doc: &mut Value) {
    let sku = json!({ "pattern": SKU_PATTERN, "examples": ["SKU-1"] });
    for id in ["put_stock/sku", "get_stock/sku", "remove_item/sku"] {
        parameter(doc, id, sku.clone());
    }
    for id in [
        "get_cart/cartId",
        "add_item/cartId",
        "remove_item/cartId",
        "checkout/cartId",
        "get_order/orderId",
        "timeline/orderId",
        "ship/orderId",
        "deliver/orderId",
        "cancel/orderId",
        "replay/aggregateId",
    ] {
        parameter(doc, id, segment());
    }
    for id in [
        "customer_orders/customerId",
        "export_personal_data/customerId",
        "erase_personal_data/customerId",
    ] {
        parameter(doc, id, segment_not_blank());
    }

    // Orders: filters and pages.
    let order_page = json!({ "minimum": 1, "maximum": MAX_ORDERS_PAGE });
    // An opaque cursor: the hex of `v1:<created microseconds>:<order id>`, as the
    // previous page's `nextCursor` gave it.
    let cursor = json!({
        "pattern": r"^76313[aA](2[bBdD])?(3[0-9]){1,18}3[aA]([0-7][0-9a-fA-F]){0,480}$",
        "maxLength": 1024,
    });
    for id in ["list_orders", "customer_orders"] {
        parameter(doc, &format!("{id}/status"), status_list());
        parameter(doc, &format!("{id}/limit"), order_page.clone());
        parameter(doc, &format!("{id}/cursor"), cursor.clone());
    }
    parameter(doc, "list_orders/customerId", not_blank());
    parameter(doc, "list_orders/minTotal", money_text(MAX_AMOUNT));

    // Reports.
    parameter(doc, "sales/groupBy", json!({ "enum": ["hour", "day"] }));
    parameter(doc, "sales/top", json!({ "minimum": 1, "maximum": 100 }));
    parameter(doc, "rebuild/name", json!({ "enum": PROJECTIONS }));

    // The event store.
    let aggregate_types: Vec<&str> = AggregateType::ALL.iter().map(|t| t.as_str()).collect();
    parameter(
        doc,
        "replay/aggregateType",
        one_of_any_case(&aggregate_types),
    );
    parameter(
        doc,
        "events/aggregateType",
        one_of_any_case(&aggregate_types),
    );
    parameter(
        doc,
        "events/eventType",
        json!({ "enum": DomainEvent::TYPES }),
    );
    parameter(
        doc,
        "events/limit",
        json!({ "minimum": 1, "maximum": MAX_PAGE }),
    );
    parameter(doc, "events/after", json!({ "maximum": u64::MAX }));

    // A window's start after its end is refused (400).
    for (id, end) in [
        ("list_orders/from", "`to`"),
        ("sales/from", "`to`"),
        ("replay/fromDate", "`toDate`"),
    ] {
        describe(
            doc,
            id,
            &format!("Not after {end}, when both are given (else 400)."),
        );
    }

    // Dead letters and notifications.
    parameter(
        doc,
        "list_dead_letters/status",
        json!({ "enum": ["pending", "resolved"] }),
    );
    parameter(doc, "retry/id", json!({ "maximum": u64::MAX }));
    parameter(
        doc,
        "list_notifications/channel",
        json!({ "enum": ["email", "sms", "push"] }),
    );
    parameter(
        doc,
        "list_notifications/status",
        json!({ "enum": notification_status::ALL }),
    );
}
