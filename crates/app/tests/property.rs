//! Property: for random command sequences run through the command bus on a real SQLite
//! store, folding the stored events gives exactly the state and version the write side
//! reported, versions are 1..=n, and the pure domain (the accepted commands run through
//! the domain's spec harness, `given_nothing().when_all(…).then_accepted()`) agrees on
//! every accepted command, every refusal, every event and the state.

use cornershop_store::EventLog;
use std::fmt::Debug;
use std::sync::Arc;

use chrono::{TimeZone, Utc};
use cornershop_app::clock::ManualClock;
use cornershop_app::{fold_stored, AppError, CommandBus, CommandContext};
use cornershop_domain::spec::given_nothing;
use cornershop_domain::{
    fold, Aggregate, Cart, CartCheckedOut, CartCommand, DomainEvent, Inventory, InventoryCommand,
    Money, Order, OrderCommand, Payment, PaymentCommand, Quantity, ShippingAddress,
};
use cornershop_store::{EventStore, SqliteEventStore, TimeRange};
use proptest::prelude::*;
use rust_decimal::Decimal;

const SKUS: [&str; 4] = ["MUG", "TEE", "CAP", "PEN-2"];

struct Harness {
    _dir: tempfile::TempDir,
    sqlite: Arc<SqliteEventStore>,
    store: Arc<dyn EventStore>,
    clock: Arc<ManualClock>,
    bus: CommandBus,
}

