//! A read-only view of the Kafka cluster for an operator's console: the shop's topics with
//! their partitions and watermarks, the consumer groups with their members and lag, and
//! the messages of a partition.
//!
//! Nothing here writes to Kafka: the clients never subscribe (so they join no group) and
//! never commit. Every call into librdkafka blocks, so each view is read on a blocking
//! thread (`spawn_blocking`), every request waiting at most [`REQUEST_TIMEOUT`].

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::groups::GroupInfo;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde::Serialize;

use super::consumer::group_positions;
use super::KafkaSettings;

/// How long one request to the cluster may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How long [`KafkaInspector::browse`] reads before it answers with what it has.
const BROWSE_FOR: Duration = Duration::from_secs(3);

/// The most messages one [`KafkaInspector::browse`] returns.
pub const BROWSE_LIMIT: usize = 100;

/// The most bytes of a message's value [`KafkaInspector::browse`] returns.
pub const VALUE_LIMIT: usize = 64 * 1024;

/// The suffix of a dead-letter topic (`<topic>.dlq`, see `consumer.rs`).
const DLQ_SUFFIX: &str = ".dlq";

/// Why a view could not be read.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// Browsing is limited to the shop's own topics.
    #[error("{0:?} is not one of the shop's topics (its event topics and their .dlq topics)")]
    NotAShopTopic(String),
    #[error("topic {topic} has no partition {partition}")]
    NoSuchPartition { topic: String, partition: i32 },
    /// Kafka refused or did not answer in time; `doing` says what was being read.
    #[error("cannot {doing}: {source}")]
    Kafka {
        doing: String,
        #[source]
        source: KafkaError,
    },
    /// The blocking task that read the view panicked or was cancelled.
    #[error("the Kafka inspection failed: {0}")]
    Failed(String),
}

impl InspectError {
    fn kafka(doing: impl Into<String>) -> impl FnOnce(KafkaError) -> Self {
        let doing = doing.into();
        move |source| Self::Kafka { doing, source }
    }
}

/// One of the shop's topics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TopicView {
    pub name: String,
    /// A dead-letter topic (`<topic>.dlq`), where consumers park messages they cannot read.
    pub dead_letter: bool,
    pub partitions: Vec<PartitionView>,
    /// The partitions' `messages`, summed.
    pub messages: i64,
}

/// A partition of a topic, as the cluster's metadata and watermarks describe it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PartitionView {
    pub partition: i32,
    /// The broker id of the leader; -1 when there is none.
    pub leader: i32,
    pub replicas: Vec<i32>,
    pub in_sync_replicas: Vec<i32>,
    /// The first offset still held (the low watermark).
    pub low: i64,
    /// The offset the next message will get (the high watermark).
    pub high: i64,
    /// `high - low`: the messages held (an upper bound on a compacted topic).
    pub messages: i64,
}

/// A consumer group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupView {
    pub name: String,
    /// As the coordinator says: `Stable`, `Empty`, `PreparingRebalance`, `Dead`, ...
    pub state: String,
    /// `consumer` for Kafka consumers (the only type whose assignments are decoded).
    pub protocol_type: String,
    /// The assignor the members agreed on (`range`, `cooperative-sticky`, ...); empty when
    /// the group has no members.
    pub protocol: String,
    pub members: Vec<MemberView>,
    /// The partitions of the shop's topics on which the group has committed an offset.
    pub offsets: Vec<GroupOffsetView>,
    /// The offsets' `lag`, summed.
    pub lag: i64,
}

/// A member of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberView {
    pub member_id: String,
    pub client_id: String,
    /// The address the member connects from, as the broker saw it (`/127.0.0.1`).
    pub host: String,
    /// The partitions assigned to the member, decoded from the standard consumer protocol's
    /// assignment. Empty when there is none yet (a rebalance in progress), when the group
    /// is not of protocol type `consumer` (Connect, a custom protocol), or when the bytes do
    /// not decode.
    pub assignment: Vec<TopicPartition>,
}

/// A partition of a topic.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

/// Where a group stands on one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupOffsetView {
    pub topic: String,
    pub partition: i32,
    /// The offset of the next message the group will read.
    pub committed: i64,
    pub high: i64,
    /// `high - committed`, 0 when negative (the topic was recreated, or truncated).
    pub lag: i64,
}

