//! The console's pages. Each answers with its whole content (the script only adds live
//! updates); lists are paged by the store, never loaded whole.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Extension;
use chrono::{DateTime, Utc};
use cornershop_domain::{AggregateType, DomainEvent};
use cornershop_messaging::RedriveError;
use cornershop_readmodels::{projection, RebuildReport, PROJECTIONS};
use cornershop_store::{EventQuery, NotificationQuery, StoredEvent, TimeRange};
use maud::{html, Markup};
use serde::Deserialize;
use uuid::Uuid;

use super::html::{self, aggregate_link, count, event_link, json_block, page, when, Query};
use super::{csrf_token, SessionToken};
use crate::api::AppState;
use crate::auth::{Caller, Role};

/// Events on one page of the log.
const LOG_PAGE: u32 = 50;
/// Events of an aggregate's stream shown around the chosen one.
const STREAM_WINDOW: usize = 25;
/// Dead letters on one page.
const LETTERS_PAGE: usize = 50;

type PageResult = Result<Response, Response>;

/// A read that failed: logged with its cause, shown as what could not be read.
fn unavailable(what: &str, error: impl std::fmt::Display) -> Response {
    tracing::warn!(%error, "console: cannot read {what}");
    html::error_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Unavailable",
        &format!("The console cannot read {what} right now: {error}. Try again in a moment."),
    )
}

fn not_found(message: &str) -> Response {
    html::error_page(StatusCode::NOT_FOUND, "Not found", message)
}

fn bad_request(message: &str) -> Response {
    html::error_page(StatusCode::BAD_REQUEST, "Cannot show this", message)
}

/// The session's view of a page: who, and the CSRF token for its forms.
struct Viewer {
    caller: Caller,
    csrf: String,
}

impl Viewer {
    fn new(caller: Caller, session: &SessionToken) -> Self {
        Self {
            csrf: csrf_token(&session.0),
            caller,
        }
    }

    fn page(&self, title: &str, section: &str, body: Markup) -> Response {
        page(title, section, Some((&self.caller, &self.csrf)), body)
    }

    fn may_act(&self) -> bool {
        self.caller.has(Role::Admin)
    }

    fn csrf_field(&self) -> Markup {
        html! { input type="hidden" name="csrf" value=(self.csrf); }
    }
}

/// An answer's personal values as the viewer may see them (opened for admins, sealed for
/// staff, `[erased]` after an erasure), as the API shows them.
async fn revealed<T: serde::Serialize>(
    state: &AppState,
    caller: &Caller,
    answer: &T,
) -> serde_json::Value {
    let mut value = serde_json::to_value(answer).unwrap_or(serde_json::Value::Null);
    if let Err(error) = crate::api::customers::reveal_for(state, caller, &mut value).await {
        // Shown sealed: better than not at all, and nothing is opened by mistake.
        tracing::warn!(%error, "console: personal values stay sealed");
    }
    value
}

// ---------------------------------------------------------------------------------------
// Overview