impl Harness {
    async fn new() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let sqlite = Arc::new(
            SqliteEventStore::open(dir.path())
                .await
                .expect("open store"),
        );
        let store: Arc<dyn EventStore> = sqlite.clone();
        let clock = Arc::new(ManualClock::new(
            Utc.with_ymd_and_hms(2024, 3, 1, 8, 0, 0).unwrap(),
        ));
        let keyring = Arc::new(cornershop_app::Keyring::ephemeral(store.clone()));
        let bus = CommandBus::new(store.clone(), clock.clone(), keyring);
        Self {
            _dir: dir,
            sqlite,
            store,
            clock,
            bus,
        }
    }

    async fn close(self) {
        self.sqlite.close().await;
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn cents(c: u32) -> Decimal {
    Decimal::new(c as i64, 2)
}

fn address() -> ShippingAddress {
    ShippingAddress {
        name: "Grace Hopper".into(),
        line1: "2 Compiler Road".into(),
        line2: Some("Flat 3".into()),
        city: "Arlington".into(),
        postal_code: "22201".into(),
        country_code: "US".into(),
    }
}

fn decoded(events: &[cornershop_store::StoredEvent]) -> Vec<DomainEvent> {
    events
        .iter()
        .map(|e| e.envelope.decode().expect("stored events decode"))
        .collect()
}

/// What running a sequence produced on the write side.
struct Outcome<A> {
    state: A,
    version: u64,
    accepted: usize,
}

/// Events as JSON, to compare sealed ones with clear ones once opened.
fn events_json(events: &[DomainEvent]) -> serde_json::Value {
    events
        .iter()
        .map(|e| serde_json::json!({ "type": e.event_type(), "data": e.data() }))
        .collect()
}

/// `value` with every sealed personal value inside opened.
async fn opened(h: &Harness, value: &serde_json::Value) -> serde_json::Value {
    let mut value = value.clone();
    h.bus
        .keyring()
        .reveal(&mut value, &|_| true)
        .await
        .expect("the test's keys open");
    value
}

/// Runs `commands` through the bus one by one (advancing the clock between them), skipping
/// refused ones, and checks the write side against the store and the pure domain.
async fn run_and_check<A>(
    h: &Harness,
    id: &str,
    commands: &[A::Command],
) -> Result<Outcome<A>, TestCaseError>
where
    A: Aggregate,
    A::Command: Clone + Debug,
{
    let ctx = CommandContext::new_root();
    let mut state = A::default();
    let mut version = 0u64;
    let mut accepted: Vec<A::Command> = Vec::new();

    for command in commands {
        h.clock.advance(chrono::Duration::milliseconds(7));
        let expected = state.decide(command);
        match h.bus.execute::<A>(id, command, &ctx).await {
            Ok(executed) => {
                let expected = expected.map_err(|e| {
                    TestCaseError::fail(format!(
                        "the bus accepted {command:?}, which the domain refuses: {e}"
                    ))
                })?;
                prop_assert_eq!(
                    opened(h, &events_json(&decoded(&executed.events))).await,
                    opened(h, &events_json(&expected)).await
                );
                prop_assert_eq!(executed.version, version + expected.len() as u64);
                for (i, e) in executed.events.iter().enumerate() {
                    prop_assert_eq!(e.envelope.version, version + 1 + i as u64);
                    prop_assert_eq!(e.envelope.timestamp, cornershop_app::Clock::now(&*h.clock));
                    prop_assert_eq!(&e.envelope.aggregate_id, id);
                    prop_assert_eq!(e.envelope.aggregate_type, A::TYPE);
                }
                state = executed.state;
                version = executed.version;
                accepted.push(command.clone());
            }
            Err(AppError::Domain(refusal)) => {
                prop_assert_eq!(expected, Err(refusal), "the bus and the domain disagree");
                let stored = h
                    .store
                    .load_aggregate(A::TYPE, id, TimeRange::default())
                    .await;
                prop_assert_eq!(stored.unwrap().len() as u64, version, "a refusal appended");
            }
            Err(other) => return Err(TestCaseError::fail(format!("{command:?}: {other}"))),
        }
    }

    // The store holds versions 1..=n, and folding them gives the write-side state.
    let stored = h
        .store
        .load_aggregate(A::TYPE, id, TimeRange::default())
        .await
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let versions: Vec<u64> = stored.iter().map(|e| e.envelope.version).collect();
    prop_assert_eq!(versions, (1..=version).collect::<Vec<_>>());
    let (folded, folded_version) =
        fold_stored::<A>(&stored).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&folded, &state);
    prop_assert_eq!(folded_version, version);
    for w in stored.windows(2) {
        prop_assert!(w[0].position < w[1].position);
        prop_assert!(w[0].envelope.timestamp <= w[1].envelope.timestamp);
    }

    // The pure domain, fed only the accepted commands, produces the same events and state.
    // (A command the domain refuses in memory fails the case through the harness's panic.)
    let (in_memory, events) = given_nothing::<A>()
        .when_all(accepted.iter().cloned())
        .then_accepted()
        .into_parts();
    // (The bus seals personal data before it stores or evolves anything; opened, it is
    // what the domain decided.)
    let state_json = opened(h, &serde_json::to_value(&state).unwrap()).await;
    let in_memory = opened(h, &serde_json::to_value(&in_memory).unwrap()).await;
    prop_assert_eq!(in_memory, state_json.clone());
    prop_assert_eq!(
        opened(h, &events_json(&events)).await,
        opened(h, &events_json(&decoded(&stored))).await
    );
    let folded = opened(h, &serde_json::to_value(fold::<A>(&events)).unwrap()).await;
    prop_assert_eq!(folded, state_json);
    prop_assert_eq!(events.len() as u64, version);

    Ok(Outcome {
        state,
        version,
        accepted: accepted.len(),
    })
}

// ---- Cart -----------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum CartOp {
    Create,
    Add {
        sku: usize,
        quantity: i64,
        price_cents: u32,
    },
    Remove {
        sku: usize,
    },
    Checkout {
        valid: bool,
    },
    Expire,
}

fn cart_op() -> impl Strategy<Value = CartOp> {
    prop_oneof![
        1 => Just(CartOp::Create),
        20 => (0..SKUS.len(), 1i64..=50, 1u32..=5_000)
            .prop_map(|(sku, quantity, price_cents)| CartOp::Add { sku, quantity, price_cents }),
        6 => (0..SKUS.len()).prop_map(|sku| CartOp::Remove { sku }),
        1 => prop::bool::weighted(0.8).prop_map(|valid| CartOp::Checkout { valid }),
        1 => Just(CartOp::Expire),
    ]
}

