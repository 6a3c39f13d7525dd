//! Whatever the numbers and the text, no aggregate panics: arbitrary decimals (any of the
//! 96-bit mantissas at any scale, and the extremes), quantities, and strings with control
//! characters go through every command of every aggregate, and arbitrary events (as an
//! older or buggy writer could have stored them) go through every `evolve`. A refusal is a
//! `DomainError`; every event `decide` emits is a shop event (bounded money).
//!
//! Ids, SKUs, contact details, prices and line quantities are parsed before a command is
//! made (`values`): arbitrary text and numbers go through those parsers here, and what
//! they accept goes on into the commands.

use cornershop_domain::money::{MAX_AMOUNT, MAX_UNIT_PRICE};
use cornershop_domain::*;
use proptest::prelude::*;
use rust_decimal::Decimal;

fn any_decimal() -> impl Strategy<Value = Decimal> {
    prop_oneof![
        (
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            any::<bool>(),
            0u32..=28
        )
            .prop_map(|(lo, mid, hi, negative, scale)| Decimal::from_parts(
                lo, mid, hi, negative, scale
            )),
        Just(Decimal::MAX),
        Just(Decimal::MIN),
        Just(Decimal::from_parts(0, 0, 0, false, 28)),
        Just(Decimal::from_i128_with_scale(
            100_000_000_000_000_000_000_000_000,
            0
        )),
        (0i64..200_000_000).prop_map(|cents| Decimal::new(cents, 2)),
    ]
}

fn any_quantity() -> impl Strategy<Value = i64> {
    prop_oneof![
        any::<i64>(),
        -2i64..2_000,
        Just(i64::MAX),
        Just(i64::MIN),
        Just(u32::MAX as i64)
    ]
}

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "(?s).{0,12}",
        "[a-z]{1,8}",
        Just(String::new()),
        Just("a\u{0}b".to_string()),
        Just(".".to_string()),
        Just("..".to_string()),
    ]
}

/// What a parser makes of arbitrary input, or `fallback` when it refuses it.
fn parsed<T: std::str::FromStr>(text: &str, fallback: &str) -> T {
    text.parse()
        .or_else(|_| fallback.parse())
        .unwrap_or_else(|_| panic!("the fallback {fallback:?} parses"))
}

fn any_price() -> impl Strategy<Value = Money> {
    any_decimal().prop_map(|d| Money::parse("unitPrice", d, MAX_UNIT_PRICE).unwrap_or(Money::ZERO))
}

/// The shop's currency mostly, another now and then (a cart refuses to mix them).
fn any_currency() -> impl Strategy<Value = Currency> {
    prop_oneof![4 => Just(Currency::GBP), 1 => Just(Currency::from("EUR"))]
}

fn any_line_quantity() -> impl Strategy<Value = Quantity> {
    any_quantity().prop_map(|q| Quantity::parse(q).unwrap_or_else(|_| Quantity::from(1)))
}

fn address() -> ShippingAddress {
    ShippingAddress {
        name: "Ada".into(),
        line1: "1 Row".into(),
        line2: None,
        city: "London".into(),
        postal_code: "N1".into(),
        country_code: "GB".into(),
    }
}

fn cart_command() -> impl Strategy<Value = CartCommand> {
    prop_oneof![
        (any_text(), any_text()).prop_map(|(cart_id, customer_id)| CartCommand::Create {
            cart_id: parsed(&cart_id, "c-1"),
            customer_id: parsed(&customer_id, "cust"),
        }),
        (any_text(), any_text(), any_price(), any_line_quantity()).prop_map(
            |(sku, name, unit_price, quantity)| {
                CartCommand::AddItem {
                    sku: parsed(&sku, "A"),
                    name,
                    unit_price,
                    currency: Currency::GBP,
                    quantity,
                }
            }
        ),
        ("[A-C]", any_price(), any_currency(), any_line_quantity()).prop_map(
            |(sku, unit_price, currency, quantity)| {
                CartCommand::AddItem {
                    sku: parsed(&sku, "A"),
                    name: "n".into(),
                    unit_price,
                    currency,
                    quantity,
                }
            }
        ),
        any_text().prop_map(|sku| CartCommand::RemoveItem {
            sku: parsed(&sku, "B")
        }),
        (any_text(), any_text()).prop_map(|(payment_method, email)| CartCommand::Checkout {
            order_id: "o-1".into(),
            payment_method,
            shipping_address: address(),
            email: parsed(&email, "a@b.co"),
            phone: None,
        }),
        Just(CartCommand::Checkout {
            order_id: "o-1".into(),
            payment_method: "tok".into(),
            shipping_address: address(),
            email: "a@b.co".into(),
            phone: Some("+44 20 7946 0000".into()),
        }),
        Just(CartCommand::Expire),
    ]
}

