//! flowprint as a fleet on NATS JetStream: collectors publish normalized flows in batches on
//! `<prefix>.<shard>` subjects of one stream, sharded by the hash of the local host address
//! ([`crate::eval::shard_of`]); workers consume their shards through durable pull consumers
//! (one per shard, `flowprint-shard-<n>`) and acknowledge a batch only once its evidence has
//! been applied and written.
//!
//! This module is the bus: a blocking facade over `async-nats` (a current-thread tokio runtime
//! of its own, as the DNS resolver has), the batch encoding ([`codec`]), and the sharding of
//! flows for publication ([`Publisher`]).
//!
//! Delivery is at least once: a worker that dies before acknowledging gets its batches
//! delivered again (to itself after a restart, or to whichever worker takes the shard over)
//! once the consumer's acknowledgement wait runs out. Each delivered batch carries its stream
//! sequence; a worker records, with the inventory it writes, the highest sequence applied per
//! shard, and skips (but acknowledges) any redelivered batch at or below it — so a redelivery
//! never counts evidence twice. A batch is in the stream once: it is published with its
//! [`codec::batch_id`] as message id, and the server refuses (as a duplicate) a collector's
//! retry of a batch it already stored.

pub mod codec;
pub mod lease;

use crate::eval::{LocalNets, flow_shards};
use crate::flow::Flow;
use async_nats::jetstream::{self, consumer::PullConsumer};
use futures_util::StreamExt;
use std::time::Duration;

/// What went wrong on the bus.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// Connecting to the server.
    #[error("NATS {url}: {message}")]
    Connect {
        /// The server.
        url: String,
        /// Why.
        message: String,
    },
    /// A JetStream request (stream, consumer, publish, fetch, ack).
    #[error("JetStream {what}: {message}")]
    JetStream {
        /// The request.
        what: &'static str,
        /// Why.
        message: String,
    },
    /// The runtime.
    #[error("runtime: {0}")]
    Runtime(#[from] std::io::Error),
}

fn js_err(what: &'static str) -> impl Fn(&dyn std::fmt::Display) -> FleetError {
    move |e| FleetError::JetStream {
        what,
        message: e.to_string(),
    }
}

/// Where the fleet's flows live.
#[derive(Debug, Clone)]
pub struct BusConfig {
    /// The stream.
    pub stream: String,
    /// Subjects are `<prefix>.<shard>`.
    pub prefix: String,
    /// The stream's size limit, bytes; beyond it, new publishes are refused (and counted by
    /// the publisher) rather than old flows silently dropped.
    pub max_bytes: i64,
    /// How long a delivered batch may stay unacknowledged before it is delivered again.
    pub ack_wait: Duration,
    /// Replicas of the stream and the buckets (1, or 3 on a 3-node cluster).
    pub replicas: usize,
    /// The lease of a shard and a worker's heartbeat expire after this long without renewal.
    pub lease: Duration,
    /// How long a JetStream request may take (the client's default, 5 s, when `None`). The
    /// lease connection uses a quarter of a lease, so that one slow request cannot hold up the
    /// renewals of the others.
    pub request_timeout: Option<Duration>,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            stream: "FLOWPRINT_FLOWS".into(),
            prefix: "flowprint.flows".into(),
            max_bytes: 1 << 30,
            ack_wait: Duration::from_secs(30),
            replicas: 1,
            lease: Duration::from_secs(6),
            request_timeout: None,
        }
    }
}

/// The subjects of a stream matching `filter` that hold messages (one stream info request).
pub(crate) async fn subjects(
    stream: &jetstream::stream::Stream,
    filter: &str,
) -> Result<Vec<String>, FleetError> {
    let mut info = stream
        .info_with_subjects(filter)
        .await
        .map_err(|e| js_err("stream subjects")(&e))?;
    let mut out = Vec::new();
    while let Some(x) = info.next().await {
        let (subject, _) = x.map_err(|e| js_err("stream subjects")(&e))?;
        out.push(subject);
    }
    out.sort();
    Ok(out)
}

/// How long the server remembers the message ids of the batches it stored, and refuses (as
/// duplicates) a batch published again under the same id. A collector retries a batch for at
/// most `RETRY_FOR` (60 s, `src/serve/outbox.rs`), within it.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// The longest a pull may take before it counts as failed.
pub const FETCH_LIMIT: Duration = Duration::from_secs(3);

