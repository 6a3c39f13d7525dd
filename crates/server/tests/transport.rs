//! Transport security against the stack of `scripts/stack.sh` (PostgreSQL over TLS,
//! Kafka's SASL_SSL listener with SCRAM-SHA-512, the stack's private CA): the URL the tests
//! use really is TLS, a certificate from another CA and a wrong SASL password are refused
//! with a clear message and a non-zero exit, and `--tls-cert`/`--tls-key` serve HTTPS.
//!
//! Needs `CORNERSHOP_TEST_DATABASE_URL`, `CORNERSHOP_TEST_KAFKA_*` and
//! `CORNERSHOP_TEST_TLS_DIR` (printed by `scripts/stack.sh start`).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::cluster;

fn tls_dir() -> PathBuf {
    PathBuf::from(cluster::required_env("CORNERSHOP_TEST_TLS_DIR"))
}

/// `cornershop serve` with `args`, expected to refuse to start: its output once it exits
/// (within `limit`, else the test fails).
fn serve_expecting_failure(args: &[String], data_dir: &Path, limit: Duration) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cornershop"))
        .arg("serve")
        .arg("--listen=127.0.0.1:0")
        .arg(format!("--data-dir={}", data_dir.display()))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("CORNERSHOP_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the cornershop binary starts");
    let started = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let output = child.wait_with_output().expect("output");
            panic!(
                "still running after {limit:?} instead of refusing to start; stderr:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = child.wait_with_output().expect("output");
    assert!(
        !output.status.success(),
        "started and exited 0; stderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The last line of the process's stderr (anyhow's `Error: ...`).
fn error_line(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    stderr
        .lines()
        .rev()
        .find(|l| l.starts_with("Error:"))
        .unwrap_or_else(|| panic!("no `Error:` line on stderr:\n{stderr}"))
        .to_string()
}

/// A fresh database on the test server (dropped by the returned guard), and its URL.
struct ScratchDb {
    url: String,
    name: String,
}

impl ScratchDb {
    async fn create() -> Self {
        let admin = cluster::required_env(cluster::DATABASE_ENV);
        let name = format!("cs_tls_{:x}", rand::random::<u64>());
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
            .await
            .expect("connect to the test PostgreSQL");
        sqlx::Executor::execute(&mut conn, format!("CREATE DATABASE {name}").as_str())
            .await
            .expect("create a database");
        Self {
            url: cluster::with_database(&admin, &name),
            name,
        }
    }

    async fn drop_it(self) {
        let admin = cluster::required_env(cluster::DATABASE_ENV);
        if let Ok(mut conn) = <sqlx::PgConnection as sqlx::Connection>::connect(&admin).await {
            let _ = sqlx::Executor::execute(
                &mut conn,
                format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name).as_str(),
            )
            .await;
        }
    }
}

#[tokio::test]
async fn the_test_database_url_connects_over_tls_and_verifies_the_server() {
    let url = cluster::required_env(cluster::DATABASE_ENV);
    assert!(
        url.contains("sslmode=verify-full"),
        "the stack's URL should ask for verify-full: {url}"
    );
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .expect("connect over TLS");
    let (ssl, version): (bool, String) =
        sqlx::query_as("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&mut conn)
            .await
            .expect("pg_stat_ssl");
    assert!(ssl, "the connection is not encrypted");
    assert!(version.starts_with("TLSv1."), "{version}");
}

/// The URL of `url` with `sslrootcert` pointing at `ca` instead.
fn with_root_cert(url: &str, ca: &Path) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut params: Vec<String> = query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("sslrootcert=") && !p.starts_with("sslmode="))
        .map(str::to_string)
        .collect();
    params.push("sslmode=verify-full".into());
    params.push(format!("sslrootcert={}", ca.display()));
    format!("{base}?{}", params.join("&"))
}

