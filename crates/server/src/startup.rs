//! Wiring: open the store, start this process's roles (consumers on the embedded log or on
//! Kafka, the relay, the timers), build the router, bind the listener, serve its
//! connections (`serve`) until told to stop, then stop the rest.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cornershop_app::{CommandBus, SystemClock};
use cornershop_messaging::kafka::{run_kafka_consumer, run_relay, KafkaSettings};
use cornershop_messaging::{run_embedded, Consumer, ConsumerRegistry, Handler, StallWatch};
use cornershop_readmodels::{ReadModelStore, ReportingProjection};
use cornershop_services::notifications::{Dispatcher, NotificationSettings};
use cornershop_services::{
    PaymentGateway, ServicesConfig, SimulatedGateway, SimulatedGatewayConfig,
};
use cornershop_store::{EventStore, PgEventStore, SqliteEventStore};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::{self, AppState};
use crate::config::{ServeArgs, StoreArgs};
use crate::roles::{Role, Roles};
use crate::serve::ConnectionLimits;

pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    /// `--metrics-listen`: its own listener for /metrics and the probes.
    metrics: Option<(TcpListener, axum::Router)>,
    connections: ConnectionLimits,
    /// `--tls-cert`/`--tls-key`: the API's listener serves HTTPS.
    tls: Option<tokio_rustls::TlsAcceptor>,
    store: Arc<dyn EventStore>,
    read_models: Arc<dyn ReadModelStore>,
    stop_background: watch::Sender<bool>,
    background: Vec<JoinHandle<()>>,
}

/// Opens the event store that `serve` would use with these settings.
pub(crate) async fn open_event_store(args: &StoreArgs) -> anyhow::Result<Arc<dyn EventStore>> {
    if let Some(url) = &args.mongodb_url {
        // The log in MongoDB; what it does not hold, in SQLite under the data directory.
        return Ok(Arc::new(
            cornershop_store::MongoEventStore::connect(url, &args.data_dir)
                .await
                .map_err(|e| anyhow::anyhow!("cannot open the MongoDB event store: {e}"))?,
        ));
    }
    Ok(match &args.database_url {
        Some(url) => Arc::new(
            PgEventStore::connect(url)
                .await
                .map_err(|e| anyhow::anyhow!("cannot open the PostgreSQL event store: {e}"))?,
        ),
        None => Arc::new(SqliteEventStore::open(&args.data_dir).await.map_err(|e| {
            anyhow::anyhow!(
                "cannot open the event store in {}: {e}",
                args.data_dir.display()
            )
        })?),
    })
}

/// Opens the read models beside the event store: `readmodels.db` in the data directory, or
/// the schema `readmodels` of the PostgreSQL database.
pub(crate) async fn open_read_models(args: &StoreArgs) -> anyhow::Result<Arc<dyn ReadModelStore>> {
    Ok(match &args.database_url {
        Some(url) => Arc::new(
            cornershop_readmodels::connect_postgres(url)
                .await
                .map_err(|e| anyhow::anyhow!("cannot open the PostgreSQL read models: {e}"))?,
        ),
        None => Arc::new(
            cornershop_readmodels::open_sqlite(&args.data_dir)
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "cannot open the read models in {}: {e}",
                        args.data_dir.display()
                    )
                })?,
        ),
    })
}

/// The stores of a process: the event store and the read models beside it.
struct Stores {
    events: Arc<dyn EventStore>,
    read_models: Arc<dyn ReadModelStore>,
    /// The keys of the customers' personal data in `events`.
    keyring: Arc<cornershop_app::Keyring>,
}

/// The tasks that run beside the HTTP server until told to stop.
struct Background {
    stopped: watch::Receiver<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Background {
    /// Spawns a task, handing it the stop signal.
    fn spawn<F>(&mut self, task: impl FnOnce(watch::Receiver<bool>) -> F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.tasks.push(tokio::spawn(task(self.stopped.clone())));
    }
}

impl Application {
    pub async fn build(args: ServeArgs) -> anyhow::Result<Self> {
        Self::build_with(args, Vec::new()).await
    }