/// Mostly starts with a Create, so that most sequences do something.
fn cart_ops() -> impl Strategy<Value = Vec<CartOp>> {
    (
        prop::bool::weighted(0.9),
        prop::collection::vec(cart_op(), 0..40),
    )
        .prop_map(|(create_first, mut ops)| {
            if create_first {
                ops.insert(0, CartOp::Create);
            }
            ops
        })
}

fn checkout_command(order_id: &str, valid: bool) -> CartCommand {
    CartCommand::Checkout {
        order_id: order_id.into(),
        // (A bad e-mail address or country is refused where it is parsed, before a command
        // exists: an invalid checkout here is one with a blank city.)
        payment_method: "pm_mastercard_test".into(),
        shipping_address: ShippingAddress {
            city: if valid { "Boston" } else { " " }.into(),
            ..address()
        },
        email: "grace@example.com".into(),
        phone: Some("+1 (555) 010-9999".into()),
    }
}

fn cart_command(cart_id: &str, op: &CartOp) -> CartCommand {
    match op {
        CartOp::Create => CartCommand::Create {
            cart_id: cart_id.into(),
            customer_id: "cust-42".into(),
        },
        CartOp::Add {
            sku,
            quantity,
            price_cents,
        } => CartCommand::AddItem {
            sku: SKUS[*sku].into(),
            name: format!("{} ({price_cents})", SKUS[*sku]),
            unit_price: cents(*price_cents).into(),
            currency: cornershop_domain::money::SHOP_CURRENCY,
            quantity: Quantity::from(*quantity as u32),
        },
        CartOp::Remove { sku } => CartCommand::RemoveItem {
            sku: SKUS[*sku].into(),
        },
        CartOp::Checkout { valid } => checkout_command("order-of-cart", *valid),
        CartOp::Expire => CartCommand::Expire,
    }
}

// ---- Inventory ------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum InventoryOp {
    Set {
        quantity: i64,
        threshold: i64,
        price_cents: u32,
        name: usize,
    },
    Reserve {
        order: usize,
        quantity: u32,
    },
    Release {
        order: usize,
    },
    Ship {
        order: usize,
    },
}

fn inventory_op() -> impl Strategy<Value = InventoryOp> {
    prop_oneof![
        2 => (-1i64..=100, 0i64..=20, 0u32..=5_000, 0usize..2).prop_map(
            |(quantity, threshold, price_cents, name)| InventoryOp::Set { quantity, threshold, price_cents, name }
        ),
        5 => (0usize..6, 0u32..=40).prop_map(|(order, quantity)| InventoryOp::Reserve { order, quantity }),
        3 => (0usize..6).prop_map(|order| InventoryOp::Release { order }),
        2 => (0usize..6).prop_map(|order| InventoryOp::Ship { order }),
    ]
}

fn inventory_ops() -> impl Strategy<Value = Vec<InventoryOp>> {
    (
        prop::bool::weighted(0.9),
        0i64..=100,
        prop::collection::vec(inventory_op(), 0..40),
    )
        .prop_map(|(set_first, quantity, mut ops)| {
            if set_first {
                let first = InventoryOp::Set {
                    quantity,
                    threshold: 5,
                    price_cents: 999,
                    name: 0,
                };
                ops.insert(0, first);
            }
            ops
        })
}

fn inventory_command(sku: &str, op: &InventoryOp) -> InventoryCommand {
    match op {
        InventoryOp::Set {
            quantity,
            threshold,
            price_cents,
            name,
        } => InventoryCommand::Set {
            sku: sku.into(),
            name: ["Mug", "Big mug"][*name].to_string(),
            unit_price: cents(*price_cents).into(),
            currency: cornershop_domain::money::SHOP_CURRENCY,
            quantity: *quantity,
            low_stock_threshold: *threshold,
        },
        InventoryOp::Reserve { order, quantity } => InventoryCommand::Reserve {
            order_id: format!("order-{order}").into(),
            quantity: *quantity,
        },
        InventoryOp::Release { order } => InventoryCommand::Release {
            order_id: format!("order-{order}").into(),
            reason: "cancelled".into(),
        },
        InventoryOp::Ship { order } => InventoryCommand::Ship {
            order_id: format!("order-{order}").into(),
        },
    }
}

