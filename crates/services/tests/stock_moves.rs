//! ARCHITECTURE.md's invariant "the inventory-service alone reserves, releases and ships
//! for orders", checked on a real workflow: the order, inventory and payment services run
//! as consumers of an embedded store, and orders take every path that moves stock (paid
//! and shipped, card declined, a short line, cancelled after payment). Then every stock
//! event of an order must have been sent by the inventory-service, in reaction to an event
//! it reacts to: its command key (`inventory-service:<cause>:<step>:<sku>`) is on record.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cornershop_app::{CommandBus, CommandContext, SystemClock};
use cornershop_domain::{
    CartCommand, DomainEvent, EventType, Inventory, InventoryCommand, Order, OrderCommand,
    OrderStatus, Quantity, ShippingAddress,
};
use cornershop_messaging::{run_embedded, RetryPolicy};
use cornershop_services::inventory::InventoryService;
use cornershop_services::{
    consumers, Reaction, Service, ServicesConfig, SimulatedGateway, SimulatedGatewayConfig,
};
use cornershop_store::{EventStore, SqliteEventStore, StoredEvent};
use rust_decimal_macros::dec;
use tokio::sync::watch;

async fn stock(bus: &CommandBus, sku: &str, quantity: i64) {
    let set = InventoryCommand::Set {
        sku: sku.into(),
        name: format!("product {sku}"),
        unit_price: dec!(3.00).into(),
        currency: cornershop_domain::money::SHOP_CURRENCY,
        quantity,
        low_stock_threshold: 0,
    };
    bus.execute::<Inventory>(sku, &set, &CommandContext::new_root())
        .await
        .expect("stock a product");
}

/// Checks a cart of `lines` out and returns its order id.
async fn checkout(bus: &CommandBus, n: u32, lines: &[(&str, i64)], token: &str) -> String {
    let cart_id = format!("cart-{n}");
    let order_id = format!("order-{n}");
    let ctx = CommandContext::new_root();
    let create = CartCommand::Create {
        cart_id: cart_id.clone().into(),
        customer_id: format!("customer-{n}").into(),
    };
    bus.execute::<cornershop_domain::Cart>(&cart_id, &create, &ctx)
        .await
        .expect("create the cart");
    for (sku, quantity) in lines {
        let add = CartCommand::AddItem {
            sku: (*sku).into(),
            name: format!("product {sku}"),
            unit_price: dec!(3.00).into(),
            currency: cornershop_domain::money::SHOP_CURRENCY,
            quantity: Quantity::parse(*quantity).expect("a line quantity"),
        };
        bus.execute::<cornershop_domain::Cart>(&cart_id, &add, &ctx)
            .await
            .expect("add an item");
    }
    let checkout = CartCommand::Checkout {
        order_id: order_id.clone().into(),
        payment_method: token.into(),
        shipping_address: ShippingAddress {
            name: "Ada Lovelace".into(),
            line1: "1 Analytical Way".into(),
            line2: None,
            city: "London".into(),
            postal_code: "N1 1AA".into(),
            country_code: "GB".into(),
        },
        email: "ada@example.com".into(),
        phone: None,
    };
    bus.execute::<cornershop_domain::Cart>(&cart_id, &checkout, &ctx)
        .await
        .expect("check out");
    order_id
}