/// A message read by [`KafkaInspector::browse`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BrowsedMessage {
    pub partition: i32,
    pub offset: i64,
    /// Milliseconds since the epoch (create or log-append time), when the message has one.
    pub timestamp: Option<i64>,
    /// The key as UTF-8 (invalid bytes replaced).
    pub key: Option<String>,
    pub headers: Vec<HeaderView>,
    /// The value as UTF-8 (invalid bytes replaced), at most [`VALUE_LIMIT`] bytes of it;
    /// `None` for a message without one (a tombstone).
    pub value: Option<String>,
    /// Whether `value` is cut short.
    pub value_truncated: bool,
    /// The size of the whole value, in bytes.
    pub value_bytes: usize,
}

/// A message header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HeaderView {
    pub name: String,
    /// As UTF-8 (invalid bytes replaced); `None` for a header without a value.
    pub value: Option<String>,
}

/// Reads the cluster as the shop sees it: the topics and groups of the settings'
/// namespace.
#[derive(Debug, Clone)]
pub struct KafkaInspector {
    settings: KafkaSettings,
}

impl KafkaInspector {
    pub fn new(settings: KafkaSettings) -> Self {
        Self { settings }
    }

    /// The shop's topics: its event topics (one per aggregate type), each followed by its
    /// `.dlq` topic, those that exist; each partition with its leader, replicas, in-sync
    /// replicas and watermarks. A partition whose watermarks cannot be read (no leader)
    /// fails the call, naming it.
    pub async fn topics(&self) -> Result<Vec<TopicView>, InspectError> {
        let settings = self.settings.clone();
        blocking(move || read_topics(&settings)).await
    }

    /// The consumer groups whose names start with the settings' namespace (every group
    /// when it is empty), by name, with their state, protocol and members, and the offsets
    /// they committed on the shop's topics against the high watermarks.
    pub async fn groups(&self) -> Result<Vec<GroupView>, InspectError> {
        let settings = self.settings.clone();
        blocking(move || read_groups(&settings)).await
    }

    /// Up to `limit` (at most [`BROWSE_LIMIT`]) messages of partition `partition` of
    /// `topic`, one of the shop's topics (or its `.dlq`), from `offset` on (from the low
    /// watermark when `offset` is below it). Reading stops at the high watermark as it was
    /// when the call began, or after about 3 s with what has come by then. The partition
    /// is assigned to a client of its own that joins no group and commits nothing.
    pub async fn browse(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        limit: usize,
    ) -> Result<Vec<BrowsedMessage>, InspectError> {
        if !shop_topics(&self.settings).iter().any(|t| t == topic) {
            return Err(InspectError::NotAShopTopic(topic.to_string()));
        }
        let (settings, topic) = (self.settings.clone(), topic.to_string());
        let limit = limit.min(BROWSE_LIMIT);
        blocking(move || read_messages(&settings, &topic, partition, offset, limit)).await
    }
}

/// Runs `read` on a blocking thread.
async fn blocking<T: Send + 'static>(
    read: impl FnOnce() -> Result<T, InspectError> + Send + 'static,
) -> Result<T, InspectError> {
    tokio::task::spawn_blocking(read)
        .await
        .unwrap_or_else(|failed| Err(InspectError::Failed(failed.to_string())))
}

/// The shop's topics: each event topic followed by its dead-letter topic.
fn shop_topics(settings: &KafkaSettings) -> Vec<String> {
    settings
        .topics()
        .into_iter()
        .flat_map(|t| {
            let dlq = format!("{t}{DLQ_SUFFIX}");
            [t, dlq]
        })
        .collect()
}

/// A client that reads metadata, watermarks and group lists, and belongs to no group.
fn metadata_client(settings: &KafkaSettings) -> Result<BaseConsumer, InspectError> {
    settings
        .client()
        .set("enable.auto.commit", "false")
        .create()
        .map_err(InspectError::kafka("create a Kafka client"))
}

fn read_topics(settings: &KafkaSettings) -> Result<Vec<TopicView>, InspectError> {
    let client = metadata_client(settings)?;
    let metadata = client
        .fetch_metadata(None, REQUEST_TIMEOUT)
        .map_err(InspectError::kafka("read the cluster's metadata"))?;
    let mut views = Vec::new();
    for name in shop_topics(settings) {
        let Some(topic) = metadata.topics().iter().find(|t| t.name() == name) else {
            continue;
        };
        let mut partitions = Vec::with_capacity(topic.partitions().len());
        for p in topic.partitions() {
            let (low, high) = client
                .fetch_watermarks(&name, p.id(), REQUEST_TIMEOUT)
                .map_err(InspectError::kafka(format!(
                    "read the watermarks of {name} partition {}",
                    p.id()
                )))?;
            partitions.push(PartitionView {
                partition: p.id(),
                leader: p.leader(),
                replicas: p.replicas().to_vec(),
                in_sync_replicas: p.isr().to_vec(),
                low,
                high,
                messages: (high - low).max(0),
            });
        }
        partitions.sort_by_key(|p| p.partition);
        views.push(TopicView {
            dead_letter: name.ends_with(DLQ_SUFFIX),
            messages: partitions.iter().map(|p| p.messages).sum(),
            name,
            partitions,
        });
    }
    Ok(views)
}