#[tokio::test]
async fn a_postgres_certificate_that_another_ca_signed_is_refused_at_start() {
    let url = with_root_cert(
        &cluster::required_env(cluster::DATABASE_ENV),
        &tls_dir().join("other-ca.pem"),
    );
    let dir = tempfile::tempdir().unwrap();
    let output = serve_expecting_failure(
        &[format!("--database-url={url}")],
        dir.path(),
        Duration::from_secs(30),
    );
    let error = error_line(&output);
    assert!(
        error.contains("PostgreSQL") && error.contains("certificate"),
        "the error should name PostgreSQL and the certificate: {error}"
    );
    assert!(
        !error.contains("cornershop:cornershop@"),
        "the error shows the URL's password: {error}"
    );
}

/// `serve`'s Kafka flags for the test broker, with `replace` in place of the flags it names.
fn kafka_flags(replace: &[(&str, String)]) -> Vec<String> {
    let mut flags: Vec<String> = cluster::kafka_security_flags()
        .into_iter()
        .filter(|f| {
            !replace
                .iter()
                .any(|(name, _)| f.starts_with(&format!("--{name}=")))
        })
        .collect();
    flags.extend(
        replace
            .iter()
            .map(|(name, value)| format!("--{name}={value}")),
    );
    flags.push(format!(
        "--kafka-brokers={}",
        cluster::required_env(cluster::BROKERS_ENV)
    ));
    flags.push(format!("--kafka-namespace=tls{:x}.", rand::random::<u32>()));
    flags
}

fn require_sasl_ssl() {
    let protocol = std::env::var("CORNERSHOP_TEST_KAFKA_SECURITY_PROTOCOL").unwrap_or_default();
    assert_eq!(
        protocol, "sasl_ssl",
        "these tests need the stack's SASL_SSL listener (CORNERSHOP_TEST_KAFKA_SECURITY_PROTOCOL=sasl_ssl, \
         printed by scripts/stack.sh start)"
    );
}

#[tokio::test]
async fn a_wrong_kafka_sasl_password_is_refused_at_start_naming_sasl_and_scram() {
    require_sasl_ssl();
    let db = ScratchDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let wrong = "not-the-password-4711";
    let mut args = vec![format!("--database-url={}", db.url)];
    args.extend(kafka_flags(&[("kafka-sasl-password", wrong.to_string())]));
    let started = Instant::now();
    let output = serve_expecting_failure(&args, dir.path(), Duration::from_secs(40));
    db.drop_it().await;
    let error = error_line(&output);
    assert!(
        error.contains("SASL") && error.contains("SCRAM-SHA-512"),
        "the error should say SASL/SCRAM refused the login: {error}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "a refused login should stop the start at once, not after the timeout ({:?})",
        started.elapsed()
    );
    let everything = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        !everything.contains(wrong),
        "the password reached the output:\n{everything}"
    );
}

#[tokio::test]
async fn a_kafka_broker_certificate_that_another_ca_signed_is_refused_at_start() {
    require_sasl_ssl();
    let db = ScratchDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let other = tls_dir().join("other-ca.pem");
    let mut args = vec![format!("--database-url={}", db.url)];
    args.extend(kafka_flags(&[(
        "kafka-ca-file",
        other.display().to_string(),
    )]));
    let output = serve_expecting_failure(&args, dir.path(), Duration::from_secs(40));
    db.drop_it().await;
    let error = error_line(&output);
    assert!(
        error.contains("SSL") && error.contains("certificate"),
        "the error should say the broker's certificate is not trusted: {error}"
    );
}

#[tokio::test]
async fn a_sasl_protocol_without_credentials_is_refused_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let output = serve_expecting_failure(
        &[
            "--kafka-brokers=127.0.0.1:1".to_string(),
            "--kafka-security-protocol=sasl_ssl".to_string(),
        ],
        dir.path(),
        Duration::from_secs(20),
    );
    let error = error_line(&output);
    assert!(
        error.contains("--kafka-sasl-username") && error.contains("--kafka-sasl-password"),
        "{error}"
    );
}

// ------------------------------------------------------------------------------ HTTPS

