//! Given / when / then for the deciders: a test reads as the specification it checks.
//!
//! ```text
//! given::<Cart>([cart_created])      the history, as the events already stored
//!     .when(add_item)                the command (`.and(next)` for more, in order)
//!     .then([item_added]);           the events it causes, or
//!     .then_error(ErrorKind::Conflict) / .then_error_is(DomainError::…)
//! ```
//!
//! This is the idea of cqrs-es's `TestFramework`, made for this crate's `Aggregate`
//! trait: the state is folded from the given events with the aggregate's own `evolve`,
//! each command is decided against the state the events before it left, and the outcome
//! is compared with the expectation. A mismatch panics with the given events, the
//! commands, what was expected and what happened, so a failing test says which rule
//! broke rather than where an `unwrap` was.
//!
//! Only tests use it: it is compiled for this crate's tests and, behind the `testkit`
//! feature, for other crates' tests (`cornershop-app`'s property test drives the pure
//! domain through it). It replaces the public `aggregates::run` that tests used to fold
//! commands by hand.

use std::fmt::{Debug, Write};
use std::marker::PhantomData;

use crate::aggregates::{fold, Aggregate};
use crate::error::{DomainError, ErrorKind};
use crate::events::DomainEvent;

/// The aggregate's history: the events already stored for it, oldest first.
pub fn given<A: Aggregate>(history: impl IntoIterator<Item = DomainEvent>) -> Given<A> {
    Given {
        history: history.into_iter().collect(),
        aggregate: PhantomData,
    }
}

/// No history: the aggregate does not exist yet (its state is `Default::default()`).
pub fn given_nothing<A: Aggregate>() -> Given<A> {
    given([])
}

/// An aggregate's history, waiting for the command(s) under test.
#[derive(Debug, Clone)]
pub struct Given<A> {
    history: Vec<DomainEvent>,
    aggregate: PhantomData<A>,
}

impl<A: Aggregate> Given<A>
where
    A::Command: Debug,
{
    /// The command under test.
    pub fn when(self, command: A::Command) -> When<A> {
        self.when_all([command])
    }

    /// Commands decided one after another, each against the state the events of the
    /// ones before it left (as the write side does). May be empty.
    pub fn when_all(self, commands: impl IntoIterator<Item = A::Command>) -> When<A> {
        When {
            history: self.history,
            commands: commands.into_iter().collect(),
        }
    }
}

/// A history and the commands sent to it; a `then…` method runs them and checks.
#[derive(Debug, Clone)]
pub struct When<A: Aggregate> {
    history: Vec<DomainEvent>,
    commands: Vec<A::Command>,
}

