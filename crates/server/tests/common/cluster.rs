//! The production path for tests: the real `cornershop` binary in several processes (one
//! per group of roles) sharing a fresh PostgreSQL database and a Kafka namespace of their
//! own on the broker started by `scripts/stack.sh`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cornershop_server::config::ServeArgs;
use rand::Rng;

pub(crate) const DATABASE_ENV: &str = "CORNERSHOP_TEST_DATABASE_URL";
pub(crate) const BROKERS_ENV: &str = "CORNERSHOP_TEST_KAFKA_BROKERS";

/// Whether the shared tests run against the production path
/// (`CORNERSHOP_TEST_BACKEND=production`) instead of the embedded default.
pub(crate) fn production() -> bool {
    std::env::var("CORNERSHOP_TEST_BACKEND").is_ok_and(|b| b == "production")
}

/// The test broker's TLS and SASL settings, as `scripts/stack.sh env` prints them
/// (`CORNERSHOP_TEST_KAFKA_SECURITY_PROTOCOL`, `_SASL_MECHANISM`, `_SASL_USERNAME`,
/// `_SASL_PASSWORD`, `_CA_FILE`): none of them means plaintext.
fn test_kafka_var(name: &str) -> Option<String> {
    std::env::var(format!("CORNERSHOP_TEST_KAFKA_{name}"))
        .ok()
        .filter(|v| !v.is_empty())
}

/// `serve`'s flags for the test broker's security settings.
pub(crate) fn kafka_security_flags() -> Vec<String> {
    let mut flags = Vec::new();
    for (var, flag) in [
        ("SECURITY_PROTOCOL", "kafka-security-protocol"),
        ("SASL_MECHANISM", "kafka-sasl-mechanism"),
        ("SASL_USERNAME", "kafka-sasl-username"),
        ("SASL_PASSWORD", "kafka-sasl-password"),
        ("CA_FILE", "kafka-ca-file"),
    ] {
        if let Some(value) = test_kafka_var(var) {
            flags.push(format!("--{flag}={value}"));
        }
    }
    flags
}

/// The test broker's settings for a client of the test's own (`client_config`).
pub(crate) fn kafka_settings(brokers: &str) -> cornershop_messaging::kafka::KafkaSettings {
    use cornershop_messaging::kafka::{KafkaSecurity, Secret, SecurityProtocol};
    let protocol = match test_kafka_var("SECURITY_PROTOCOL").as_deref() {
        None | Some("plaintext") => SecurityProtocol::Plaintext,
        Some("ssl") => SecurityProtocol::Ssl,
        Some("sasl_plaintext") => SecurityProtocol::SaslPlaintext,
        Some("sasl_ssl") => SecurityProtocol::SaslSsl,
        Some(other) => panic!("CORNERSHOP_TEST_KAFKA_SECURITY_PROTOCOL={other}?"),
    };
    cornershop_messaging::kafka::KafkaSettings {
        brokers: brokers.to_string(),
        namespace: String::new(),
        partitions: 1,
        replication: 1,
        security: KafkaSecurity {
            protocol,
            sasl_mechanism: test_kafka_var("SASL_MECHANISM")
                .unwrap_or_else(|| "SCRAM-SHA-512".into()),
            sasl_username: test_kafka_var("SASL_USERNAME"),
            sasl_password: test_kafka_var("SASL_PASSWORD").map(Secret::new),
            ca_file: test_kafka_var("CA_FILE").map(Into::into),
        },
    }
}

/// Where kcat reaches the test broker: Debian's kcat links librdkafka 2.0, whose SCRAM
/// Kafka 4 refuses (a nonce bug fixed in librdkafka 2.6.1; the shop's bundled 2.12 is
/// fine), so with `CORNERSHOP_TEST_KAFKA_PLAINTEXT_BROKERS` (the stack's loopback
/// PLAINTEXT listener) kcat reads and writes there; else it uses `brokers` with the test
/// broker's security settings.
pub(crate) fn kcat_endpoint(brokers: &str) -> Vec<String> {
    if let Some(plain) = std::env::var("CORNERSHOP_TEST_KAFKA_PLAINTEXT_BROKERS")
        .ok()
        .filter(|v| !v.is_empty())
    {
        return vec!["-b".into(), plain];
    }
    let config = kafka_settings(brokers).client_config();
    let mut args = vec!["-b".to_string(), brokers.to_string()];
    for key in [
        "security.protocol",
        "sasl.mechanism",
        "sasl.username",
        "sasl.password",
        "ssl.ca.location",
    ] {
        if let Some(value) = config.get(key) {
            args.push("-X".into());
            args.push(format!("{key}={value}"));
        }
    }
    args
}