/// A shop on the embedded store serving HTTPS with the stack's server certificate; killed
/// on drop.
struct HttpsShop {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for HttpsShop {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl HttpsShop {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("shop.log");
        let file = std::fs::File::create(&log).unwrap();
        let tls = tls_dir();
        let mut child = Command::new(env!("CARGO_BIN_EXE_cornershop"))
            .arg("serve")
            .arg("--listen=127.0.0.1:0")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--tls-cert={}", tls.join("server.pem").display()))
            .arg(format!("--tls-key={}", tls.join("server.key").display()))
            .env_remove("CORNERSHOP_DATABASE_URL")
            .env_remove("CORNERSHOP_KAFKA_BROKERS")
            .env("CORNERSHOP_LOG", "info")
            .env("CORNERSHOP_LOG_FORMAT", "json")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("the cornershop binary starts");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let listening = text.lines().find_map(|line| {
                let entry: serde_json::Value = serde_json::from_str(line).ok()?;
                (entry["message"] == "cornershop is listening").then(|| entry.clone())
            });
            if let Some(entry) = listening {
                assert_eq!(entry["https"], true, "{entry}");
                let address: std::net::SocketAddr =
                    entry["address"].as_str().unwrap().parse().unwrap();
                return Self {
                    child,
                    port: address.port(),
                    _dir: dir,
                };
            }
            if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
                let _ = child.kill();
                panic!("the HTTPS shop did not start:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn client_trusting(ca: &Path) -> reqwest::Client {
    let pem = std::fs::read(ca).unwrap();
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

#[tokio::test]
async fn https_serves_with_the_given_certificate_and_plain_http_is_not_answered() {
    let shop = HttpsShop::start();
    let tls = tls_dir();
    let trusting = client_trusting(&tls.join("ca.pem"));
    for host in ["127.0.0.1", "localhost"] {
        let url = format!("https://{host}:{}/health/live", shop.port);
        let answer = trusting.get(&url).send().await.unwrap_or_else(|e| {
            panic!("GET {url} with the stack's CA: {e:?}");
        });
        assert_eq!(answer.status(), 200, "GET {url}");
    }

    // Plain HTTP on the HTTPS port gets no HTTP answer.
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let url = format!("http://127.0.0.1:{}/health/live", shop.port);
    match plain.get(&url).send().await {
        Ok(answer) => panic!("plain HTTP was answered {}", answer.status()),
        Err(e) => assert!(
            !e.is_timeout(),
            "plain HTTP should be closed, not hang: {e}"
        ),
    }

    // A client that does not trust the CA refuses the server.
    let untrusting = client_trusting(&tls.join("other-ca.pem"));
    let url = format!("https://127.0.0.1:{}/health/live", shop.port);
    let e = untrusting
        .get(&url)
        .send()
        .await
        .expect_err("a client trusting another CA must refuse the server");
    assert!(e.is_connect(), "{e:?}");
}

#[tokio::test]
async fn a_bad_certificate_or_key_file_stops_the_start_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let tls = tls_dir();
    let missing = dir.path().join("missing-cert.pem");
    let output = serve_expecting_failure(
        &[
            format!("--tls-cert={}", missing.display()),
            format!("--tls-key={}", tls.join("server.key").display()),
        ],
        &dir.path().join("data"),
        Duration::from_secs(20),
    );
    let error = error_line(&output);
    assert!(error.contains("missing-cert.pem"), "{error}");

    let garbage = dir.path().join("garbage-key.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN NOTHING-----\nAAAA\n-----END NOTHING-----\n",
    )
    .unwrap();
    let output = serve_expecting_failure(
        &[
            format!("--tls-cert={}", tls.join("server.pem").display()),
            format!("--tls-key={}", garbage.display()),
        ],
        &dir.path().join("data"),
        Duration::from_secs(20),
    );
    let error = error_line(&output);
    assert!(
        error.contains("garbage-key.pem") && error.contains("--tls-key"),
        "{error}"
    );

    // The key of another certificate: rustls finds they do not match.
    let output = serve_expecting_failure(
        &[
            format!("--tls-cert={}", tls.join("server.pem").display()),
            format!("--tls-key={}", tls.join("other-ca.key").display()),
        ],
        &dir.path().join("data"),
        Duration::from_secs(20),
    );
    let error = error_line(&output);
    assert!(error.contains("server.pem"), "{error}");
}