/// The key-value bucket of shard leases and worker heartbeats.
pub const LEASE_BUCKET: &str = "flowprint-fleet";
/// The object store of published rule packs.
pub const PACK_BUCKET: &str = "flowprint-packs";

/// The server's error code for a message that is not (or no longer) in the stream.
const NO_MESSAGE_FOUND: u64 = 10037;

/// The longest a worker waits to send its confirmations (they are best effort: a publisher
/// that misses one looks the batch up in the stream).
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(2);

/// Batch sequences per confirmation message (8 bytes each: 64 KiB, well under the servers'
/// 1 MiB message limit).
pub const CONFIRM_CHUNK: usize = 8192;

/// The message id of copy `copy` of the batch `id`: the id itself for the first, `<id>.c<n>`
/// for a batch sent again, so that the server's duplicate check (which would take the copy for
/// the first) lets it through.
pub fn copy_id(id: &str, copy: u32) -> String {
    if copy == 0 {
        id.to_string()
    } else {
        format!("{id}.c{copy}")
    }
}

/// What a stream holds at the sequence where a batch was stored ([`Bus::stored_at`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtSeq {
    /// The batch: still waiting for its shard's worker.
    Same,
    /// Another message: the acknowledgement named a sequence the stream does not keep for it
    /// (seen with nats-server 2.9 after a node's pause: a resumed node answered for a copy that
    /// its peers' log replaced).
    Other,
    /// Nothing: acknowledged by a worker and removed, or lost.
    Gone,
}

/// A subscription to the confirmations of one publisher's batches.
pub struct Confirmations {
    sub: async_nats::Subscriber,
    /// Confirmation messages that were not a whole number of sequences (ignored).
    pub malformed: u64,
}

/// A connection to the bus.
pub struct Bus {
    rt: tokio::runtime::Runtime,
    client: async_nats::Client,
    js: jetstream::Context,
    stream: jetstream::stream::Stream,
    config: BusConfig,
    /// Set when the connection dropped or the client dropped messages as a slow consumer:
    /// whatever was in flight may be lost, so deliveries since may have a gap.
    suspect: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus").field("config", &self.config).finish()
    }
}

/// A batch delivered to a worker.
pub struct Delivered {
    /// The shard it was published on.
    pub shard: u32,
    /// Its sequence in the stream.
    pub stream_seq: u64,
    /// How many times it has been delivered (1 the first time).
    pub delivered: i64,
    /// Its delivery's sequence in the consumer (every delivery, redeliveries too, takes the
    /// next one): a number skipped means a delivery was lost on the way.
    pub consumer_seq: u64,
    /// The encoded batch.
    pub data: Vec<u8>,
    message: jetstream::Message,
}

/// Where the server stored a published batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// Its sequence in the stream.
    pub sequence: u64,
    /// The server had it already (same message id within [`DUPLICATE_WINDOW`]): a retry of a
    /// batch whose first acknowledgement was lost, not stored again.
    pub duplicate: bool,
}

/// One shard's durable consumer.
pub struct ShardConsumer {
    /// The shard.
    pub shard: u32,
    consumer: PullConsumer,
}

impl ShardConsumer {
    /// The consumer sequence of its last delivery when it was created or looked up (0 for a
    /// new consumer): the next delivery takes the one after.
    pub fn last_delivery(&self) -> u64 {
        self.consumer.cached_info().delivered.consumer_sequence
    }
}

/// Whether a consumer could not be made because another one of the work-queue stream filters
/// the same subject (JetStream error 10100).
fn wq_not_unique(e: &jetstream::stream::ConsumerError) -> bool {
    matches!(
        e.kind(),
        jetstream::stream::ConsumerErrorKind::JetStream(j)
            if j.error_code() == jetstream::ErrorCode::CONSUMER_WQ_CONSUMER_NOT_UNIQUE
    )
}

