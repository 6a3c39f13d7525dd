//! Wiring: open the store, start this process's roles (consumers on the embedded log or on
//! Kafka, the relay, the timers), build the router, bind the listener, serve its
//! connections (`serve`) until told to stop, then stop the rest.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cornershop_app::{CommandBus, SystemClock};
use cornershop_messaging::kafka::{run_kafka_consumer, run_relay, KafkaSettings};
use cornershop_messaging::{run_embedded, Consumer, Handler, RetryPolicy};
use cornershop_readmodels::{ReadModelStore, ReportingProjection};
use cornershop_services::notifications::{DispatchPolicy, NotificationSettings};
use cornershop_services::{ServicesConfig, SimulatedGateway, SimulatedGatewayConfig};
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
    store: Arc<dyn EventStore>,
    read_models: Arc<dyn ReadModelStore>,
    stop_background: watch::Sender<bool>,
    background: Vec<JoinHandle<()>>,
}

async fn open_store(args: &ServeArgs) -> anyhow::Result<Arc<dyn EventStore>> {
    open_event_store(&args.store_args()).await
}

/// Opens the event store that `serve` would use with these settings.
pub async fn open_event_store(args: &StoreArgs) -> anyhow::Result<Arc<dyn EventStore>> {
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
pub async fn open_read_models(args: &StoreArgs) -> anyhow::Result<Arc<dyn ReadModelStore>> {
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

/// The notification providers and retry settings from the command line.
fn notification_settings(args: &ServeArgs) -> NotificationSettings {
    let n = &args.notifications;
    let mut policy = DispatchPolicy::default();
    policy.retry.base_delay = n.notification_retry_delay.into();
    policy.retry.max_attempts = n.notification_max_attempts.max(1);
    NotificationSettings {
        smtp_url: n.smtp_url.clone(),
        mail_from: n.mail_from.clone(),
        sms_url: n.sms_url.clone(),
        sms_token: n.sms_token.clone(),
        sms_from: n.sms_from.clone(),
        push_url: n.push_url.clone(),
        push_token: n.push_token.clone(),
        provider_ca_file: n.provider_ca_file.clone(),
        policy,
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
        let kafka = args
            .kafka
            .kafka_brokers
            .as_ref()
            .map(|brokers| KafkaSettings {
                brokers: brokers.clone(),
                namespace: args.kafka.kafka_namespace.clone(),
                partitions: args.kafka.kafka_partitions.max(1),
                replication: args.kafka.kafka_replication.max(1),
            });
        let roles = Roles::resolve(&args.roles, kafka.is_some())?;
        crate::metrics::handle();
        let store = open_store(&args).await?;
        let read_models = open_read_models(&args.store_args()).await?;
        let mut bus = CommandBus::new(store.clone(), Arc::new(SystemClock));
        if args.log.otlp_endpoint.is_some() {
            // The events' own spans, which the consumers' spans name as parents.
            bus = bus.with_append_observer(Arc::new(
                cornershop_messaging::tracecontext::export_event_spans,
            ));
        }
        let workflow = &args.workflow;
        let config = ServicesConfig {
            cart_ttl: workflow.cart_ttl.into(),
            retry: RetryPolicy {
                max_attempts: workflow.consumer_max_attempts.max(1),
                base_delay: workflow.consumer_retry_delay.into(),
                max_delay: Duration::from_secs(10),
            },
            notification_wakeup: Default::default(),
        };
        let gateway = Arc::new(SimulatedGateway::new(SimulatedGatewayConfig {
            max_amount: workflow.payment_max_amount,
            latency: workflow.payment_latency.into(),
        }));
        let mut registry =
            cornershop_services::consumers(&bus, gateway, &config, &roles.services());
        for handler in extra_handlers {
            registry.add(Consumer {
                handler,
                store: store.clone(),
                policy: config.retry,
            });
        }
        if roles.has(Role::Reporting) {
            registry.add(Consumer {
                handler: Arc::new(ReportingProjection::new(read_models.clone(), store.clone())),
                store: store.clone(),
                policy: config.retry,
            });
        }

        // Checked before anything starts: a bad provider setting stops the process here.
        let dispatchers = if roles.has(Role::Notification) {
            cornershop_services::notifications::dispatchers(
                store.clone(),
                &notification_settings(&args),
                &config.notification_wakeup,
            )
            .map_err(|e| anyhow::anyhow!("invalid notification settings: {e}"))?
        } else {
            Vec::new()
        };

        let (stop_background, stopped) = watch::channel(false);
        let mut background = Vec::new();
        let stalls = Arc::new(cornershop_messaging::StallWatch::new(
            args.workflow.stall_after.into(),
        ));
        match &kafka {
            Some(settings) => {
                settings.ensure_topics().await.map_err(|e| {
                    anyhow::anyhow!(
                        "cannot create the Kafka topics at {}: {e}",
                        settings.brokers
                    )
                })?;
                for consumer in registry.consumers() {
                    background.push(tokio::spawn(run_kafka_consumer(
                        consumer.clone(),
                        settings.clone(),
                        stopped.clone(),
                    )));
                }
                let groups = registry.consumers().map(|c| c.name().to_string()).collect();
                background.push(tokio::spawn(cornershop_messaging::kafka::monitor_lag(
                    settings.clone(),
                    groups,
                    Duration::from_secs(10),
                    stalls.clone(),
                    stopped.clone(),
                )));
                if roles.has(Role::Relay) {
                    let ttl = args
                        .kafka
                        .relay_lease_ttl
                        .map_or(Duration::from_secs(10), Into::into);
                    background.push(tokio::spawn(run_relay(
                        store.clone(),
                        settings.clone(),
                        ttl,
                        stopped.clone(),
                    )));
                }
            }
            None => {
                for consumer in registry.consumers() {
                    background.push(tokio::spawn(run_embedded(
                        consumer.clone(),
                        stopped.clone(),
                    )));
                }
                background.push(tokio::spawn(cornershop_messaging::count_publications(
                    store.clone(),
                    stopped.clone(),
                )));
            }
        }
        // One dispatcher per channel: a channel's outage holds up no other channel and no
        // consumer (the notification consumer only records notifications).
        for dispatcher in dispatchers {
            background.push(tokio::spawn(dispatcher.run(stopped.clone())));
        }
        background.push(tokio::spawn(crate::metrics::watch_stalls(
            store.clone(),
            read_models.clone(),
            stalls.clone(),
            stopped.clone(),
        )));
        background.push(tokio::spawn(crate::metrics::refresh_store_size(
            store.clone(),
            Duration::from_secs(10),
            stopped.clone(),
        )));
        if roles.has(Role::Order) {
            background.push(tokio::spawn(cornershop_services::expiry::run_timers(
                bus.clone(),
                config.cart_ttl,
                stopped.clone(),
            )));
        }
        tracing::info!(
            roles = ?roles.names(),
            store = if args.database_url.is_some() { "postgres" } else { "sqlite" },
            transport = if kafka.is_some() { "kafka" } else { "embedded" },
            "starting"
        );

        let auth = std::sync::Arc::new(crate::auth::Authenticator::from_config(
            &args.auth,
            &args.data_dir,
        )?);
        auth.warm_up().await;
        let state = AppState {
            bus,
            registry,
            read_models: read_models.clone(),
            stalls: stalls.clone(),
            auth,
        };
        let limits = api::RequestLimits {
            max_body_bytes: args.max_body_bytes,
            request_timeout: args.http.request_timeout.into(),
            metrics_here: args.http.metrics_listen.is_none(),
        };
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
        let router = api::router(state, limits, roles.has(Role::Api));
        let connections = ConnectionLimits {
            header_read_timeout: args.http.header_read_timeout.into(),
            max_connections: args.http.max_connections as usize,
        };
        let listener = TcpListener::bind(args.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
        Ok(Self {
            listener,
            router,
            metrics,
            connections,
            store,
            read_models,
            stop_background,
            background,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
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
        crate::serve::serve(self.listener, self.router, self.connections, shutdown).await?;
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