fn read_groups(settings: &KafkaSettings) -> Result<Vec<GroupView>, InspectError> {
    let client = metadata_client(settings)?;
    let list = client
        .fetch_group_list(None, REQUEST_TIMEOUT)
        .map_err(InspectError::kafka("list the consumer groups"))?;
    let topics = shop_topics(settings);
    let mut views = Vec::new();
    for group in list.groups() {
        if !group.name().starts_with(&settings.namespace) {
            continue;
        }
        let offsets: Vec<GroupOffsetView> =
            group_positions(settings, group.name(), &topics, REQUEST_TIMEOUT)
                .map_err(InspectError::kafka(format!(
                    "read the offsets committed by group {}",
                    group.name()
                )))?
                .into_iter()
                .filter_map(|p| {
                    let committed = p.committed?;
                    Some(GroupOffsetView {
                        lag: (p.high - committed).max(0),
                        topic: p.topic,
                        partition: p.partition,
                        committed,
                        high: p.high,
                    })
                })
                .collect();
        views.push(GroupView {
            name: group.name().to_string(),
            state: group.state().to_string(),
            protocol_type: group.protocol_type().to_string(),
            protocol: group.protocol().to_string(),
            members: members(group),
            lag: offsets.iter().map(|o| o.lag).sum(),
            offsets,
        });
    }
    views.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(views)
}

fn members(group: &GroupInfo) -> Vec<MemberView> {
    let consumers = group.protocol_type() == "consumer";
    group
        .members()
        .iter()
        .map(|member| MemberView {
            member_id: member.id().to_string(),
            client_id: member.client_id().to_string(),
            host: member.client_host().to_string(),
            assignment: member
                .assignment()
                .filter(|_| consumers)
                .and_then(decode_assignment)
                .unwrap_or_default(),
        })
        .collect()
}

/// The partitions of a consumer protocol assignment (`ConsumerProtocolAssignment`, versions
/// 0 to 3, which share this layout): an int16 version, then an int32 count of topics, each
/// an int16-length name and an int32 count of int32 partitions; the user data after them
/// is not read. `None` when the bytes are not that.
fn decode_assignment(bytes: &[u8]) -> Option<Vec<TopicPartition>> {
    let mut reader = Reader(bytes);
    if reader.i16()? < 0 {
        return None;
    }
    let mut assignment = Vec::new();
    // A count of -1 is a null array: no partitions.
    for _ in 0..reader.i32()?.max(0) {
        let topic = reader.string()?;
        for _ in 0..reader.i32()?.max(0) {
            let partition = reader.i32()?;
            assignment.push(TopicPartition {
                topic: topic.clone(),
                partition,
            });
        }
    }
    assignment.sort();
    Some(assignment)
}

/// Big-endian fields off the front of a byte slice.
struct Reader<'b>(&'b [u8]);

impl<'b> Reader<'b> {
    fn take(&mut self, n: usize) -> Option<&'b [u8]> {
        let (taken, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(taken)
    }

    fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }

    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }

    fn string(&mut self) -> Option<String> {
        let len = usize::try_from(self.i16()?).ok()?;
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }
}

fn read_messages(
    settings: &KafkaSettings,
    topic: &str,
    partition: i32,
    offset: i64,
    limit: usize,
) -> Result<Vec<BrowsedMessage>, InspectError> {
    // librdkafka consumes an assigned partition only with a group id; the client never
    // joins that group (it does not subscribe) and commits nothing to it.
    let client: BaseConsumer = settings
        .client()
        .set("group.id", settings.group("cornershop-inspector"))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .create()
        .map_err(InspectError::kafka("create a Kafka client"))?;
    let (low, high) = client
        .fetch_watermarks(topic, partition, REQUEST_TIMEOUT)
        .map_err(|source| match source.rdkafka_error_code() {
            Some(RDKafkaErrorCode::UnknownPartition) => InspectError::NoSuchPartition {
                topic: topic.to_string(),
                partition,
            },
            _ => InspectError::kafka(format!(
                "read the watermarks of {topic} partition {partition}"
            ))(source),
        })?;
    let start = offset.max(low);
    if limit == 0 || start >= high {
        return Ok(Vec::new());
    }
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, partition, Offset::Offset(start))
        .and_then(|()| client.assign(&assignment))
        .map_err(InspectError::kafka(format!(
            "read {topic} partition {partition} from offset {start}"
        )))?;
    let deadline = Instant::now() + BROWSE_FOR;
    let mut messages = Vec::new();
    let mut next = start;
    while messages.len() < limit && next < high {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            break;
        };
        match client.poll(left) {
            None => break,
            Some(Ok(message)) => {
                next = message.offset() + 1;
                messages.push(browsed(&message));
            }
            Some(Err(source)) => {
                return Err(InspectError::kafka(format!(
                    "read {topic} partition {partition} from offset {next}"
                ))(source))
            }
        }
    }
    Ok(messages)
}

