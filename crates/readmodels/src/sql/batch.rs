//! The statements of an effect, and how the rebuild sends a page of them as few.
//!
//! Every effect is a few `INSERT ... VALUES (row) ON CONFLICT ...` statements. One event
//! at a time (the live projection) each runs alone. A rebuild applies a page of 2,000
//! events; one by one that is several thousand statements, each a round trip to
//! PostgreSQL. [`batched`] puts the rows of inserts of the same kind (the same table,
//! columns and conflict clause) into one multi-row statement instead.
//!
//! Why that changes no result:
//! - Each effect commutes with every other (see the crate docs): the read models do not
//!   depend on the order the events are applied in. Running the kinds one after the other,
//!   in the order they first appear in the page, applies the page's events grouped by kind.
//! - An event's statements stay in their order: the kinds of one event first appear
//!   together, in that order (no two event types share a kind in a different order).
//! - Rows with the same conflict key never share a statement: PostgreSQL refuses an upsert
//!   that touches a row twice, and within one statement a row does not see the effect of
//!   another. The second row of a key goes into the next statement of its kind, so a
//!   key's rows still run one after the other, in page order.

use std::collections::HashMap;

use super::Arg;

/// Arguments per batched statement at most (PostgreSQL takes 65,535, SQLite 32,766).
const MAX_ARGS: usize = 8_000;

/// A statement and its arguments, run alone or in a batch.
pub(super) struct Stmt {
    /// `INSERT INTO t (columns) VALUES`, or a whole statement that is not batched.
    head: String,
    /// The rows this statement inserts, `(?, ?), (?, ?)`; empty when not batched.
    rows: String,
    /// What follows the rows: `ON CONFLICT ...`.
    tail: String,
    args: Vec<Arg>,
    /// The conflict key of the rows (one key for all of them); none: never batched.
    key: Option<String>,
}

impl Stmt {
    pub(super) fn text(&self) -> String {
        if self.rows.is_empty() {
            self.head.clone()
        } else {
            format!("{} {} {}", self.head, self.rows, self.tail)
        }
    }

    pub(super) fn into_parts(self) -> (String, Vec<Arg>) {
        (self.text(), self.args)
    }
}

/// A statement that runs alone.
pub(super) fn push(statements: &mut Vec<Stmt>, sql: &str, args: Vec<Arg>) {
    statements.push(Stmt::alone(sql, args));
}

impl Stmt {
    /// A statement that is never batched.
    pub(super) fn alone(sql: &str, args: Vec<Arg>) -> Self {
        Self {
            head: sql.to_string(),
            rows: String::new(),
            tail: String::new(),
            args,
            key: None,
        }
    }
}

/// `{head} {rows} {tail}`: an insert of `rows` (with `args`) whose conflict key is `key`,
/// which [`batched`] may send with others of its kind.
pub(super) fn insert(
    statements: &mut Vec<Stmt>,
    head: String,
    rows: String,
    tail: String,
    key: &str,
    args: Vec<Arg>,
) {
    statements.push(Stmt {
        head,
        rows,
        tail,
        args,
        key: Some(key.to_string()),
    });
}

/// A page's statements as few (see the module documentation).
pub(super) fn batched(statements: Vec<Stmt>) -> Vec<Stmt> {
    /// What runs, in order: a statement that is not batched, or a kind (its index).
    enum Next {
        Alone(Stmt),
        Kind(usize),
    }
    /// A kind's statements in rounds: a key's n-th row goes into round n.
    #[derive(Default)]
    struct Kind {
        rounds: Vec<Vec<Stmt>>,
        seen: HashMap<String, usize>,
    }
    let mut order = Vec::new();
    let mut kinds: Vec<Kind> = Vec::new();
    let mut kind_of: HashMap<(String, String), usize> = HashMap::new();
    for statement in statements {
        let Some(key) = statement.key.clone() else {
            order.push(Next::Alone(statement));
            continue;
        };
        let name = (statement.head.clone(), statement.tail.clone());
        let at = *kind_of.entry(name).or_insert_with(|| {
            kinds.push(Kind::default());
            order.push(Next::Kind(kinds.len() - 1));
            kinds.len() - 1
        });
        let kind = &mut kinds[at];
        let round = kind.seen.entry(key).or_insert(0);
        if kind.rounds.len() <= *round {
            kind.rounds.push(Vec::new());
        }
        kind.rounds[*round].push(statement);
        *round += 1;
    }
    let mut out = Vec::new();
    for next in order {
        match next {
            Next::Alone(statement) => out.push(statement),
            Next::Kind(at) => {
                for round in std::mem::take(&mut kinds[at].rounds) {
                    merge(round, &mut out);
                }
            }
        }
    }
    out
}