    /// Like [`build`](Self::build), with extra consumers beside the workflow's own (for
    /// tests of the consumer machinery).
    pub async fn build_with(
        args: ServeArgs,
        extra_handlers: Vec<Arc<dyn Handler>>,
    ) -> anyhow::Result<Self> {
        let kafka = args.kafka.settings()?;
        // Before anything connects: a bad certificate or key stops the process here.
        let tls = match (&args.http.tls_cert, &args.http.tls_key) {
            (Some(cert), Some(key)) => Some(crate::tls::acceptor(cert, key)?),
            _ => None,
        };
        let roles = Roles::resolve(&args.roles, kafka.is_some())?;
        crate::metrics::handle();
        let store_args = args.store_args();
        let events = open_event_store(&store_args).await?;
        // A wrong master key stops the start here, before anything reads or writes.
        let keyring = crate::keys::open_keyring(events.clone(), &store_args).await?;
        let stores = Stores {
            events,
            read_models: open_read_models(&store_args).await?,
            keyring,
        };
        let bus = command_bus(&stores, &args);
        let config = ServicesConfig::from(&args.workflow);
        let gateway: Arc<dyn PaymentGateway> = Arc::new(SimulatedGateway::new(
            SimulatedGatewayConfig::from(&args.workflow),
        ));
        let registry = consumers(&bus, &gateway, &stores, &roles, &config, extra_handlers);
        // Checked before anything starts: a bad provider setting stops the process here.
        let dispatchers = notification_role(&roles, &stores, &args, &config)?;

        let (stop_background, stopped) = watch::channel(false);
        let mut background = Background {
            stopped,
            tasks: Vec::new(),
        };
        let stalls = Arc::new(StallWatch::new(args.workflow.stall_after.into()));
        match &kafka {
            Some(settings) => {
                start_kafka_consumers(&registry, settings, &stalls, &mut background).await?;
                if roles.has(Role::Relay) {
                    relay_role(&stores, settings, &args, &mut background);
                }
            }
            None => start_embedded_consumers(&registry, &stores, &mut background),
        }
        // One dispatcher per channel: a channel's outage holds up no other channel and no
        // consumer (the notification consumer only records notifications).
        for dispatcher in dispatchers {
            background.spawn(|stopped| dispatcher.run(stopped));
        }
        start_metrics(&stores, &stalls, &mut background);
        if roles.has(Role::Order) {
            order_role(&bus, &config, &mut background);
        }
        tracing::info!(
            roles = ?roles.names(),
            store = match (&args.database_url, &args.mongodb_url) {
                (Some(_), _) => "postgres",
                (None, Some(_)) => "mongodb",
                (None, None) => "sqlite",
            },
            transport = if kafka.is_some() { "kafka" } else { "embedded" },
            kafka_security = kafka.as_ref().map_or("", |k| k.security.protocol.as_str()),
            https = tls.is_some(),
            "starting"
        );

        let samples = Arc::new(crate::console::sampler::Samples::default());
        let inspector = || {
            kafka
                .clone()
                .map(cornershop_messaging::kafka::KafkaInspector::new)
        };
        if roles.has(Role::Api) {
            let sources = crate::console::sampler::Sources {
                store: stores.events.clone(),
                read_models: stores.read_models.clone(),
                stalls: stalls.clone(),
                kafka: inspector(),
            };
            let samples = samples.clone();
            background.spawn(|stopped| crate::console::sampler::run(samples, sources, stopped));
        }
        let console = crate::console::Console::new(
            inspector(),
            samples,
            tls.is_some(),
            args.auth
                .oidc_issuer
                .clone()
                .zip(args.auth.console_oidc_client_id.clone()),
        );
        let state = AppState {
            bus,
            gateway,
            registry,
            read_models: stores.read_models.clone(),
            stalls,
            auth: Arc::new(authenticator(&args).await?),
            erasures: Arc::new(crate::erasures::ErasureLedger::new(
                args.erasure_ledger_path(),
            )),
            console: Arc::new(console),
        };
        let (router, metrics) = api_role(state, &roles, &args).await?;
        let listener = TcpListener::bind(args.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
        Ok(Self {
            listener,
            router,
            metrics,
            connections: ConnectionLimits::from(&args.http),
            tls,
            store: stores.events,
            read_models: stores.read_models,
            stop_background,
            background: background.tasks,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Whether the API's listener serves HTTPS (`--tls-cert`, `--tls-key`).
    pub fn serves_https(&self) -> bool {
        self.tls.is_some()
    }

    pub async fn run_until_stopped(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        // The metrics listener stops with the API's.
        let (stop_metrics, metrics_stopped) = watch::channel(false);
        let metrics = self.metrics.map(|(listener, router)| {
            let mut stopped = metrics_stopped.clone();
            tokio::spawn(crate::serve::serve(
                listener,
                router,
                self.connections,
                async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                },
            ))
        });
        crate::serve::serve_with_tls(
            self.listener,
            self.router,
            self.connections,
            self.tls,
            shutdown,
        )
        .await?;
        let _ = stop_metrics.send(true);
        if let Some(metrics) = metrics {
            let _ = metrics.await;
        }
        // The API has stopped taking requests; let the consumers finish the event in hand.
        let _ = self.stop_background.send(true);
        for task in self.background {
            let _ = task.await;
        }
        self.store.close().await;
        self.read_models.close().await;
        Ok(())
    }
}

/// The command bus over the event store, keeping snapshots as `--snapshot-every` says;
/// with an OTLP endpoint, each appended event gets a span of its own, which the
/// consumers' spans name as parents.
fn command_bus(stores: &Stores, args: &ServeArgs) -> CommandBus {
    let write_schema = cornershop_domain::WriteSchema::new(args.write_schema_version)
        .expect("clap bounds --write-schema-version to the versions this build writes");
    let bus = CommandBus::new(
        stores.events.clone(),
        Arc::new(SystemClock),
        stores.keyring.clone(),
    )
    .with_snapshots(args.into())
    .with_write_schema(write_schema);
    if write_schema != cornershop_domain::WriteSchema::CURRENT {
        tracing::warn!(
            write_schema_version = write_schema.version(),
            current = cornershop_domain::CURRENT_SCHEMA_VERSION,
            "writing new events in the previous schema version (a rolling upgrade): \
             switch to the current one once every process runs this release"
        );
    }
    if args.log.otlp_endpoint.is_some() {
        bus.with_append_observer(Arc::new(
            cornershop_messaging::tracecontext::export_event_spans,
        ))
    } else {
        bus
    }
}

/// The consumers of this process's roles: the order, payment, inventory and notification
/// services' (against the simulated payment gateway), the extra ones, and the reporting
/// role's projection.
fn consumers(
    bus: &CommandBus,
    gateway: &Arc<dyn PaymentGateway>,
    stores: &Stores,
    roles: &Roles,
    config: &ServicesConfig,
    extra_handlers: Vec<Arc<dyn Handler>>,
) -> ConsumerRegistry {
    let mut registry =
        cornershop_services::consumers(bus, gateway.clone(), config, &roles.services());
    let consumer = |handler| Consumer {
        handler,
        store: stores.events.clone(),
        policy: config.retry,
    };
    for handler in extra_handlers {
        registry.add(consumer(handler));
    }
    if roles.has(Role::Reporting) {
        registry.add(consumer(Arc::new(ReportingProjection::new(
            stores.read_models.clone(),
            stores.events.clone(),
        ))));
    }
    registry
}

/// The notification role's dispatchers (one per channel), checked but not started; none
/// without the role.
fn notification_role(
    roles: &Roles,
    stores: &Stores,
    args: &ServeArgs,
    config: &ServicesConfig,
) -> anyhow::Result<Vec<Dispatcher>> {
    if !roles.has(Role::Notification) {
        return Ok(Vec::new());
    }
    cornershop_services::notifications::dispatchers(
        stores.events.clone(),
        stores.keyring.clone(),
        &NotificationSettings::from(args.notifications.as_ref()),
        &config.notification_wakeup,
    )
    .map_err(|e| anyhow::anyhow!("invalid notification settings: {e}"))
}

/// Every consumer on Kafka (the topics created first), and the watch of their lag.
async fn start_kafka_consumers(
    registry: &ConsumerRegistry,
    settings: &KafkaSettings,
    stalls: &Arc<StallWatch>,
    background: &mut Background,
) -> anyhow::Result<()> {
    // A wrong password or an untrusted certificate stops the process here, with what the
    // broker said, instead of consumers that retry without end.
    settings
        .check_connection(Duration::from_secs(30))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    settings.ensure_topics().await.map_err(|e| {
        anyhow::anyhow!(
            "cannot create the Kafka topics at {}: {e}",
            settings.brokers
        )
    })?;
    for consumer in registry.consumers() {
        let (consumer, settings) = (consumer.clone(), settings.clone());
        background.spawn(|stopped| run_kafka_consumer(consumer, settings, stopped));
    }
    let groups = registry.consumers().map(|c| c.name().to_string()).collect();
    let (settings, stalls) = (settings.clone(), stalls.clone());
    background.spawn(|stopped| {
        cornershop_messaging::kafka::monitor_lag(
            settings,
            groups,
            Duration::from_secs(10),
            stalls,
            stopped,
        )
    });
    Ok(())
}

/// Every consumer on the store's own log, and the count of what it publishes.
fn start_embedded_consumers(
    registry: &ConsumerRegistry,
    stores: &Stores,
    background: &mut Background,
) {
    for consumer in registry.consumers() {
        let consumer = consumer.clone();
        background.spawn(|stopped| run_embedded(consumer, stopped));
    }
    let store = stores.events.clone();
    background.spawn(|stopped| cornershop_messaging::count_publications(store, stopped));
}

/// The relay role: the outbox published to Kafka, by whichever relay holds the lease.
fn relay_role(
    stores: &Stores,
    settings: &KafkaSettings,
    args: &ServeArgs,
    background: &mut Background,
) {
    let (store, settings) = (stores.events.clone(), settings.clone());
    let ttl = args.kafka.relay_lease_ttl();
    background.spawn(|stopped| run_relay(store, settings, ttl, stopped));
}

/// The order role's timers: carts idle past their TTL expire.
fn order_role(bus: &CommandBus, config: &ServicesConfig, background: &mut Background) {
    let (bus, ttl) = (bus.clone(), config.cart_ttl);
    background.spawn(|stopped| cornershop_services::expiry::run_timers(bus, ttl, stopped));
}

/// The gauges every process keeps: stalled consumers and the store's size.
fn start_metrics(stores: &Stores, stalls: &Arc<StallWatch>, background: &mut Background) {
    let (store, read_models, stalls) = (
        stores.events.clone(),
        stores.read_models.clone(),
        stalls.clone(),
    );
    background.spawn(|stopped| crate::metrics::watch_stalls(store, read_models, stalls, stopped));
    let store = stores.events.clone();
    background.spawn(|stopped| {
        crate::metrics::refresh_store_size(store, Duration::from_secs(10), stopped)
    });
}

/// Who may call the API, its issuer's keys fetched (or created) before the first request.
async fn authenticator(args: &ServeArgs) -> anyhow::Result<crate::auth::Authenticator> {
    let auth = crate::auth::Authenticator::from_config(&args.auth, &args.data_dir)?;
    auth.warm_up().await;
    Ok(auth)
}

/// The HTTP routes (the shop's API with the api role, the operational ones always), and
/// /metrics on a listener of its own with --metrics-listen.
async fn api_role(
    state: AppState,
    roles: &Roles,
    args: &ServeArgs,
) -> anyhow::Result<(axum::Router, Option<(TcpListener, axum::Router)>)> {
    let limits = api::RequestLimits::from(args);
    let metrics = match args.http.metrics_listen {
        Some(address) => {
            let listener = TcpListener::bind(address).await.map_err(|e| {
                anyhow::anyhow!("cannot listen on {address} (--metrics-listen): {e}")
            })?;
            tracing::info!(address = %listener.local_addr()?, "serving /metrics");
            Some((listener, api::metrics_router(state.clone(), limits)))
        }
        None => None,
    };
    Ok((api::router(state, limits, roles.has(Role::Api)), metrics))
}
