//! A real browser for the console's tests: Debian's headless Chromium driven through
//! chromedriver over the W3C WebDriver protocol (JSON over HTTP, the handful of commands
//! the tests use). The Rust WebDriver crates either bring a second reqwest (thirtyfour) or
//! the MPL-licensed `webdriver` crate with a second ICU (fantoccini); the protocol itself is
//! a dozen requests with the reqwest client the tests already have.
//!
//! `CORNERSHOP_TEST_CHROMEDRIVER` and `CORNERSHOP_TEST_CHROMIUM` name the executables
//! (`scripts/stack.sh env` prints them; default `/usr/bin/chromedriver`, `/usr/bin/chromium`).

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// W3C WebDriver's key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver process and one browser session in it; both end with the drop.
pub(crate) struct Browser {
    driver: Child,
    base: String,
    http: reqwest::Client,
}

/// An element of the page.
#[derive(Clone)]
pub(crate) struct Element(String);

fn executable(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_string())
}

/// Whether the browser is installed (the tests say so and stop when it is not).
pub(crate) fn available() -> bool {
    let driver = executable("CORNERSHOP_TEST_CHROMEDRIVER", "/usr/bin/chromedriver");
    let chromium = executable("CORNERSHOP_TEST_CHROMIUM", "/usr/bin/chromium");
    std::path::Path::new(&driver).exists() && std::path::Path::new(&chromium).exists()
}

impl Browser {
    /// Starts chromedriver on a free port and a headless Chromium of `width` × 900 px.
    pub(crate) async fn start(width: u32) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let driver = Command::new(executable(
            "CORNERSHOP_TEST_CHROMEDRIVER",
            "/usr/bin/chromedriver",
        ))
        .arg(format!("--port={port}"))
        // A group of its own: the drop ends chromedriver and the browsers it started.
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts (apt-get install chromium-driver)");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let root = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = http.get(format!("{root}/status")).send().await;
            if let Ok(r) = ready {
                let status: Value = r.json().await.unwrap_or_default();
                if status["value"]["ready"] == true {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not get ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let chromium = executable("CORNERSHOP_TEST_CHROMIUM", "/usr/bin/chromium");
        let session: Value = http
            .post(format!("{root}/session"))
            .json(&json!({
                "capabilities": {"alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": chromium,
                        "args": [
                            "--headless=new", "--no-sandbox", "--disable-gpu",
                            "--disable-dev-shm-usage", "--hide-scrollbars",
                            "--force-device-scale-factor=1",
                            format!("--window-size={width},900"),
                        ],
                    },
                }},
            }))
            .send()
            .await
            .expect("chromedriver answers")
            .json()
            .await
            .expect("a session");
        let id = session["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {session}"))
            .to_string();
        let browser = Self {
            driver,
            base: format!("{root}/session/{id}"),
            http,
        };
        browser.resize(width).await;
        browser
    }

    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("WebDriver {path}: {e}"))
            .json()
            .await
            .unwrap_or_default();
        answer["value"].clone()
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.command(reqwest::Method::POST, path, Some(body)).await
    }

    async fn get(&self, path: &str) -> Value {
        self.command(reqwest::Method::GET, path, None).await
    }

    /// The viewport made `width` px wide (the window's outer size is set so that the
    /// inner one is right).
    pub(crate) async fn resize(&self, width: u32) {
        self.post("/window/rect", json!({"width": width, "height": 900}))
            .await;
        let inner = self.script("return window.innerWidth").await;
        let inner = inner.as_u64().unwrap_or(u64::from(width)) as u32;
        if inner != width {
            self.post(
                "/window/rect",
                json!({"width": width + (width - inner.min(width)), "height": 900}),
            )
            .await;
        }
    }

    pub(crate) async fn goto(&self, url: &str) {
        self.post("/url", json!({ "url": url })).await;
    }

    pub(crate) async fn url(&self) -> String {
        self.get("/url")
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The first element matching a CSS selector, if any.
    pub(crate) async fn find(&self, css: &str) -> Option<Element> {
        let found = self
            .post("/element", json!({"using": "css selector", "value": css}))
            .await;
        found[ELEMENT].as_str().map(|id| Element(id.to_string()))
    }

    pub(crate) async fn find_all(&self, css: &str) -> Vec<Element> {
        let found = self
            .post("/elements", json!({"using": "css selector", "value": css}))
            .await;
        found
            .as_array()
            .map(|all| {
                all.iter()
                    .filter_map(|e| e[ELEMENT].as_str().map(|id| Element(id.to_string())))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The element, waiting up to `within` for it to be on the page.
    pub(crate) async fn wait_for(&self, css: &str, within: Duration) -> Element {
        let deadline = Instant::now() + within;
        loop {
            if let Some(e) = self.find(css).await {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "no {css} on {} within {within:?}: {}",
                self.url().await,
                self.text("main").await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The visible text of the first element matching `css` (empty when none).
    pub(crate) async fn text(&self, css: &str) -> String {
        match self.find(css).await {
            Some(e) => self.text_of(&e).await,
            None => String::new(),
        }
    }

    pub(crate) async fn text_of(&self, e: &Element) -> String {
        self.get(&format!("/element/{}/text", e.0))
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub(crate) async fn attribute(&self, e: &Element, name: &str) -> Option<String> {
        self.get(&format!("/element/{}/attribute/{name}", e.0))
            .await
            .as_str()
            .map(str::to_string)
    }

    pub(crate) async fn click(&self, e: &Element) {
        self.post(&format!("/element/{}/click", e.0), json!({}))
            .await;
    }

    pub(crate) async fn type_into(&self, e: &Element, text: &str) {
        self.post(&format!("/element/{}/value", e.0), json!({ "text": text }))
            .await;
    }

    /// Runs `body` (a function body, `arguments` are `args`) in the page; its result.
    pub(crate) async fn script(&self, body: &str) -> Value {
        self.post("/execute/sync", json!({"script": body, "args": []}))
            .await
    }

    /// Runs `body` in the page, which calls `arguments[arguments.length - 1](result)`.
    pub(crate) async fn script_async(&self, body: &str) -> Value {
        self.post("/execute/async", json!({"script": body, "args": []}))
            .await
    }

    /// The viewport as a PNG.
    pub(crate) async fn screenshot(&self) -> Vec<u8> {
        use base64::Engine;
        let encoded = self.get("/screenshot").await;
        base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().unwrap_or_default())
            .expect("a base64 screenshot")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
