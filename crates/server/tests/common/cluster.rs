//! The production path for tests: the real `cornershop` binary in several processes (one
//! per group of roles) sharing a fresh PostgreSQL database and a Kafka namespace of their
//! own on the broker started by `scripts/stack.sh`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cornershop_server::config::ServeArgs;
use rand::Rng;

pub const DATABASE_ENV: &str = "CORNERSHOP_TEST_DATABASE_URL";
pub const BROKERS_ENV: &str = "CORNERSHOP_TEST_KAFKA_BROKERS";

/// Whether the shared tests run against the production path
/// (`CORNERSHOP_TEST_BACKEND=production`) instead of the embedded default.
pub fn production() -> bool {
    std::env::var("CORNERSHOP_TEST_BACKEND").is_ok_and(|b| b == "production")
}

pub fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: the production-path tests need PostgreSQL and Kafka. \
             Run ./scripts/test.sh, or `set -a; eval \"$(scripts/stack.sh start)\"; set +a`"
        )
    })
}

pub struct Process {
    pub name: String,
    pub port: u16,
    args: Vec<String>,
    child: Option<Child>,
    log: PathBuf,
}

impl Process {
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_cornershop"))
            .arg("serve")
            .args(&self.args)
            .env("CORNERSHOP_LOG", "info,librdkafka=warn")
            .env("CORNERSHOP_LOG_FORMAT", "json")
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("the cornershop binary starts");
        self.child = Some(child);
    }

    /// SIGKILL: no shutdown, no flush.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the process again with the same settings (after [`kill`](Self::kill)).
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn();
        wait_ready(&self.base(), &self.log).await;
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn wait_ready(base: &str, log: &Path) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = client.get(format!("{base}/health/ready")).send().await {
            if r.status().is_success() {
                return;
            }
        }
        if Instant::now() > deadline {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(20).collect();
            panic!("{base} never became ready; log tail:\n{}", tail.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The workflow settings of `ServeArgs` as command-line flags, so that tests configure
/// both backends the same way.
pub fn workflow_flags(args: &ServeArgs) -> Vec<String> {
    let w = &args.workflow;
    vec![
        format!("--cart-ttl={}", w.cart_ttl),
        format!("--payment-max-amount={}", w.payment_max_amount),
        format!("--payment-latency={}", w.payment_latency),
        format!("--consumer-max-attempts={}", w.consumer_max_attempts),
        format!("--consumer-retry-delay={}", w.consumer_retry_delay),
    ]
}

pub struct Cluster {
    pub processes: Vec<Process>,
    pub database_url: String,
    pub namespace: String,
    pub brokers: String,
}

impl Cluster {
    /// Starts one process per role group, e.g. `[&["api", "relay"], &["order", "inventory"],
    /// &["payment", "relay"]]`, on a fresh database and a fresh Kafka namespace.
    pub async fn start(roles: &[&[&str]], extra_flags: &[String], logs: &Path) -> Self {
        let admin_url = required_env(DATABASE_ENV);
        let brokers = required_env(BROKERS_ENV);
        let suffix: u64 = rand::rng().random();
        let database = format!("cs_e2e_{suffix:x}");
        let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&admin_url)
            .await
            .expect("connect to the test PostgreSQL");
        sqlx::Executor::execute(&mut admin, format!("CREATE DATABASE {database}").as_str())
            .await
            .expect("create a test database");
        let database_url = match admin_url.rsplit_once('/') {
            Some((server, _)) => format!("{server}/{database}"),
            None => panic!("{DATABASE_ENV} must end with /<database>"),
        };
        let namespace = format!("e2e{suffix:x}.");
        let mut processes = Vec::new();
        for group in roles {
            let port = free_port();
            let name = group.join("+");
            let mut args = vec![
                format!("--listen=127.0.0.1:{port}"),
                format!("--roles={}", group.join(",")),
                format!("--database-url={database_url}"),
                format!("--kafka-brokers={brokers}"),
                format!("--kafka-namespace={namespace}"),
                "--relay-lease-ttl=2s".to_string(),
            ];
            args.extend(extra_flags.iter().cloned());
            let mut process = Process {
                log: logs.join(format!("{name}-{port}.log")),
                name,
                port,
                args,
                child: None,
            };
            process.spawn();
            processes.push(process);
        }
        for p in &processes {
            wait_ready(&p.base(), &p.log).await;
        }
        Self {
            processes,
            database_url,
            namespace,
            brokers,
        }
    }

    /// The first process that serves the shop's API.
    pub fn api_base(&self) -> String {
        self.processes
            .iter()
            .find(|p| p.name.split('+').any(|r| r == "api" || r == "all"))
            .expect("a process with the api role")
            .base()
    }

    pub fn process(&mut self, name: &str) -> &mut Process {
        self.processes
            .iter_mut()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no process {name}"))
    }

    pub fn topic(&self, base: &str) -> String {
        format!("{}{}", self.namespace, base)
    }
}

/// The default split for the shared end-to-end suite: three service processes, two
/// relays (one active, one standby).
pub const DEFAULT_LAYOUT: &[&[&str]] = &[
    &["api", "relay"],
    &["order", "inventory"],
    &["payment", "relay"],
];