fn inventory_command() -> impl Strategy<Value = InventoryCommand> {
    prop_oneof![
        (
            any_text(),
            any_text(),
            any_price(),
            any_quantity(),
            any_quantity()
        )
            .prop_map(|(sku, name, unit_price, quantity, low_stock_threshold)| {
                InventoryCommand::Set {
                    sku: parsed(&sku, "SKU-1"),
                    name,
                    unit_price,
                    currency: Currency::GBP,
                    quantity,
                    low_stock_threshold,
                }
            }),
        (any_price(), 0i64..5_000).prop_map(|(unit_price, quantity)| InventoryCommand::Set {
            sku: "SKU-1".into(),
            name: "n".into(),
            unit_price,
            currency: Currency::GBP,
            quantity,
            low_stock_threshold: 3,
        }),
        ("o-[0-3]", any::<u32>()).prop_map(|(order_id, quantity)| InventoryCommand::Reserve {
            order_id: order_id.into(),
            quantity
        }),
        ("o-[0-3]", any_text()).prop_map(|(order_id, reason)| InventoryCommand::Release {
            order_id: order_id.into(),
            reason
        }),
        "o-[0-3]".prop_map(|order_id| InventoryCommand::Ship {
            order_id: order_id.into()
        }),
    ]
}

fn checked_out(items: Vec<LineItem>, total_amount: Decimal) -> CartCheckedOut {
    CartCheckedOut {
        cart_id: "c-1".into(),
        order_id: "o-1".into(),
        customer_id: "cust".into(),
        items,
        total_amount,
        currency: Currency::GBP,
        payment_method: "tok".into(),
        shipping_address: (&address()).into(),
        email: "a@b.co".into(),
        phone: None,
    }
}

fn line() -> impl Strategy<Value = LineItem> {
    (any_text(), any::<u32>(), any_decimal()).prop_map(|(sku, quantity, unit_price)| LineItem {
        sku: parsed(&sku, "A"),
        name: "n".into(),
        quantity,
        unit_price,
    })
}

fn order_command() -> impl Strategy<Value = OrderCommand> {
    prop_oneof![
        (prop::collection::vec(line(), 0..4), any_decimal())
            .prop_map(|(items, total)| OrderCommand::Create(Box::new(checked_out(items, total)))),
        Just(OrderCommand::Validate),
        any_text().prop_map(|payment_id| OrderCommand::Confirm {
            payment_id: parsed(&payment_id, "p-1")
        }),
        (any_text(), any_text()).prop_map(|(carrier, tracking_number)| OrderCommand::Ship {
            carrier,
            tracking_number
        }),
        Just(OrderCommand::Deliver),
        any_text().prop_map(|reason| OrderCommand::Cancel { reason }),
    ]
}

fn payment_command() -> impl Strategy<Value = PaymentCommand> {
    prop_oneof![
        (any_decimal(), any_text()).prop_map(|(amount, payment_method)| PaymentCommand::Initiate {
            payment_id: "p-1".into(),
            order_id: "o-1".into(),
            customer_id: "cust".into(),
            amount: Money::parse("amount", amount, MAX_AMOUNT).unwrap_or(Money::ZERO),
            currency: Currency::GBP,
            payment_method,
        }),
        any_text().prop_map(|authorization_code| PaymentCommand::Authorize { authorization_code }),
        any_text().prop_map(|transaction_id| PaymentCommand::Complete { transaction_id }),
        (any_text(), any_text()).prop_map(|(code, reason)| PaymentCommand::Fail { code, reason }),
        any_text().prop_map(|reason| PaymentCommand::Refund { reason }),
    ]
}

