//! The overview's few minutes of history: every [`EVERY`], the log's head, what the
//! consumers have taken of it, their lag, the dead letters pending and the projections'
//! lag. The overview page draws its charts from it at once; the live stream sends each new
//! sample.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use cornershop_messaging::kafka::KafkaInspector;
use cornershop_messaging::StallWatch;
use cornershop_readmodels::ReadModelStore;
use cornershop_store::EventStore;
use serde::Serialize;
use tokio::sync::watch;

/// How often a sample is taken.
pub(crate) const EVERY: Duration = Duration::from_secs(2);
/// How many are kept: five minutes.
const KEPT: usize = 150;

/// One look at the shop.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Sample {
    /// Milliseconds since the Unix epoch.
    pub at: i64,
    /// The log's head position.
    pub head: u64,
    /// Events written per second since the sample before.
    pub written_per_second: f64,
    /// Events taken by the consumers per second (all of them, summed) since the sample
    /// before.
    pub consumed_per_second: f64,
    /// Events (or, on Kafka, messages) the consumers have still to take, summed.
    pub consumer_lag: u64,
    pub dead_letters_pending: u64,
    /// The largest lag of a projection behind the log's head.
    pub projection_lag: u64,
    /// How far the consumers have got, summed: the difference of two samples is what they
    /// took between them.
    #[serde(skip)]
    consumed: u64,
}

/// The samples kept, oldest first.
#[derive(Default)]
pub(crate) struct Samples {
    kept: Mutex<VecDeque<Sample>>,
    latest: Mutex<Option<watch::Sender<Option<Sample>>>>,
}

impl Samples {
    pub(crate) fn all(&self) -> Vec<Sample> {
        self.kept
            .lock()
            .map(|k| k.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// A receiver that changes with every new sample.
    pub(crate) fn subscribe(&self) -> watch::Receiver<Option<Sample>> {
        let mut latest = match self.latest.lock() {
            Ok(latest) => latest,
            Err(poisoned) => poisoned.into_inner(),
        };
        latest
            .get_or_insert_with(|| watch::channel(None).0)
            .subscribe()
    }

    fn push(&self, sample: Sample) {
        if let Ok(mut kept) = self.kept.lock() {
            if kept.len() == KEPT {
                kept.pop_front();
            }
            kept.push_back(sample.clone());
        }
        if let Ok(latest) = self.latest.lock() {
            if let Some(sender) = latest.as_ref() {
                sender.send_replace(Some(sample));
            }
        }
    }
}

/// What a sample reads.
pub(crate) struct Sources {
    pub(crate) store: Arc<dyn EventStore>,
    pub(crate) read_models: Arc<dyn ReadModelStore>,
    pub(crate) stalls: Arc<StallWatch>,
    pub(crate) kafka: Option<KafkaInspector>,
}

/// Takes a sample every [`EVERY`] until `stopped`. A failed read skips that sample (and
/// is logged at debug level: the pages say what they cannot read).
pub(crate) async fn run(
    samples: Arc<Samples>,
    sources: Sources,
    mut stopped: watch::Receiver<bool>,
) {
    let mut before: Option<Sample> = None;
    while !*stopped.borrow() {
        match take(&sources, before.as_ref()).await {
            Ok(sample) => {
                samples.push(sample.clone());
                before = Some(sample);
            }
            Err(error) => tracing::debug!(%error, "console sample skipped"),
        }
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = stopped.wait_for(|s| *s) => break,
        }
    }
}

async fn take(sources: &Sources, before: Option<&Sample>) -> anyhow::Result<Sample> {
    let store = &sources.store;
    let head = store.head_position().await?;
    let (consumed, consumer_lag) = match &sources.kafka {
        Some(kafka) => {
            let groups = kafka.groups().await?;
            let partitions = groups.iter().flat_map(|g| g.offsets.iter());
            partitions.fold((0, 0), |(taken, lag), p| {
                (taken + p.committed.max(0) as u64, lag + p.lag.max(0) as u64)
            })
        }
        None => {
            let checkpoints = store.checkpoints().await?;
            checkpoints.iter().fold((0, 0), |(taken, lag), c| {
                (taken + c.position, lag + head.saturating_sub(c.position))
            })
        }
    };
    let dead_letters_pending = store.dead_letters(Some("pending")).await?.len() as u64;
    let projection_lag = cornershop_readmodels::projection::status(
        sources.read_models.as_ref(),
        store.as_ref(),
        &sources.stalls,
    )
    .await?
    .iter()
    .map(|p| p.lag)
    .max()
    .unwrap_or(0);
    let at = Utc::now().timestamp_millis();
    let rate = |now: u64, then: u64, since: i64| {
        let seconds = (at - since) as f64 / 1000.0;
        if seconds > 0.0 {
            now.saturating_sub(then) as f64 / seconds
        } else {
            0.0
        }
    };
    let (written_per_second, consumed_per_second) = match before {
        Some(b) => (rate(head, b.head, b.at), rate(consumed, b.consumed, b.at)),
        None => (0.0, 0.0),
    };
    Ok(Sample {
        at,
        head,
        written_per_second,
        consumed_per_second,
        consumer_lag,
        dead_letters_pending,
        projection_lag,
        consumed,
    })
}
