//! Roles: which parts of the shop this process runs. `all` (the default) runs every
//! built role in one process; a list splits the same code into separate processes that
//! share the store (and Kafka).

use clap::ValueEnum;
use cornershop_services::Service;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum)]
pub enum Role {
    /// Every role that is built.
    All,
    /// The HTTP API (commands and queries).
    Api,
    /// The order saga and the cart-expiry timers.
    Order,
    /// The payment service (talks to the payment gateway).
    Payment,
    /// The inventory service (reserves and releases stock).
    Inventory,
    /// The notification service: records each order event's email, SMS and push
    /// notifications, and sends them (one process per channel at a time).
    Notification,
    /// The reporting service: keeps the read models that the query API reads
    /// (consumer group `reporting-service`).
    Reporting,
    /// The outbox relay to Kafka (needs --kafka-brokers).
    Relay,
}

/// The roles a process runs, with `all` expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Roles(Vec<Role>);

impl Roles {
    /// Expands and checks the roles asked for. `all` means every built role, and the
    /// relay only when Kafka is configured.
    pub(crate) fn resolve(asked: &[Role], kafka: bool) -> anyhow::Result<Self> {
        let mut roles = Vec::new();
        for role in asked {
            match role {
                Role::All => {
                    roles.extend([
                        Role::Api,
                        Role::Order,
                        Role::Payment,
                        Role::Inventory,
                        Role::Notification,
                        Role::Reporting,
                    ]);
                    if kafka {
                        roles.push(Role::Relay);
                    }
                }
                Role::Relay if !kafka => {
                    anyhow::bail!("the relay role publishes to Kafka: give --kafka-brokers too")
                }
                other => roles.push(*other),
            }
        }
        roles.sort_by_key(|r| *r as u8);
        roles.dedup();
        if roles.is_empty() {
            anyhow::bail!("no role given: use --roles all, or a list such as api,order,relay");
        }
        Ok(Self(roles))
    }

    pub(crate) fn has(&self, role: Role) -> bool {
        self.0.contains(&role)
    }

    pub(crate) fn services(&self) -> Vec<Service> {
        let mut services = Vec::new();
        if self.has(Role::Order) {
            services.push(Service::Order);
        }
        if self.has(Role::Inventory) {
            services.push(Service::Inventory);
        }
        if self.has(Role::Payment) {
            services.push(Service::Payment);
        }
        if self.has(Role::Notification) {
            services.push(Service::Notification);
        }
        services
    }

    pub(crate) fn names(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|r| format!("{r:?}").to_lowercase())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_expands_to_the_built_roles_and_the_relay_only_with_kafka() {
        let embedded = Roles::resolve(&[Role::All], false).unwrap();
        assert_eq!(
            embedded.names(),
            [
                "api",
                "order",
                "payment",
                "inventory",
                "notification",
                "reporting"
            ]
        );
        assert!(embedded.services().contains(&Service::Notification));
        let kafka = Roles::resolve(&[Role::All], true).unwrap();
        assert!(kafka.has(Role::Relay));
    }

    #[test]
    fn a_relay_without_kafka_and_unbuilt_roles_are_refused() {
        assert!(Roles::resolve(&[Role::Relay], false).is_err());
        let reporting = Roles::resolve(&[Role::Reporting], false).unwrap();
        assert!(reporting.has(Role::Reporting) && reporting.services().is_empty());
        let notification = Roles::resolve(&[Role::Notification], false).unwrap();
        assert_eq!(notification.services(), [Service::Notification]);
        assert!(Roles::resolve(&[], true).is_err());
    }

    #[test]
    fn a_list_picks_its_services() {
        let roles = Roles::resolve(&[Role::Payment, Role::Api, Role::Payment], true).unwrap();
        assert_eq!(roles.names(), ["api", "payment"]);
        assert_eq!(roles.services(), [Service::Payment]);
    }
}
