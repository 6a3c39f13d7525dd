//! Wiring: open the store, build the router, bind the listener, serve until told to stop.

use std::net::SocketAddr;
use std::sync::Arc;

use cornershop_app::{CommandBus, SystemClock};
use cornershop_store::SqliteEventStore;
use tokio::net::TcpListener;

use crate::api::{self, AppState};
use crate::config::ServeArgs;

pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    store: Arc<SqliteEventStore>,
}

impl Application {
    pub async fn build(args: ServeArgs) -> anyhow::Result<Self> {
        let store = Arc::new(SqliteEventStore::open(&args.data_dir).await.map_err(|e| {
            anyhow::anyhow!(
                "cannot open the event store in {}: {e}",
                args.data_dir.display()
            )
        })?);
        let bus = CommandBus::new(store.clone(), Arc::new(SystemClock));
        let router = api::router(AppState { bus }, args.max_body_bytes);
        let listener = TcpListener::bind(args.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
        Ok(Self {
            listener,
            router,
            store,
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
        self.store.close().await;
        Ok(())
    }
}