/// A URL of the same server as `url` (`postgres://...:port/<db>?<params>`), for the
/// database `database`, its parameters (sslmode, sslrootcert) kept.
pub(crate) fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let server = match base.rsplit_once('/') {
        Some((server, _)) => server,
        None => panic!("{DATABASE_ENV} must end with /<database>"),
    };
    match query {
        Some(query) => format!("{server}/{database}?{query}"),
        None => format!("{server}/{database}"),
    }
}

/// The database a URL names.
pub(crate) fn database_of(url: &str) -> Option<&str> {
    let base = url.split_once('?').map_or(url, |(base, _)| base);
    base.rsplit_once('/').map(|(_, database)| database)
}

pub(crate) fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: the production-path tests need PostgreSQL, Kafka and Keycloak. \
             Run ./scripts/test.sh, or `set -a; eval \"$(scripts/stack.sh start)\"; set +a`"
        )
    })
}

pub(crate) struct Process {
    pub name: String,
    /// The key its tokens are checked with.
    pub signing_key: PathBuf,
    /// The port the process listens on, as it reported it (each start binds port 0 and
    /// logs the address the kernel gave it, so two processes can never race for a port).
    pub port: u16,
    args: Vec<String>,
    env: Vec<(String, String)>,
    child: Option<Child>,
    log: PathBuf,
    /// Where this start's output begins in the (appended) log file.
    log_start: u64,
}

impl Process {
    /// Starts `cornershop serve` with `args` (all but `--listen`), its output appended to
    /// `log`, and waits until it is ready.
    pub(crate) async fn start(name: &str, args: Vec<String>, log: PathBuf) -> Self {
        Self::start_with_env(name, args, &[], log).await
    }

    /// [`start`](Self::start) with extra environment variables.
    pub(crate) async fn start_with_env(
        name: &str,
        args: Vec<String>,
        env: &[(&str, &str)],
        log: PathBuf,
    ) -> Self {
        let mut process = Self::new(name, args, log);
        process.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        process.spawn();
        process.wait_ready().await;
        process
    }

    fn new(name: &str, mut args: Vec<String>, log: PathBuf) -> Self {
        // Each process checks tokens with a key file the test can mint from: the one
        // given, else one beside its log (kept over restarts).
        let signing_key = match args
            .iter()
            .find_map(|a| a.strip_prefix("--signing-key-file="))
        {
            Some(path) => PathBuf::from(path),
            None => {
                let path = log.with_extension("signing-key.pem");
                args.push(format!("--signing-key-file={}", path.display()));
                path
            }
        };
        // The processes of a test share one master key: the one given, else one in the
        // directory of their logs.
        if !args.iter().any(|a| a.starts_with("--master-key-file=")) {
            let dir = log.parent().map(PathBuf::from).unwrap_or_default();
            args.push(format!(
                "--master-key-file={}",
                dir.join("master.key").display()
            ));
        }
        Self {
            name: name.to_string(),
            port: 0,
            signing_key,
            args,
            env: Vec::new(),
            child: None,
            log,
            log_start: 0,
        }
    }

    pub(crate) fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// An admin's client for this process.
    pub(crate) fn client(&self) -> reqwest::Client {
        super::admin_client(&self.signing_key)
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        self.log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
        self.port = 0;
        let child = Command::new(env!("CARGO_BIN_EXE_cornershop"))
            .arg("serve")
            .arg("--listen=127.0.0.1:0")
            .args(&self.args)
            // Only the flags configure a test process, never the caller's environment.
            .env_remove("CORNERSHOP_DATABASE_URL")
            .env_remove("CORNERSHOP_KAFKA_BROKERS")
            .env_remove("CORNERSHOP_KAFKA_SECURITY_PROTOCOL")
            .env_remove("CORNERSHOP_KAFKA_SASL_USERNAME")
            .env_remove("CORNERSHOP_KAFKA_SASL_PASSWORD")
            .env_remove("CORNERSHOP_KAFKA_SASL_PASSWORD_FILE")
            .env_remove("CORNERSHOP_KAFKA_CA_FILE")
            .env_remove("CORNERSHOP_ROLES")
            .env("CORNERSHOP_LOG", "info,librdkafka=warn")
            .env("CORNERSHOP_LOG_FORMAT", "json")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("the cornershop binary starts");
        self.child = Some(child);
    }