// ---- Order ----------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum OrderOp {
    CreateAgain,
    Validate,
    Confirm,
    Ship { valid: bool },
    Deliver,
    Cancel { valid: bool },
}

fn order_op() -> impl Strategy<Value = OrderOp> {
    prop_oneof![
        1 => Just(OrderOp::CreateAgain),
        3 => Just(OrderOp::Validate),
        3 => Just(OrderOp::Confirm),
        3 => prop::bool::weighted(0.85).prop_map(|valid| OrderOp::Ship { valid }),
        3 => Just(OrderOp::Deliver),
        1 => prop::bool::weighted(0.85).prop_map(|valid| OrderOp::Cancel { valid }),
    ]
}

/// The lines of the cart the order comes from: (sku, quantity, price in cents).
fn order_lines() -> impl Strategy<Value = Vec<(usize, i64, u32)>> {
    prop::collection::vec((0..SKUS.len(), 1i64..=50, 1u32..=5_000), 1..5)
}

fn order_command(op: &OrderOp, checked_out: &CartCheckedOut) -> OrderCommand {
    match op {
        OrderOp::CreateAgain => OrderCommand::Create(Box::new(checked_out.clone())),
        OrderOp::Validate => OrderCommand::Validate,
        OrderOp::Confirm => OrderCommand::Confirm {
            payment_id: "pay-1".into(),
        },
        OrderOp::Ship { valid } => OrderCommand::Ship {
            carrier: if *valid { "DHL" } else { "  " }.into(),
            tracking_number: "JD0146000033".into(),
        },
        OrderOp::Deliver => OrderCommand::Deliver,
        OrderOp::Cancel { valid } => OrderCommand::Cancel {
            reason: if *valid { "customer asked" } else { "" }.into(),
        },
    }
}

// ---- Payment --------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum PaymentOp {
    Initiate { amount_cents: u32, sub_cent: bool },
    Authorize,
    Complete,
    Fail,
    Refund,
}

fn payment_op() -> impl Strategy<Value = PaymentOp> {
    prop_oneof![
        1 => (0u32..=10_000, prop::bool::weighted(0.1))
            .prop_map(|(amount_cents, sub_cent)| PaymentOp::Initiate { amount_cents, sub_cent }),
        3 => Just(PaymentOp::Authorize),
        3 => Just(PaymentOp::Complete),
        1 => Just(PaymentOp::Fail),
        2 => Just(PaymentOp::Refund),
    ]
}

fn payment_ops() -> impl Strategy<Value = Vec<PaymentOp>> {
    (
        prop::bool::weighted(0.9),
        1u32..=10_000,
        prop::collection::vec(payment_op(), 0..20),
    )
        .prop_map(|(initiate_first, amount_cents, mut ops)| {
            if initiate_first {
                ops.insert(
                    0,
                    PaymentOp::Initiate {
                        amount_cents,
                        sub_cent: false,
                    },
                );
            }
            ops
        })
}

fn payment_command(payment_id: &str, op: &PaymentOp) -> PaymentCommand {
    match op {
        PaymentOp::Initiate {
            amount_cents,
            sub_cent,
        } => PaymentCommand::Initiate {
            payment_id: payment_id.into(),
            order_id: "order-1".into(),
            customer_id: "cust-42".into(),
            currency: cornershop_domain::money::SHOP_CURRENCY,
            // A third decimal place is refused where an amount is parsed
            // (`Money::parse`); what the domain itself refuses is an amount of zero.
            amount: if *sub_cent {
                Money::ZERO
            } else {
                cents(*amount_cents).into()
            },
            payment_method: "pm_visa_test".into(),
        },
        PaymentOp::Authorize => PaymentCommand::Authorize {
            authorization_code: "AUTH-1".into(),
        },
        PaymentOp::Complete => PaymentCommand::Complete {
            transaction_id: "TXN-1".into(),
        },
        PaymentOp::Fail => PaymentCommand::Fail {
            code: "card_declined".into(),
            reason: "declined by issuer".into(),
        },
        PaymentOp::Refund => PaymentCommand::Refund {
            reason: "returned".into(),
        },
    }
}

