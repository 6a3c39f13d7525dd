//! The client side: the HTTP client with its bearer token, and the shop's API as the
//! simulator uses it (stocking, commands with their latency, polling an order, the
//! store's statistics), with the kinds of error its answers count as.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::plan::{sku_name, SCARCE_SKU};
use crate::report::Tally;
use crate::run::Settings;
use crate::{SimulateArgs, SimulateError};

/// Units of each ordinary SKU set at the start: more than any run can sell.
const PLENTY: u64 = 100_000_000;

/// The token to send: --token, else --token-file's, else the caller's own (`own_token`:
/// the server signs one with the embedded shop's key, when that key exists).
fn bearer_token<F>(args: &SimulateArgs, own_token: F) -> Result<Option<String>, SimulateError>
where
    F: FnOnce(&SimulateArgs) -> Result<Option<String>, String>,
{
    if let Some(token) = &args.token {
        return Ok(Some(token.trim().to_string()));
    }
    if let Some(file) = &args.token_file {
        let text = std::fs::read_to_string(file).map_err(|e| {
            SimulateError::Invalid(format!("cannot read --token-file {}: {e}", file.display()))
        })?;
        return Ok(Some(text.trim().to_string()));
    }
    own_token(args).map_err(SimulateError::Invalid)
}

/// The HTTP client of a run, sending the bearer token (if any) with every request.
pub(crate) fn connect<F>(
    args: &SimulateArgs,
    settings: &Settings,
    own_token: F,
) -> Result<Shop, SimulateError>
where
    F: FnOnce(&SimulateArgs) -> Result<Option<String>, String>,
{
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = bearer_token(args, own_token)? {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| SimulateError::Invalid("the token is not ASCII text".into()))?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    let http = reqwest::Client::builder()
        .default_headers(headers)
        .timeout(*args.request_timeout)
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .pool_max_idle_per_host(args.concurrency as usize + 4)
        .build()
        .map_err(|e| SimulateError::Invalid(cornershop_domain::causes::with_causes(&e)))?;
    Ok(Shop {
        http,
        base: settings.base.clone(),
    })
}

/// What the polls read of an order.
pub(crate) struct OrderStatus {
    pub(crate) status: String,
    pub(crate) cancel_reason: Option<String>,
}

/// The shop's HTTP API.
pub(crate) struct Shop {
    pub(crate) http: reqwest::Client,
    pub(crate) base: String,
}

