//! The operator's console in a real browser: headless Chromium (Debian's `chromium` and
//! `chromium-driver`) against a real shop, on the embedded default and on PostgreSQL +
//! Kafka. The same scenario runs on both: signing in, the overview's orders, the event
//! log's correlation filter and live tail, time travel on an aggregate, an order's causal
//! graph, a dead letter re-driven after its fix, staff without the admin's buttons, a
//! forged POST refused, no element outside the viewport at 375 and 1280 px, and axe-core
//! finding no serious or critical accessibility issue. On Kafka, also the Kafka page: the
//! four topics with their partitions and the consumer groups with a lag that reaches 0.
//!
//! Screenshots go to `CARGO_TARGET_TMPDIR/console-screenshots`, and with
//! `CORNERSHOP_UPDATE_SCREENSHOTS=1` also to `docs/console/` (the README's).

#[path = "common/browser.rs"]
mod browser;
mod common;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use browser::Browser;
use common::{cluster, Fussy, Role, TestApp};
use cornershop_server::config::ServeArgs;
use reqwest::StatusCode;
use serde_json::Value;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Backend {
    Embedded,
    Production,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Embedded => "embedded",
            Backend::Production => "production",
        }
    }
}

/// Whether this machine has what the browser tests need; says why not.
fn browser_ready() -> bool {
    if !browser::available() {
        eprintln!("skipped: no chromium/chromedriver (scripts/stack.sh install puts them here)");
        return false;
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_console_in_a_real_browser_on_the_embedded_shop() {
    if !browser_ready() {
        return;
    }
    scenario(Backend::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_console_in_a_real_browser_on_postgresql_and_kafka() {
    if !browser_ready() {
        return;
    }
    if std::env::var_os("CORNERSHOP_TEST_DATABASE_URL").is_none()
        || std::env::var_os("CORNERSHOP_TEST_KAFKA_BROKERS").is_none()
    {
        eprintln!("skipped: no test PostgreSQL and Kafka (run scripts/test.sh, or start scripts/stack.sh)");
        return;
    }
    scenario(Backend::Production).await;
}

/// The console signs in with the API's identity provider: Keycloak's login page, the
/// authorization code flow with PKCE (the realm's public client `cornershop-console`), and
/// back to the page asked for with the staff user's session.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_console_signs_in_with_the_identity_provider() {
    if !browser_ready() {
        return;
    }
    let Ok(issuer) = std::env::var("CORNERSHOP_TEST_OIDC_ISSUER") else {
        eprintln!(
            "skipped: no test identity provider (run scripts/test.sh, or start scripts/stack.sh)"
        );
        return;
    };
    let data_dir = tempfile::tempdir().unwrap();
    let mut args = ServeArgs::for_data_dir(data_dir.path());
    args.auth.oidc_issuer = Some(issuer.clone());
    args.auth.console_oidc_client_id = Some("cornershop-console".into());
    let app = common::start_in_process(data_dir, args, Vec::new()).await;
    let browser = Browser::start(1280).await;
    browser.goto(&app.url("/console/consumers")).await;
    let button = browser
        .wait_for(
            "a.button[href^=\"/console/sign-in/oidc\"]",
            Duration::from_secs(10),
        )
        .await;
    browser.click(&button).await;
    let user = browser.wait_for("#username", Duration::from_secs(15)).await;
    assert!(
        browser.url().await.starts_with(&issuer),
        "at the identity provider: {}",
        browser.url().await
    );
    browser.type_into(&user, "sam").await;
    let password = browser.find("#password").await.unwrap();
    browser.type_into(&password, "sam-password").await;
    browser
        .click(&browser.find("#kc-login").await.unwrap())
        .await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while !browser
        .url()
        .await
        .starts_with(&app.url("/console/consumers"))
    {
        assert!(
            Instant::now() < deadline,
            "not back on the console: {} {}",
            browser.url().await,
            browser.text("body").await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(browser.text("main h1").await, "Consumers and projections");
    assert!(
        browser.text(".who").await.contains("(staff)"),
        "{}",
        browser.text(".who").await
    );
    // Staff: no admin's button.
    assert!(browser.find("#projections button").await.is_none());
}

/// Odd input on any console page answers a page saying what is wrong, never a server
/// error or a panic; an action's odd form too.
#[tokio::test]
async fn odd_input_gets_a_page_that_says_what_is_wrong() {
    let app = common::spawn_embedded_with(|_| {}).await;
    let cookie = format!("cornershop_console={}", app.token(Role::Admin, "odd-input"));
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for path in [
        "/console/events?before=x",
        "/console/events?before=-1",
        "/console/events?from=yesterday",
        "/console/events?to=2026-13-45T99:00",
        "/console/events?aggregateType=Nope",
        "/console/events?eventType=%00",
        "/console/events?correlationId=%F0%9F%92%A9&limit=5",
        "/console/events/not-a-uuid",
        "/console/events/00000000-0000-0000-0000-000000000000",
        "/console/aggregates/Order/%2e%2e",
        "/console/aggregates/Nope/x",
        "/console/aggregates/Order/x?version=99999999999999999999",
        "/console/aggregates/Order/x?version=-3",
        "/console/orders/%00",
        "/console/kafka/messages?topic=x&partition=-1",
        "/console/kafka/messages",
        "/console/deadletters?status=weird",
        "/console/deadletters?page=18446744073709551615",
        "/console/live/events?after=x",
        "/console/assets/..%2F..%2Fetc%2Fpasswd",
        "/console/sign-in?next=https://evil.example",
    ] {
        let answer = client
            .get(app.url(path))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        let status = answer.status();
        assert!(
            status.is_success() || status.is_client_error(),
            "{path}: {status}"
        );
        if status.is_client_error() {
            let kind = answer.headers()["content-type"]
                .to_str()
                .unwrap()
                .to_string();
            let body = answer.text().await.unwrap();
            assert!(kind.starts_with("text/html"), "{path}: {kind}");
            assert!(body.contains("class=\"error\""), "{path}: {body}");
        }
    }
    // The action's form, with the session's CSRF token but ids that are none.
    let page = client
        .get(app.url("/console/deadletters"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the page's CSRF token")
        .to_string();
    for (body, expected) in [
        (format!("csrf={csrf}&ids=abc"), StatusCode::BAD_REQUEST),
        (format!("csrf={csrf}"), StatusCode::BAD_REQUEST),
        (
            format!("csrf={csrf}&ids=99999&confirmed=yes"),
            StatusCode::OK,
        ),
        (
            format!("csrf={csrf}&ids={}", "1".repeat(70_000)),
            StatusCode::FORBIDDEN,
        ),
    ] {
        let answer = client
            .post(app.url("/console/deadletters/redrive"))
            .header("cookie", &cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), expected, "{}", &body[..body.len().min(80)]);
    }
}

/// The settings every run of the scenario shares: dead letters after 3 quick attempts.
const FLAGS: [&str; 2] = ["--consumer-max-attempts=3", "--consumer-retry-delay=10ms"];

async fn start(backend: Backend, fussy: Arc<Fussy>) -> (TestApp, Option<(String, String)>) {
    let data_dir = tempfile::tempdir().unwrap();
    let flags: Vec<String> = FLAGS.iter().map(|f| f.to_string()).collect();
    match backend {
        Backend::Embedded => {
            let mut args = ServeArgs::for_data_dir(data_dir.path());
            args.workflow.consumer_max_attempts = 3;
            args.workflow.consumer_retry_delay = Duration::from_millis(10).into();
            (
                common::start_in_process(data_dir, args, vec![fussy]).await,
                None,
            )
        }
        Backend::Production => {
            let (args, database_url, namespace) =
                cluster::production_args(data_dir.path(), &flags).await;
            let app = common::start_in_process(data_dir, args, vec![fussy]).await;
            (app, Some((namespace, database_url)))
        }
    }
}

async fn scenario(backend: Backend) {
    let fussy = Arc::new(Fussy::default());
    let (app, production) = start(backend, fussy.clone()).await;
    let shots = Screenshots::new(backend);
    let browser = Browser::start(1280).await;

    // Not signed in: every page leads to the sign-in form, which takes a staff token.
    browser.goto(&app.url("/console/events")).await;
    browser
        .wait_for("textarea#token", Duration::from_secs(10))
        .await;
    assert!(browser.url().await.contains("/console/sign-in"));
    sign_in(&browser, &app, Role::Staff, "console-staff").await;
    assert!(
        browser.url().await.ends_with("/console/events"),
        "after signing in, the page asked for: {}",
        browser.url().await
    );

    // A small shop: two orders confirmed.
    app.stock("CON-MUG", "4.00", 100).await;
    let first = app.order(&[("CON-MUG", 1)], "tok_visa").await;
    let second = app.order(&[("CON-MUG", 2)], "tok_visa").await;
    for order in [&first, &second] {
        app.wait_for_order(order, &["Confirmed"]).await;
    }
    app.settle().await;

    // The overview counts them (from the read model).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        browser.goto(&app.url("/console")).await;
        let confirmed = browser.text("[data-order-status=\"Confirmed\"]").await;
        if confirmed == "2" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the overview shows {confirmed:?} confirmed orders: {}",
            browser.text("main").await
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // The event log filtered by the first order's correlation id lists exactly its events.
    let order: Value = app.json(&format!("/api/orders/{first}")).await;
    let correlation = order["correlationId"].as_str().unwrap().to_string();
    browser.goto(&app.url("/console/events")).await;
    let field = browser
        .wait_for("#correlationId", Duration::from_secs(5))
        .await;
    browser.type_into(&field, &correlation).await;
    let filter = browser.find(".filters button[type=submit]").await.unwrap();
    browser.click(&filter).await;
    browser
        .wait_for("#log tbody tr", Duration::from_secs(5))
        .await;
    let shown = event_ids_on_page(&browser).await;
    let stored: Value = app
        .json(&format!(
            "/api/eventstore/events?correlationId={correlation}&limit=1000"
        ))
        .await;
    let mut expected: Vec<String> = stored["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["eventId"].as_str().unwrap().to_string())
        .collect();
    expected.reverse();
    assert!(expected.len() >= 8, "the order's events: {expected:?}");
    assert_eq!(
        shown, expected,
        "the log filtered by {correlation}, newest first"
    );

    // Personal data only for whom may see it: staff sees the order's email sealed.
    let created = stored["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["eventType"] == "OrderCreated")
        .map(|e| format!("/console/events/{}", e["eventId"].as_str().unwrap()))
        .expect("the order's OrderCreated");
    browser.goto(&app.url(&created)).await;
    let envelope = browser.text("pre.json").await;
    assert!(envelope.contains("\"sealed\""), "{envelope}");
    assert!(
        !envelope.contains("ada@example.com"),
        "staff sees the email: {envelope}"
    );

    // The live tail shows a new event within 2 s.
    browser.goto(&app.url("/console/events")).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !browser.text("#tail-status").await.starts_with("Live") {
        assert!(Instant::now() < deadline, "the live tail did not connect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cart = app.new_cart("tail-watcher").await;
    let written = Instant::now();
    let row = format!("#log tbody tr a[href$=\"/Cart/{cart}\"]");
    browser.wait_for(&row, Duration::from_secs(2)).await;
    eprintln!(
        "{}: the live tail showed the new cart {:?} after it was written",
        backend.name(),
        written.elapsed()
    );

    // Time travel: the first order at version 1 was Created; now it is Confirmed.
    let aggregate = format!("/console/aggregates/Order/{first}");
    browser
        .goto(&app.url(&format!("{aggregate}?version=1")))
        .await;
    let earlier = browser.text("#state").await;
    assert!(earlier.contains("\"status\": \"Created\""), "{earlier}");
    browser.goto(&app.url(&aggregate)).await;
    let now = browser.text("#state").await;
    assert!(now.contains("\"status\": \"Confirmed\""), "{now}");
    // The slider's form says which version it shows.
    let slider = browser
        .find("#version")
        .await
        .expect("the time travel slider");
    let latest = browser.attribute(&slider, "max").await.unwrap();
    assert_eq!(latest, browser.text("#version-shown").await);

    // The order's causal graph: checkout -> order -> stock -> payment -> confirmation.
    browser
        .goto(&app.url(&format!("/console/orders/{first}")))
        .await;
    let graph = browser.text("#causal-graph").await;
    let mut at = 0;
    for step in [
        "CartCheckedOut",
        "OrderCreated",
        "StockReserved",
        "OrderValidated",
        "PaymentInitiated",
        "PaymentCompleted",
        "OrderConfirmed",
    ] {
        let found = graph[at..]
            .find(step)
            .unwrap_or_else(|| panic!("{step} missing after {at} in the graph: {graph}"));
        at += found;
    }
    assert!(graph.contains(" ms"), "each step has its latency: {graph}");

    // A poison event: dead-lettered after its attempts.
    app.new_cart("poison").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        browser.goto(&app.url("/console/deadletters")).await;
        if browser.find("#dead-letters tbody tr").await.is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "no dead letter appeared");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let row = browser.text("#dead-letters tbody tr").await;
    assert!(
        row.contains("fussy-test-consumer") && row.contains("poison"),
        "{row}"
    );
    // Staff may look, not act: no checkbox, no re-drive button, and a POST is refused.
    assert!(
        browser.find("#redrive").await.is_none(),
        "staff sees a re-drive button"
    );
    assert!(browser
        .find("#dead-letters input[type=checkbox]")
        .await
        .is_none());
    let letter_id = browser
        .attribute(
            &browser.find("#dead-letters tbody tr").await.unwrap(),
            "data-letter",
        )
        .await
        .unwrap();
    let staff_post = fetch_post(
        &browser,
        "/console/deadletters/redrive",
        &format!("ids={letter_id}&confirmed=yes"),
    )
    .await;
    assert_eq!(staff_post, 403, "staff's re-drive");
    shots.take(&browser, &app, "deadletters-staff", None).await;

    // The admin re-drives it: before the fix it fails again, after it it is resolved.
    sign_out(&browser).await;
    sign_in(&browser, &app, Role::Admin, "console-admin").await;
    // A forged POST: the admin's session, but no CSRF token (another site's form, or a
    // script that cannot read the page), or the right token sent from another origin.
    let forged = fetch_post(
        &browser,
        "/console/deadletters/redrive",
        &format!("ids={letter_id}&confirmed=yes"),
    )
    .await;
    assert_eq!(forged, 403, "a re-drive without the CSRF token");
    let token = app.token(Role::Admin, "console-admin");
    let cross_site = reqwest::Client::new()
        .post(app.url("/console/deadletters/redrive"))
        .header("cookie", format!("cornershop_console={token}"))
        .header("origin", "https://evil.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("ids={letter_id}&confirmed=yes&csrf=guess"))
        .send()
        .await
        .unwrap();
    assert_eq!(cross_site.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        app.json("/api/deadletters?status=pending")
            .await
            .as_array()
            .unwrap()
            .len(),
        1,
        "the forged POSTs re-drove nothing"
    );
    browser.goto(&app.url(&created)).await;
    let envelope = browser.text("pre.json").await;
    assert!(
        envelope.contains("ada@example.com"),
        "the admin sees the email opened: {envelope}"
    );
    redrive(&browser, &app, &letter_id).await;
    let results = browser.text("#redrive-results").await;
    assert!(results.contains("failed again"), "{results}");
    fussy.fixed.store(true, Ordering::SeqCst);
    redrive(&browser, &app, &letter_id).await;
    let results = browser.text("#redrive-results").await;
    assert!(results.contains("resolved"), "{results}");
    shots.take(&browser, &app, "redrive", None).await;
    browser.goto(&app.url("/console/deadletters")).await;
    assert!(
        browser.find("#dead-letters tbody tr").await.is_none(),
        "still pending: {}",
        browser.text("main").await
    );
    assert!(browser
        .text("main")
        .await
        .contains("0 dead letters pending"));
    browser
        .goto(&app.url("/console/deadletters?status=resolved"))
        .await;
    assert!(browser.text("#dead-letters").await.contains("resolved"));

    // The admin rebuilds the projection (its progress shown until it is swapped in) and
    // verifies the read models against the events.
    browser.goto(&app.url("/console/consumers")).await;
    let rebuild = browser
        .wait_for("#projections form button", Duration::from_secs(5))
        .await;
    browser.click(&rebuild).await;
    let done = browser
        .wait_for("#projections .ok", Duration::from_secs(30))
        .await;
    let said = browser.text_of(&done).await;
    assert!(said.starts_with("Rebuilt from"), "{said}");
    let verify = browser
        .find("form[action=\"/console/projections/verify\"] button")
        .await
        .expect("the verify button");
    browser.click(&verify).await;
    let result = browser
        .wait_for("#verify-result", Duration::from_secs(60))
        .await;
    let said = browser.text_of(&result).await;
    assert!(
        said.contains("verified 2 orders") && said.contains(" 0 mismatches"),
        "{said}"
    );

    // Kafka: the four topics with their partitions, the groups with a lag that reaches 0.
    if backend == Backend::Production {
        let (namespace, _) = production.as_ref().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            browser.goto(&app.url("/console/kafka")).await;
            let lags = lag_cells(&browser).await;
            if !lags.is_empty() && lags.iter().all(|l| l == "0") {
                break;
            }
            assert!(Instant::now() < deadline, "the groups' lag: {lags:?}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        for topic in [
            "carts.events",
            "orders.events",
            "payments.events",
            "inventory.events",
        ] {
            let name = format!("{namespace}{topic}");
            let rows = browser
                .find_all(&format!("#topics tr[data-topic=\"{name}\"]"))
                .await;
            let partitions = cluster::kcat_partitions(
                &cluster::required_env("CORNERSHOP_TEST_KAFKA_PLAINTEXT_BROKERS"),
                &name,
            )
            .await;
            assert_eq!(rows.len() as i32, partitions, "{name}'s partitions");
            assert!(partitions >= 1);
        }
        browser.goto(&app.url("/console/deadletters")).await;
        let parked = browser.text("#dead-letter-topics").await;
        assert!(
            parked.contains(&format!("{namespace}orders.events.dlq")),
            "{parked}"
        );
        browser.goto(&app.url("/console/kafka")).await;
        let groups = browser.find_all("section.group").await;
        assert!(
            groups.len() >= 5,
            "the shop's consumer groups: {}",
            browser.text("main").await
        );
    }

    // Every page: nothing outside the viewport at 375 and 1280 px, no serious or
    // critical accessibility issue, and a screenshot.
    let event_id = {
        let stored: Value = app
            .json(&format!(
                "/api/eventstore/events?correlationId={correlation}&limit=5"
            ))
            .await;
        stored["events"][1]["eventId"].as_str().unwrap().to_string()
    };
    let mut pages = vec![
        ("overview", "/console".to_string()),
        ("events", "/console/events".to_string()),
        ("event", format!("/console/events/{event_id}")),
        ("aggregate", format!("{aggregate}?version=3")),
        ("order", format!("/console/orders/{first}")),
        ("consumers", "/console/consumers".to_string()),
        ("deadletters", "/console/deadletters?status=all".to_string()),
        ("kafka", "/console/kafka".to_string()),
        ("sign-in", "/console/sign-in".to_string()),
    ];
    if backend == Backend::Production {
        let (namespace, _) = production.as_ref().unwrap();
        pages.push((
            "kafka-messages",
            format!("/console/kafka/messages?topic={namespace}orders.events&partition=0&offset=0"),
        ));
    }
    let axe = axe_source();
    for width in [375, 1280] {
        browser.resize(width).await;
        for (name, path) in &pages {
            browser.goto(&app.url(path)).await;
            browser.wait_for("main h1", Duration::from_secs(5)).await;
            let outside = browser.script(OUTSIDE_THE_VIEWPORT).await;
            assert_eq!(
                outside,
                serde_json::json!([]),
                "{name} at {width} px has elements outside the viewport"
            );
            let issues = accessibility_issues(&browser, &axe).await;
            assert!(
                issues.is_empty(),
                "{name} at {width} px: axe-core finds {issues:#?}"
            );
            shots.take(&browser, &app, name, Some(width)).await;
        }
    }
    // Sign-out ends the session: the pages lead to the sign-in form again.
    browser.resize(1280).await;
    browser.goto(&app.url("/console")).await;
    sign_out(&browser).await;
    browser.goto(&app.url("/console/consumers")).await;
    browser
        .wait_for("textarea#token", Duration::from_secs(5))
        .await;

    drop(browser);
    if let Some((namespace, database_url)) = production {
        let brokers = cluster::required_env("CORNERSHOP_TEST_KAFKA_BROKERS");
        app.stop_and_wait().await;
        cluster::remove_topics_and_database(&namespace, &brokers, &database_url).await;
    }
}

async fn sign_in(browser: &Browser, app: &TestApp, role: Role, sub: &str) {
    if !browser.url().await.contains("/console/sign-in") {
        browser.goto(&app.url("/console/sign-in")).await;
    }
    let field = browser
        .wait_for("textarea#token", Duration::from_secs(5))
        .await;
    browser.type_into(&field, &app.token(role, sub)).await;
    let submit = browser
        .find("form.stack button[type=submit]")
        .await
        .unwrap();
    browser.click(&submit).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while browser.url().await.contains("/console/sign-in") {
        assert!(
            Instant::now() < deadline,
            "the sign-in did not go through: {}",
            browser.text("main").await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let who = browser.text(".who").await;
    assert!(who.contains(sub), "signed in as {who}");
}

async fn sign_out(browser: &Browser) {
    let button = browser
        .find(".signout button")
        .await
        .expect("a sign-out button");
    browser.click(&button).await;
    browser
        .wait_for("textarea#token", Duration::from_secs(5))
        .await;
}

/// Re-drives one dead letter from the page: select it, ask, confirm.
async fn redrive(browser: &Browser, app: &TestApp, id: &str) {
    browser.goto(&app.url("/console/deadletters")).await;
    let checkbox = browser
        .wait_for(&format!("#letter-{id}"), Duration::from_secs(5))
        .await;
    browser.click(&checkbox).await;
    browser
        .click(&browser.find("#redrive").await.unwrap())
        .await;
    let confirm = browser.wait_for("#confirm", Duration::from_secs(5)).await;
    assert!(browser
        .text("main")
        .await
        .contains(&format!("Dead letter {id}")));
    browser.click(&confirm).await;
    browser
        .wait_for("#redrive-results", Duration::from_secs(10))
        .await;
}

/// A POST from the page's own script (the session's cookie goes with it) without the CSRF
/// token: its status.
async fn fetch_post(browser: &Browser, path: &str, body: &str) -> u64 {
    let script = format!(
        "var done = arguments[arguments.length - 1];\
         fetch({path:?}, {{method: 'POST', headers: {{'content-type': 'application/x-www-form-urlencoded'}}, body: {body:?}, redirect: 'manual'}})\
           .then(function (r) {{ done(r.status); }}, function (e) {{ done(String(e)); }});"
    );
    let status = browser.script_async(&script).await;
    status
        .as_u64()
        .unwrap_or_else(|| panic!("the POST did not answer: {status}"))
}

/// The event ids the log's rows link to, top to bottom.
async fn event_ids_on_page(browser: &Browser) -> Vec<String> {
    let links = browser
        .find_all("#log tbody tr td[data-label=Event] a")
        .await;
    let mut ids = Vec::new();
    for link in links {
        let href = browser.attribute(&link, "href").await.unwrap_or_default();
        ids.push(href.rsplit('/').next().unwrap_or_default().to_string());
    }
    ids
}

async fn lag_cells(browser: &Browser) -> Vec<String> {
    let mut lags = Vec::new();
    for cell in browser.find_all("[data-lag]").await {
        lags.push(browser.text_of(&cell).await);
    }
    lags
}

/// Elements whose box leaves the viewport sideways (the skip link, parked off-screen until
/// it has focus, aside), and a page that scrolls sideways.
const OUTSIDE_THE_VIEWPORT: &str = r#"
var width = document.documentElement.clientWidth;
var out = [];
document.querySelectorAll('body *').forEach(function (e) {
  var r = e.getBoundingClientRect();
  if (r.width === 0 && r.height === 0) return;
  if (e.classList.contains('skip')) return;
  if (r.right > width + 1 || r.left < -1) {
    out.push(e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + (e.className ? '.' + e.className : '') +
      ' spans ' + Math.round(r.left) + '..' + Math.round(r.right));
  }
});
if (document.documentElement.scrollWidth > width + 1) {
  out.push('the page scrolls sideways to ' + document.documentElement.scrollWidth);
}
return out.slice(0, 10);
"#;

/// axe-core's script (`CORNERSHOP_TEST_AXE`, which `scripts/stack.sh` installs from npm).
fn axe_source() -> String {
    let path = std::env::var("CORNERSHOP_TEST_AXE").unwrap_or_else(|_| {
        panic!("CORNERSHOP_TEST_AXE is not set: run scripts/test.sh, or `set -a; eval \"$(scripts/stack.sh start)\"; set +a`")
    });
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read axe-core at {path}: {e}"))
}

/// axe-core's serious and critical violations on the page, one line each.
async fn accessibility_issues(browser: &Browser, axe: &str) -> Vec<String> {
    browser.script(&format!("{axe}\n;return true;")).await;
    let found = browser
        .script_async(
            "var done = arguments[arguments.length - 1];\
             axe.run(document, {resultTypes: ['violations']}).then(function (r) {\
               done(r.violations.filter(function (v) { return v.impact === 'serious' || v.impact === 'critical'; })\
                 .map(function (v) { return v.id + ' (' + v.impact + '): ' + v.help + ' at ' +\
                   v.nodes.map(function (n) { return n.target.join(' '); }).join(', '); }));\
             }, function (e) { done(['axe failed: ' + e]); });",
        )
        .await;
    found
        .as_array()
        .unwrap_or_else(|| panic!("axe-core answered {found}"))
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_string())
        .collect()
}

/// The screenshots the README shows: `docs/console/<file>.png` wherever it names them.
fn readme_screenshots() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("the README");
    readme
        .split("(docs/console/")
        .skip(1)
        .filter_map(|rest| rest.split_once(')').map(|(file, _)| file.to_string()))
        .collect()
}

fn docs_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/console")
}

/// Every screenshot the README shows is in `docs/console/` and is one this scenario takes
/// (so `CORNERSHOP_UPDATE_SCREENSHOTS=1` renews it).
#[test]
fn the_readme_shows_screenshots_the_tests_take() {
    let shown = readme_screenshots();
    assert!(shown.len() >= 5, "the README shows {shown:?}");
    for file in shown {
        let path = docs_dir().join(&file);
        let png = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(png.starts_with(b"\x89PNG"), "{file} is a PNG");
        let taken = SCREENSHOTS.iter().any(|name| {
            ["embedded", "production"].iter().any(|backend| {
                [
                    format!("{backend}-{name}.png"),
                    format!("{backend}-{name}-375.png"),
                    format!("{backend}-{name}-1280.png"),
                ]
                .contains(&file)
            })
        });
        assert!(taken, "the README shows {file}, which no test takes");
    }
}

/// The names of the screenshots the scenario takes (before the backend and the width).
const SCREENSHOTS: &[&str] = &[
    "overview",
    "events",
    "event",
    "aggregate",
    "order",
    "consumers",
    "deadletters",
    "kafka",
    "sign-in",
    "kafka-messages",
    "deadletters-staff",
    "redrive",
];

/// Where the screenshots go: `CARGO_TARGET_TMPDIR/console-screenshots`, and with
/// `CORNERSHOP_UPDATE_SCREENSHOTS` those the README shows also to `docs/console/`.
struct Screenshots {
    backend: Backend,
    all: PathBuf,
    readme: Option<Vec<String>>,
}

impl Screenshots {
    fn new(backend: Backend) -> Self {
        let all = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
        std::fs::create_dir_all(&all).unwrap();
        let readme =
            std::env::var_os("CORNERSHOP_UPDATE_SCREENSHOTS").map(|_| readme_screenshots());
        Self {
            backend,
            all,
            readme,
        }
    }

    async fn take(&self, browser: &Browser, _app: &TestApp, name: &str, width: Option<u32>) {
        assert!(
            SCREENSHOTS.contains(&name),
            "{name} is listed in SCREENSHOTS"
        );
        let png = browser.screenshot().await;
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot of {name}");
        let file = match width {
            Some(w) => format!("{}-{name}-{w}.png", self.backend.name()),
            None => format!("{}-{name}.png", self.backend.name()),
        };
        std::fs::write(self.all.join(&file), &png).unwrap();
        if self
            .readme
            .as_ref()
            .is_some_and(|shown| shown.contains(&file))
        {
            std::fs::create_dir_all(docs_dir()).unwrap();
            std::fs::write(docs_dir().join(&file), &png).unwrap();
        }
    }
}
