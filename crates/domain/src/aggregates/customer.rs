//! A customer's privacy record: the one fact the shop keeps about a customer as such, that
//! their personal data was erased. (Their carts and orders are aggregates of their own.)

use serde::{Deserialize, Serialize};

use super::Aggregate;
use crate::aggregate_type::AggregateType;
use crate::error::DomainError;
use crate::events::*;
use crate::values::CustomerId;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Customer {
    pub customer_id: CustomerId,
    pub erased: bool,
    /// The data keys destroyed by the erasure.
    pub erased_key_ids: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CustomerCommand {
    /// Records an erasure whose keys are already destroyed. A repeat records nothing.
    RecordErasure {
        customer_id: CustomerId,
        key_ids: Vec<String>,
        unshredded_event_ids: Vec<uuid::Uuid>,
    },
}

impl Aggregate for Customer {
    const TYPE: AggregateType = AggregateType::Customer;
    /// 1: the shape since snapshots exist (see `Aggregate::STATE_SCHEMA`).
    const STATE_SCHEMA: u32 = 1;
    type Command = CustomerCommand;

    fn decide(&self, command: &CustomerCommand) -> Result<Vec<DomainEvent>, DomainError> {
        match command {
            CustomerCommand::RecordErasure {
                customer_id,
                key_ids,
                unshredded_event_ids,
            } => {
                if self.erased {
                    return Ok(vec![]);
                }
                Ok(vec![CustomerDataErased {
                    customer_id: customer_id.clone(),
                    key_ids: key_ids.clone(),
                    unshredded_event_ids: unshredded_event_ids.clone(),
                }
                .into()])
            }
        }
    }

    fn evolve(mut self, event: &DomainEvent) -> Self {
        if let DomainEvent::CustomerDataErased(e) = event {
            self.customer_id = e.customer_id.clone();
            self.erased = true;
            self.erased_key_ids = e.key_ids.clone();
        }
        self
    }

    fn exists(&self) -> bool {
        self.erased
    }

    fn owner(&self) -> Option<&str> {
        self.exists().then_some(self.customer_id.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{given, given_nothing};

    fn erase() -> CustomerCommand {
        CustomerCommand::RecordErasure {
            customer_id: "cust-1".into(),
            key_ids: vec!["dk_1".into()],
            unshredded_event_ids: vec![],
        }
    }

    fn erased() -> DomainEvent {
        CustomerDataErased {
            customer_id: "cust-1".into(),
            key_ids: vec!["dk_1".into()],
            unshredded_event_ids: vec![],
        }
        .into()
    }

    #[test]
    fn an_erasure_is_recorded_once() {
        given_nothing::<Customer>().when(erase()).then([erased()]);
        given::<Customer>([erased()]).when(erase()).then([]);
    }
}
