//! Wiring: open the store, start the consumers, build the router, bind the listener,
//! serve until told to stop, then stop the consumers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cornershop_app::{CommandBus, SystemClock};
use cornershop_messaging::{Consumer, Handler, RetryPolicy};
use cornershop_services::{ServicesConfig, SimulatedGateway, SimulatedGatewayConfig};
use cornershop_store::{EventStore, SqliteEventStore};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::{self, AppState};
use crate::config::ServeArgs;

pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    store: Arc<SqliteEventStore>,
    stop_consumers: watch::Sender<bool>,
    consumer_tasks: Vec<JoinHandle<()>>,
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
        let store = Arc::new(SqliteEventStore::open(&args.data_dir).await.map_err(|e| {
            anyhow::anyhow!(
                "cannot open the event store in {}: {e}",
                args.data_dir.display()
            )
        })?);
        let bus = CommandBus::new(store.clone(), Arc::new(SystemClock));
        let workflow = &args.workflow;
        let config = ServicesConfig {
            cart_ttl: workflow.cart_ttl.into(),
            retry: RetryPolicy {
                max_attempts: workflow.consumer_max_attempts.max(1),
                base_delay: workflow.consumer_retry_delay.into(),
                max_delay: Duration::from_secs(10),
            },
        };
        let gateway = Arc::new(SimulatedGateway::new(SimulatedGatewayConfig {
            max_amount: workflow.payment_max_amount,
            latency: workflow.payment_latency.into(),
        }));
        let mut registry = cornershop_services::consumers(&bus, gateway, &config);
        for handler in extra_handlers {
            registry.add(Consumer {
                handler,
                store: store.clone(),
                policy: config.retry,
            });
        }
        let (stop_consumers, stopped) = watch::channel(false);
        let consumer_tasks = cornershop_services::start_embedded(&bus, &registry, &config, stopped);

        let router = api::router(AppState { bus, registry }, args.max_body_bytes);
        let listener = TcpListener::bind(args.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
        Ok(Self {
            listener,
            router,
            store,
            stop_consumers,
            consumer_tasks,
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
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await?;
        // The API has stopped taking requests; let the consumers finish the event in hand.
        let _ = self.stop_consumers.send(true);
        for task in self.consumer_tasks {
            let _ = task.await;
        }
        self.store.close().await;
        Ok(())
    }
}
