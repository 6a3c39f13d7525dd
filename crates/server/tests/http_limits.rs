//! What one request and one connection may hold of the HTTP server: a panicking handler
//! answers 500 problem+json (logged and counted), a request past `--request-timeout`
//! answers 503 problem+json, a connection that trickles its request head or sits idle is
//! closed after `--header-read-timeout`, and one over `--max-connections` is answered 503
//! and closed. Always on the embedded default, in this process.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use common::assert_problem;
use cornershop_server::api::{self, RequestLimits};
use cornershop_server::config::ServeArgs;
use cornershop_server::serve::{serve, ConnectionLimits};
use cornershop_server::startup::Application;
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Every log line of this test process, as JSON (one subscriber for the whole binary).
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || Sink(sink.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one subscriber");
        logs
    })
    .clone()
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `routes` behind the API's own layers, served by the server's own accept loop on a
/// free port; returns the base URL.
async fn serve_routes(routes: Router, request_timeout: Duration) -> String {
    cornershop_server::metrics::handle();
    let router = api::with_layers(
        routes.route("/metrics", get(cornershop_server::metrics::render)),
        RequestLimits {
            max_body_bytes: 64 * 1024,
            request_timeout,
            metrics_here: true,
        },
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let limits = ConnectionLimits {
        header_read_timeout: Duration::from_secs(5),
        max_connections: 100,
    };
    tokio::spawn(serve(listener, router, limits, std::future::pending()));
    base
}

/// The value of the `http_requests_total` series of this route and status, if any.
async fn requests_counted(base: &str, route: &str, status: u16) -> Option<u64> {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with("http_requests_total{"))
        .filter(|l| {
            l.contains(&format!("route=\"{route}\"")) && l.contains(&format!("status=\"{status}\""))
        })
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test]
async fn a_panicking_handler_answers_500_problem_json_and_is_logged_and_counted() {
    let logs = captured_logs();
    let base = serve_routes(
        Router::new().route(
            "/test/panic",
            get(|| async {
                if true {
                    panic!("the test handler panics on purpose");
                }
                "unreachable"
            }),
        ),
        Duration::from_secs(30),
    )
    .await;
    for _ in 0..2 {
        let response = reqwest::get(format!("{base}/test/panic")).await.unwrap();
        assert!(response.headers().contains_key("x-correlation-id"));
        let detail = assert_problem(response, StatusCode::INTERNAL_SERVER_ERROR).await;
        assert!(
            !detail.contains("on purpose"),
            "the panic message is for the log, not the client: {detail}"
        );
    }
    assert_eq!(requests_counted(&base, "/test/panic", 500).await, Some(2));
    // The server goes on serving.
    let response = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let text = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    let panics: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["fields"]["message"] == "a request handler panicked")
        .collect();
    assert_eq!(panics.len(), 2, "{text}");
    assert_eq!(panics[0]["level"], "ERROR");
    assert_eq!(
        panics[0]["fields"]["panic"],
        "the test handler panics on purpose"
    );
    // Inside the request's span: the log line names the request.
    assert_eq!(panics[0]["span"]["path"], "/test/panic", "{}", panics[0]);
}

#[tokio::test]
async fn a_request_past_the_deadline_answers_503_problem_json_and_is_counted() {
    let base = serve_routes(
        Router::new().route(
            "/test/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "too late"
            }),
        ),
        Duration::from_millis(300),
    )
    .await;
    let started = Instant::now();
    let response = reqwest::get(format!("{base}/test/slow")).await.unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(5),
        "answered after {took:?}"
    );
    assert!(
        response.headers().contains_key("retry-after"),
        "{:?}",
        response.headers()
    );
    let detail = assert_problem(response, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(detail.contains("300ms"), "{detail}");
    assert_eq!(requests_counted(&base, "/test/slow", 503).await, Some(1));
}