async fn wait_for(bus: &CommandBus, order_id: &str, wanted: &[OrderStatus]) -> Order {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (order, _) = bus.load::<Order>(order_id).await.expect("load the order");
        if wanted.contains(&order.status) {
            return order;
        }
        assert!(
            Instant::now() < deadline,
            "{order_id} is {:?}, not one of {wanted:?}",
            order.status
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until every SKU has nothing reserved (every order ended: shipped or released).
async fn wait_until_nothing_reserved(bus: &CommandBus, skus: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    for sku in skus {
        loop {
            let (inventory, _) = bus.load::<Inventory>(sku).await.expect("load stock");
            if inventory.reserved == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "{sku} stays reserved");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn only_the_inventory_service_moves_stock_for_orders() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn EventStore> = Arc::new(SqliteEventStore::open(dir.path()).await.unwrap());
    let keyring = Arc::new(cornershop_app::Keyring::ephemeral(store.clone()));
    let bus = CommandBus::new(store.clone(), Arc::new(SystemClock), keyring);
    let gateway = Arc::new(SimulatedGateway::new(SimulatedGatewayConfig {
        max_amount: dec!(1000),
        latency: Duration::ZERO,
    }));
    let config = ServicesConfig {
        cart_ttl: Duration::from_secs(3600),
        retry: RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
        },
        notification_wakeup: Default::default(),
    };
    let registry = consumers(
        &bus,
        gateway,
        &config,
        &[Service::Order, Service::Inventory, Service::Payment],
    );
    let (stop, shutdown) = watch::channel(false);
    let running: Vec<_> = registry
        .consumers()
        .map(|consumer| tokio::spawn(run_embedded(consumer.clone(), shutdown.clone())))
        .collect();

    for sku in ["A", "B"] {
        stock(&bus, sku, 100).await;
    }
    stock(&bus, "SCARCE", 1).await;

    let paid = checkout(&bus, 1, &[("A", 2), ("B", 1)], "tok_visa").await;
    let declined = checkout(&bus, 2, &[("A", 1), ("B", 3)], "tok_chargeDeclined").await;
    let short = checkout(&bus, 3, &[("A", 1), ("SCARCE", 2)], "tok_visa").await;
    let regretted = checkout(&bus, 4, &[("B", 2)], "tok_visa").await;

    wait_for(&bus, &paid, &[OrderStatus::Confirmed]).await;
    let ship = OrderCommand::Ship {
        carrier: "DHL".into(),
        tracking_number: "TRACK-1".into(),
    };
    bus.execute::<Order>(&paid, &ship, &CommandContext::new_root())
        .await
        .expect("ship");
    wait_for(&bus, &regretted, &[OrderStatus::Confirmed]).await;
    let cancel = OrderCommand::Cancel {
        reason: "changed my mind".into(),
    };
    bus.execute::<Order>(&regretted, &cancel, &CommandContext::new_root())
        .await
        .expect("cancel");
    for order in [&declined, &short] {
        wait_for(&bus, order, &[OrderStatus::Cancelled]).await;
    }
    wait_until_nothing_reserved(&bus, &["A", "B", "SCARCE"]).await;

    let log: Vec<StoredEvent> = store.read_log(0, 10_000).await.unwrap();
    let by_id: HashMap<String, &StoredEvent> = log
        .iter()
        .map(|e| (e.envelope.event_id.to_string(), e))
        .collect();
    let mut seen = HashMap::new();
    for event in &log {
        let (step, sku) = match event.envelope.decode().unwrap() {
            DomainEvent::StockReserved(e) => ("reserve", e.sku),
            DomainEvent::StockReleased(e) => ("release", e.sku),
            DomainEvent::StockShipped(e) => ("ship", e.sku),
            _ => continue,
        };
        *seen.entry(step).or_insert(0) += 1;
        let cause_id = &event.envelope.metadata.causation_id;
        let cause = by_id
            .get(cause_id)
            .unwrap_or_else(|| panic!("{step} of {sku}: its cause {cause_id} is not in the log"));
        let cause_type = EventType::parse(&cause.envelope.event_type).unwrap();
        assert!(
            InventoryService::REACTS_TO.contains(&cause_type),
            "{step} of {sku} was caused by {cause_type}, which the inventory-service does \
             not react to: another consumer moved stock"
        );
        let key = format!("{}:{cause_id}:{step}:{sku}", InventoryService::NAME);
        assert!(
            store.is_applied(&key).await.unwrap(),
            "{step} of {sku} (caused by {cause_type}) is not on record as the \
             inventory-service's command {key}"
        );
    }
    // Every path ran: reservations, releases (declined, short line, cancelled) and a
    // shipment.
    assert!(seen.get("reserve").copied().unwrap_or(0) >= 6, "{seen:?}");
    assert!(seen.get("release").copied().unwrap_or(0) >= 4, "{seen:?}");
    assert_eq!(seen.get("ship").copied(), Some(2), "{seen:?}");

    stop.send(true).unwrap();
    for task in running {
        task.await.unwrap();
    }
}