    /// SIGKILL (no shutdown, no flush) and reap the process.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `signal` (`TERM`, `INT`, ...) with kill(1) and waits up to `limit` for the
    /// process to exit; returns how it exited. Panics with the log tail if it does not.
    pub(crate) async fn signal_and_wait(
        &mut self,
        signal: &str,
        limit: Duration,
    ) -> std::process::ExitStatus {
        let child = self.child.as_mut().expect("the process is running");
        let sent = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .expect("kill(1) runs");
        assert!(sent.success(), "kill -{signal} failed");
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().expect("wait for the process") {
                self.child = None;
                return status;
            }
            if Instant::now() > deadline {
                let text = self.log_since_start();
                let tail: Vec<&str> = text.lines().rev().take(80).collect();
                panic!(
                    "{} still runs {limit:?} after SIG{signal}; log tail (newest first):\n{}",
                    self.name,
                    tail.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// This start's log lines, parsed (lines that are not JSON are left out).
    pub(crate) fn messages_since_start(&self) -> Vec<serde_json::Value> {
        self.log_since_start()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// Starts the process again with the same settings (after [`kill`](Self::kill)).
    pub(crate) async fn restart(&mut self) {
        self.kill();
        self.spawn();
        self.wait_ready().await;
    }

    /// This start's log output so far.
    fn log_since_start(&self) -> String {
        let text = std::fs::read(&self.log).unwrap_or_default();
        let start = (self.log_start as usize).min(text.len());
        String::from_utf8_lossy(&text[start..]).into_owned()
    }

    /// The port from this start's "cornershop is listening" log line, once written.
    fn reported_port(&self) -> Option<u16> {
        self.log_since_start().lines().find_map(|line| {
            let entry: serde_json::Value = serde_json::from_str(line).ok()?;
            if entry["message"] != "cornershop is listening" {
                return None;
            }
            let address: std::net::SocketAddr = entry["address"].as_str()?.parse().ok()?;
            Some(address.port())
        })
    }

    /// Waits until the process has reported its port and answers `/health/ready`; panics
    /// with its log when it exits first or takes longer than a minute.
    async fn wait_ready(&mut self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.port == 0 {
                self.port = self.reported_port().unwrap_or(0);
            }
            if self.port != 0 {
                if let Ok(r) = client
                    .get(format!("{}/health/ready", self.base()))
                    .send()
                    .await
                {
                    if r.status().is_success() {
                        return;
                    }
                }
            }
            let exited = self
                .child
                .as_mut()
                .is_none_or(|c| c.try_wait().ok().flatten().is_some());
            if exited || Instant::now() > deadline {
                let text = self.log_since_start();
                let tail: Vec<&str> = text.lines().rev().take(80).collect();
                panic!(
                    "{} {}; log tail (newest first):\n{}",
                    self.name,
                    if exited {
                        "exited before it was ready"
                    } else {
                        "never became ready"
                    },
                    tail.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The workflow settings of `ServeArgs` as command-line flags, so that tests configure
/// both backends the same way.
pub(crate) fn workflow_flags(args: &ServeArgs) -> Vec<String> {
    let w = &args.workflow;
    vec![
        format!("--cart-ttl={}", w.cart_ttl),
        format!("--payment-max-amount={}", w.payment_max_amount),
        format!("--payment-latency={}", w.payment_latency),
        format!("--consumer-max-attempts={}", w.consumer_max_attempts),
        format!("--consumer-retry-delay={}", w.consumer_retry_delay),
        format!("--stall-after={}", w.stall_after),
        format!("--auth-failure-limit={}", args.auth.auth_failure_limit),
    ]
}

pub(crate) struct Cluster {
    pub processes: Vec<Process>,
    /// The signing key every process checks tokens with (the embedded issuer's, shared).
    pub signing_key: PathBuf,
    pub database_url: String,
    pub namespace: String,
    pub brokers: String,
    /// Its topics and database are gone (by `dispose`, or by the drop).
    disposed: bool,
}

/// A cluster that a test drops without `dispose` (a `TestApp`, or a test that panicked)
/// still deletes its topics and database, so that runs do not pile partitions up on the
/// shared broker. A drop may run inside the test's runtime, so the async clean-up runs on
/// a thread of its own.
impl Drop for Cluster {
    fn drop(&mut self) {
        if self.disposed {
            return;
        }
        for process in &mut self.processes {
            process.kill();
        }
        let (namespace, brokers, database_url) = (
            self.namespace.clone(),
            self.brokers.clone(),
            self.database_url.clone(),
        );
        let cleaned = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the clean-up")
                .block_on(remove_topics_and_database(
                    &namespace,
                    &brokers,
                    &database_url,
                ))
        });
        let _ = cleaned.join();
    }
}

/// Settings for a shop in this process on PostgreSQL + Kafka: a fresh database, a fresh
/// topic namespace, the broker's security, and `flags` after those; with the database's URL
/// and the namespace, for [`remove_topics_and_database`].
pub(crate) async fn production_args(
    data_dir: &Path,
    flags: &[String],
) -> (ServeArgs, String, String) {
    use clap::{Args, FromArgMatches};
    let database_url = fresh_database().await;
    let suffix: u64 = rand::rng().random();
    let namespace = format!("e2e{suffix:x}.");
    let mut all = vec![
        "serve".to_string(),
        "--listen=127.0.0.1:0".to_string(),
        format!("--data-dir={}", data_dir.display()),
        format!("--database-url={database_url}"),
        format!("--kafka-brokers={}", required_env(BROKERS_ENV)),
        format!("--kafka-namespace={namespace}"),
    ];
    all.extend(kafka_security_flags());
    all.extend(flags.iter().cloned());
    let command = ServeArgs::augment_args(clap::Command::new("serve"))
        .mut_args(|arg| arg.env(None::<&'static str>));
    let matches = command
        .try_get_matches_from(all)
        .expect("the production settings parse");
    let args = ServeArgs::from_arg_matches(&matches).expect("the production settings parse");
    (args, database_url, namespace)
}

/// A new, empty database on the test PostgreSQL; its URL.
pub(crate) async fn fresh_database() -> String {
    let admin_url = required_env(DATABASE_ENV);
    let suffix: u64 = rand::rng().random();
    let database = format!("cs_e2e_{suffix:x}");
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&admin_url)
        .await
        .expect("connect to the test PostgreSQL");
    sqlx::Executor::execute(&mut admin, format!("CREATE DATABASE {database}").as_str())
        .await
        .expect("create a test database");
    with_database(&admin_url, &database)
}

impl Cluster {
    /// Starts one process per role group, e.g. `[&["api", "relay"], &["order", "inventory"],
    /// &["payment", "relay"]]`, on a fresh database and a fresh Kafka namespace.
    pub(crate) async fn start(roles: &[&[&str]], extra_flags: &[String], logs: &Path) -> Self {
        let database_url = fresh_database().await;
        Self::start_on(&database_url, roles, extra_flags, logs).await
    }

    /// [`start`](Self::start) on a database made by [`fresh_database`] (which the cluster
    /// drops when it is disposed of).
    pub(crate) async fn start_on(
        database_url: &str,
        roles: &[&[&str]],
        extra_flags: &[String],
        logs: &Path,
    ) -> Self {
        let database_url = database_url.to_string();
        let brokers = required_env(BROKERS_ENV);
        let suffix: u64 = rand::rng().random();
        let namespace = format!("e2e{suffix:x}.");
        let signing_key = logs.join(cornershop_server::config::SIGNING_KEY_FILE);
        let mut processes = Vec::new();
        for (index, group) in roles.iter().enumerate() {
            let name = group.join("+");
            let mut args = vec![
                format!("--roles={}", group.join(",")),
                format!("--database-url={database_url}"),
                format!("--kafka-brokers={brokers}"),
                format!("--kafka-namespace={namespace}"),
                "--relay-lease-ttl=2s".to_string(),
                format!("--signing-key-file={}", signing_key.display()),
            ];
            args.extend(kafka_security_flags());
            args.extend(extra_flags.iter().cloned());
            let mut process = Process::new(&name, args, logs.join(format!("{index}-{name}.log")));
            process.spawn();
            processes.push(process);
        }
        for p in &mut processes {
            p.wait_ready().await;
        }
        Self {
            processes,
            signing_key,
            database_url,
            namespace,
            brokers,
            disposed: false,
        }
    }

    /// The first process that serves the shop's API.
    pub(crate) fn api_base(&self) -> String {
        self.processes
            .iter()
            .find(|p| p.name.split('+').any(|r| r == "api" || r == "all"))
            .expect("a process with the api role")
            .base()
    }

    pub(crate) fn process(&mut self, name: &str) -> &mut Process {
        self.processes
            .iter_mut()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no process {name}"))
    }

    pub(crate) fn topic(&self, base: &str) -> String {
        format!("{}{}", self.namespace, base)
    }
}

/// Deletes a cluster's topics (the four event topics and their dead-letter topics) and
/// drops its database, unless `CORNERSHOP_TEST_KEEP_LOGS` is set. Failures only warn.
pub(crate) async fn remove_topics_and_database(namespace: &str, brokers: &str, database_url: &str) {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;

    if std::env::var_os("CORNERSHOP_TEST_KEEP_LOGS").is_some() {
        return;
    }
    let topics: Vec<String> = ["carts", "orders", "payments", "inventory"]
        .iter()
        .flat_map(|t| {
            [
                format!("{namespace}{t}.events"),
                format!("{namespace}{t}.events.dlq"),
            ]
        })
        .collect();
    let admin: Result<AdminClient<DefaultClientContext>, _> =
        kafka_settings(brokers).client_config().create();
    match admin {
        Ok(admin) => {
            let names: Vec<&str> = topics.iter().map(String::as_str).collect();
            let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
            match admin.delete_topics(&names, &options).await {
                // A topic that was never created (no dead letters) is not an error here.
                Ok(_) => {}
                Err(e) => eprintln!("could not delete the topics {namespace}*: {e}"),
            }
        }
        Err(e) => eprintln!("no Kafka admin client for {brokers}: {e}"),
    }
    drop_database(database_url).await;
}

/// Drops the database of `database_url` (one [`fresh_database`] made).
pub(crate) async fn drop_database(database_url: &str) {
    let Some(database) = database_of(database_url) else {
        return;
    };
    let dropped = async {
        let mut admin =
            <sqlx::PgConnection as sqlx::Connection>::connect(&required_env(DATABASE_ENV)).await?;
        sqlx::Executor::execute(
            &mut admin,
            format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)").as_str(),
        )
        .await
    }
    .await;
    if let Err(e) = dropped {
        eprintln!("could not drop the database {database}: {e}");
    }
}

/// The default split for the shared end-to-end suite: three service processes, two
/// relays (one active, one standby); the reporting service (the read models that the order
/// queries read) runs beside the order and inventory services.
pub(crate) const DEFAULT_LAYOUT: &[&[&str]] = &[
    &["api", "relay"],
    &["order", "inventory", "reporting"],
    &["payment", "relay"],
];

// ---------------------------------------------------------------------------------------
// Helpers for the production-path fault tests (tests/production.rs, tests/broker_restart.rs).

impl Process {
    /// The operating-system process id while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub(crate) fn has_role(&self, role: &str) -> bool {
        self.name.split('+').any(|r| r == role)
    }

    /// Every line the process has logged (all its starts).
    pub(crate) fn log_lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The last `lines` lines of the process's log (for failure messages), without the
    /// access log.
    pub(crate) fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut tail: Vec<&str> = text
            .lines()
            .rev()
            .filter(|l| !l.contains(r#""message":"request handled""#))
            .take(lines)
            .collect();
        tail.reverse();
        tail.join("\n")
    }
}

/// A cluster with the given layout (and `extra_flags` after the default workflow
/// settings), with a [`TestApp`](super::TestApp) client on its API. With
/// `CORNERSHOP_TEST_KEEP_LOGS` set, the processes' logs are kept (the path is printed). The cluster is
/// returned apart, so that a test can kill and restart its processes while tasks share the
/// client; the client's `cluster` is `None`.
pub(crate) async fn start_shop(
    layout: &[&[&str]],
    extra_flags: &[String],
) -> (super::TestApp, Cluster) {
    let mut data_dir = tempfile::tempdir().expect("temp dir");
    if std::env::var_os("CORNERSHOP_TEST_KEEP_LOGS").is_some() {
        data_dir.disable_cleanup(true);
        eprintln!("cluster logs kept in {}", data_dir.path().display());
    }
    let mut flags = workflow_flags(&ServeArgs::for_data_dir(data_dir.path()));
    flags.extend(extra_flags.iter().cloned());
    let cluster = Cluster::start(layout, &flags, data_dir.path()).await;
    let app = cluster.app(data_dir);
    (app, cluster)
}

impl Cluster {
    /// A [`TestApp`](super::TestApp) client on the cluster's API (its `cluster` is `None`).
    pub(crate) fn app(&self, data_dir: tempfile::TempDir) -> super::TestApp {
        super::TestApp {
            base: self.api_base(),
            client: super::admin_client(&self.signing_key),
            data_dir,
            stop: None,
            running: None,
            cluster: None,
        }
    }
}

impl Cluster {
    /// The process running with this operating-system pid.
    pub(crate) fn process_with_pid(&mut self, pid: u32) -> Option<&mut Process> {
        self.processes.iter_mut().find(|p| p.pid() == Some(pid))
    }

    /// A small pool on the cluster's database, for checks straight in the store.
    pub(crate) async fn db(&self) -> sqlx::PgPool {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(&self.database_url)
            .await
            .expect("connect to the cluster's database")
    }

    /// The four event topics (carts, orders, payments, inventory) in this namespace.
    pub(crate) fn event_topics(&self) -> Vec<String> {
        [
            "carts.events",
            "orders.events",
            "payments.events",
            "inventory.events",
        ]
        .iter()
        .map(|t| self.topic(t))
        .collect()
    }

    /// Every message of `topic` now, read with kcat.
    pub(crate) async fn read_topic(&self, topic: &str) -> Vec<KafkaMessage> {
        kcat_read(&self.brokers, topic).await
    }

    /// Every message of the four event topics.
    pub(crate) async fn read_event_topics(&self) -> Vec<KafkaMessage> {
        let mut all = Vec::new();
        for topic in self.event_topics() {
            all.extend(self.read_topic(&topic).await);
        }
        all
    }

    /// Stops every process, deletes this cluster's Kafka topics and drops its database, so
    /// that test runs do not pile up on the shared broker (whose start-up, and so the
    /// recovery after a restart, slows down with every partition it holds; a consumer
    /// group whose session times out while the broker works through them stalls for
    /// about 20 s). Nothing is deleted with `CORNERSHOP_TEST_KEEP_LOGS` set. Failures only
    /// warn. (Dropping a cluster does the same.)
    pub(crate) async fn dispose(mut self) {
        for process in &mut self.processes {
            process.kill();
        }
        remove_topics_and_database(&self.namespace, &self.brokers, &self.database_url).await;
        self.disposed = true;
    }

    /// Logs of every process, last lines first per process (for failure messages).
    pub(crate) fn log_tails(&self, lines: usize) -> String {
        self.processes
            .iter()
            .map(|p| {
                format!(
                    "--- {} (port {}) ---\n{}",
                    p.name,
                    p.port,
                    p.log_tail(lines)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// One Kafka message as kcat's JSON output shows it.
#[derive(Debug, Clone)]
pub(crate) struct KafkaMessage {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub headers: Vec<(String, String)>,
    pub payload: Option<String>,
}

impl KafkaMessage {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The payload as JSON, when it is JSON.
    pub(crate) fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_str(self.payload.as_deref()?).ok()
    }

    /// The eventId of the envelope in the payload, when there is one.
    pub(crate) fn event_id(&self) -> Option<String> {
        self.json()?["eventId"].as_str().map(str::to_string)
    }
}

async fn run_kcat(args: &[String], what: &str) -> std::process::Output {
    let mut command = tokio::process::Command::new("kcat");
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .unwrap_or_else(|_| panic!("kcat {what} took more than 60 s"))
        .expect("kcat runs (is it installed?)");
    assert!(
        output.status.success(),
        "kcat {what} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Every message of `topic` from the beginning to the current end (`kcat -C -e -J`).
pub(crate) async fn kcat_read(brokers: &str, topic: &str) -> Vec<KafkaMessage> {
    let mut args = kcat_endpoint(brokers);
    args.extend(["-C", "-t", topic, "-o", "beginning", "-e", "-J", "-q"].map(str::to_string));
    let output = run_kcat(&args, &format!("reading {topic}")).await;
    let text = String::from_utf8(output.stdout).expect("kcat -J prints UTF-8");
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("kcat -J line is not JSON ({e}): {line}"));
            let text = |v: &serde_json::Value| v.as_str().map(str::to_string);
            let headers = v["headers"]
                .as_array()
                .map(|h| {
                    h.chunks(2)
                        .map(|kv| {
                            (
                                text(&kv[0]).unwrap_or_default(),
                                kv.get(1).and_then(text).unwrap_or_default(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            KafkaMessage {
                topic: text(&v["topic"]).expect("topic"),
                partition: v["partition"].as_i64().expect("partition") as i32,
                offset: v["offset"].as_i64().expect("offset"),
                key: text(&v["key"]),
                headers,
                payload: text(&v["payload"]),
            }
        })
        .collect()
}

/// Produces one message with kcat (`kcat -P`), to `partition` when given.
pub(crate) async fn kcat_produce(
    brokers: &str,
    topic: &str,
    partition: Option<i32>,
    key: &str,
    headers: &[(&str, &str)],
    payload: &str,
) {
    // A file argument is produced as one message, whatever it contains.
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), payload).expect("write the payload");
    let mut args = kcat_endpoint(brokers);
    args.extend(["-P", "-t", topic, "-k", key].map(str::to_string));
    if let Some(p) = partition {
        args.push("-p".into());
        args.push(p.to_string());
    }
    for (name, value) in headers {
        args.push("-H".into());
        args.push(format!("{name}={value}"));
    }
    args.push(file.path().display().to_string());
    run_kcat(&args, &format!("producing to {topic}")).await;
}

/// How many partitions `topic` has (`kcat -L -J`).
pub(crate) async fn kcat_partitions(brokers: &str, topic: &str) -> i32 {
    let mut args = kcat_endpoint(brokers);
    args.extend(["-L", "-t", topic, "-J"].map(str::to_string));
    let output = run_kcat(&args, &format!("metadata of {topic}")).await;
    let v: serde_json::Value = serde_json::from_slice(&output.stdout).expect("kcat -L -J");
    v["topics"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["topic"] == topic))
        .and_then(|t| t["partitions"].as_array())
        .map(|p| p.len() as i32)
        .unwrap_or_else(|| panic!("no metadata for {topic}: {v}"))
}

/// An event as the PostgreSQL store holds it, with where the relay published it.
#[derive(Debug, Clone)]
pub(crate) struct StoredRow {
    pub position: i64,
    pub event_id: String,
    pub event_type: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub version: i64,
    pub correlation_id: String,
    pub causation_id: String,
    pub topic: Option<String>,
    pub partition: Option<i32>,
    pub offset: Option<i64>,
}

/// The whole log, in position order.
pub(crate) async fn stored_events(db: &sqlx::PgPool) -> Vec<StoredRow> {
    type Row = (
        i64,
        String,
        String,
        String,
        String,
        i64,
        String,
        String,
        Option<String>,
        Option<i32>,
        Option<i64>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT position, event_id::text, event_type, aggregate_type, aggregate_id, version, \
         metadata->>'correlationId', metadata->>'causationId', topic, kafka_partition, \
         kafka_offset FROM events ORDER BY position",
    )
    .fetch_all(db)
    .await
    .expect("read the events table");
    rows.into_iter()
        .map(|r| StoredRow {
            position: r.0,
            event_id: r.1,
            event_type: r.2,
            aggregate_type: r.3,
            aggregate_id: r.4,
            version: r.5,
            correlation_id: r.6,
            causation_id: r.7,
            topic: r.8,
            partition: r.9,
            offset: r.10,
        })
        .collect()
}

/// How many stored events have no recorded Kafka offset yet.
pub(crate) async fn unpublished_count(db: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE kafka_offset IS NULL")
        .fetch_one(db)
        .await
        .expect("count unpublished events")
}

/// The pid in the outbox-relay lease's holder (`relay-pid<PID>-<uuid>`), if it is held.
pub(crate) async fn relay_lease_pid(db: &sqlx::PgPool) -> Option<u32> {
    let holder: Option<String> =
        sqlx::query_scalar("SELECT holder FROM leases WHERE name = 'outbox-relay'")
            .fetch_optional(db)
            .await
            .expect("read the relay lease");
    let holder = holder?;
    let pid = holder
        .strip_prefix("relay-pid")
        .and_then(|rest| rest.split('-').next())
        .unwrap_or_else(|| panic!("unexpected relay lease holder {holder:?}"));
    Some(
        pid.parse()
            .unwrap_or_else(|_| panic!("no pid in {holder:?}")),
    )
}

/// Each order's latest event type (by version) in the event store, the source of truth
/// (the order queries of the API may lag behind it, or need the reporting role). An order
/// whose `OrderCreated` is not stored yet is absent.
pub(crate) async fn order_progress(
    db: &sqlx::PgPool,
    orders: &[String],
) -> std::collections::BTreeMap<String, String> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT DISTINCT ON (aggregate_id) aggregate_id, event_type FROM events \
         WHERE aggregate_type = 'Order' AND aggregate_id = ANY($1) \
         ORDER BY aggregate_id, version DESC",
    )
    .bind(orders)
    .fetch_all(db)
    .await
    .expect("read the orders' events");
    rows.into_iter().collect()
}

/// "Confirmed" or "Cancelled" when the order's latest event ends the workflow.
pub(crate) fn outcome(latest_event_type: &str) -> Option<&'static str> {
    match latest_event_type {
        "OrderConfirmed" => Some("Confirmed"),
        "OrderCancelled" => Some("Cancelled"),
        _ => None,
    }
}

/// Waits (at most `limit`) until every order in `orders` is Confirmed or Cancelled in the
/// event store, every stored event has a recorded Kafka offset, and the log has been quiet
/// for a second. Returns each order's outcome ("Confirmed" or "Cancelled").
pub(crate) async fn wait_final_and_published(
    cluster: &Cluster,
    db: &sqlx::PgPool,
    orders: &[String],
    limit: Duration,
) -> std::collections::BTreeMap<String, &'static str> {
    let started = Instant::now();
    loop {
        let progress = order_progress(db, orders).await;
        let mut outcomes = std::collections::BTreeMap::new();
        let mut pending = Vec::new();
        for id in orders {
            match progress.get(id) {
                Some(latest) => match outcome(latest) {
                    Some(done) => {
                        outcomes.insert(id.clone(), done);
                    }
                    None => pending.push(format!("{id}: {latest}")),
                },
                None => pending.push(format!("{id}: not created")),
            }
        }
        let unpublished = unpublished_count(db).await;
        if pending.is_empty() && unpublished == 0 {
            let head: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(position), 0) FROM events")
                .fetch_one(db)
                .await
                .expect("head");
            tokio::time::sleep(Duration::from_secs(1)).await;
            let again: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(position), 0) FROM events")
                .fetch_one(db)
                .await
                .expect("head");
            if again == head && unpublished_count(db).await == 0 {
                return outcomes;
            }
        }
        assert!(
            started.elapsed() < limit,
            "after {limit:?}: {} of {} orders not Confirmed/Cancelled (e.g. {:?}), {unpublished} \
             events without a Kafka offset\n{}",
            pending.len(),
            orders.len(),
            &pending[..pending.len().min(5)],
            cluster.log_tails(15)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits (at most `limit`) until the order is Confirmed or Cancelled in the event store.
pub(crate) async fn wait_for_outcome(
    db: &sqlx::PgPool,
    order: &str,
    limit: Duration,
) -> &'static str {
    let started = Instant::now();
    let ids = [order.to_string()];
    loop {
        let latest = order_progress(db, &ids).await.remove(order);
        if let Some(done) = latest.as_deref().and_then(outcome) {
            return done;
        }
        assert!(
            started.elapsed() < limit,
            "order {order} still at {latest:?} after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every stored event is in Kafka at least once, and the (topic, partition, offset) the
/// store recorded for it holds a message with that eventId.
pub(crate) fn assert_every_event_published(stored: &[StoredRow], messages: &[KafkaMessage]) {
    use std::collections::{HashMap, HashSet};
    let at: HashMap<(&str, i32, i64), Option<String>> = messages
        .iter()
        .map(|m| ((m.topic.as_str(), m.partition, m.offset), m.event_id()))
        .collect();
    let in_kafka: HashSet<String> = messages.iter().filter_map(KafkaMessage::event_id).collect();
    let missing: Vec<&StoredRow> = stored
        .iter()
        .filter(|e| !in_kafka.contains(&e.event_id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} stored events are not in Kafka, e.g. {:?}",
        missing.len(),
        stored.len(),
        missing.first()
    );
    for e in stored {
        let (Some(topic), Some(partition), Some(offset)) = (&e.topic, e.partition, e.offset) else {
            panic!("no publication recorded for {e:?}");
        };
        match at.get(&(topic.as_str(), partition, offset)) {
            Some(Some(id)) => assert_eq!(
                id, &e.event_id,
                "{topic}/{partition}@{offset}, recorded for {} v{} {}, holds event {id}",
                e.aggregate_id, e.version, e.event_type
            ),
            Some(None) => panic!("{topic}/{partition}@{offset} holds no envelope ({e:?})"),
            None => panic!("no message at {topic}/{partition}@{offset}, recorded for {e:?}"),
        }
    }
}

/// Per aggregate, Kafka holds the events in version order: all of an aggregate's
/// messages are in one partition, and by offset, with repeats (redeliveries by a relay
/// that took over) dropped at their first occurrence, the versions are exactly 1, 2, 3…
/// up to the stored version. Returns how many messages were repeats.
pub(crate) fn assert_per_aggregate_order(stored: &[StoredRow], messages: &[KafkaMessage]) -> usize {
    use std::collections::{BTreeMap, HashSet};
    let mut latest: BTreeMap<(&str, &str), i64> = BTreeMap::new();
    for e in stored {
        let v = latest
            .entry((e.aggregate_type.as_str(), e.aggregate_id.as_str()))
            .or_default();
        *v = (*v).max(e.version);
    }
    let mut by_aggregate: BTreeMap<(String, String), Vec<(&KafkaMessage, serde_json::Value)>> =
        BTreeMap::new();
    for m in messages {
        let envelope = m
            .json()
            .unwrap_or_else(|| panic!("a message that is not an envelope: {m:?}"));
        let key = (
            envelope["aggregateType"].as_str().unwrap_or("").to_string(),
            envelope["aggregateId"].as_str().unwrap_or("").to_string(),
        );
        by_aggregate.entry(key).or_default().push((m, envelope));
    }
    let mut repeats = 0;
    for ((aggregate_type, aggregate_id), mut list) in by_aggregate {
        let places: HashSet<(&str, i32)> = list
            .iter()
            .map(|(m, _)| (m.topic.as_str(), m.partition))
            .collect();
        assert_eq!(
            places.len(),
            1,
            "{aggregate_type} {aggregate_id} is spread over {places:?}"
        );
        list.sort_by_key(|(m, _)| m.offset);
        let mut seen = HashSet::new();
        let mut versions = Vec::new();
        for (_, envelope) in &list {
            if seen.insert(envelope["eventId"].as_str().unwrap_or("").to_string()) {
                versions.push(envelope["version"].as_i64().expect("version"));
            } else {
                repeats += 1;
            }
        }
        assert!(
            versions.windows(2).all(|w| w[0] < w[1]),
            "{aggregate_type} {aggregate_id}: versions in Kafka order (first occurrences) \
             are not increasing: {versions:?}"
        );
        // Events stored after `stored` was read may be in Kafka already: compare the rest.
        let last = latest
            .get(&(aggregate_type.as_str(), aggregate_id.as_str()))
            .copied()
            .unwrap_or(0);
        let known: Vec<i64> = versions.iter().copied().filter(|v| *v <= last).collect();
        assert_eq!(
            known,
            (1..=last).collect::<Vec<i64>>(),
            "{aggregate_type} {aggregate_id}: versions in Kafka order (first occurrences)"
        );
    }
    repeats
}

/// No effect was applied twice: (causationId, aggregateId, eventType) is unique over the
/// whole log.
pub(crate) fn assert_no_effect_twice(stored: &[StoredRow]) {
    let mut counts: std::collections::HashMap<(&str, &str, &str), usize> = Default::default();
    for e in stored {
        *counts
            .entry((&e.causation_id, &e.aggregate_id, &e.event_type))
            .or_default() += 1;
    }
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "effects applied more than once (causationId, aggregateId, eventType) -> count: {twice:?}"
    );
}
