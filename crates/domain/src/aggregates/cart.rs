//! The shopping cart. Invariants: only an open cart changes; a line holds 1..=999 units;
//! an empty cart cannot be checked out.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::{require_money, require_no_control, require_text, Aggregate};
use crate::aggregate_type::AggregateType;
use crate::error::DomainError;
use crate::events::*;
use crate::money::MAX_AMOUNT;
use crate::personal::Personal;
use crate::values::{CartId, Currency, CustomerId, Email, Money, OrderId, Phone, Quantity, Sku};

pub const MAX_LINE_QUANTITY: u32 = Quantity::MAX;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CartStatus {
    #[default]
    New,
    Open,
    CheckedOut,
    Expired,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Cart {
    pub cart_id: CartId,
    pub customer_id: CustomerId,
    pub status: CartStatus,
    /// Lines in the order they were first added.
    pub items: Vec<LineItem>,
    pub total_amount: Decimal,
    /// The currency of its lines (every line is in one): `None` while it has none.
    pub currency: Option<Currency>,
    pub order_id: Option<OrderId>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CartCommand {
    Create {
        cart_id: CartId,
        customer_id: CustomerId,
    },
    AddItem {
        sku: Sku,
        name: String,
        /// The inventory's price, parsed when the command is made: an older writer may
        /// have stored one this shop no longer accepts.
        unit_price: Money,
        /// The price's currency, as the inventory has it.
        currency: Currency,
        quantity: Quantity,
    },
    RemoveItem {
        sku: Sku,
    },
    Checkout {
        order_id: OrderId,
        /// The gateway's reference of the payment method the request's token was
        /// exchanged for (the token itself is used once, by the gateway, and not kept).
        payment_method: String,
        shipping_address: ShippingAddress,
        email: Email,
        phone: Option<Phone>,
    },
    /// Sent by the expiry timer; a cart that is no longer open is left alone.
    Expire,
}

impl Cart {
    fn require_open(&self) -> Result<(), DomainError> {
        match self.status {
            CartStatus::Open => Ok(()),
            CartStatus::New => Err(DomainError::NotFound {
                aggregate: AggregateType::Cart,
                id: self.cart_id.to_string(),
            }),
            CartStatus::CheckedOut => Err(DomainError::CartNotOpen {
                cart_id: self.cart_id.to_string(),
                status: "checked out".into(),
            }),
            CartStatus::Expired => Err(DomainError::CartNotOpen {
                cart_id: self.cart_id.to_string(),
                status: "expired".into(),
            }),
        }
    }

    fn line(&self, sku: &str) -> Option<&LineItem> {
        self.items.iter().find(|l| l.sku == sku)
    }
}

impl Aggregate for Cart {
    const TYPE: AggregateType = AggregateType::Cart;
    /// 1: the shape since snapshots exist (see `Aggregate::STATE_SCHEMA`).
    // 2: the state gained its currency (schema 3 of the events).
    const STATE_SCHEMA: u32 = 2;
    type Command = CartCommand;

    fn decide(&self, command: &CartCommand) -> Result<Vec<DomainEvent>, DomainError> {
        match command {
            CartCommand::Create {
                cart_id,
                customer_id,
            } => {
                if self.status != CartStatus::New {
                    return Err(DomainError::AlreadyExists {
                        aggregate: AggregateType::Cart,
                        id: cart_id.to_string(),
                    });
                }
                Ok(vec![CartCreated {
                    cart_id: cart_id.clone(),
                    customer_id: customer_id.clone(),
                }
                .into()])
            }
            CartCommand::AddItem {
                sku,
                name,
                unit_price,
                currency,
                quantity,
            } => {
                self.require_open()?;
                if let Some(cart_currency) = self.currency.filter(|c| c != currency) {
                    return Err(DomainError::CurrencyMismatch {
                        cart_id: self.cart_id.to_string(),
                        sku: sku.to_string(),
                        cart_currency: cart_currency.to_string(),
                        item_currency: currency.to_string(),
                    });
                }
                let quantity = quantity.get();
                let already = self.line(sku).map_or(0, |l| l.quantity);
                if already.saturating_add(quantity) > MAX_LINE_QUANTITY {
                    return Err(DomainError::LineFull {
                        sku: sku.to_string(),
                        already,
                        requested: quantity,
                        max: MAX_LINE_QUANTITY,
                    });
                }
                Ok(vec![ItemAddedToCart {
                    cart_id: self.cart_id.clone(),
                    sku: sku.clone(),
                    name: name.clone(),
                    quantity,
                    unit_price: unit_price.amount(),
                    currency: *currency,
                }
                .into()])
            }
            CartCommand::RemoveItem { sku } => {
                self.require_open()?;
                let line = self.line(sku).ok_or_else(|| DomainError::ItemNotInCart {
                    cart_id: self.cart_id.to_string(),
                    sku: sku.to_string(),
                })?;
                Ok(vec![ItemRemovedFromCart {
                    cart_id: self.cart_id.clone(),
                    sku: sku.clone(),
                    quantity: line.quantity,
                }
                .into()])
            }
            CartCommand::Checkout {
                order_id,
                payment_method,
                shipping_address,
                email,
                phone,
            } => {
                // What the request says is checked before what the cart's state allows.
                require_text("paymentMethod", payment_method, 200)?;
                validate_address(shipping_address)?;
                self.require_open()?;
                let currency = match self.currency {
                    Some(currency) if !self.items.is_empty() => currency,
                    _ => return Err(DomainError::EmptyCart(self.cart_id.to_string())),
                };
                let total = total_of(&self.items).ok_or_else(|| {
                    DomainError::Invalid("the cart's total is too large to be paid".into())
                })?;
                require_money("totalAmount", total, MAX_AMOUNT)?;
                if total.is_zero() {
                    return Err(DomainError::NothingToPay(self.cart_id.to_string()));
                }
                Ok(vec![CartCheckedOut {
                    cart_id: self.cart_id.clone(),
                    order_id: order_id.clone(),
                    customer_id: self.customer_id.clone(),
                    items: self.items.clone(),
                    total_amount: total,
                    currency,
                    payment_method: payment_method.clone(),
                    shipping_address: shipping_address.into(),
                    email: Personal::clear(email.as_str()),
                    phone: phone.as_ref().map(|p| Personal::clear(p.as_str())),
                }
                .into()])
            }
            CartCommand::Expire => match self.status {
                CartStatus::Open => Ok(vec![CartExpired {
                    cart_id: self.cart_id.clone(),
                    customer_id: self.customer_id.clone(),
                }
                .into()]),
                CartStatus::New => Err(DomainError::NotFound {
                    aggregate: AggregateType::Cart,
                    id: self.cart_id.to_string(),
                }),
                CartStatus::CheckedOut | CartStatus::Expired => Ok(vec![]),
            },
        }
    }

    fn evolve(mut self, event: &DomainEvent) -> Self {
        match event {
            DomainEvent::CartCreated(e) => {
                self.cart_id = e.cart_id.clone();
                self.customer_id = e.customer_id.clone();
                self.status = CartStatus::Open;
            }
            DomainEvent::ItemAddedToCart(e) => {
                // The first line sets the cart's currency (`decide` keeps the others in it).
                if self.items.is_empty() {
                    self.currency = Some(e.currency);
                }
                match self.items.iter_mut().find(|l| l.sku == e.sku) {
                    Some(line) => {
                        line.quantity = line.quantity.saturating_add(e.quantity);
                        // The latest price and name win: the line is priced as last added.
                        line.unit_price = e.unit_price;
                        line.name = e.name.clone();
                    }
                    None => self.items.push(LineItem {
                        sku: e.sku.clone(),
                        name: e.name.clone(),
                        quantity: e.quantity,
                        unit_price: e.unit_price,
                    }),
                }
                self.total_amount = total_or_max(&self.items);
            }
            DomainEvent::ItemRemovedFromCart(e) => {
                self.items.retain(|l| l.sku != e.sku);
                if self.items.is_empty() {
                    self.currency = None;
                }
                self.total_amount = total_or_max(&self.items);
            }
            DomainEvent::CartCheckedOut(e) => {
                self.status = CartStatus::CheckedOut;
                self.order_id = Some(e.order_id.clone());
            }
            DomainEvent::CartExpired(_) => self.status = CartStatus::Expired,
            _ => {}
        }
        self
    }

    fn exists(&self) -> bool {
        self.status != CartStatus::New
    }

    fn owner(&self) -> Option<&str> {
        self.exists().then_some(self.customer_id.as_str())
    }
}

/// The total as a cart's state shows it. `evolve` cannot refuse an event already stored,
/// so an overflowing total (only events from a writer that did not bound prices can make
/// one) saturates here; `decide` refuses to check such a cart out.
fn total_or_max(items: &[LineItem]) -> Decimal {
    total_of(items).unwrap_or(Decimal::MAX)
}

fn validate_address(a: &ShippingAddress) -> Result<(), DomainError> {
    require_text("shippingAddress.name", &a.name, 200)?;
    require_text("shippingAddress.line1", &a.line1, 200)?;
    require_text("shippingAddress.city", &a.city, 100)?;
    require_text("shippingAddress.postalCode", &a.postal_code, 20)?;
    if let Some(line2) = &a.line2 {
        require_no_control("shippingAddress.line2", line2)?;
        if line2.chars().count() > 200 {
            return Err(DomainError::Invalid(
                "shippingAddress.line2 must be at most 200 characters".into(),
            ));
        }
    }
    // (The country is a `CountryCode`, checked where it was parsed.)
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{given, given_nothing};
    use crate::ErrorKind;
    use rust_decimal_macros::dec;

    fn created() -> DomainEvent {
        CartCreated {
            cart_id: "cart-1".into(),
            customer_id: "cust-1".into(),
        }
        .into()
    }

    /// What `add(sku, quantity)` causes.
    fn added(sku: &str, quantity: u32) -> DomainEvent {
        ItemAddedToCart {
            cart_id: "cart-1".into(),
            sku: sku.into(),
            name: format!("name of {sku}"),
            quantity,
            unit_price: dec!(2.50),
            currency: Currency::GBP,
        }
        .into()
    }

    /// What `checkout()` causes for a cart holding one unit of "A".
    fn checked_out_with_one_a() -> DomainEvent {
        CartCheckedOut {
            cart_id: "cart-1".into(),
            order_id: "order-1".into(),
            customer_id: "cust-1".into(),
            items: vec![LineItem {
                sku: "A".into(),
                name: "name of A".into(),
                quantity: 1,
                unit_price: dec!(2.50),
            }],
            total_amount: dec!(2.50),
            currency: Currency::GBP,
            payment_method: "tok_visa".into(),
            shipping_address: (&address()).into(),
            email: "ada@example.com".into(),
            phone: Some("+44 20 7946 0000".into()),
        }
        .into()
    }

    fn expired() -> DomainEvent {
        CartExpired {
            cart_id: "cart-1".into(),
            customer_id: "cust-1".into(),
        }
        .into()
    }

    fn add(sku: &str, quantity: u32) -> CartCommand {
        CartCommand::AddItem {
            sku: sku.into(),
            name: format!("name of {sku}"),
            unit_price: dec!(2.50).into(),
            currency: Currency::GBP,
            quantity: quantity.into(),
        }
    }

    fn address() -> ShippingAddress {
        ShippingAddress {
            name: "Ada Lovelace".into(),
            line1: "1 Analytical Way".into(),
            line2: None,
            city: "London".into(),
            postal_code: "N1 1AA".into(),
            country_code: "GB".into(),
        }
    }

    fn checkout() -> CartCommand {
        CartCommand::Checkout {
            order_id: "order-1".into(),
            payment_method: "tok_visa".into(),
            shipping_address: address(),
            email: "ada@example.com".into(),
            phone: Some("+44 20 7946 0000".into()),
        }
    }

    #[test]
    fn given_nothing_when_create_then_cart_created() {
        given_nothing::<Cart>()
            .when(CartCommand::Create {
                cart_id: "cart-1".into(),
                customer_id: "cust-1".into(),
            })
            .then([CartCreated {
                cart_id: "cart-1".into(),
                customer_id: "cust-1".into(),
            }
            .into()]);
    }

    #[test]
    fn given_open_cart_when_add_then_item_added_and_total_is_exact() {
        let accepted = given::<Cart>([created()])
            .when(add("A", 3))
            .and(add("A", 1))
            .then_accepted()
            .then_state(|cart| {
                assert_eq!(cart.items.len(), 1);
                assert_eq!(cart.items[0].quantity, 4);
                assert_eq!(cart.total_amount, dec!(10.00));
            });
        assert_eq!(accepted.events().len(), 2);
    }

    #[test]
    fn quantity_must_be_between_1_and_999() {
        // Refused where the quantity is parsed, with the message the domain gave.
        for bad in [0, -1, 1000] {
            assert_eq!(
                Quantity::parse(bad).unwrap_err().message,
                DomainError::InvalidQuantity(bad).to_string()
            );
        }
        given::<Cart>([created()]).when(add("A", 1)).then_accepted();
        given::<Cart>([created()])
            .when(add("A", 999))
            .then_accepted();
    }

    #[test]
    fn a_line_never_exceeds_999_units() {
        // The request is fine; the line has no room for it: a conflict (409), not 400.
        let refused = given::<Cart>([created(), added("A", 998)])
            .when(add("A", 2))
            .then_error(ErrorKind::Conflict);
        assert!(matches!(
            refused,
            DomainError::LineFull {
                already: 998,
                requested: 2,
                ..
            }
        ));
    }

    #[test]
    fn nothing_can_be_added_to_a_checked_out_cart() {
        given::<Cart>([created(), added("A", 1)])
            .when(checkout())
            .then([checked_out_with_one_a()])
            .then_state(|cart| assert_eq!(cart.status, CartStatus::CheckedOut));
        let checked_out = || given::<Cart>([created(), added("A", 1), checked_out_with_one_a()]);
        checked_out()
            .when(add("B", 1))
            .then_error_matching(|e| matches!(e, DomainError::CartNotOpen { .. }));
        checked_out()
            .when(CartCommand::RemoveItem { sku: "A".into() })
            .then_error_matching(|e| matches!(e, DomainError::CartNotOpen { .. }));
    }

    #[test]
    fn nothing_can_be_added_to_an_expired_cart() {
        let accepted = given::<Cart>([created()])
            .when(add("A", 1))
            .and(CartCommand::Expire)
            .then_accepted();
        assert_eq!(
            accepted.events().last().unwrap().event_type(),
            "CartExpired"
        );
        let expired = || given::<Cart>([created(), added("A", 1), expired()]);
        expired()
            .when(add("B", 1))
            .then_error_matching(|e| matches!(e, DomainError::CartNotOpen { .. }));
        expired()
            .when(checkout())
            .then_error_matching(|e| matches!(e, DomainError::CartNotOpen { .. }));
    }

    #[test]
    fn expiring_a_closed_cart_changes_nothing() {
        given::<Cart>([created(), added("A", 1)])
            .when(checkout())
            .then_accepted();
        given::<Cart>([created(), added("A", 1), checked_out_with_one_a()])
            .when(CartCommand::Expire)
            .then([]);
    }

    #[test]
    fn an_empty_cart_cannot_be_checked_out() {
        given::<Cart>([created()])
            .when(checkout())
            .then_error_is(DomainError::EmptyCart("cart-1".into()));
        // Emptied again by a removal: still refused.
        given::<Cart>([created()])
            .when(add("A", 1))
            .and(CartCommand::RemoveItem { sku: "A".into() })
            .and(checkout())
            .then_error_matching(|e| matches!(e, DomainError::EmptyCart(_)));
    }

    #[test]
    fn checkout_carries_items_total_and_contact_details() {
        let accepted = given::<Cart>([created()])
            .when(add("A", 2))
            .and(add("B", 1))
            .and(checkout())
            .then_accepted();
        let Some(DomainEvent::CartCheckedOut(e)) = accepted.events().last() else {
            panic!("expected CartCheckedOut")
        };
        assert_eq!(e.items.len(), 2);
        assert_eq!(e.total_amount, dec!(7.50));
        assert_eq!(e.email, Personal::clear("ada@example.com"));
        assert_eq!(e.order_id, "order-1");
    }

    #[test]
    fn checkout_refuses_a_bad_email() {
        // A checkout is made of a parsed e-mail address: a bad one never gets that far.
        let e = Email::parse("not-an-email").unwrap_err();
        assert_eq!(e.field, "email");
        let mut cmd = checkout();
        if let CartCommand::Checkout {
            shipping_address, ..
        } = &mut cmd
        {
            shipping_address.city = " ".into();
        }
        given::<Cart>([created(), added("A", 1)])
            .when(cmd)
            .then_error_matching(|e| matches!(e, DomainError::Invalid(_)));
    }

    #[test]
    fn removing_an_absent_item_is_not_found() {
        given::<Cart>([created()])
            .when(CartCommand::RemoveItem { sku: "X".into() })
            .then_error_matching(|e| matches!(e, DomainError::ItemNotInCart { .. }));
    }

    #[test]
    fn commands_on_a_cart_that_does_not_exist_are_not_found() {
        given_nothing::<Cart>()
            .when(add("A", 1))
            .then_error_matching(|e| matches!(e, DomainError::NotFound { .. }));
    }

    #[test]
    fn a_cart_cannot_be_created_twice() {
        given::<Cart>([created()])
            .when(CartCommand::Create {
                cart_id: "cart-1".into(),
                customer_id: "x".into(),
            })
            .then_error_matching(|e| matches!(e, DomainError::AlreadyExists { .. }));
    }

    #[test]
    fn a_cart_is_in_the_currency_of_its_lines_and_refuses_a_line_in_another() {
        let euro_mug = CartCommand::AddItem {
            sku: "B".into(),
            name: "Tasse".into(),
            unit_price: dec!(3.00).into(),
            currency: "EUR".into(),
            quantity: 1u32.into(),
        };
        let refused = given::<Cart>([created(), added("A", 1)])
            .when(euro_mug.clone())
            .then_error(ErrorKind::Conflict);
        assert_eq!(
            refused.to_string(),
            "cart 'cart-1' is in GBP; 'B' is priced in EUR, and a cart holds one currency"
        );
        // Emptied, it takes any currency again; its checkout says which.
        let accepted = given::<Cart>([created(), added("A", 1)])
            .when(CartCommand::RemoveItem { sku: "A".into() })
            .and(euro_mug)
            .and(checkout())
            .then_accepted();
        let Some(DomainEvent::CartCheckedOut(e)) = accepted.events().last() else {
            panic!("expected CartCheckedOut")
        };
        assert_eq!(e.currency, Currency::parse("currency", "EUR").unwrap());
    }
}
