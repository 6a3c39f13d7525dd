//! Server-Sent Events for the pages' live updates: one stream per open page, woken by the
//! store's head watch (the log) or the sampler (the overview), never by polling.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;

use super::html::Query;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::{self, Stream};
use serde::Deserialize;

use super::pages::{event_row, LogFilter};
use crate::api::AppState;

/// Events sent at most per read of the log.
const BATCH: u32 = 100;

/// The overview's samples, each as it is taken (`sample` events of JSON).
pub(super) async fn overview(State(state): State<AppState>) -> Response {
    let samples = state.console.samples.subscribe();
    let stream = stream::unfold(samples, |mut samples| async move {
        samples.changed().await.ok()?;
        let sample = samples.borrow_and_update().clone();
        let data = serde_json::to_string(&sample).unwrap_or_else(|_| "null".into());
        Some((
            Ok::<_, Infallible>(Event::default().event("sample").data(data)),
            samples,
        ))
    });
    sse(stream)
}

/// The page's filters and the newest position it already shows (`after`). Not a
/// flattened [`LogFilter`]: a flattened query string reads every value as text, and
/// `after` is a number.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct TailParams {
    after: u64,
    aggregate_type: Option<String>,
    event_type: Option<String>,
    correlation_id: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

/// The log's new events after `after` that pass the page's filters, each as the table
/// row the page shows (`row` events of HTML).
pub(super) async fn events(
    State(state): State<AppState>,
    Query(params): Query<TailParams>,
) -> Response {
    let filter = LogFilter {
        aggregate_type: params.aggregate_type,
        event_type: params.event_type,
        correlation_id: params.correlation_id,
        from: params.from,
        to: params.to,
        before: None,
    };
    let query = match filter.query() {
        Ok(query) => query,
        Err(why) => {
            return (axum::http::StatusCode::BAD_REQUEST, why).into_response();
        }
    };
    let store = state.bus.store().clone();
    let head = store.watch_head();
    let start = (params.after, head, Vec::<Event>::new());
    let stream = stream::unfold(start, move |(mut after, mut head, mut pending)| {
        let (store, query) = (store.clone(), query.clone());
        async move {
            loop {
                if let Some(next) = pending.pop() {
                    return Some((Ok::<_, Infallible>(next), (after, head, pending)));
                }
                if *head.borrow_and_update() <= after {
                    head.changed().await.ok()?;
                    continue;
                }
                let events = match store.read_log(after, BATCH).await {
                    Ok(events) => events,
                    Err(error) => {
                        tracing::debug!(%error, "console tail: cannot read the log; trying again");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                let Some(last) = events.last() else {
                    // The head moved but nothing is readable yet (PostgreSQL's settled
                    // head): wait for the next change.
                    head.changed().await.ok()?;
                    continue;
                };
                after = last.position;
                // Newest last in `pending`'s pop order: the page puts each on top.
                pending = events
                    .iter()
                    .rev()
                    .filter(|e| passes(&query, e))
                    .map(|e| {
                        Event::default()
                            .event("row")
                            .id(e.position.to_string())
                            .data(event_row(e).into_string())
                    })
                    .collect();
            }
        }
    });
    sse(stream)
}

/// Whether an event passes a log query's filters.
fn passes(query: &cornershop_store::EventQuery, e: &cornershop_store::StoredEvent) -> bool {
    let env = &e.envelope;
    query.aggregate_type.is_none_or(|t| env.aggregate_type == t)
        && query
            .event_type
            .as_deref()
            .is_none_or(|t| env.event_type == t)
        && query
            .correlation_id
            .as_deref()
            .is_none_or(|c| env.metadata.correlation_id == c)
        && query.range.contains(env.timestamp)
}

fn sse(stream: impl Stream<Item = Result<Event, Infallible>> + Send + 'static) -> Response {
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}