/// Events as an unbounded writer could have stored them.
fn stored_event() -> impl Strategy<Value = DomainEvent> {
    prop_oneof![
        (any::<u32>(), any_decimal()).prop_map(|(quantity, unit_price)| DomainEvent::from(
            ItemAddedToCart {
                cart_id: "c-1".into(),
                sku: "A".into(),
                name: "n".into(),
                quantity,
                unit_price,
                currency: Currency::GBP,
            }
        )),
        (any::<u32>(), any::<u32>(), any_decimal()).prop_map(
            |(quantity, low_stock_threshold, unit_price)| {
                DomainEvent::from(StockUpdated {
                    sku: "SKU-1".into(),
                    name: "n".into(),
                    unit_price,
                    currency: Currency::GBP,
                    quantity,
                    low_stock_threshold,
                })
            }
        ),
        ("o-[0-3]", any::<u32>()).prop_map(|(order_id, quantity)| DomainEvent::from(
            StockReserved {
                sku: "SKU-1".into(),
                order_id: order_id.into(),
                quantity,
            }
        )),
        ("o-[0-3]", any::<u32>()).prop_map(|(order_id, quantity)| DomainEvent::from(
            StockReleased {
                sku: "SKU-1".into(),
                order_id: order_id.into(),
                quantity,
                reason: "r".into(),
            }
        )),
        ("o-[0-3]", any::<u32>()).prop_map(|(order_id, quantity)| DomainEvent::from(
            StockShipped {
                sku: "SKU-1".into(),
                order_id: order_id.into(),
                quantity,
            }
        )),
    ]
}

/// Applies each command the way the write side does (a refused one changes nothing) and
/// checks that every emitted event carries shop money.
fn drive<A: Aggregate>(mut state: A, commands: &[A::Command]) -> Result<A, TestCaseError> {
    for command in commands {
        if let Ok(events) = state.decide(command) {
            for event in &events {
                prop_assert!(bounded(event), "decide emitted unbounded money: {event:?}");
                state = state.evolve(event);
            }
        }
    }
    Ok(state)
}

fn bounded(event: &DomainEvent) -> bool {
    let price_ok =
        |p: Decimal| p >= Decimal::ZERO && p <= MAX_UNIT_PRICE && p.normalize().scale() <= 2;
    let amount_ok =
        |a: Decimal| a >= Decimal::ZERO && a <= MAX_AMOUNT && a.normalize().scale() <= 2;
    match event {
        DomainEvent::ItemAddedToCart(e) => price_ok(e.unit_price),
        DomainEvent::StockUpdated(e) => price_ok(e.unit_price),
        DomainEvent::CartCheckedOut(e) => amount_ok(e.total_amount),
        DomainEvent::OrderCreated(e) => amount_ok(e.total_amount),
        DomainEvent::PaymentInitiated(e) => amount_ok(e.amount),
        _ => true,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn values_parse_any_input_or_refuse_it_by_name(
        text in any_text(),
        amount in any_decimal(),
        count in any_quantity(),
    ) {
        let refusals = [
            CartId::parse(&text).err(),
            OrderId::parse(&text).err(),
            PaymentId::parse(&text).err(),
            CustomerId::parse(&text).err(),
            Sku::parse(&text).err(),
            Email::parse(&text).err(),
            Phone::parse(&text).err(),
            Money::parse("unitPrice", amount, MAX_UNIT_PRICE).err(),
            Quantity::parse(count).err(),
        ];
        for refusal in refusals.into_iter().flatten() {
            prop_assert!(refusal.message.starts_with(refusal.field), "{refusal:?}");
        }
    }

    #[test]
    fn carts_take_any_input(commands in prop::collection::vec(cart_command(), 0..12)) {
        let mut all = vec![CartCommand::Create { cart_id: "c-1".into(), customer_id: "cust".into() }];
        all.extend(commands);
        let cart = drive(Cart::default(), &all)?;
        if let Some(total) = total_of(&cart.items) {
            prop_assert_eq!(cart.total_amount, total);
        }
    }

    #[test]
    fn inventory_takes_any_input(commands in prop::collection::vec(inventory_command(), 0..12)) {
        let stock = drive(Inventory::default(), &commands)?;
        prop_assert_eq!(stock.reserved, stock.reservations.values().sum::<u32>());
    }

    #[test]
    fn orders_take_any_input(commands in prop::collection::vec(order_command(), 0..8)) {
        drive(Order::default(), &commands)?;
    }

    #[test]
    fn payments_take_any_input(commands in prop::collection::vec(payment_command(), 0..8)) {
        drive(Payment::default(), &commands)?;
    }

    #[test]
    fn stored_events_of_any_size_fold_and_decide_without_panic(
        events in prop::collection::vec(stored_event(), 0..10),
        cart_commands in prop::collection::vec(cart_command(), 0..6),
        stock_commands in prop::collection::vec(inventory_command(), 0..6),
    ) {
        let cart: Cart = fold(events.iter());
        drive(cart, &cart_commands)?;
        let stock: Inventory = fold(events.iter());
        drive(stock, &stock_commands)?;
    }
}