impl<A: Aggregate> When<A>
where
    A::Command: Debug,
{
    /// One more command, decided after the ones before it were accepted.
    pub fn and(mut self, command: A::Command) -> Self {
        self.commands.push(command);
        self
    }

    /// Every command is accepted, and together they cause exactly `expected` (in order;
    /// `[]` when they change nothing). Returns the outcome for a look at the state.
    #[track_caller]
    pub fn then(self, expected: impl IntoIterator<Item = DomainEvent>) -> Accepted<A> {
        let expected: Vec<DomainEvent> = expected.into_iter().collect();
        let accepted = self.then_accepted();
        if accepted.events != expected {
            panic!(
                "{}",
                accepted.report.failure(
                    &list(&expected),
                    &format!("events{}", list_after_colon(&accepted.events))
                )
            );
        }
        accepted
    }

    /// Every command is accepted, whatever events they cause (look at them with
    /// [`Accepted::events`]).
    #[track_caller]
    pub fn then_accepted(self) -> Accepted<A> {
        let report = self.report();
        let (state, events, refused) = self.run();
        let mut history = self.history;
        history.extend(events.iter().cloned());
        if let Some((at, error)) = refused {
            panic!(
                "{}",
                report.failure(
                    "every command accepted",
                    &format!("command {} refused: {error:?} ({error})", at + 1)
                )
            );
        }
        Accepted {
            state,
            events,
            history,
            report,
        }
    }

    /// The last command is refused with an error of this kind (the ones before it are
    /// accepted). Returns the error for a closer look.
    #[track_caller]
    pub fn then_error(self, kind: ErrorKind) -> DomainError {
        self.then_error_matching_as(&format!("an error of kind {kind:?}"), |e| e.kind() == kind)
    }

    /// The last command is refused with exactly this error (the ones before it are
    /// accepted).
    #[track_caller]
    pub fn then_error_is(self, expected: DomainError) {
        self.then_error_matching_as(&format!("{expected:?}"), |e| *e == expected);
    }

    /// The last command is refused with an error `check` accepts, typically a
    /// `matches!` pattern (the ones before it are accepted). Returns the error.
    #[track_caller]
    pub fn then_error_matching(self, check: impl FnOnce(&DomainError) -> bool) -> DomainError {
        self.then_error_matching_as("an error the test's pattern matches", check)
    }

    /// The last command is refused, for whatever reason (the ones before it are
    /// accepted). Returns the error.
    #[track_caller]
    pub fn then_refused(self) -> DomainError {
        self.then_error_matching_as("any error", |_| true)
    }

    #[track_caller]
    fn then_error_matching_as(
        self,
        expected: &str,
        check: impl FnOnce(&DomainError) -> bool,
    ) -> DomainError {
        let report = self.report();
        let last = self.commands.len();
        let (_, events, refused) = self.run();
        match refused {
            Some((at, error)) if at + 1 == last => {
                if check(&error) {
                    return error;
                }
                panic!(
                    "{}",
                    report.failure(expected, &format!("error {error:?} ({error})"))
                )
            }
            Some((at, error)) => panic!(
                "{}",
                report.failure(
                    &format!("{expected}, from command {last}"),
                    &format!(
                        "command {} (not the last) refused: {error:?} ({error})",
                        at + 1
                    )
                )
            ),
            None if last == 0 => panic!("{}", report.failure(expected, "no command was sent")),
            None => panic!(
                "{}",
                report.failure(
                    expected,
                    &format!(
                        "every command accepted, with events{}",
                        list_after_colon(&events)
                    )
                )
            ),
        }
    }

    /// Folds the history, then decides and applies the commands in order until one is
    /// refused: the state, the events the accepted commands caused, and the refusal.
    fn run(&self) -> (A, Vec<DomainEvent>, Option<(usize, DomainError)>) {
        let mut state: A = fold(&self.history);
        let mut events = Vec::new();
        for (at, command) in self.commands.iter().enumerate() {
            match state.decide(command) {
                Ok(caused) => {
                    state = caused.iter().fold(state, A::evolve);
                    events.extend(caused);
                }
                Err(error) => return (state, events, Some((at, error))),
            }
        }
        (state, events, None)
    }

    fn report(&self) -> Report {
        let aggregate = std::any::type_name::<A>();
        Report {
            aggregate: aggregate.rsplit("::").next().unwrap_or(aggregate),
            given: list(&self.history),
            when: list(&self.commands),
        }
    }
}

/// The commands were accepted: the events they caused and the state after them.
#[derive(Debug, Clone)]
pub struct Accepted<A> {
    state: A,
    events: Vec<DomainEvent>,
    history: Vec<DomainEvent>,
    report: Report,
}

impl<A: Aggregate> Accepted<A> {
    /// Looks at the state after the history and the accepted commands (`check` asserts).
    pub fn then_state(self, check: impl FnOnce(&A)) -> Self {
        check(&self.state);
        self
    }

    /// The state after the history and the accepted commands.
    pub fn state(&self) -> &A {
        &self.state
    }

    /// The events the commands caused (not the history), in order.
    pub fn events(&self) -> &[DomainEvent] {
        &self.events
    }

    /// The given events followed by the ones the commands caused: the history to give
    /// the next step of a longer story.
    pub fn history(&self) -> Vec<DomainEvent> {
        self.history.clone()
    }