pub(super) async fn overview(
    State(state): State<AppState>,
    caller: Caller,
    Extension(session): Extension<SessionToken>,
) -> PageResult {
    let viewer = Viewer::new(caller, &session);
    let statuses = state
        .read_models
        .order_status_counts()
        .await
        .map_err(|e| unavailable("the orders' read model", e))?;
    let samples = state.console.samples.all();
    let latest = samples.last().cloned();
    let history = serde_json::to_value(&samples).unwrap_or_default();
    let stats = state
        .bus
        .store()
        .stats()
        .await
        .map_err(|e| unavailable("the event store's statistics", e))?;
    let figure = |label: &str, key: &str, value: String| {
        html! {
            div class="figure" {
                dt { (label) }
                dd {
                    span class="value" data-live=(key) { (value) }
                    svg class="spark" data-spark=(key) viewBox="0 0 120 30" role="img" aria-label=(format!("{label}, the last minutes")) {
                        polyline points="" {}
                    }
                }
            }
        }
    };
    let rate = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.1}"));
    let body = html! {
        p class="lead" {
            (count(stats.total_events)) " events in the store, "
            (count(stats.total_aggregates)) " aggregates; the log's head is at position "
            span data-live="head" { (count(stats.head_position)) } "."
        }
        section aria-labelledby="now" {
            h2 id="now" { "Now" }
            dl class="figures" {
                (figure("Events written per second", "writtenPerSecond", rate(latest.as_ref().map(|s| s.written_per_second))))
                (figure("Events consumed per second", "consumedPerSecond", rate(latest.as_ref().map(|s| s.consumed_per_second))))
                (figure("Consumer lag", "consumerLag", latest.as_ref().map_or("–".into(), |s| count(s.consumer_lag))))
                (figure("Dead letters pending", "deadLettersPending", latest.as_ref().map_or("–".into(), |s| count(s.dead_letters_pending))))
                (figure("Projection lag", "projectionLag", latest.as_ref().map_or("–".into(), |s| count(s.projection_lag))))
            }
            script type="application/json" id="history" { (html::script_json(&history)) }
        }
        section aria-labelledby="orders" {
            h2 id="orders" { "Orders by status" }
            @if statuses.is_empty() {
                p { "No orders yet." }
            } @else {
                table class="compact" {
                    thead { tr { th scope="col" { "Status" } th scope="col" { "Orders" } } }
                    tbody {
                        @for (status, n) in &statuses {
                            tr {
                                td data-label="Status" { (status) }
                                td data-label="Orders" class="num" data-order-status=(status) { (count(*n)) }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="types" {
            h2 id="types" { "Events by type" }
            table class="compact" {
                thead { tr { th scope="col" { "Event type" } th scope="col" { "Events" } } }
                tbody {
                    @for (kind, n) in &stats.by_event_type {
                        tr {
                            td data-label="Event type" { a href=(format!("/console/events?eventType={}", html::encode(kind))) { (kind) } }
                            td data-label="Events" class="num" { (count(*n)) }
                        }
                    }
                }
            }
        }
    };
    Ok(viewer.page("Overview", "/console", body))
}

// ---------------------------------------------------------------------------------------
// The event log

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct LogFilter {
    pub aggregate_type: Option<String>,
    pub event_type: Option<String>,
    pub correlation_id: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    /// Older than this position (the next page).
    pub before: Option<u64>,
}

impl LogFilter {
    /// The store's query for these filters, or what is wrong with them.
    pub(super) fn query(&self) -> Result<EventQuery, String> {
        let blank = |v: &Option<String>| {
            v.as_deref()
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        let aggregate_type = match blank(&self.aggregate_type) {
            Some(t) => Some(AggregateType::parse(&t).ok_or_else(|| {
                format!("'{t}' is not an aggregate type: use Cart, Order, Payment, Inventory or Customer")
            })?),
            None => None,
        };
        let event_type = blank(&self.event_type);
        if let Some(t) = &event_type {
            if !DomainEvent::TYPES.contains(&t.as_str()) {
                return Err(format!("'{t}' is not an event type"));
            }
        }
        let instant = |v: Option<String>, name: &str| -> Result<Option<DateTime<Utc>>, String> {
            v.map(|v| {
                parse_instant(&v).ok_or_else(|| {
                    format!(
                        "{name} '{v}' is not a date and time (use 2026-12-04T18:00 or RFC 3339)"
                    )
                })
            })
            .transpose()
        };
        Ok(EventQuery {
            aggregate_type,
            event_type,
            correlation_id: blank(&self.correlation_id),
            range: TimeRange {
                from: instant(blank(&self.from), "From")?,
                to: instant(blank(&self.to), "To")?,
            },
            after: 0,
            before: Some(self.before.unwrap_or(u64::MAX)),
            limit: LOG_PAGE,
        })
    }

    /// The filters as a query string (without `before`), for links to other pages.
    fn query_string(&self) -> String {
        [
            ("aggregateType", &self.aggregate_type),
            ("eventType", &self.event_type),
            ("correlationId", &self.correlation_id),
            ("from", &self.from),
            ("to", &self.to),
        ]
        .iter()
        .filter_map(|(name, value)| {
            value
                .as_deref()
                .filter(|v| !v.is_empty())
                .map(|v| format!("{name}={}", html::encode(v)))
        })
        .collect::<Vec<_>>()
        .join("&")
    }
}

/// An instant as a person types it: RFC 3339, or a `datetime-local` value (UTC).
fn parse_instant(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(text, format) {
            return Some(t.and_utc());
        }
    }
    None
}

/// A row of the log's table (the live tail sends the same).
pub(super) fn event_row(e: &StoredEvent) -> Markup {
    let env = &e.envelope;
    html! {
        tr data-position=(e.position) {
            td data-label="Position" class="num" { (e.position) }
            td data-label="Time" { time datetime=(env.timestamp.to_rfc3339()) { (when(env.timestamp)) } }
            td data-label="Event" { (event_link(&env.event_id, &env.event_type)) }
            td data-label="Aggregate" { (aggregate_link(env.aggregate_type.as_str(), &env.aggregate_id)) " v" (env.version) }
            td data-label="Correlation" class="id" {
                a href=(format!("/console/events?correlationId={}", html::encode(&env.metadata.correlation_id))) { (env.metadata.correlation_id) }
            }
        }
    }
}

pub(super) async fn events(
    State(state): State<AppState>,
    caller: Caller,
    Extension(session): Extension<SessionToken>,
    Query(filter): Query<LogFilter>,
) -> PageResult {
    let viewer = Viewer::new(caller, &session);
    let mut query = filter.query().map_err(|why| bad_request(&why))?;
    let first_page = filter.before.is_none();
    // The head first: the page shows the log up to it and the live tail goes on from it,
    // so that an event written in between is in one or the other.
    let head = state
        .bus
        .store()
        .head_position()
        .await
        .map_err(|e| unavailable("the event log", e))?;
    if first_page {
        query.before = Some(head.saturating_add(1));
    }
    let page = state
        .bus
        .store()
        .query(&query)
        .await
        .map_err(|e| unavailable("the event log", e))?;
    let older = (page.len() == LOG_PAGE as usize)
        .then(|| page.last().map(|e| e.position))
        .flatten();
    let filters = filter.query_string();
    let selected = |value: &Option<String>, option: &str| value.as_deref() == Some(option);
    let body = html! {
        form method="get" action="/console/events" class="filters" aria-label="Filter the log" {
            div {
                label for="aggregateType" { "Aggregate type" }
                select id="aggregateType" name="aggregateType" {
                    option value="" { "Any" }
                    @for t in AggregateType::ALL {
                        option value=(t.as_str()) selected[selected(&filter.aggregate_type, t.as_str())] { (t.as_str()) }
                    }
                }
            }
            div {
                label for="eventType" { "Event type" }
                select id="eventType" name="eventType" {
                    option value="" { "Any" }
                    @for t in DomainEvent::TYPES {
                        option value=(t) selected[selected(&filter.event_type, t)] { (t) }
                    }
                }
            }
            div {
                label for="correlationId" { "Correlation id" }
                input id="correlationId" name="correlationId" type="text" value=(filter.correlation_id.clone().unwrap_or_default());
            }
            div {
                label for="from" { "From (UTC)" }
                input id="from" name="from" type="datetime-local" step="1" value=(filter.from.clone().unwrap_or_default());
            }
            div {
                label for="to" { "To (UTC)" }
                input id="to" name="to" type="datetime-local" step="1" value=(filter.to.clone().unwrap_or_default());
            }
            div class="actions" {
                button type="submit" { "Filter" }
                a href="/console/events" { "Clear" }
            }
        }
        @if first_page {
            p class="live" {
                span id="tail-status" role="status" aria-live="polite" { "Newest first. New events appear at the top as they are written." }
            }
        }
        table id="log" data-tail=[first_page.then(|| format!("/console/live/events?after={head}{}{filters}", if filters.is_empty() { "" } else { "&" }))] {
            thead {
                tr {
                    th scope="col" { "Position" }
                    th scope="col" { "Time" }
                    th scope="col" { "Event" }
                    th scope="col" { "Aggregate" }
                    th scope="col" { "Correlation" }
                }
            }
            tbody {
                @for e in &page { (event_row(e)) }
            }
        }
        @if page.is_empty() {
            p { "No event matches." }
        }
        nav class="pager" aria-label="Pages" {
            @if !first_page {
                a href=(format!("/console/events?{filters}")) { "Newest" }
            }
            @if let Some(older) = older {
                a href=(format!("/console/events?{filters}{}before={older}", if filters.is_empty() { "" } else { "&" })) rel="next" { "Older events" }
            }
        }
    };
    Ok(viewer.page("Event log", "/console/events", body))
}

pub(super) async fn event(
    State(state): State<AppState>,
    caller: Caller,
    Extension(session): Extension<SessionToken>,
    Path(event_id): Path<String>,
) -> PageResult {
    let viewer = Viewer::new(caller, &session);
    let Ok(id) = Uuid::parse_str(&event_id) else {
        return Err(not_found("There is no event with this id."));
    };
    let store = state.bus.store();
    let event = store
        .find_event(id)
        .await
        .map_err(|e| unavailable("the event", e))?
        .ok_or_else(|| not_found("There is no event with this id."))?;
    let env = &event.envelope;
    // Its cause is an event of the same business transaction (or the request that sent
    // the command); its effects are the events whose causationId is its id.
    let chain = store
        .events_by_correlation(&env.metadata.correlation_id)
        .await
        .map_err(|e| unavailable("the event's business transaction", e))?;
    let cause = Uuid::parse_str(&env.metadata.causation_id)
        .ok()
        .and_then(|c| chain.iter().find(|e| e.envelope.event_id == c));
    let id_text = id.to_string();
    let effects: Vec<&StoredEvent> = chain
        .iter()
        .filter(|e| e.envelope.metadata.causation_id == id_text)
        .collect();
    let shown = revealed(&state, &viewer.caller, &event).await;
    let title = format!("{} at position {}", env.event_type, event.position);
    let body = html! {
        dl class="facts" {
            dt { "Aggregate" } dd { (aggregate_link(env.aggregate_type.as_str(), &env.aggregate_id)) " at version " (env.version) }
            dt { "Time" } dd { (when(env.timestamp)) }
            dt { "Correlation" } dd class="id" { a href=(format!("/console/events?correlationId={}", html::encode(&env.metadata.correlation_id))) { (env.metadata.correlation_id) } }
            @if env.aggregate_type == AggregateType::Order {
                dt { "Order" } dd { a href=(format!("/console/orders/{}", html::encode(&env.aggregate_id))) { "The order's causal graph" } }
            }
            dt { "Cause" }
            dd {
                @match cause {
                    Some(c) => { (event_link(&c.envelope.event_id, &c.envelope.event_type)) " (" (html::millis((env.timestamp - c.envelope.timestamp).num_milliseconds())) " before)" }
                    None => { "A request or a timer: " code { (env.metadata.causation_id) } }
                }
            }
            dt { "Effects" }
            dd {
                @if effects.is_empty() { "None" }
                ul class="inline" {
                    @for e in &effects {
                        li { (event_link(&e.envelope.event_id, &e.envelope.event_type)) " (" (html::millis((e.envelope.timestamp - env.timestamp).num_milliseconds())) " after)" }
                    }
                }
            }
        }
        h2 { "Envelope" }
        (json_block(&shown))
    };
    Ok(viewer.page(&title, "/console/events", body))
}

// ---------------------------------------------------------------------------------------
// An aggregate, at an instant

#[derive(Debug, Deserialize)]
pub(super) struct AggregateParams {
    /// Fold the events up to and including this version.
    version: Option<u64>,
}

pub(super) async fn aggregate(
    State(state): State<AppState>,
    caller: Caller,
    Extension(session): Extension<SessionToken>,
    Path((kind, id)): Path<(String, String)>,
    Query(params): Query<AggregateParams>,
) -> PageResult {
    let viewer = Viewer::new(caller, &session);
    let Some(kind) = AggregateType::parse(&kind) else {
        return Err(not_found(
            "There is no such aggregate type: use Cart, Order, Payment, Inventory or Customer.",
        ));
    };
    let store = state.bus.store();
    let events = store
        .load_aggregate(kind, &id, TimeRange::default())
        .await
        .map_err(|e| unavailable("the aggregate's events", e))?;
    let Some(last) = events.last() else {
        return Err(not_found("This aggregate has no events."));
    };
    let latest = last.envelope.version;
    let version = params.version.unwrap_or(latest).clamp(1, latest);
    // By its version, not its index: a page never indexes past what the store returned.
    let at = events
        .iter()
        .position(|e| e.envelope.version == version)
        .unwrap_or(events.len() - 1);
    let chosen = &events[at];
    // Time travel is the API's: the state folded from the first event up to the chosen
    // event's instant (events of one instant are folded together, as they were written).
    let replay = state
        .bus
        .replay(kind, &id, None, Some(chosen.envelope.timestamp))
        .await
        .map_err(|e| unavailable("the aggregate's state", e))?;
    let folded = replay.version;
    let shown = revealed(&state, &viewer.caller, &replay.state).await;
    let start = at.saturating_sub(STREAM_WINDOW / 2);
    let window = &events[start..start.saturating_add(STREAM_WINDOW).min(events.len())];
    let base = format!(
        "/console/aggregates/{}/{}",
        kind.as_str(),
        html::encode(&id)
    );
    let body = html! {
        form method="get" action=(base) class="travel" aria-label="Time travel" {
            label for="version" { "State after version " output id="version-shown" for="version" { (version) } " of " (latest) }
            input id="version" name="version" type="range" min="1" max=(latest) value=(version) data-autosubmit;
            button type="submit" { "Show" }
        }
        p {
            "As it was at " time datetime=(chosen.envelope.timestamp.to_rfc3339()) { (when(chosen.envelope.timestamp)) }
            ", after " (chosen.envelope.event_type) " (folded " (folded) " event" @if folded != 1 { "s" } ")."
            @if kind == AggregateType::Order {
                " " a href=(format!("/console/orders/{}", html::encode(&id))) { "The order's causal graph" }
            }
        }
        h2 { "State" }
        div id="state" { (json_block(&shown)) }
        h2 { "Stream" }
        p { "Events " (window.first().map_or(0, |e| e.envelope.version)) " to " (window.last().map_or(0, |e| e.envelope.version)) " of " (latest) "." }
        table {
            thead { tr { th scope="col" { "Version" } th scope="col" { "Time" } th scope="col" { "Event" } th scope="col" { "" } } }
            tbody {
                @for e in window {
                    tr class=[(e.envelope.version == version).then_some("chosen")] {
                        td data-label="Version" class="num" { (e.envelope.version) }
                        td data-label="Time" { (when(e.envelope.timestamp)) }
                        td data-label="Event" { (event_link(&e.envelope.event_id, &e.envelope.event_type)) }
                        td data-label="State" { a href=(format!("{base}?version={}", e.envelope.version)) { "State here" } }
                    }
                }
            }
        }
    };
    Ok(viewer.page(&format!("{} {id}", kind.as_str()), "", body))
}

// ---------------------------------------------------------------------------------------
// An order's causal graph

pub(super) async fn order(
    State(state): State<AppState>,
    caller: Caller,
    Extension(session): Extension<SessionToken>,
    Path(order_id): Path<String>,
) -> PageResult {
    let viewer = Viewer::new(caller, &session);
    let store = state.bus.store();
    let stream = store
        .load_aggregate_after(AggregateType::Order, &order_id, 0)
        .await
        .map_err(|e| unavailable("the order", e))?;
    let Some(first) = stream.first() else {
        return Err(not_found("There is no order with this id."));
    };
    let chain = store
        .events_by_correlation(&first.envelope.metadata.correlation_id)
        .await
        .map_err(|e| unavailable("the order's events", e))?;
    let notifications = store
        .notifications(&NotificationQuery {
            order_id: Some(order_id.clone()),
            limit: 100,
            ..NotificationQuery::default()
        })
        .await
        .map_err(|e| unavailable("the order's notifications", e))?;
    let graph = causal_tree(&chain);
    let start = chain.first().map(|e| e.envelope.timestamp);
    let total = match (chain.first(), chain.last()) {
        (Some(a), Some(b)) => (b.envelope.timestamp - a.envelope.timestamp).num_milliseconds(),
        _ => 0,
    };
    let body = html! {
        p class="lead" {
            (chain.len()) " events in this business transaction, over " (html::millis(total)) ". "
            (aggregate_link("Order", &order_id)) " · "
            a href=(format!("/console/events?correlationId={}", html::encode(&first.envelope.metadata.correlation_id))) { "In the event log" }
        }
        h2 { "Causal graph" }
        p class="hint" { "Each step under its cause, with the time it took after it." }
        ol class="tree" id="causal-graph" {
            @for root in &graph.roots {
                (tree_node(&graph, *root, start))
            }
        }
        h2 { "Notifications" }
        @if notifications.is_empty() {
            p { "None sent for this order." }
        } @else {
            table {
                thead { tr { th scope="col" { "Channel" } th scope="col" { "Template" } th scope="col" { "Status" } th scope="col" { "Because of" } } }
                tbody {
                    @for n in &notifications {
                        tr {
                            td data-label="Channel" { (n.channel) }
                            td data-label="Template" { (n.template) }
                            td data-label="Status" { (n.status) }
                            td data-label="Because of" { (event_link(&n.event_id, &n.event_type)) }
                        }
                    }
                }
            }
        }
    };
    Ok(viewer.page(&format!("Order {order_id}"), "", body))
}

/// The events of a business transaction as a forest: each under the event that caused it.
struct Tree<'a> {
    events: &'a [StoredEvent],
    children: HashMap<usize, Vec<usize>>,
    roots: Vec<usize>,
}

fn causal_tree(events: &[StoredEvent]) -> Tree<'_> {
    let by_id: HashMap<String, usize> = events
        .iter()
        .enumerate()
        .map(|(i, e)| (e.envelope.event_id.to_string(), i))
        .collect();
    let mut children: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut roots = Vec::new();
    for (i, e) in events.iter().enumerate() {
        match by_id.get(&e.envelope.metadata.causation_id) {
            // Commit order is causal order: a cause is always before its effect, so the
            // tree has no cycle.
            Some(&parent) if parent < i => children.entry(parent).or_default().push(i),
            _ => roots.push(i),
        }
    }
    Tree {
        events,
        children,
        roots,
    }
}

fn tree_node(tree: &Tree<'_>, i: usize, start: Option<DateTime<Utc>>) -> Markup {
    let e = &tree.events[i];
    let env = &e.envelope;
    let parent_time = tree
        .children
        .iter()
        .find(|(_, kids)| kids.contains(&i))
        .map(|(p, _)| tree.events[*p].envelope.timestamp);
    html! {
        li {
            div class="step" {
                (event_link(&env.event_id, &env.event_type))
                " " span class="muted" { (env.aggregate_type.as_str()) }
                @if let Some(p) = parent_time {
                    " " span class="latency" title="after its cause" { "+" (html::millis((env.timestamp - p).num_milliseconds())) }
                } @else if let Some(s) = start {
                    " " span class="latency" title="after the first event" { "at +" (html::millis((env.timestamp - s).num_milliseconds())) }
                }
            }
            @if let Some(kids) = tree.children.get(&i) {
                ol { @for k in kids { (tree_node(tree, *k, start)) } }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Kafka

pub(super) async fn kafka(
    State(state): State<AppState>,
    caller: Caller,
    Extension(session): Extension<SessionToken>,
) -> PageResult {
    let viewer = Viewer::new(caller, &session);
    let Some(inspector) = &state.console.kafka else {
        return Ok(viewer.page(
            "Kafka",
            "/console/kafka",
            html! { p { "This shop runs on the embedded log, without Kafka: see " a href="/console/consumers" { "the consumers" } " for their checkpoints." } },
        ));
    };
    let topics = inspector
        .topics()
        .await
        .map_err(|e| unavailable("Kafka's topics", e))?;
    let groups = inspector
        .groups()
        .await
        .map_err(|e| unavailable("Kafka's consumer groups", e))?;
    let body = html! {
        h2 { "Topics" }
        table id="topics" {
            thead { tr { th scope="col" { "Topic" } th scope="col" { "Partition" } th scope="col" { "Leader" } th scope="col" { "Replicas (in sync)" } th scope="col" { "Offsets" } th scope="col" { "Messages" } } }
            tbody {
                @for t in &topics {
                    @for p in &t.partitions {
                        tr data-topic=(t.name) {
                            td data-label="Topic" { (t.name) }
                            td data-label="Partition" class="num" { (p.partition) }
                            td data-label="Leader" class="num" { (p.leader) }
                            td data-label="Replicas" { (p.replicas.len()) " (" (p.in_sync_replicas.len()) ")" }
                            td data-label="Offsets" class="num" { (p.low) "–" (p.high) }
                            td data-label="Messages" class="num" {
                                a href=(format!("/console/kafka/messages?topic={}&partition={}&offset={}", html::encode(&t.name), p.partition, p.low)) { (count(p.messages.max(0) as u64)) }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Consumer groups" }
        @for g in &groups {
            section class="group" data-group=(g.name) {
                h3 { (g.name) " " span class="muted" { (g.state) } }
                p { (g.members.len()) " member" @if g.members.len() != 1 { "s" } ": "
                    @for (i, m) in g.members.iter().enumerate() {
                        @if i > 0 { ", " }
                        (m.client_id) " on " (m.host)
                    }
                }
                @if !g.offsets.is_empty() {
                    table {
                        thead { tr { th scope="col" { "Topic" } th scope="col" { "Partition" } th scope="col" { "Committed" } th scope="col" { "End" } th scope="col" { "Lag" } } }
                        tbody {
                            @for o in &g.offsets {
                                tr {
                                    td data-label="Topic" { (o.topic) }
                                    td data-label="Partition" class="num" { (o.partition) }
                                    td data-label="Committed" class="num" { (o.committed) }
                                    td data-label="End" class="num" { (o.high) }
                                    td data-label="Lag" class="num" data-lag { (o.lag) }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if groups.is_empty() { p { "No consumer group yet." } }
    };
    Ok(viewer.page("Kafka", "/console/kafka", body))
}

#[derive(Debug, Deserialize)]
pub(super) struct BrowseParams {
    topic: String,
    partition: Option<i32>,
    offset: Option<i64>,
}

pub(super) async fn kafka_messages(
    State(state): State<AppState>,
    caller: Caller,
    Extension(session): Extension<SessionToken>,
    Query(params): Query<BrowseParams>,
) -> PageResult {
    let viewer = Viewer::new(caller, &session);
    let Some(inspector) = &state.console.kafka else {
        return Err(not_found("This shop runs without Kafka."));
    };
    let (partition, offset) = (params.partition.unwrap_or(0), params.offset.unwrap_or(0));
    let messages = inspector
        .browse(&params.topic, partition, offset, 20)
        .await
        .map_err(|e| {
            bad_request(&format!(
                "Cannot read {} partition {partition}: {e}",
                params.topic
            ))
        })?;
    let next = messages.last().map(|m| m.offset + 1);
    let body = html! {
        form method="get" action="/console/kafka/messages" class="filters" aria-label="Which messages" {
            div { label for="topic" { "Topic" } input id="topic" name="topic" type="text" value=(params.topic); }
            div { label for="partition" { "Partition" } input id="partition" name="partition" type="number" min="0" value=(partition); }
            div { label for="offset" { "From offset" } input id="offset" name="offset" type="number" min="0" value=(offset); }
            div class="actions" { button type="submit" { "Read" } }
        }
        @if messages.is_empty() { p { "No message at or after this offset." } }
        @for m in &messages {
            article class="message" {
                h2 { "Offset " (m.offset) }
                dl class="facts" {
                    dt { "Key" } dd class="id" { (m.key.clone().unwrap_or_default()) }
                    @if let Some(ms) = m.timestamp { dt { "Time" } dd { (DateTime::<Utc>::from_timestamp_millis(ms).map(when).unwrap_or_default()) } }
                    @for h in &m.headers { dt { (h.name) } dd class="id" { (h.value.clone().unwrap_or_default()) } }
                }
                pre class="json" { (m.value.clone().unwrap_or_default()) }
            }
        }
        @if let Some(next) = next {
            nav class="pager" aria-label="Pages" {
                a rel="next" href=(format!("/console/kafka/messages?topic={}&partition={partition}&offset={next}", html::encode(&params.topic))) { "Next messages" }
            }
        }
    };
    Ok(viewer.page(
        &format!("{} · partition {partition}", params.topic),
        "/console/kafka",
        body,
    ))
}

// ---------------------------------------------------------------------------------------
// Consumers and projections

/// Rebuilds started from the console: where each stands, for its progress bar.
#[derive(Default, Clone)]
pub(crate) struct Rebuilds(Arc<Mutex<BTreeMap<String, Rebuild>>>);

#[derive(Debug, Clone)]
enum Rebuild {
    Running { position: u64, head: u64 },
    Done(RebuildReport),
    Failed(String),
}

impl Rebuilds {
    fn set(&self, name: &str, rebuild: Rebuild) {
        if let Ok(mut all) = self.0.lock() {
            all.insert(name.to_string(), rebuild);
        }
    }

    fn get(&self, name: &str) -> Option<Rebuild> {
        self.0.lock().ok().and_then(|all| all.get(name).cloned())
    }
}

/// The last verification run from the console: when, and the orders and SKUs checked
/// with the mismatches, or why it could not run.
pub(crate) type Verified = Mutex<Option<(DateTime<Utc>, Result<(u64, u64, Vec<String>), String>)>>;

pub(super) async fn consumers(
    State(state): State<AppState>,
    caller: Caller,
    Extension(session): Extension<SessionToken>,
) -> PageResult {
    let viewer = Viewer::new(caller, &session);
    let store = state.bus.store();
    let head = store
        .head_position()
        .await
        .map_err(|e| unavailable("the log's head", e))?;
    let checkpoints = store
        .checkpoints()
        .await
        .map_err(|e| unavailable("the checkpoints", e))?;
    let projections = projection::status(state.read_models.as_ref(), store.as_ref(), &state.stalls)
        .await
        .map_err(|e| unavailable("the projections", e))?;
    let running = PROJECTIONS
        .iter()
        .any(|p| matches!(state.console.rebuilds.get(p), Some(Rebuild::Running { .. })));
    let verified = state.console.verified.lock().ok().and_then(|v| v.clone());
    let body = html! {
        @if running {
            // The progress bar moves with the page: a rebuild reports where it stands.
            meta http-equiv="refresh" content="1";
        }
        h2 { "Consumers" }
        p { "The log's head is at position " (count(head)) "." }
        table id="consumers" {
            thead { tr { th scope="col" { "Consumer" } th scope="col" { "Checkpoint" } th scope="col" { "Lag" } th scope="col" { "Stalled" } th scope="col" { "Updated" } } }
            tbody {
                @for c in &checkpoints {
                    @let lag = head.saturating_sub(c.position);
                    tr {
                        td data-label="Consumer" { (c.consumer) }
                        td data-label="Checkpoint" class="num" { (count(c.position)) }
                        td data-label="Lag" class="num" { (count(lag)) }
                        td data-label="Stalled" { @if state.stalls.observe(&c.consumer, c.position, head) { strong { "stalled" } } @else { "no" } }
                        td data-label="Updated" { (when(c.updated_at)) }
                    }
                }
            }
        }
        @if checkpoints.is_empty() { p { "No consumer has a checkpoint in the store (on Kafka, see " a href="/console/kafka" { "the consumer groups" } ")." } }
        h2 { "Projections" }
        table id="projections" {
            thead { tr { th scope="col" { "Projection" } th scope="col" { "Checkpoint" } th scope="col" { "Lag" } th scope="col" { "Generation" } th scope="col" { "Rebuild" } } }
            tbody {
                @for p in &projections {
                    tr {
                        td data-label="Projection" { (p.name) }
                        td data-label="Checkpoint" class="num" { (count(p.checkpoint)) }
                        td data-label="Lag" class="num" { (count(p.lag)) }
                        td data-label="Generation" class="num" { (p.generation) }
                        td data-label="Rebuild" {
                            @match state.console.rebuilds.get(&p.name) {
                                Some(Rebuild::Running { position, head }) => {
                                    label for=(format!("progress-{}", p.name)) { "Rebuilding" }
                                    progress id=(format!("progress-{}", p.name)) max=(head.max(1)) value=(position) { (position) " of " (head) }
                                }
                                Some(Rebuild::Done(report)) => {
                                    span class="ok" role="status" { "Rebuilt from " (count(report.events_read)) " events up to position " (count(report.position)) " (generation " (report.generation) ")." }
                                }
                                Some(Rebuild::Failed(why)) => { span class="error" role="alert" { "The rebuild failed: " (why) } }
                                None => {
                                    @if let Some(why) = &p.last_rebuild_error { span class="error" { (why) } }
                                }
                            }
                            @if viewer.may_act() && !running {
                                form method="post" action=(format!("/console/projections/{}/rebuild", html::encode(&p.name))) class="inline" {
                                    (viewer.csrf_field())
                                    button type="submit" { "Rebuild " (p.name) }
                                }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Verify" }
        p { "Compares every order and SKU of the read models with its aggregate, replayed from the events." }
        @match &verified {
            Some((at, Ok((orders, skus, mismatches)))) => {
                p class=(if mismatches.is_empty() { "ok" } else { "error" }) role="status" id="verify-result" {
                    "At " (when(*at)) ": verified " (count(*orders)) " orders and " (count(*skus)) " SKUs, " (mismatches.len()) " mismatch" @if mismatches.len() != 1 { "es" } "."
                }
                @if !mismatches.is_empty() { ul { @for m in mismatches { li { (m) } } } }
            }
            Some((at, Err(why))) => { p class="error" role="alert" id="verify-result" { "At " (when(*at)) ": the verification could not run: " (why) } }
            None => {}
        }
        @if viewer.may_act() {
            form method="post" action="/console/projections/verify" {
                (viewer.csrf_field())
                button type="submit" { "Verify the read models" }
            }
        }
    };
    Ok(viewer.page("Consumers and projections", "/console/consumers", body))
}

pub(super) async fn rebuild_projection(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> PageResult {
    if !PROJECTIONS.contains(&name.as_str()) {
        return Err(not_found("There is no such projection."));
    }
    if matches!(
        state.console.rebuilds.get(&name),
        Some(Rebuild::Running { .. })
    ) {
        return Ok(Redirect::to("/console/consumers").into_response());
    }
    tracing::info!(projection = %name, "rebuild requested from the console");
    let rebuilds = state.console.rebuilds.clone();
    rebuilds.set(
        &name,
        Rebuild::Running {
            position: 0,
            head: 0,
        },
    );
    let (read_models, store) = (state.read_models.clone(), state.bus.store().clone());
    // A task of its own: it runs to its end whoever watches it.
    tokio::spawn(async move {
        let progress = |p: cornershop_readmodels::RebuildProgress| {
            rebuilds.set(
                &name,
                Rebuild::Running {
                    position: p.position,
                    head: p.head,
                },
            );
        };
        let outcome = read_models.rebuild(&name, store.as_ref(), &progress).await;
        match outcome {
            Ok(report) => {
                tracing::info!(projection = %name, events = report.events_read, "rebuild swapped in");
                rebuilds.set(&name, Rebuild::Done(report));
            }
            Err(error) => {
                tracing::warn!(projection = %name, %error, "rebuild failed");
                rebuilds.set(&name, Rebuild::Failed(error.to_string()));
            }
        }
    });
    Ok(Redirect::to("/console/consumers").into_response())
}

pub(super) async fn verify_projections(State(state): State<AppState>) -> PageResult {
    let (bus, read_models) = (state.bus.clone(), state.read_models.clone());
    // `verify`'s future is not `Send` (a closure over borrowed ids inside), so it runs on a
    // blocking thread of its own, driven there.
    let runtime = tokio::runtime::Handle::current();
    let outcome = tokio::task::spawn_blocking(move || {
        runtime.block_on(cornershop_readmodels::verify::verify(
            &bus,
            read_models.as_ref(),
            3,
            Duration::from_millis(500),
        ))
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r.map_err(|e| e.to_string()))
    .map(|r| {
        (
            r.orders_checked,
            r.skus_checked,
            r.mismatches.iter().map(ToString::to_string).collect(),
        )
    });
    if let Ok(mut last) = state.console.verified.lock() {
        *last = Some((Utc::now(), outcome));
    }
    Ok(Redirect::to("/console/consumers#verify-result").into_response())
}

// ---------------------------------------------------------------------------------------
// Dead letters

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct LetterFilter {
    status: Option<String>,
    consumer: Option<String>,
    event_type: Option<String>,
    page: Option<usize>,
}

pub(super) async fn dead_letters(
    State(state): State<AppState>,
    caller: Caller,
    Extension(session): Extension<SessionToken>,
    Query(filter): Query<LetterFilter>,
) -> PageResult {
    let viewer = Viewer::new(caller, &session);
    let status = match filter.status.as_deref() {
        None | Some("pending") => Some("pending"),
        Some("resolved") => Some("resolved"),
        Some("all") => None,
        Some(other) => {
            return Err(bad_request(&format!(
                "'{other}' is not a status: use pending, resolved or all"
            )))
        }
    };
    let all = state
        .bus
        .store()
        .dead_letters(status)
        .await
        .map_err(|e| unavailable("the dead letters", e))?;
    fn wanted(v: &Option<String>) -> Option<&str> {
        v.as_deref().filter(|v| !v.is_empty())
    }
    let letters: Vec<_> = all
        .into_iter()
        .filter(|l| wanted(&filter.consumer).is_none_or(|c| l.consumer == c))
        .filter(|l| wanted(&filter.event_type).is_none_or(|t| l.event_type == t))
        .collect();
    let page_no = filter.page.unwrap_or(0);
    let shown: Vec<_> = letters
        .iter()
        .skip(page_no.saturating_mul(LETTERS_PAGE))
        .take(LETTERS_PAGE)
        .collect();
    let status_name = status.unwrap_or("all");
    // On Kafka, messages no consumer could even read (no event in them) are parked in the
    // `.dlq` topics instead: listed here, each with a link to its messages.
    let parked = match &state.console.kafka {
        Some(kafka) => match kafka.topics().await {
            Ok(topics) => topics.into_iter().filter(|t| t.dead_letter).collect(),
            Err(error) => {
                tracing::debug!(%error, "console: the dead-letter topics are not listed");
                Vec::new()
            }
        },
        None => Vec::new(),
    };
    let body = html! {
        form method="get" action="/console/deadletters" class="filters" aria-label="Filter the dead letters" {
            div {
                label for="status" { "Status" }
                select id="status" name="status" {
                    @for s in ["pending", "resolved", "all"] { option value=(s) selected[s == status_name] { (s) } }
                }
            }
            div { label for="consumer" { "Consumer" } input id="consumer" name="consumer" type="text" value=(filter.consumer.clone().unwrap_or_default()); }
            div { label for="letterEventType" { "Event type" } input id="letterEventType" name="eventType" type="text" value=(filter.event_type.clone().unwrap_or_default()); }
            div class="actions" { button type="submit" { "Filter" } }
        }
        p role="status" {
            (letters.len()) " dead letter" @if letters.len() != 1 { "s" }
            " " @if status.is_some() { (status_name) } @else { "in all" } "."
        }
        form method="post" action="/console/deadletters/redrive" id="redrive-form" {
            @if viewer.may_act() { (viewer.csrf_field()) }
            table id="dead-letters" {
                thead {
                    tr {
                        @if viewer.may_act() { th scope="col" { span class="visually-hidden" { "Select" } } }
                        th scope="col" { "Id" } th scope="col" { "Consumer" } th scope="col" { "Event" } th scope="col" { "Error" } th scope="col" { "Attempts" } th scope="col" { "Last failed" } th scope="col" { "Status" }
                    }
                }
                tbody {
                    @for l in &shown {
                        tr data-letter=(l.id) {
                            @if viewer.may_act() {
                                td data-label="Select" {
                                    @if l.status == "pending" {
                                        input type="checkbox" name="ids" value=(l.id) id=(format!("letter-{}", l.id)) aria-label=(format!("Select dead letter {}", l.id));
                                    }
                                }
                            }
                            td data-label="Id" class="num" { (l.id) }
                            td data-label="Consumer" { (l.consumer) }
                            td data-label="Event" { (event_link(&l.event_id, &l.event_type)) " of " (l.aggregate_id) }
                            td data-label="Error" class="wrap" { (l.error) }
                            td data-label="Attempts" class="num" { (l.attempts) }
                            td data-label="Last failed" { (when(l.last_failed_at)) }
                            td data-label="Status" { (l.status) }
                        }
                    }
                }
            }
            @if viewer.may_act() && shown.iter().any(|l| l.status == "pending") {
                button type="submit" id="redrive" { "Re-drive the selected" }
            }
        }
        @if !parked.is_empty() {
            h2 { "Dead-letter topics" }
            p { "Messages that could not be read as events at all, parked by the Kafka consumers." }
            ul id="dead-letter-topics" {
                @for t in &parked {
                    li {
                        a href=(format!("/console/kafka/messages?topic={}&partition=0&offset=0", html::encode(&t.name))) { (t.name) }
                        ": " (count(t.messages.max(0) as u64)) " message" @if t.messages != 1 { "s" }
                    }
                }
            }
        }
        nav class="pager" aria-label="Pages" {
            @if page_no > 0 { a href=(format!("/console/deadletters?status={status_name}&page={}", page_no - 1)) { "Previous" } }
            @if page_no.saturating_add(1).saturating_mul(LETTERS_PAGE) < letters.len() { a rel="next" href=(format!("/console/deadletters?status={status_name}&page={}", page_no.saturating_add(1))) { "Next" } }
        }
    };
    Ok(viewer.page("Dead letters", "/console/deadletters", body))
}

/// Re-drives dead letters: the first POST asks for a confirmation (a page listing them),
/// the confirmed one runs each through its consumer again and says how each went.
pub(super) async fn redrive(
    State(state): State<AppState>,
    caller: Caller,
    Extension(session): Extension<SessionToken>,
    body: axum::body::Bytes,
) -> PageResult {
    let viewer = Viewer::new(caller, &session);
    let pairs = super::form_pairs(&body);
    let mut ids = Vec::new();
    for (name, value) in &pairs {
        if name == "ids" {
            ids.push(
                value
                    .parse::<u64>()
                    .map_err(|_| bad_request(&format!("'{value}' is not a dead letter's id")))?,
            );
        }
    }
    if ids.is_empty() {
        return Err(bad_request("Select at least one dead letter to re-drive."));
    }
    let confirmed = pairs.iter().any(|(n, v)| n == "confirmed" && v == "yes");
    if !confirmed {
        let body = html! {
            p { "Run " (ids.len()) " dead letter" @if ids.len() != 1 { "s" } " through " @if ids.len() == 1 { "its consumer" } @else { "their consumers" } " again?" }
            ul { @for id in &ids { li { "Dead letter " (id) } } }
            form method="post" action="/console/deadletters/redrive" {
                (viewer.csrf_field())
                input type="hidden" name="confirmed" value="yes";
                @for id in &ids { input type="hidden" name="ids" value=(id); }
                button type="submit" id="confirm" { "Yes, re-drive" }
                " "
                a href="/console/deadletters" { "Cancel" }
            }
        };
        return Ok(viewer.page("Re-drive dead letters?", "/console/deadletters", body));
    }
    let mut outcomes = Vec::new();
    for id in ids {
        let outcome = match state.registry.redrive(state.bus.store().as_ref(), id).await {
            Ok(letter) => Ok(format!(
                "resolved: {} handled {} again",
                letter.consumer, letter.event_type
            )),
            Err(RedriveError::FailedAgain(why)) => Err(format!("failed again: {why}")),
            Err(e) => Err(e.to_string()),
        };
        tracing::info!(
            dead_letter = id,
            ok = outcome.is_ok(),
            "dead letter re-driven from the console"
        );
        outcomes.push((id, outcome));
    }
    let body = html! {
        ul id="redrive-results" role="status" {
            @for (id, outcome) in &outcomes {
                @match outcome {
                    Ok(what) => li class="ok" { "Dead letter " (id) " " (what) "." }
                    Err(why) => li class="error" { "Dead letter " (id) " " (why) }
                }
            }
        }
        p { a href="/console/deadletters" { "Back to the dead letters" } }
    };
    Ok(viewer.page("Re-drive", "/console/deadletters", body))
}