/// Statements of one kind and distinct keys as multi-row statements of at most
/// [`MAX_ARGS`] arguments each.
fn merge(round: Vec<Stmt>, out: &mut Vec<Stmt>) {
    let mut current: Option<Stmt> = None;
    for statement in round {
        match &mut current {
            Some(open) if open.args.len() + statement.args.len() <= MAX_ARGS => {
                open.rows.push_str(", ");
                open.rows.push_str(&statement.rows);
                open.args.extend(statement.args);
            }
            _ => {
                out.extend(current.take());
                current = Some(statement);
            }
        }
    }
    out.extend(current);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upsert(c: &mut Vec<Stmt>, table: &str, key: &str, value: i64) {
        insert(
            c,
            format!("INSERT INTO {table} (k, v) VALUES"),
            "(?, ?)".into(),
            "ON CONFLICT (k) DO UPDATE SET v = excluded.v".into(),
            key,
            vec![Arg::T(key.into()), Arg::I(value)],
        );
    }

    fn values(statement: &Stmt) -> Vec<String> {
        statement
            .args
            .iter()
            .map(|a| match a {
                Arg::I(v) => v.to_string(),
                Arg::T(v) => v.clone(),
            })
            .collect()
    }

    #[test]
    fn rows_of_a_kind_share_a_statement_and_a_repeated_key_waits_for_the_next() {
        let mut c = Vec::new();
        upsert(&mut c, "a", "x", 1);
        upsert(&mut c, "b", "x", 2);
        push(&mut c, "UPDATE s SET n = n + 1", vec![]);
        upsert(&mut c, "a", "y", 3);
        upsert(&mut c, "a", "x", 4);
        upsert(&mut c, "a", "x", 5);
        let out = batched(c);
        let texts: Vec<String> = out.iter().map(Stmt::text).collect();
        let a = "INSERT INTO a (k, v) VALUES";
        let a_tail = "ON CONFLICT (k) DO UPDATE SET v = excluded.v";
        assert_eq!(
            texts,
            [
                format!("{a} (?, ?), (?, ?) {a_tail}"),
                format!("{a} (?, ?) {a_tail}"),
                format!("{a} (?, ?) {a_tail}"),
                format!("INSERT INTO b (k, v) VALUES (?, ?) {a_tail}"),
                "UPDATE s SET n = n + 1".to_string(),
            ]
        );
        // The key x's rows run in page order: 1, then 4, then 5.
        assert_eq!(values(&out[0]), ["x", "1", "y", "3"]);
        assert_eq!(values(&out[1]), ["x", "4"]);
        assert_eq!(values(&out[2]), ["x", "5"]);
        assert_eq!(values(&out[3]), ["x", "2"]);
    }

    #[test]
    fn a_statement_never_holds_more_than_the_arguments_a_database_takes() {
        let mut c = Vec::new();
        for i in 0..10_000 {
            upsert(&mut c, "a", &i.to_string(), i);
        }
        let out = batched(c);
        assert_eq!(out.len(), 3, "20,000 arguments in statements of 8,000");
        assert!(out.iter().all(|s| s.args.len() <= MAX_ARGS));
        let rows: usize = out.iter().map(|s| s.args.len() / 2).sum();
        assert_eq!(rows, 10_000);
    }
}