/// The servers of a `--nats` value: one URL or several separated by commas.
fn server_addrs(url: &str) -> Result<Vec<async_nats::ServerAddr>, FleetError> {
    let bad = |message: String| FleetError::Connect {
        url: url.to_string(),
        message,
    };
    let servers = url
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| {
            u.parse::<async_nats::ServerAddr>()
                .map_err(|e| bad(format!("`{u}` is not a server address: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if servers.is_empty() {
        return Err(bad("no server address".to_string()));
    }
    Ok(servers)
}

/// How long a shard's consumer lives without a pull: four leases (a stalled worker's shards
/// have moved by then), and at least `ack_wait`.
pub fn consumer_inactive(config: &BusConfig) -> Duration {
    (config.lease * 4).max(config.ack_wait)
}

impl Bus {
    /// Connects and makes sure the stream exists. `url` is one server or several, separated by
    /// commas; the client also learns the cluster's other servers from the one it reaches, and
    /// goes to another when its connection drops or [`Bus::reconnect`] is called.
    pub fn connect(url: &str, config: BusConfig) -> Result<Bus, FleetError> {
        let servers = server_addrs(url)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let suspect = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = suspect.clone();
        let (client, js, stream) = rt.block_on(async {
            let client = async_nats::ConnectOptions::new()
                .event_callback(move |event| {
                    let flag = flag.clone();
                    async move {
                        if matches!(
                            event,
                            async_nats::Event::Disconnected | async_nats::Event::SlowConsumer(_)
                        ) {
                            tracing::warn!("NATS: {event}");
                            flag.store(true, std::sync::atomic::Ordering::SeqCst);
                        }
                    }
                })
                .connect(servers)
                .await
                .map_err(|e| FleetError::Connect {
                    url: url.to_string(),
                    message: e.to_string(),
                })?;
            let mut js = jetstream::new(client.clone());
            if let Some(t) = config.request_timeout {
                js.set_timeout(t);
            }
            let stream = js
                .get_or_create_stream(jetstream::stream::Config {
                    name: config.stream.clone(),
                    subjects: vec![format!("{}.*", config.prefix)],
                    max_bytes: config.max_bytes,
                    discard: jetstream::stream::DiscardPolicy::New,
                    // A batch leaves the stream when its shard's worker acknowledges it: the
                    // stream holds the backlog, and its size limit bounds it.
                    retention: jetstream::stream::RetentionPolicy::WorkQueue,
                    storage: jetstream::stream::StorageType::File,
                    num_replicas: config.replicas,
                    duplicate_window: DUPLICATE_WINDOW,
                    ..Default::default()
                })
                .await
                .map_err(|e| js_err("stream")(&e))?;
            let window = stream.cached_info().config.duplicate_window;
            if window < DUPLICATE_WINDOW {
                tracing::warn!(
                    stream = %config.stream,
                    ?window,
                    "the stream remembers message ids for less than {DUPLICATE_WINDOW:?}: a batch retried after that may be stored twice"
                );
            }
            Ok::<_, FleetError>((client, js, stream))
        })?;
        Ok(Bus {
            rt,
            client,
            js,
            stream,
            config,
            suspect,
        })
    }

    /// Drops the connection and connects again, to a server of the pool chosen at random (the
    /// given ones and those the cluster advertised): for a server that answers but whose
    /// JetStream does not (a node resumed after a pause answers "no stream found" for tens of
    /// seconds, and does not disconnect). What was in flight is treated as lost, as after any
    /// disconnection ([`Bus::take_suspect`]).
    pub fn reconnect(&self) {
        tracing::warn!("NATS: the server's JetStream does not answer: connecting again elsewhere");
        self.suspect
            .store(true, std::sync::atomic::Ordering::SeqCst);
        if let Err(e) = self.rt.block_on(self.client.force_reconnect()) {
            tracing::warn!("NATS: reconnect: {e}");
        }
    }

    /// Whether the connection dropped (or the client dropped messages) since the last call:
    /// deliveries may then have a gap, and a worker goes back to what it last wrote.
    pub fn take_suspect(&self) -> bool {
        self.suspect
            .swap(false, std::sync::atomic::Ordering::SeqCst)
    }

    /// Publishes encoded batches (shard, bytes) and waits for the server to store them all:
    /// where each was stored, or why it was refused. Each batch goes with its [`codec::batch_id`]
    /// as message id: a batch published again (a retry after an acknowledgement that did not
    /// come, although the server stored it) is stored once, the second acknowledgement saying
    /// `duplicate`.
    pub fn publish(&self, batches: &[(u32, Vec<u8>)]) -> Vec<Result<Stored, FleetError>> {
        self.publish_copies(batches.iter().map(|(s, b)| (*s, b.as_slice(), 0)))
    }

    /// As [`Bus::publish`], each batch (shard, bytes, copy) under the message id of its copy
    /// ([`copy_id`]): copy 0 is the batch as first published; a later copy is one the
    /// publisher sends again because no worker confirmed the batch and the stream no longer
    /// holds it ([`Bus::stored_at`]). The server does not take a new copy for a duplicate of an
    /// earlier one; the workers, which know the batch by its id, count it once.
    pub fn publish_copies<'b>(
        &self,
        batches: impl Iterator<Item = (u32, &'b [u8], u32)>,
    ) -> Vec<Result<Stored, FleetError>> {
        self.rt.block_on(async {
            // Send everything first, then collect the acknowledgements: one round trip for
            // the whole set rather than one per batch.
            let mut acks = Vec::new();
            for (shard, data, copy) in batches {
                let subject = format!("{}.{shard}", self.config.prefix);
                let mut message =
                    jetstream::message::PublishMessage::build().payload(data.to_vec().into());
                if let Some(id) = codec::batch_id(data) {
                    message = message.message_id(copy_id(&id, copy));
                }
                acks.push(self.js.send_publish(subject, message).await);
            }
            // Awaited together: when the server does not answer (a leader election), every
            // acknowledgement times out at once, not one timeout after the other.
            futures_util::future::join_all(acks.into_iter().map(|a| async move {
                match a {
                    Ok(fut) => fut
                        .await
                        .map(|ack| Stored {
                            sequence: ack.sequence,
                            duplicate: ack.duplicate,
                        })
                        .map_err(|e| js_err("publish")(&e)),
                    Err(e) => Err(js_err("publish")(&e)),
                }
            }))
            .await
        })
    }

    /// What the stream holds at `seq`, for the batch whose copy `message_id` was stored there
    /// (asked of the stream's leader).
    pub fn stored_at(&self, seq: u64, message_id: &str) -> Result<AtSeq, FleetError> {
        use jetstream::stream::LastRawMessageErrorKind as Kind;
        self.rt.block_on(async {
            match self.stream.get_raw_message(seq).await {
                Ok(m) => {
                    let same = m
                        .headers
                        .get("Nats-Msg-Id")
                        .is_some_and(|v| v.as_str() == message_id);
                    Ok(if same { AtSeq::Same } else { AtSeq::Other })
                }
                Err(e) => match e.kind() {
                    Kind::NoMessageFound => Ok(AtSeq::Gone),
                    // nats-server 2.9 answers "no message found" as a JetStream error.
                    Kind::JetStream(j) if j.error_code().0 == NO_MESSAGE_FOUND => Ok(AtSeq::Gone),
                    _ => Err(js_err("message get")(&e)),
                },
            }
        })
    }

    /// The subject on which workers confirm `publisher`'s batches once written.
    fn confirm_subject(&self, publisher: &[u8; 16]) -> String {
        format!(
            "{}-confirm.{}",
            self.config.prefix,
            codec::publisher_hex(publisher)
        )
    }

    /// Tells the batches' publishers that their evidence is written (after the write, and for
    /// batches skipped as already counted): `ids` are [`codec::batch_key`]s. Best effort (core
    /// NATS, no acknowledgement): a confirmation lost makes the publisher look the batch up in
    /// the stream, and send it again only when the stream no longer holds it, which the worker
    /// then skips and confirms again.
    pub fn confirm(&self, ids: &[[u8; 24]]) -> Result<(), FleetError> {
        let mut by_publisher: std::collections::BTreeMap<[u8; 16], Vec<u8>> = Default::default();
        for id in ids {
            let (p, seq) = id.split_at(16);
            by_publisher
                .entry(p.try_into().expect("16 bytes"))
                .or_default()
                .extend_from_slice(seq);
        }
        let send = async {
            for (p, seqs) in by_publisher {
                let subject = self.confirm_subject(&p);
                for chunk in seqs.chunks(8 * CONFIRM_CHUNK) {
                    self.client
                        .publish(subject.clone(), chunk.to_vec().into())
                        .await
                        .map_err(|e| js_err("confirm")(&e))?;
                }
            }
            self.client.flush().await.map_err(|e| js_err("confirm")(&e))
        };
        // Bounded: a connection that is away (reconnecting) holds a flush until it is back,
        // and a worker must not stall (or fail to stop) for a best-effort message.
        self.rt.block_on(async {
            tokio::time::timeout(CONFIRM_TIMEOUT, send)
                .await
                .unwrap_or_else(|_| {
                    Err(FleetError::JetStream {
                        what: "confirm",
                        message: format!("not sent within {CONFIRM_TIMEOUT:?}"),
                    })
                })
        })
    }

    /// Subscribes to the confirmations of `publisher`'s batches ([`Bus::confirm`]).
    pub fn confirmations(&self, publisher: [u8; 16]) -> Result<Confirmations, FleetError> {
        let subject = self.confirm_subject(&publisher);
        let sub = self
            .rt
            // The timer is made inside the runtime, which it needs.
            .block_on(async {
                tokio::time::timeout(CONFIRM_TIMEOUT, self.client.subscribe(subject)).await
            })
            .map_err(|_| FleetError::JetStream {
                what: "confirm subscribe",
                message: format!("no answer within {CONFIRM_TIMEOUT:?}"),
            })?
            .map_err(|e| js_err("confirm subscribe")(&e))?;
        Ok(Confirmations { sub, malformed: 0 })
    }

    /// Ends a subscription to confirmations (on the bus's runtime, which its unsubscription
    /// needs).
    pub fn close_confirmations(&self, c: Confirmations) {
        self.rt.block_on(async move { drop(c) });
    }

    /// The batch sequences confirmed since the last call, without waiting.
    pub fn take_confirmed(&self, c: &mut Confirmations) -> Vec<u64> {
        use futures_util::FutureExt;
        self.rt.block_on(async {
            // Lets the connection's task hand over what has arrived.
            tokio::task::yield_now().await;
            let mut out = Vec::new();
            while let Some(Some(m)) = c.sub.next().now_or_never() {
                if m.payload.len() % 8 != 0 {
                    c.malformed += 1;
                    continue;
                }
                out.extend(
                    m.payload
                        .chunks_exact(8)
                        .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes"))),
                );
            }
            out
        })
    }

    /// A shard's durable pull consumer named `name`: explicit acknowledgement, delivery from
    /// the first batch still in the stream. The server removes it after
    /// [`consumer_inactive`] without a pull: a consumer left behind (its owner died, its
    /// delete timed out, or its creation landed after the client gave up during a node's pause)
    /// would otherwise hold the shard's subject of the work-queue stream for ever, and no worker
    /// could take the shard. An owner that was merely slow for that long finds its consumer gone
    /// and goes back to its last write, which loses nothing.
    fn consumer_config(&self, name: &str, shard: u32) -> jetstream::consumer::pull::Config {
        jetstream::consumer::pull::Config {
            durable_name: Some(name.to_string()),
            filter_subject: format!("{}.{shard}", self.config.prefix),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: self.config.ack_wait,
            max_ack_pending: 10_000,
            inactive_threshold: consumer_inactive(&self.config),
            ..Default::default()
        }
    }

    /// The durable consumer of a shard, created if missing: explicit acknowledgement, delivery
    /// from the first batch not yet acknowledged.
    pub fn consumer(&self, shard: u32) -> Result<ShardConsumer, FleetError> {
        let name = format!("flowprint-shard-{shard}");
        let consumer = self
            .rt
            .block_on(
                self.stream
                    .get_or_create_consumer(&name, self.consumer_config(&name, shard)),
            )
            .map_err(|e| js_err("consumer")(&e))?;
        Ok(ShardConsumer { shard, consumer })
    }

    /// Takes a shard's consumer over under a new lease: deletes the shard's durable consumers
    /// (whatever a previous owner left delivered but unacknowledged goes back to the stream)
    /// and creates `flowprint-shard-<n>-<fence>-<pid>-<take>`, delivering from the first batch still in the
    /// stream, so that the new owner sees every remaining batch in stream order. The name
    /// carries the lease's revision: a previous owner still pulling addresses a consumer that
    /// no longer exists, and cannot take batches from the new one.
    ///
    /// Every take gets a name never used before (the fence and a per-process take count, and
    /// the process id): were an old consumer left behind (a delete that timed out, a listing
    /// that missed it), creating a consumer of the same name would hand back the old one with
    /// its delivery state, so that batches it had delivered would neither come again in order
    /// nor show as a gap. With a fresh name, a consumer left behind makes the creation fail
    /// instead (a work-queue stream takes one consumer per subject), and the shard is given back.
    pub fn take_over_consumer(&self, shard: u32, fence: u64) -> Result<ShardConsumer, FleetError> {
        static TAKES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let plain = format!("flowprint-shard-{shard}");
        let prefix = format!("{plain}-");
        let take = TAKES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("{plain}-{fence}-{}-{take}", std::process::id());
        let consumer = self.rt.block_on(async {
            let mut names = self.stream.consumer_names();
            let mut old = Vec::new();
            while let Some(n) = names.next().await {
                let n = n.map_err(|e| js_err("consumer names")(&e))?;
                if n == plain || n.starts_with(&prefix) {
                    old.push(n);
                }
            }
            for n in old {
                if let Err(e) = self.stream.delete_consumer(&n).await
                    && !e.to_string().contains("not found")
                {
                    return Err(js_err("delete consumer")(&e));
                }
            }
            match self
                .stream
                .get_or_create_consumer(&name, self.consumer_config(&name, shard))
                .await
            {
                Err(e) if wq_not_unique(&e) => {
                    // Another consumer filters the shard's subject although the names did not
                    // show it (after a node's pause, a consumer whose creation timed out on
                    // the client may appear later, under any name): find it by its filter.
                    let subject = format!("{}.{shard}", self.config.prefix);
                    let mut infos = self.stream.consumers();
                    let mut old = Vec::new();
                    while let Some(info) = infos.next().await {
                        let info = info.map_err(|e| js_err("consumer list")(&e))?;
                        if info.config.filter_subject == subject {
                            old.push(info.name);
                        }
                    }
                    tracing::warn!(shard, consumers = ?old, "another consumer holds the shard's subject: deleted");
                    for n in old {
                        if let Err(e) = self.stream.delete_consumer(&n).await
                            && !e.to_string().contains("not found")
                        {
                            return Err(js_err("delete consumer")(&e));
                        }
                    }
                    self.stream
                        .get_or_create_consumer(&name, self.consumer_config(&name, shard))
                        .await
                        .map_err(|e| js_err("consumer")(&e))
                }
                r => r.map_err(|e| js_err("consumer")(&e)),
            }
        })?;
        Ok(ShardConsumer { shard, consumer })
    }

    /// How many batches of a shard are waiting for a worker (not yet delivered), and how many
    /// are delivered but not acknowledged.
    pub fn backlog(&self, c: &mut ShardConsumer) -> Result<(u64, u64), FleetError> {
        self.rt.block_on(async {
            let info = c
                .consumer
                .info()
                .await
                .map_err(|e| js_err("consumer info")(&e))?;
            Ok((info.num_pending, info.num_ack_pending as u64))
        })
    }

    /// The fleet's key-value bucket (leases and heartbeats), created if missing; entries
    /// expire `lease` after their last write.
    pub fn leases(&self) -> Result<jetstream::kv::Store, FleetError> {
        self.rt.block_on(async {
            match self.js.get_key_value(LEASE_BUCKET).await {
                Ok(kv) => Ok(kv),
                Err(_) => {
                    // The bucket's stream as `create_key_value` would make it, created
                    // directly: that call first asks for the account's limits in a form
                    // nats-server 2.9 does not answer.
                    self.js
                        .get_or_create_stream(jetstream::stream::Config {
                            name: format!("KV_{LEASE_BUCKET}"),
                            subjects: vec![format!("$KV.{LEASE_BUCKET}.>")],
                            max_messages_per_subject: 1,
                            max_age: self.config.lease,
                            storage: jetstream::stream::StorageType::File,
                            num_replicas: self.config.replicas,
                            allow_rollup: true,
                            deny_delete: true,
                            allow_direct: true,
                            discard: jetstream::stream::DiscardPolicy::New,
                            ..Default::default()
                        })
                        .await
                        .map_err(|e| js_err("lease bucket")(&e))?;
                    self.js
                        .get_key_value(LEASE_BUCKET)
                        .await
                        .map_err(|e| js_err("lease bucket")(&e))
                }
            }
        })
    }

    /// The identity of the flow stream this connection uses: its name and creation time. The
    /// marks stored with the inventory are keyed by it, so that a stream deleted and created
    /// again (its sequences start over) is never mistaken for the old one.
    pub fn stream_id(&self) -> String {
        let info = self.stream.cached_info();
        format!(
            "{}@{}",
            info.config.name,
            info.created.unix_timestamp_nanos()
        )
    }

    /// What the flow stream holds now, asked of its leader: messages, first and last sequence.
    /// For accounting (where did a batch go?): a worker never needs it.
    pub fn stream_state(&self) -> Result<(u64, u64, u64), FleetError> {
        self.rt.block_on(async {
            let s = self
                .js
                .get_stream(&self.config.stream)
                .await
                .map_err(|e| js_err("stream info")(&e))?;
            let st = &s.cached_info().state;
            Ok((st.messages, st.first_sequence, st.last_sequence))
        })
    }

    /// Runs a future on the bus's runtime (for the lease and pack helpers).
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// The fleet's rule packs (an object store), created if missing.
    pub fn packs(&self) -> Result<jetstream::object_store::ObjectStore, FleetError> {
        self.rt.block_on(async {
            match self.js.get_object_store(PACK_BUCKET).await {
                Ok(os) => Ok(os),
                Err(_) => self
                    .js
                    .create_object_store(jetstream::object_store::Config {
                        bucket: PACK_BUCKET.into(),
                        num_replicas: self.config.replicas,
                        storage: jetstream::stream::StorageType::File,
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| js_err("pack bucket")(&e)),
            }
        })
    }

    /// Puts a pack archive into the fleet's pack bucket under `name` (replacing the previous
    /// version); returns the object's digest.
    pub fn publish_pack(&self, name: &str, archive: &[u8]) -> Result<String, FleetError> {
        let os = self.packs()?;
        self.rt.block_on(async {
            let mut reader = archive;
            let info = os
                .put(name, &mut reader)
                .await
                .map_err(|e| js_err("pack put")(&e))?;
            Ok(info.digest.unwrap_or(info.nuid))
        })
    }

    /// The packs in the fleet's bucket: (name, digest), deleted ones left out. Read from the
    /// bucket's metadata subjects with plain requests (a stream info and one direct read per
    /// pack) rather than the client's `list`, whose ordered consumer per call is slow on a
    /// busy cluster.
    pub fn list_packs(&self) -> Result<Vec<(String, String)>, FleetError> {
        self.rt.block_on(async {
            let stream = self
                .js
                .get_stream(format!("OBJ_{PACK_BUCKET}"))
                .await
                .map_err(|e| js_err("pack list")(&e))?;
            let mut out = Vec::new();
            for subject in subjects(&stream, &format!("$O.{PACK_BUCKET}.M.*")).await? {
                let m = stream
                    .get_last_raw_message_by_subject(&subject)
                    .await
                    .map_err(|e| js_err("pack list")(&e))?;
                let info: jetstream::object_store::ObjectInfo =
                    serde_json::from_slice(&m.payload).map_err(|e| js_err("pack list")(&e))?;
                if !info.deleted {
                    out.push((info.name, info.digest.unwrap_or(info.nuid)));
                }
            }
            out.sort();
            Ok(out)
        })
    }

    /// A pack's archive from the bucket, refused beyond `limit` bytes.
    pub fn get_pack(
        &self,
        os: &jetstream::object_store::ObjectStore,
        name: &str,
        limit: usize,
    ) -> Result<Vec<u8>, FleetError> {
        use tokio::io::AsyncReadExt;
        self.rt.block_on(async {
            let object = os.get(name).await.map_err(|e| js_err("pack get")(&e))?;
            if object.info.size > limit {
                return Err(FleetError::JetStream {
                    what: "pack get",
                    message: format!(
                        "{name}: {} bytes, more than the limit of {limit}",
                        object.info.size
                    ),
                });
            }
            let mut out = Vec::with_capacity(object.info.size);
            object
                .take(limit as u64 + 1)
                .read_to_end(&mut out)
                .await
                .map_err(|e| js_err("pack get")(&e))?;
            Ok(out)
        })
    }

    /// Up to `max` batches of a shard available now, without waiting (a no-wait pull: the
    /// server answers at once, with what it has). No `expires` is sent with it: nats-server 2.9
    /// does not end a no-wait pull that has one, and the client then waits 5 s for the end.
    /// A pull the server does not end within [`FETCH_LIMIT`] (its consumer's leader is gone,
    /// say) is an error: batches may have been delivered and lost on the way.
    pub fn fetch(&self, c: &ShardConsumer, max: usize) -> Result<Vec<Delivered>, FleetError> {
        self.rt.block_on(async {
            let deadline = tokio::time::Instant::now() + FETCH_LIMIT;
            let timed_out = || FleetError::JetStream {
                what: "fetch",
                message: format!("the server did not end a pull within {FETCH_LIMIT:?}"),
            };
            let mut batch =
                tokio::time::timeout_at(deadline, c.consumer.fetch().max_messages(max).messages())
                    .await
                    .map_err(|_| timed_out())?
                    .map_err(|e| js_err("fetch")(&e))?;
            let mut out = Vec::new();
            while let Some(m) = tokio::time::timeout_at(deadline, batch.next())
                .await
                .map_err(|_| timed_out())?
            {
                let m = m.map_err(|e| js_err("fetch")(&e))?;
                let (stream_seq, delivered, consumer_seq) = match m.info() {
                    Ok(i) => (i.stream_sequence, i.delivered, i.consumer_sequence),
                    Err(e) => return Err(js_err("message info")(&e)),
                };
                out.push(Delivered {
                    shard: c.shard,
                    stream_seq,
                    delivered,
                    consumer_seq,
                    data: m.payload.to_vec(),
                    message: m,
                });
            }
            Ok(out)
        })
    }

    /// Acknowledges batches (after their evidence is written).
    pub fn ack(&self, done: &[Delivered]) -> Result<(), FleetError> {
        self.rt.block_on(async {
            for d in done {
                d.message.ack().await.map_err(|e| js_err("ack")(&e))?;
            }
            Ok(())
        })
    }
}

/// Shards flows by their local hosts and encodes them into batches for [`Bus::publish`].
pub struct Publisher {
    local: LocalNets,
    shards: u32,
    id: [u8; 16],
    seq: u64,
    pending: Vec<Vec<Flow>>,
    batch_size: usize,
}

pub use crate::eval::host_addrs;

impl Publisher {
    /// A publisher over `shards` shards; `id` names it in every batch (unique per process).
    pub fn new(local: LocalNets, shards: u32, id: [u8; 16]) -> Publisher {
        Publisher {
            local,
            shards: shards.max(1),
            id,
            seq: 0,
            pending: (0..shards.max(1)).map(|_| Vec::new()).collect(),
            batch_size: 1024,
        }
    }

    /// The id that names this publisher in its batches.
    pub fn id(&self) -> [u8; 16] {
        self.id
    }

    /// Queues a flow on the shard of each of its local hosts (shard 0 when it has none, so that
    /// every flow is counted once). Returns batches that became full, ready to publish.
    pub fn push(&mut self, flow: Flow) -> Vec<(u32, Vec<u8>)> {
        let (first, second) = flow_shards(&self.local, &flow, self.shards);
        let mut full = Vec::new();
        if let Some(y) = second {
            self.pending[y as usize].push(flow.clone());
            full.extend(self.take_if_full(y));
        }
        self.pending[first as usize].push(flow);
        full.extend(self.take_if_full(first));
        full
    }

    fn take_if_full(&mut self, shard: u32) -> Option<(u32, Vec<u8>)> {
        (self.pending[shard as usize].len() >= self.batch_size).then(|| self.take(shard))
    }

    fn take(&mut self, shard: u32) -> (u32, Vec<u8>) {
        let flows = std::mem::take(&mut self.pending[shard as usize]);
        self.seq += 1;
        (shard, codec::encode(self.id, self.seq, &flows))
    }

    /// Every partial batch, encoded.
    pub fn flush(&mut self) -> Vec<(u32, Vec<u8>)> {
        (0..self.shards)
            .filter(|&s| !self.pending[s as usize].is_empty())
            .collect::<Vec<_>>()
            .into_iter()
            .map(|s| self.take(s))
            .collect()
    }
}
