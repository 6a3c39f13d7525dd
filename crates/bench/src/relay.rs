//! The relay benchmark's halves: loading events, and timing the relay until they carry
//! a Kafka offset.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use cornershop_domain::AggregateType;
use cornershop_store::{AppendRequest, EventStore, PgEventStore};
use serde_json::json;
use uuid::Uuid;

use crate::cli::{LoadArgs, RelayWaitArgs};
use crate::{emit, new_event, round1, round3, Rng};

// ---------------------------------------------------------------- relay

/// Appends `--events` events (batches of `--batch` to `--aggregates` carts) into the
/// PostgreSQL store, unpublished, and prints the average sizes of the records the relay
/// will produce: the envelope JSON (the payload), the key and the headers.
pub(crate) async fn load(args: &LoadArgs) -> anyhow::Result<()> {
    let url = args.database_url.as_str();
    let (total, aggregates, batch) = (args.events, args.aggregates, args.batch);
    let store: Arc<dyn EventStore> = Arc::new(PgEventStore::connect(url).await?);
    let started = Instant::now();
    let prefix = format!("relay-{}", Uuid::new_v4().simple());
    let mut versions = vec![0u64; aggregates];
    let (mut done, mut payload, mut key, mut headers) = (0u64, 0u64, 0u64, 0u64);
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    while done < total {
        let i = rng.below(aggregates);
        let aggregate = format!("{prefix}-{i}");
        let n = (batch as u64).min(total - done);
        let events = (0..n).map(|k| new_event(&aggregate, done + k)).collect();
        let stored = store
            .append(AppendRequest::new(
                AggregateType::Cart,
                &aggregate,
                versions[i],
                events,
            ))
            .await?;
        versions[i] += n;
        done += n;
        for e in &stored {
            let m = &e.envelope.metadata;
            payload += serde_json::to_vec(&e.envelope)?.len() as u64;
            key += e.envelope.aggregate_id.len() as u64;
            // eventType, correlationId, causationId and a 55-character traceparent.
            headers += ("eventType".len() + e.envelope.event_type.len()) as u64
                + ("correlationId".len() + m.correlation_id.len()) as u64
                + ("causationId".len() + m.causation_id.len()) as u64
                + ("traceparent".len() + 55) as u64;
        }
    }
    emit(json!({
        "kind": "load", "backend": "postgres", "events": done,
        "seconds": round3(started.elapsed().as_secs_f64()),
        "avgPayloadBytes": payload / done.max(1),
        "avgKeyBytes": key / done.max(1),
        "avgHeaderBytes": headers / done.max(1),
    }));
    store.close().await;
    Ok(())
}

/// Polls the relay's checkpoint until the last `--events` events have their Kafka offset
/// recorded (the relay's checkpoint has reached the head). The
/// rate counts from the first poll that saw a published event (the relay's start-up, topic
/// creation and lease are not in it) to the last; `totalSeconds` counts from this
/// command's start.
pub(crate) async fn relay_wait(args: &RelayWaitArgs) -> anyhow::Result<()> {
    let url = args.database_url.as_str();
    let total = args.events;
    let timeout = Duration::from_secs_f64(args.timeout_seconds);
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await?;
    // The relay saves its checkpoint (the last position published) after it recorded the
    // batch's offsets: polling it is cheap, where counting rows would compete for the CPU.
    let (min, head): (i64, i64) =
        sqlx::query_as("SELECT COALESCE(MIN(position), 0), COALESCE(MAX(position), 0) FROM events")
            .fetch_one(&pool)
            .await?;
    if head - min + 1 < total {
        bail!(
            "the store holds {} events, fewer than {total}",
            head - min + 1
        );
    }
    let started = Instant::now();
    let mut first: Option<(Instant, i64)> = None;
    loop {
        let checkpoint: Option<i64> =
            sqlx::query_scalar("SELECT position FROM checkpoints WHERE consumer = 'outbox-relay'")
                .fetch_optional(&pool)
                .await?;
        let published = checkpoint.map_or(0, |c| c - min + 1);
        let now = Instant::now();
        if published > 0 && first.is_none() {
            first = Some((now, published));
        }
        if published >= total {
            let (t0, n0) = first.expect("set above");
            let seconds = (now - t0).as_secs_f64();
            emit(json!({
                "kind": "relay", "backend": "postgres", "events": published,
                "firstSeen": n0, "seconds": round3(seconds),
                "eventsPerSecond": round1((published - n0) as f64 / seconds.max(1e-3)),
                "totalSeconds": round3((now - started).as_secs_f64()),
            }));
            break;
        }
        if now - started > timeout {
            bail!("only {published} of {total} events published after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    pool.close().await;
    Ok(())
}