    /// The state and the events the commands caused.
    pub fn into_parts(self) -> (A, Vec<DomainEvent>) {
        (self.state, self.events)
    }
}

/// What a failure message shows besides the expectation and the outcome.
#[derive(Debug, Clone)]
struct Report {
    aggregate: &'static str,
    given: String,
    when: String,
}

impl Report {
    fn failure(&self, expected: &str, actual: &str) -> String {
        // A list starts on its own line; a sentence follows the colon.
        let field = |text: &str| {
            if text.starts_with('\n') {
                text.to_string()
            } else {
                format!(" {text}")
            }
        };
        format!(
            "specification of {} not met\n given:{}\n when:{}\n expected:{}\n actual:{}",
            self.aggregate,
            field(&self.given),
            field(&self.when),
            field(expected),
            field(actual)
        )
    }
}

/// `(none)`, or one item a line (the text starts with a line break).
fn list<T: Debug>(items: &[T]) -> String {
    if items.is_empty() {
        return "(none)".to_string();
    }
    items.iter().fold(String::new(), |mut out, item| {
        let _ = write!(out, "\n   {item:?}");
        out
    })
}

/// A list that follows a word: ` (none)` or the items a line each.
fn list_after_colon<T: Debug>(items: &[T]) -> String {
    let listed = list(items);
    if listed.starts_with('\n') {
        listed
    } else {
        format!(" {listed}")
    }
}

#[cfg(test)]
mod tests {
    //! The harness itself: a wrong expectation fails, and says what happened.

    use super::*;
    use crate::aggregates::cart::{Cart, CartCommand};
    use crate::events::CartCreated;

    fn create() -> CartCommand {
        CartCommand::Create {
            cart_id: "cart-1".into(),
            customer_id: "cust-1".into(),
        }
    }

    fn created() -> DomainEvent {
        CartCreated {
            cart_id: "cart-1".into(),
            customer_id: "cust-1".into(),
        }
        .into()
    }

    fn panic_message(f: impl FnOnce() + std::panic::UnwindSafe) -> String {
        let payload = std::panic::catch_unwind(f).expect_err("the expectation should fail");
        payload
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default()
    }

    #[test]
    fn a_met_specification_passes_and_shows_the_state() {
        given_nothing::<Cart>()
            .when(create())
            .then([created()])
            .then_state(|cart| assert_eq!(cart.cart_id, "cart-1"));
        given::<Cart>([created()])
            .when(create())
            .then_error(ErrorKind::Conflict);
    }

    #[test]
    fn wrong_events_fail_with_given_when_expected_and_actual() {
        let message = panic_message(|| {
            given_nothing::<Cart>().when(create()).then([]);
        });
        assert!(message.contains("given: (none)"), "{message}");
        assert!(message.contains("when:\n   Create"), "{message}");
        assert!(message.contains("expected: (none)"), "{message}");
        assert!(
            message.contains("actual: events\n   CartCreated"),
            "{message}"
        );
    }

    #[test]
    fn an_unexpected_outcome_fails() {
        let accepted = panic_message(|| {
            given_nothing::<Cart>()
                .when(create())
                .then_error(ErrorKind::Conflict);
        });
        assert!(accepted.contains("every command accepted"), "{accepted}");
        let wrong_kind = panic_message(|| {
            given::<Cart>([created()])
                .when(create())
                .then_error(ErrorKind::Invalid);
        });
        assert!(wrong_kind.contains("AlreadyExists"), "{wrong_kind}");
        // A refusal before the last command is not the refusal under test.
        let early = panic_message(|| {
            given::<Cart>([created()])
                .when(create())
                .and(CartCommand::Expire)
                .then_refused();
        });
        assert!(
            early.contains("command 1 (not the last) refused"),
            "{early}"
        );
        let refused = panic_message(|| {
            given::<Cart>([created()]).when(create()).then_accepted();
        });
        assert!(refused.contains("command 1 refused"), "{refused}");
    }
}