/// The real application on the embedded default with these connection settings.
async fn spawn_shop(configure: impl FnOnce(&mut ServeArgs)) -> (String, tempfile::TempDir) {
    let data_dir = tempfile::tempdir().unwrap();
    let mut args = ServeArgs::for_data_dir(data_dir.path());
    configure(&mut args);
    let app = Application::build(args)
        .await
        .expect("the application builds");
    let address = app.local_addr().to_string();
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    (address, data_dir)
}

/// Reads until the server closes the connection (or `limit` passes); returns what it
/// sent and when it closed, if it did.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, Option<Instant>) {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (received, Some(Instant::now())),
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Err(_) => return (received, None),
        }
    }
}

#[tokio::test]
async fn a_connection_that_trickles_its_request_head_is_closed_after_the_header_read_timeout() {
    let (address, _data) =
        spawn_shop(|args| args.http.header_read_timeout = Duration::from_secs(1).into()).await;
    let mut stream = TcpStream::connect(&address).await.unwrap();
    let opened = Instant::now();
    stream.write_all(b"GET /health/live HT").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stream.write_all(b"TP/1.").await.unwrap();
    let (received, closed) = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    let closed = closed.expect("the server never closed the half-sent request");
    let after = closed - opened;
    assert!(
        after >= Duration::from_millis(900) && after < Duration::from_secs(4),
        "closed {after:?} after opening"
    );
    let text = String::from_utf8_lossy(&received);
    assert!(
        !text.contains("200 OK"),
        "answered a half-sent request: {text}"
    );

    // A request sent whole in time is served as ever.
    let response = reqwest::get(format!("http://{address}/health/live"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_read_timeout() {
    let (address, _data) =
        spawn_shop(|args| args.http.header_read_timeout = Duration::from_secs(1).into()).await;
    let mut stream = TcpStream::connect(&address).await.unwrap();
    // Two requests on one connection: keep-alive works, and the idle time starts anew
    // after each answer.
    for _ in 0..2 {
        stream
            .write_all(b"GET /health/live HTTP/1.1\r\nHost: shop\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&answer).contains(r#""status":"live""#) {
            let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
                .await
                .expect("an answer")
                .unwrap();
            assert!(n > 0, "closed before answering");
            answer.extend_from_slice(&buf[..n]);
        }
        assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200 OK"));
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    let idle_since = Instant::now() - Duration::from_millis(600);
    let (received, closed) = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    let closed = closed.expect("the idle keep-alive connection was never closed");
    let idle = closed - idle_since;
    assert!(
        idle >= Duration::from_millis(900) && idle < Duration::from_secs(4),
        "closed after {idle:?} idle"
    );
    assert!(received.is_empty() || String::from_utf8_lossy(&received).contains("408"));
}

#[tokio::test]
async fn a_connection_over_the_cap_is_answered_503_and_closed() {
    let (address, _data) = spawn_shop(|args| {
        args.http.max_connections = 2;
        args.http.header_read_timeout = Duration::from_secs(30).into();
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(TcpStream::connect(&address).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut third = TcpStream::connect(&address).await.unwrap();
    third
        .write_all(b"GET /health/live HTTP/1.1\r\nHost: shop\r\n\r\n")
        .await
        .unwrap();
    let (received, closed) = read_until_closed(&mut third, Duration::from_secs(5)).await;
    assert!(closed.is_some(), "the connection over the cap stayed open");
    let text = String::from_utf8_lossy(&received);
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 503 "), "{text}");
    let head = head.to_ascii_lowercase();
    assert!(
        head.contains("content-type: application/problem+json"),
        "{text}"
    );
    assert!(head.contains("retry-after: "), "{text}");
    let problem: serde_json::Value = serde_json::from_str(body).expect("a problem body");
    assert_eq!(problem["status"], 503);
    assert_eq!(problem["type"], "/problems/too-many-connections");

    // Once a held connection goes, its slot serves again.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let client = reqwest::Client::new();
        match client
            .get(format!("http://{address}/health/live"))
            .send()
            .await
        {
            Ok(r) if r.status() == StatusCode::OK => break,
            other => assert!(
                Instant::now() < deadline,
                "no slot came free: {:?}",
                other.map(|r| r.status())
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