fn browsed(message: &BorrowedMessage<'_>) -> BrowsedMessage {
    let lossy = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let payload = message.payload();
    let (value, value_truncated) = match payload {
        None => (None, false),
        Some(bytes) => {
            let (text, truncated) = truncated(lossy(bytes), VALUE_LIMIT);
            (Some(text), truncated)
        }
    };
    BrowsedMessage {
        partition: message.partition(),
        offset: message.offset(),
        timestamp: message.timestamp().to_millis(),
        key: message.key().map(lossy),
        headers: message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|header| HeaderView {
                        name: header.key.to_string(),
                        value: header.value.map(lossy),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        value,
        value_truncated,
        value_bytes: payload.map_or(0, <[u8]>::len),
    }
}

/// `text` cut to at most `limit` bytes, at a character's boundary; and whether it was cut.
fn truncated(mut text: String, limit: usize) -> (String, bool) {
    if text.len() <= limit {
        return (text, false);
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    (text, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `ConsumerProtocolAssignment` as the Java client and librdkafka write it.
    fn assignment(version: i16, topics: &[(&str, &[i32])], user_data: &[u8]) -> Vec<u8> {
        let mut bytes = version.to_be_bytes().to_vec();
        bytes.extend((topics.len() as i32).to_be_bytes());
        for (topic, partitions) in topics {
            bytes.extend((topic.len() as i16).to_be_bytes());
            bytes.extend(topic.as_bytes());
            bytes.extend((partitions.len() as i32).to_be_bytes());
            for p in *partitions {
                bytes.extend(p.to_be_bytes());
            }
        }
        bytes.extend((user_data.len() as i32).to_be_bytes());
        bytes.extend(user_data);
        bytes
    }

    fn tp(topic: &str, partition: i32) -> TopicPartition {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }

    #[test]
    fn an_assignment_decodes_to_its_partitions_in_order() {
        let bytes = assignment(
            3,
            &[("orders.events", &[2, 0]), ("carts.events", &[1])],
            b"ud",
        );
        assert_eq!(
            decode_assignment(&bytes),
            Some(vec![
                tp("carts.events", 1),
                tp("orders.events", 0),
                tp("orders.events", 2)
            ])
        );
        assert_eq!(decode_assignment(&assignment(0, &[], b"")), Some(vec![]));
    }

    #[test]
    fn bytes_that_are_no_assignment_do_not_decode() {
        let bytes = assignment(1, &[("carts.events", &[0, 1])], b"");
        // Cut inside the partitions.
        assert_eq!(decode_assignment(&bytes[..bytes.len() - 7]), None);
        assert_eq!(decode_assignment(&[]), None);
        assert_eq!(decode_assignment(&[0xff, 0xff, 0, 0, 0, 0]), None);
        // A count far beyond the bytes.
        assert_eq!(decode_assignment(&[0, 0, 0x7f, 0xff, 0xff, 0xff]), None);
    }

    #[test]
    fn a_value_is_cut_at_a_character_boundary() {
        assert_eq!(truncated("abc".into(), 3), ("abc".into(), false));
        assert_eq!(truncated("abcd".into(), 3), ("abc".into(), true));
        // "é" is two bytes: a cut after one of them keeps neither.
        assert_eq!(truncated("aéb".into(), 2), ("a".into(), true));
    }

    #[test]
    fn the_shop_topics_are_each_event_topic_then_its_dead_letter_topic() {
        let settings = KafkaSettings {
            brokers: "localhost:9092".into(),
            namespace: "ns.".into(),
            partitions: 1,
            replication: 1,
            security: Default::default(),
        };
        let topics = shop_topics(&settings);
        assert_eq!(topics.len(), 2 * settings.topics().len());
        for pair in topics.chunks(2) {
            assert!(pair[0].starts_with("ns."), "{pair:?}");
            assert_eq!(pair[1], format!("{}.dlq", pair[0]));
        }
    }
}