// ---- properties ------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn cart_sequences_fold_back_to_the_write_side_state(ops in cart_ops()) {
        runtime().block_on(async {
            let h = Harness::new().await;
            let commands: Vec<CartCommand> = ops.iter().map(|op| cart_command("cart-p", op)).collect();
            let outcome = run_and_check::<Cart>(&h, "cart-p", &commands).await?;
            // Cart invariants on the final state.
            let total: Decimal = outcome.state.items.iter().map(|l| l.line_total().unwrap()).sum();
            prop_assert_eq!(outcome.state.total_amount, total);
            prop_assert!(outcome.state.items.iter().all(|l| (1..=999).contains(&l.quantity)));
            h.close().await;
            Ok(())
        })?;
    }

    #[test]
    fn inventory_sequences_fold_back_to_the_write_side_state(ops in inventory_ops()) {
        runtime().block_on(async {
            let h = Harness::new().await;
            let commands: Vec<InventoryCommand> =
                ops.iter().map(|op| inventory_command("SKU-P.1", op)).collect();
            let outcome = run_and_check::<Inventory>(&h, "SKU-P.1", &commands).await?;
            // Inventory invariants: reserved units are exactly the open reservations.
            let inv = &outcome.state;
            prop_assert_eq!(inv.reserved, inv.reservations.values().sum::<u32>());
            prop_assert!(inv.reservations.values().all(|&q| q > 0));
            h.close().await;
            Ok(())
        })?;
    }

    #[test]
    fn order_sequences_fold_back_to_the_write_side_state(
        lines in order_lines(),
        ops in prop::collection::vec(order_op(), 0..20),
    ) {
        runtime().block_on(async {
            let h = Harness::new().await;
            // The order is created from a real checkout of a cart run through the bus.
            let mut cart_commands = vec![cart_command("cart-o", &CartOp::Create)];
            cart_commands.extend(lines.iter().map(|&(sku, quantity, price_cents)| {
                cart_command("cart-o", &CartOp::Add { sku, quantity, price_cents })
            }));
            cart_commands.push(checkout_command("order-p", true));
            let cart = run_and_check::<Cart>(&h, "cart-o", &cart_commands).await?;
            prop_assert_eq!(cart.accepted, cart_commands.len(), "the setup cart is valid");
            let stored = h.store.load_aggregate(Cart::TYPE, "cart-o", TimeRange::default()).await.unwrap();
            let Some(DomainEvent::CartCheckedOut(checked_out)) = decoded(&stored).pop() else {
                return Err(TestCaseError::fail("the cart's last event is not CartCheckedOut"));
            };
            prop_assert_eq!(&checked_out.items, &cart.state.items);

            let mut commands = vec![OrderCommand::Create(Box::new(checked_out.clone()))];
            commands.extend(ops.iter().map(|op| order_command(op, &checked_out)));
            let order = run_and_check::<Order>(&h, "order-p", &commands).await?;
            prop_assert!(order.version >= 1, "the order was created");
            prop_assert_eq!(&order.state.items, &checked_out.items);
            prop_assert_eq!(order.state.total_amount, checked_out.total_amount);
            h.close().await;
            Ok(())
        })?;
    }

    #[test]
    fn payment_sequences_fold_back_to_the_write_side_state(ops in payment_ops()) {
        runtime().block_on(async {
            let h = Harness::new().await;
            let commands: Vec<PaymentCommand> =
                ops.iter().map(|op| payment_command("pay-p", op)).collect();
            let outcome = run_and_check::<Payment>(&h, "pay-p", &commands).await?;
            // A completed (or refunded) payment went through authorization.
            if matches!(
                outcome.state.status,
                cornershop_domain::PaymentStatus::Completed | cornershop_domain::PaymentStatus::Refunded
            ) {
                prop_assert!(outcome.state.authorization_code.is_some());
                prop_assert!(outcome.state.transaction_id.is_some());
            }
            h.close().await;
            Ok(())
        })?;
    }
}