impl Shop {
    /// A write request; its latency (until the whole answer is read) is recorded whatever
    /// the answer. Returns the JSON body of an answer with the expected status, or the
    /// kind of error.
    pub(crate) async fn command(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        expect: StatusCode,
        tally: &mut Tally,
    ) -> Result<Value, String> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let start = Instant::now();
        let response = request.send().await.map_err(|e| transport_kind(&e))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| transport_kind(&e))?;
        tally.command_us.push(start.elapsed().as_micros() as u64);
        if status != expect {
            return Err(status_kind(status, &bytes));
        }
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|_| "badResponse".to_string())
    }

    /// Polls the order's read model until its status is one of `statuses` (a 404 means
    /// it has not appeared yet), at most the order timeout.
    pub(crate) async fn wait_for(
        &self,
        order: &str,
        statuses: &[&str],
        s: &Settings,
    ) -> Result<OrderStatus, String> {
        let url = format!("{}/api/orders/{order}", self.base);
        let deadline = Instant::now() + s.order_timeout;
        let mut last = "absent".to_string();
        let mut pause = s.poll_interval;
        loop {
            let response = self
                .http
                .get(&url)
                .send()
                .await
                .map_err(|e| transport_kind(&e))?;
            let status = response.status();
            let bytes = response.bytes().await.map_err(|e| transport_kind(&e))?;
            if status == StatusCode::OK {
                let body: Value =
                    serde_json::from_slice(&bytes).map_err(|_| "badResponse".to_string())?;
                last = body["status"].as_str().unwrap_or("").to_string();
                if statuses.contains(&last.as_str()) {
                    return Ok(OrderStatus {
                        status: last,
                        cancel_reason: body["cancelReason"].as_str().map(str::to_string),
                    });
                }
            } else if status != StatusCode::NOT_FOUND {
                return Err(status_kind(status, &bytes));
            }
            if Instant::now() >= deadline {
                return Err(format!("orderTimeout:{last}"));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 3 / 2).min(s.poll_interval * 20);
        }
    }

    /// From the order's CartCheckedOut to its OrderConfirmed, in microseconds, by the
    /// events' timestamps (the store's clock), from the order's timeline.
    pub(crate) async fn checkout_to_confirmed_us(&self, order: &str) -> Option<u64> {
        let url = format!("{}/api/orders/{order}/timeline", self.base);
        let response = self.http.get(&url).send().await.ok()?;
        if response.status() != StatusCode::OK {
            return None;
        }
        let timeline: Value = response.json().await.ok()?;
        let at = |event_type: &str| {
            timeline["events"]
                .as_array()?
                .iter()
                .find(|e| e["eventType"] == event_type)?["timestamp"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        };
        let elapsed = at("OrderConfirmed")? - at("CartCheckedOut")?;
        elapsed
            .num_microseconds()
            .and_then(|us| u64::try_from(us).ok())
    }

    /// The store's event count; the first request, so it also tells whether the target
    /// is a shop at all.
    pub(crate) async fn total_events(&self) -> Result<u64, SimulateError> {
        let response = self
            .http
            .get(format!("{}/api/eventstore/stats", self.base))
            .send()
            .await
            .map_err(|e| SimulateError::Unreachable {
                target: self.base.clone(),
                cause: cornershop_domain::causes::with_causes(&e),
            })?;
        let status = response.status();
        if status != StatusCode::OK {
            return Err(SimulateError::NotAShop {
                target: self.base.clone(),
                detail: format!("GET /api/eventstore/stats answered {status}"),
            });
        }
        let body: Value = response.json().await.map_err(|e| SimulateError::NotAShop {
            target: self.base.clone(),
            detail: format!("GET /api/eventstore/stats did not answer JSON: {e}"),
        })?;
        body["totalEvents"]
            .as_u64()
            .ok_or_else(|| SimulateError::NotAShop {
                target: self.base.clone(),
                detail: "GET /api/eventstore/stats has no totalEvents".into(),
            })
    }

    /// Stocks every SKU of the run: plenty of the ordinary ones, 1 unit of the scarce one.
    pub(crate) async fn stock_up(&self, skus: u64, tally: &mut Tally) -> Result<(), SimulateError> {
        let products = (0..skus)
            .map(|i| {
                let price = format!("{}.{:02}", 2 + (i * 7) % 40, 49 + (i * 10) % 50);
                (
                    sku_name(i),
                    format!("Simulated product {}", i + 1),
                    price,
                    PLENTY,
                )
            })
            .chain(std::iter::once((
                SCARCE_SKU.to_string(),
                "Simulated scarce product".to_string(),
                "99.00".to_string(),
                1,
            )));
        for (sku, name, price, quantity) in products {
            let body = json!({ "name": name, "unitPrice": price, "quantity": quantity });
            self.command(
                Method::PUT,
                &format!("/api/inventory/{sku}"),
                Some(body),
                StatusCode::OK,
                tally,
            )
            .await
            .map_err(|kind| SimulateError::NotAShop {
                target: self.base.clone(),
                detail: format!("stocking {sku} failed ({kind})"),
            })?;
        }
        Ok(())
    }
}

/// The kind of a request that got no answer.
fn transport_kind(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "timeout".into()
    } else if error.is_connect() {
        "connect".into()
    } else {
        "transport".into()
    }
}

/// The kind of an unexpected answer: `http<status>` and the problem's type.
fn status_kind(status: StatusCode, body: &[u8]) -> String {
    let problem = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|b| b["type"].as_str().map(str::to_string));
    match problem {
        Some(kind) => format!(
            "http{}:{}",
            status.as_u16(),
            kind.trim_start_matches("/problems/")
        ),
        None => format!("http{}", status.as_u16()),
    }
}
