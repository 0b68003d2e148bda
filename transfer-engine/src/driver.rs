//! The thin layer between the state machines ([`transfer_proto::session`]) and quinn: one
//! bidirectional control stream, several unidirectional data streams from sender to
//! receiver, and the store on each side.

use crate::versions::{VersionBook, VersionRefusal};
use bytes::Bytes;
use hw_offload::{ChunkId, Codec, Job, Step};
use quinn::{Connection, RecvStream, SendStream, VarInt};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use store::ChunkRef as StoredChunk;
use store::ObjectHead;
use store::frame;
use store::transfer::{ExportedObject, TransferId, TransferPin, TransferredObject};
use store::versions::SnapshotFile;
use store::{SiteAccess, Store};
use tokio::sync::{mpsc, watch};
use transfer_proto::delta;
use transfer_proto::offer::{Offer, OfferCutter, SourceObject};
use transfer_proto::session::{IncomingObject, MAX_RETRIES, Receiver, Sender, Violation};
use transfer_proto::wire::ChunkRef;
use transfer_proto::wire::{
    self, Control, Data, MAX_CONTROL_LEN, MAX_DATA_LEN, MAX_DELTA_BASES, OFFER_MAX_CHUNKS, OfferedObject, Progress,
    Selection, WireError, codes,
};

/// Offers sent ahead of their answers: enough to hide a round trip behind the lookups.
const OFFER_WINDOW: usize = 4;
/// The receiver makes received chunks durable at least this often...
const FLUSH_INTERVAL: Duration = Duration::from_millis(250);
/// ...or after this many bytes, which bounds what a crash makes it fetch again.
const FLUSH_BYTES: u64 = 16 << 20;
/// A receiver holding this many offered objects (or out of room for more) commits those
/// whose chunks are all in, as one group, at its next flush: a long transfer lands group
/// by group.
const GROUP_OBJECTS: usize = 4096;
/// A receiver holding this many offered objects, or chunk references in them, reads no
/// more offers until some are committed: what a sender can make it hold is bounded.
const MAX_HELD_OBJECTS: usize = 65_536;
const MAX_HELD_REFS: usize = 1 << 20;
/// Bytes of small objects queued for the data streams at most: bounds the sender's memory
/// however many small objects a transfer holds.
const MAX_QUEUED_INLINE_BYTES: usize = 32 << 20;
/// Objects listed per store page on the sending side.
const LIST_PAGE: usize = 1000;

/// Why a transfer stopped.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// the peer broke the protocol
    #[error(transparent)]
    Violation(#[from] Violation),
    /// a frame could not be read
    #[error(transparent)]
    Wire(#[from] WireError),
    /// the peer ended the transfer
    #[error("peer aborted the transfer (code {code:#x}): {reason}")]
    Aborted {
        /// its code
        code: u32,
        /// its reason
        reason: String,
    },
    /// the peer will not take part (its bucket is missing or not shared with us)
    #[error("refused by the peer: {0}")]
    RefusedByPeer(String),
    /// the connection failed (retried by the caller)
    #[error("connection: {0}")]
    Connection(#[from] ConnectionFailure),
    /// the local store failed
    #[error("store: {0}")]
    Store(#[from] store::StoreError),
    /// cancelled here
    #[error("cancelled")]
    Cancelled,
    /// a local failure that is not the peer's fault
    #[error(transparent)]
    Local(#[from] LocalFailure),
}

/// How the connection to a peer failed: all of these are retried.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionFailure {
    /// the connection was lost or refused
    #[error(transparent)]
    Lost(#[from] quinn::ConnectionError),
    /// writing to a stream failed
    #[error(transparent)]
    Write(#[from] quinn::WriteError),
    /// reading from a stream failed
    #[error(transparent)]
    Read(#[from] quinn::ReadError),
    /// dialling the peer failed
    #[error(transparent)]
    Connect(#[from] federation::FederationError),
    /// the peer did not complete the handshake in time
    #[error("{peer} did not answer within {after:?}")]
    Timeout {
        /// the peer
        peer: String,
        /// how long we waited
        after: Duration,
    },
    /// the peer closed a stream before the protocol ended it: what happened
    #[error("{0}")]
    Closed(&'static str),
    /// the peer runs as many of our transfers as it takes at once
    #[error("peer busy: {0}")]
    PeerBusy(String),
}

/// A failure here that is not the peer's doing.
#[derive(Debug, thiserror::Error)]
pub enum LocalFailure {
    /// a chunk the transfer offered is no longer in the store
    #[error("chunk {0} is no longer held here")]
    ChunkGone(ChunkId),
    /// reading a chunk the receiver asked for again found it corrupt (now quarantined)
    #[error("chunk {id} is corrupt at the source: {source}")]
    CorruptAtSource {
        /// the chunk
        id: ChunkId,
        /// what the read found
        source: store::StoreError,
    },
    /// a chunk kept failing verification at the receiver
    #[error("chunk {id} failed verification {tries} times: {reason}")]
    Unverifiable {
        /// the chunk
        id: ChunkId,
        /// attempts made
        tries: u8,
        /// the last failure
        reason: String,
    },
    /// coding a delta failed
    #[error("delta encoding: {0}")]
    Delta(#[source] std::io::Error),
    /// a task of ours panicked or was cancelled
    #[error("{task}: {source}")]
    Task {
        /// which task
        task: &'static str,
        /// how it ended
        source: tokio::task::JoinError,
    },
    /// a worker of this transfer stopped without reporting why
    #[error("{0}")]
    WorkerEnded(&'static str),
    /// the destination key would pass S3's limit
    #[error("destination key of {0} bytes is too long")]
    KeyTooLong(usize),
    /// a transfer this site will not take part in: the reason, for the peer (sent as
    /// [`codes::REFUSED`])
    #[error("{0}")]
    Refused(String),
    /// a transfer this site cannot take now (sent as [`codes::BUSY`]: the peer retries)
    #[error("{0}")]
    Busy(String),
    /// the catalog could not answer or record a version
    #[error("catalog: {0}")]
    Catalog(String),
}

impl TransferError {
    /// Whether trying again later may succeed (a lost connection), as opposed to an error
    /// that would recur.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Connection(_))
    }

    /// Whether either end refused the transfer under its bucket policy.
    pub fn is_refusal(&self) -> bool {
        matches!(self, Self::RefusedByPeer(_) | Self::Local(LocalFailure::Refused(_)))
    }

    fn code(&self) -> u32 {
        match self {
            Self::Violation(_) => codes::PROTOCOL,
            Self::Wire(e) => e.code(),
            Self::Cancelled => codes::CANCELLED,
            Self::Local(LocalFailure::Refused(_)) => codes::REFUSED,
            Self::Local(LocalFailure::Busy(_)) => codes::BUSY,
            _ => codes::FAILED,
        }
    }
}

fn conn_err(e: impl Into<ConnectionFailure>) -> TransferError {
    TransferError::Connection(e.into())
}

/// What both sides of a running transfer share with the daemon.
#[derive(Clone)]
pub struct Context {
    /// the local store
    pub store: Arc<Store>,
    /// data streams the sender opens
    pub streams: usize,
    /// live counters, read by the status API
    pub progress: Arc<parking_lot::Mutex<Progress>>,
    /// set to true to cancel
    pub cancel: watch::Receiver<bool>,
    /// optional cap on the data rate
    pub rate: Option<Arc<RateLimiter>>,
}

/// The connections of one transfer attempt: the one carrying the control stream and those
/// joined to it later ([`Control::Join`]). The sender spreads its data streams over all of
/// them; the receiver reads data streams from all of them.
pub struct Links {
    /// the connection of the control stream
    pub first: Connection,
    /// connections the opener gives the transfer in all, this one included
    pub expected: usize,
    /// the others, as they join
    pub joined: mpsc::UnboundedReceiver<Connection>,
}

impl Links {
    /// Data streams per connection for a sender that opens `streams` in all.
    fn streams_each(&self, streams: usize) -> usize {
        streams.div_ceil(self.expected.max(1)).max(1)
    }
}

/// The delta bases a receiver suggested for each chunk it asked for: a delta is decoded
/// only against those, so a sender cannot make it read other chunks.
type Suggested = Arc<parking_lot::Mutex<delta::SuggestedBases>>;

/// Most plain bytes of bases a sender reads for one delta.
const MAX_DELTA_PREFIX_BYTES: usize = 4 << 20;

/// Reads one frame; `Ok(None)` at a clean end of stream between frames.
pub async fn read_frame(recv: &mut RecvStream, max: usize) -> Result<Option<Bytes>, TransferError> {
    let mut len = [0u8; 4];
    match recv.read_exact(&mut len).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(quinn::ReadExactError::FinishedEarly(_)) => {
            return Err(WireError::Malformed("stream ends inside a frame length".into()).into());
        }
        Err(quinn::ReadExactError::ReadError(e)) => return Err(conn_err(e)),
    }
    let len = wire::check_len(u32::from_le_bytes(len), max)?;
    // Memory follows the bytes that came, not the length announced: a peer announcing
    // large frames on many streams and sending little costs little.
    let mut body = bytes::BytesMut::with_capacity(len.min(FRAME_FIRST_ALLOCATION));
    while body.len() < len {
        match recv.read_chunk(len - body.len(), true).await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk.bytes),
            Ok(None) => return Err(WireError::Malformed("stream ends inside a frame".into()).into()),
            Err(e) => return Err(conn_err(e)),
        }
    }
    Ok(Some(body.freeze()))
}

/// What a frame's buffer starts at, before its bytes come.
const FRAME_FIRST_ALLOCATION: usize = 64 << 10;

/// The control stream of a transfer.
pub struct ControlStream {
    send: SendStream,
    incoming: mpsc::Receiver<Result<Control, TransferError>>,
}

impl ControlStream {
    /// Wraps an open bidirectional stream; a task reads and decodes its frames.
    pub fn new(send: SendStream, mut recv: RecvStream) -> Self {
        let (tx, incoming) = mpsc::channel(16);
        tokio::spawn(async move {
            loop {
                let msg = match read_frame(&mut recv, MAX_CONTROL_LEN).await {
                    Ok(Some(body)) => wire::decode_control(&body).map_err(TransferError::from),
                    Ok(None) => Err(conn_err(ConnectionFailure::Closed("control stream closed by the peer"))),
                    Err(e) => Err(e),
                };
                let failed = msg.is_err();
                if let Err(TransferError::Wire(e)) = &msg {
                    let _ = recv.stop(VarInt::from_u32(e.code()));
                }
                if tx.send(msg).await.is_err() || failed {
                    return;
                }
            }
        });
        Self { send, incoming }
    }

    /// Sends one message.
    pub async fn send(&mut self, msg: &Control) -> Result<(), TransferError> {
        self.send.write_all(&wire::encode_control(msg)).await.map_err(conn_err)
    }

    /// The next message; an `Abort` from the peer becomes an error.
    pub async fn recv(&mut self) -> Result<Control, TransferError> {
        match self.incoming.recv().await {
            Some(Ok(Control::Abort { code: codes::REFUSED, reason })) => Err(TransferError::RefusedByPeer(reason)),
            Some(Ok(Control::Abort { code: codes::BUSY, reason })) => {
                Err(TransferError::Connection(ConnectionFailure::PeerBusy(reason)))
            }
            Some(Ok(Control::Abort { code, reason })) => Err(TransferError::Aborted { code, reason }),
            Some(other) => other,
            None => Err(conn_err(ConnectionFailure::Closed("control stream reader ended"))),
        }
    }

    /// Tells the peer why the transfer ends here.
    pub async fn abort(&mut self, error: &TransferError) {
        if matches!(
            error,
            TransferError::Aborted { .. } | TransferError::RefusedByPeer(_) | TransferError::Connection(_)
        ) {
            return;
        }
        let msg = Control::Abort { code: error.code(), reason: error.to_string() };
        let _ = tokio::time::timeout(Duration::from_secs(2), self.send(&msg)).await;
        let _ = self.send.finish();
    }

    /// Ends our side cleanly.
    pub fn finish(&mut self) {
        let _ = self.send.finish();
    }
}

/// A shared token bucket for a data rate cap.
#[derive(Debug)]
pub struct RateLimiter {
    bytes_per_sec: f64,
    state: tokio::sync::Mutex<(f64, Instant)>,
}

impl RateLimiter {
    /// A cap of `bytes_per_sec`, with a burst of 100 ms worth of bytes.
    pub fn new(bytes_per_sec: u64) -> Self {
        Self { bytes_per_sec: bytes_per_sec.max(1) as f64, state: tokio::sync::Mutex::new((0.0, Instant::now())) }
    }

    /// Waits until `n` bytes may be sent.
    pub async fn acquire(&self, n: usize) {
        let mut state = self.state.lock().await;
        let burst = self.bytes_per_sec / 10.0;
        let now = Instant::now();
        state.0 = (state.0 + now.duration_since(state.1).as_secs_f64() * self.bytes_per_sec).min(burst);
        state.1 = now;
        state.0 -= n as f64;
        if state.0 < 0.0 {
            // Sleep holding the lock: the other streams queue behind, so the rate is shared.
            tokio::time::sleep(Duration::from_secs_f64(-state.0 / self.bytes_per_sec)).await;
        }
    }
}

// ---------------------------------------------------------------- sending side

/// One chunk to put on a data stream.
struct SendJob {
    id: ChunkId,
    plain_len: u32,
    /// the receiver's suggested delta bases
    bases: Vec<ChunkId>,
    /// an inline object's bytes (they are in no pack)
    inline: Option<Bytes>,
}

/// What a data stream worker reports.
enum Sent {
    Chunk { plain_len: u32, wire: u64, delta: bool, inline_len: usize },
    Failed(TransferError),
}

/// What a sender sends.
#[derive(Clone)]
pub enum Source {
    /// the objects of a bucket under a prefix
    Objects(Selection),
    /// the files of a dataset version held here
    Version {
        /// its id
        id: [u8; 32],
        /// the catalog: who may still hold it
        book: Arc<dyn VersionBook>,
    },
}

/// Where a receiver lands what arrives.
#[derive(Clone)]
pub enum Dest {
    /// objects of a bucket under a prefix
    Objects(Selection),
    /// a dataset version, recorded by the catalog
    Version {
        /// its id
        id: [u8; 32],
        /// the catalog
        book: Arc<dyn VersionBook>,
    },
}

impl From<VersionRefusal> for TransferError {
    fn from(refusal: VersionRefusal) -> Self {
        match refusal {
            VersionRefusal::Refused(reason) => LocalFailure::Refused(reason).into(),
            VersionRefusal::NotYet(reason) => LocalFailure::Busy(reason).into(),
            VersionRefusal::Failed(reason) => LocalFailure::Catalog(reason).into(),
        }
    }
}

/// Walks the source in key order and cuts it into offers.
struct Manifest {
    store: Arc<Store>,
    listing: Listing,
    queue: std::collections::VecDeque<SourceObject>,
    cutter: OfferCutter,
}

/// Where the objects to offer come from.
enum Listing {
    /// pages of a bucket listing, after a key
    Bucket { source: Selection, after: String, done: bool },
    /// a version's files, all known (and their chunks claimed) from the start
    Files,
}

impl Manifest {
    fn new(store: Arc<Store>, source: Selection) -> Self {
        let listing = Listing::Bucket { source, after: String::new(), done: false };
        Self { store, listing, queue: Default::default(), cutter: OfferCutter::new() }
    }

    /// The files of a version, whose chunks are claimed in `pin` (they must all be held).
    fn of_files(store: Arc<Store>, files: Vec<SnapshotFile>, pin: &mut TransferPin) -> Result<Self, TransferError> {
        let ids: Vec<ChunkId> = files.iter().flat_map(|f| f.chunks.iter().map(|c| c.id)).collect();
        if let Some((id, _)) = ids.iter().zip(store.hold_chunks(pin, &ids)?).find(|(_, held)| !held) {
            return Err(LocalFailure::ChunkGone(*id).into());
        }
        let queue = files.into_iter().map(file_object).collect();
        Ok(Self { store, listing: Listing::Files, queue, cutter: OfferCutter::new() })
    }

    /// The next object of the source (its chunks claimed in `pin`).
    fn next_object(&mut self, pin: &mut TransferPin) -> Result<Option<SourceObject>, TransferError> {
        if let Listing::Bucket { source, after, done } = &mut self.listing
            && self.queue.is_empty()
            && !*done
        {
            let page = self.store.export_page(pin, &source.bucket, &source.prefix, after, LIST_PAGE)?;
            match page.last {
                Some(last) => *after = last,
                None => *done = true,
            }
            let prefix_len = source.prefix.len();
            self.queue.extend(page.objects.into_iter().map(|(key, o)| source_object(&key[prefix_len..], o)));
        }
        Ok(self.queue.pop_front())
    }

    /// The next offer; empty when done.
    fn next_offer(&mut self, pin: &mut TransferPin) -> Result<Offer, TransferError> {
        let mut cutter = std::mem::take(&mut self.cutter);
        let offer = cutter.next_offer(|| self.next_object(pin));
        self.cutter = cutter;
        offer
    }
}

/// A version's file as the protocol offers it.
fn file_object(file: SnapshotFile) -> SourceObject {
    let head = file.head;
    SourceObject {
        head: OfferedObject {
            key: file.path,
            size: head.size,
            etag: head.etag,
            checksums: head.checksums,
            mtime_ms: head.mtime_ms,
            meta: postcard::to_allocvec(&head.meta).expect("postcard into a Vec"),
            part_sizes: head.part_sizes,
            first_chunk: 0,
            chunks: Vec::new(),
            last: false,
        },
        chunks: file.chunks.iter().map(to_wire).collect(),
        inline: None,
    }
}

/// An exported object as the protocol offers it.
fn source_object(relative_key: &str, exported: ExportedObject) -> SourceObject {
    let r = exported.record.head;
    SourceObject {
        head: OfferedObject {
            key: relative_key.to_owned(),
            size: r.size,
            etag: r.etag,
            checksums: r.checksums,
            mtime_ms: r.mtime_ms,
            meta: postcard::to_allocvec(&r.meta).expect("postcard into a Vec"),
            part_sizes: r.part_sizes,
            first_chunk: 0,
            chunks: Vec::new(),
            last: false,
        },
        chunks: exported.chunks.iter().map(to_wire).collect(),
        inline: exported.inline,
    }
}

/// How often a sender checks again that the sites it sends for may still read.
const SHARES_RECHECK: Duration = Duration::from_secs(1);

/// Runs the sending side over `links` once the transfer is open. `readers` are the sites
/// whose right to read the source bucket the transfer stands on (the peer that pulls, or
/// both sites of a copy one of them asked for; none for a push this site decided): it is
/// checked again every second, so that unsharing the bucket stops a running
/// transfer.
pub async fn send(
    links: Links,
    mut control: ControlStream,
    ctx: Context,
    source: Source,
    readers: &[String],
) -> Result<Progress, TransferError> {
    let result = send_inner(links, &mut control, &ctx, source, readers).await;
    if let Err(e) = &result {
        control.abort(e).await;
    }
    result
}

async fn send_inner(
    mut links: Links,
    control: &mut ControlStream,
    ctx: &Context,
    source: Source,
    readers: &[String],
) -> Result<Progress, TransferError> {
    let store = ctx.store.clone();
    let mut session = Sender::new(OFFER_WINDOW);
    let mut pin = store.transfer_pin();
    let (mut manifest, version_chunks) = match &source {
        Source::Objects(selection) => (Manifest::new(store.clone(), selection.clone()), HashSet::new()),
        Source::Version { id, book } => {
            let files = book.files(id)?;
            let chunks = files.iter().flat_map(|f| f.chunks.iter().map(|c| c.id)).collect();
            (Manifest::of_files(store.clone(), files, &mut pin)?, chunks)
        }
    };
    // A bucket's objects are read with its name and prefix; a version has no inline files.
    let source_prefix = match &source {
        Source::Objects(selection) => selection.prefix.clone(),
        Source::Version { .. } => String::new(),
    };
    // Inline bytes of the offers awaiting an answer, by offer.
    let mut inline_by_offer: HashMap<u64, HashMap<ChunkId, Bytes>> = HashMap::new();
    // Which object an inline pseudo-chunk came from, for a retry.
    let mut inline_keys: HashMap<ChunkId, String> = HashMap::new();
    let (job_tx, job_rx) = mpsc::unbounded_channel::<SendJob>();
    let job_rx = Arc::new(tokio::sync::Mutex::new(job_rx));
    let (sent_tx, mut sent_rx) = mpsc::channel::<Sent>(256);
    let mut workers = tokio::task::JoinSet::new();
    let streams_each = links.streams_each(ctx.streams);
    // Data streams on a connection, each taking chunks off the one queue.
    let open_streams = async |conn: &Connection, workers: &mut tokio::task::JoinSet<()>| {
        for _ in 0..streams_each {
            let stream = conn.open_uni().await.map_err(conn_err)?;
            workers.spawn(data_worker(stream, store.clone(), job_rx.clone(), sent_tx.clone(), ctx.rate.clone()));
        }
        Ok::<_, TransferError>(())
    };
    open_streams(&links.first, &mut workers).await?;
    session.connection_added();
    // Connections that joined already (the opener's, all of them); others come later.
    while let Ok(conn) = links.joined.try_recv() {
        open_streams(&conn, &mut workers).await?;
        session.connection_added();
    }
    let mut cancel = ctx.cancel.clone();
    let mut shares_tick = tokio::time::interval(SHARES_RECHECK);
    let mut queued = 0u64;
    let mut queued_inline = 0usize;
    loop {
        while session.may_offer() {
            let Offer { objects, inline } = manifest.next_offer(&mut pin)?;
            if objects.is_empty() {
                control.send(&session.offer_done()).await?;
                break;
            }
            for o in &objects {
                for c in &o.chunks {
                    if inline.contains_key(&c.id) {
                        inline_keys.insert(c.id, format!("{source_prefix}{}", o.key));
                    }
                }
            }
            let msg = session.offer(objects);
            if let Control::Offer { seq, .. } = &msg {
                inline_by_offer.insert(*seq, inline);
            }
            control.send(&msg).await?;
            *ctx.progress.lock() = session.progress().clone();
        }
        tokio::select! {
            // Small objects' bytes wait in the queue: take no more answers while it is full.
            msg = control.recv(), if queued_inline < MAX_QUEUED_INLINE_BYTES => match msg? {
                Control::Need { seq, wants } => {
                    let inline = inline_by_offer.remove(&seq).unwrap_or_default();
                    for (want, plain_len) in session.on_need(seq, wants)? {
                        queued += 1;
                        let inline = inline.get(&want.id).cloned();
                        queued_inline += inline.as_ref().map_or(0, Bytes::len);
                        let bases = bases_in_source(&store, &source, &version_chunks, want.bases)?;
                        let _ = job_tx.send(SendJob { id: want.id, plain_len, bases, inline });
                    }
                }
                Control::Retry { ids } => {
                    for (id, plain_len) in session.on_retry(ids)? {
                        let inline = match (inline_keys.get(&id), &source) {
                            (Some(key), Source::Objects(selection)) => {
                                store.export_object(&mut pin, &selection.bucket, key)?.inline
                            }
                            _ => {
                                // The receiver found our copy bad: check it, so a corrupt
                                // chunk here is quarantined and named, not sent forever.
                                match store.read_chunk_by_id(&id).await {
                                    Ok(Some(_)) => None,
                                    Ok(None) => return Err(LocalFailure::ChunkGone(id).into()),
                                    Err(source) => return Err(LocalFailure::CorruptAtSource { id, source }.into()),
                                }
                            }
                        };
                        queued += 1;
                        queued_inline += inline.as_ref().map_or(0, Bytes::len);
                        let _ = job_tx.send(SendJob { id, plain_len, bases: Vec::new(), inline });
                    }
                }
                Control::Committed { .. } => break,
                other => return Err(Violation(format!("unexpected message from the receiver: {}", name(&other))).into()),
            },
            Some(conn) = links.joined.recv() => {
                open_streams(&conn, &mut workers).await?;
                session.connection_added();
            }
            // The workers and readers report their own failures; the channel never closes first.
            Some(sent) = sent_rx.recv() => match sent {
                Sent::Chunk { plain_len, wire, delta, inline_len } => {
                    queued_inline -= inline_len;
                    session.sent(plain_len, wire, delta);
                    *ctx.progress.lock() = session.progress().clone();
                }
                Sent::Failed(e) => return Err(e),
            },
            _ = shares_tick.tick(), if !readers.is_empty() => {
                for reader in readers {
                    match &source {
                        Source::Objects(selection) => {
                            refuse_unless_shared(&store, &selection.bucket, reader, SiteAccess::Read)?;
                        }
                        Source::Version { id, book } => book.may_hold(id, reader)?,
                    }
                }
            }
            _ = cancel.changed() => return Err(TransferError::Cancelled),
        }
    }
    tracing::debug!(queued, "receiver committed");
    drop(job_tx);
    while workers.join_next().await.is_some() {}
    control.finish();
    Ok(session.progress().clone())
}

/// One data stream: takes chunks off the shared queue and writes them as frames.
async fn data_worker(
    mut stream: SendStream,
    store: Arc<Store>,
    jobs: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<SendJob>>>,
    sent: mpsc::Sender<Sent>,
    rate: Option<Arc<RateLimiter>>,
) {
    loop {
        let job = jobs.lock().await.recv().await;
        let Some(job) = job else { break };
        let result = async {
            let (bases, frame) = encode_chunk(&store, &job).await?;
            let header = wire::data_header(&bases, frame.len());
            let wire_len = (header.len() + frame.len()) as u64;
            if let Some(rate) = &rate {
                rate.acquire(wire_len as usize).await;
            }
            stream.write_all_chunks(&mut [header, frame]).await.map_err(conn_err)?;
            let inline_len = job.inline.as_ref().map_or(0, Bytes::len);
            Ok::<_, TransferError>(Sent::Chunk {
                plain_len: job.plain_len,
                wire: wire_len,
                delta: !bases.is_empty(),
                inline_len,
            })
        }
        .await;
        let failed = result.is_err();
        if sent.send(result.unwrap_or_else(Sent::Failed)).await.is_err() || failed {
            return;
        }
    }
    let _ = stream.finish();
    let _ = stream.stopped().await;
}

/// Of the delta bases a receiver suggested, those it may hear of: chunks of the bucket
/// being sent, or of nothing (see [`Store::chunks_usable_as_bases`]); for a version,
/// its own chunks (`version_chunks`).
fn bases_in_source(
    store: &Store,
    source: &Source,
    version_chunks: &HashSet<ChunkId>,
    bases: Vec<ChunkId>,
) -> Result<Vec<ChunkId>, TransferError> {
    if bases.is_empty() {
        return Ok(bases);
    }
    let usable = match source {
        Source::Objects(selection) => store.chunks_usable_as_bases(&selection.bucket, &bases)?,
        Source::Version { .. } => bases.iter().map(|id| version_chunks.contains(id)).collect(),
    };
    Ok(bases.into_iter().zip(usable).filter(|(_, u)| *u).map(|(id, _)| id).collect())
}

/// The frame for one job and the bases it is coded against: the stored frame (no
/// bases), or a delta against the suggested bases held here when that is smaller.
async fn encode_chunk(store: &Arc<Store>, job: &SendJob) -> Result<(Vec<ChunkId>, Bytes), TransferError> {
    if let Some(data) = &job.inline {
        return Ok((Vec::new(), frame::encode(&job.id, Codec::Raw, data.len() as u32, data)));
    }
    let stored = store.read_frame(&job.id).await?.ok_or(LocalFailure::ChunkGone(job.id))?;
    // A base we do not hold (or cannot read) is left out; with none, the chunk goes whole.
    let mut bases = Vec::with_capacity(job.bases.len());
    let mut base_bytes = Vec::with_capacity(job.bases.len());
    let mut prefix_len = 0;
    for id in job.bases.iter().take(MAX_DELTA_BASES) {
        if prefix_len >= MAX_DELTA_PREFIX_BYTES {
            break;
        }
        if let Ok(Some(bytes)) = store.read_chunk_by_id(id).await {
            prefix_len += bytes.len();
            bases.push(*id);
            base_bytes.push(bytes);
        }
    }
    if bases.is_empty() {
        return Ok((bases, stored));
    }
    let plain = store.read_chunk_by_id(&job.id).await?.ok_or(LocalFailure::ChunkGone(job.id))?;
    let coded = tokio::task::spawn_blocking(move || {
        let prefix: Vec<&[u8]> = base_bytes.iter().map(|b| &b[..]).collect();
        delta::encode(&prefix, &plain)
    })
    .await
    .map_err(|source| LocalFailure::Task { task: "delta encoding task", source })?
    .map_err(LocalFailure::Delta)?;
    if 1 + 32 * bases.len() + coded.len() >= stored.len() {
        return Ok((Vec::new(), stored));
    }
    Ok((bases, frame::encode(&job.id, Codec::Zstd, job.plain_len, &coded)))
}

fn name(msg: &Control) -> &'static str {
    match msg {
        Control::Open(_) => "Open",
        Control::Accepted => "Accepted",
        Control::Join { .. } => "Join",
        Control::Offer { .. } => "Offer",
        Control::Need { .. } => "Need",
        Control::Retry { .. } => "Retry",
        Control::OfferDone { .. } => "OfferDone",
        Control::Progress(_) => "Progress",
        Control::Committed { .. } => "Committed",
        Control::Wanted { .. } => "Wanted",
        Control::Holding { .. } => "Holding",
        Control::Abort { .. } => "Abort",
    }
}

// ---------------------------------------------------------------- receiving side

/// At most one group of received chunks on its way to durability, in the background, so
/// that a pack's fsync does not stop the streams (flow control would stall the sender).
#[derive(Default)]
struct Flushing(Option<tokio::task::JoinHandle<Result<Vec<ChunkId>, store::StoreError>>>);

impl Flushing {
    /// Waits for the group in flight, then sends the sink's open one on its way.
    async fn start(&mut self, sink: &mut store::transfer::ChunkSink) -> Result<(), TransferError> {
        self.wait().await?;
        self.0 = sink.start_flush().map(|pending| tokio::spawn(pending.finish()));
        Ok(())
    }

    /// Waits until every group started is durable.
    async fn wait(&mut self) -> Result<(), TransferError> {
        if let Some(task) = self.0.take() {
            task.await.map_err(|source| LocalFailure::Task { task: "flush task", source })??;
        }
        Ok(())
    }
}

/// A data frame checked by a stream reader.
enum Arrived {
    Good { id: ChunkId, frame: Bytes, plain_len: u32, wire: u64, delta: bool },
    Bad { id: ChunkId, wire: u64, reason: String },
    Failed(TransferError),
}

/// The site a transfer's data comes from, and what the receiving site lets it do there.
#[derive(Debug, Clone)]
pub struct SendingSite {
    /// its name in the federation
    pub name: String,
    /// it opened the transfer (a push): the destination bucket must be shared with it
    /// for writing, checked when it opened and again at commit
    pub pushes: bool,
    /// the site that asked it for this push, held to the same rights
    pub delegated_by: Option<String>,
}

impl SendingSite {
    /// Refuses unless the destination bucket is still shared for writing with the site
    /// that pushes and the one that asked it to.
    fn may_still_write(&self, store: &Store, bucket: &str) -> Result<(), TransferError> {
        if !self.pushes {
            return Ok(());
        }
        refuse_unless_shared(store, bucket, &self.name, SiteAccess::Write)?;
        match &self.delegated_by {
            Some(asker) if *asker != self.name => refuse_unless_shared(store, bucket, asker, SiteAccess::Write),
            _ => Ok(()),
        }
    }
}

/// Runs the receiving side over `links` once the transfer is open; commits into `dest`.
pub async fn receive(
    links: Links,
    mut control: ControlStream,
    ctx: Context,
    transfer: TransferId,
    dest: Dest,
    from: &SendingSite,
) -> Result<Progress, TransferError> {
    let result = receive_inner(links, &mut control, &ctx, transfer, &dest, from).await;
    if let Err(e) = &result {
        control.abort(e).await;
    }
    result
}

async fn receive_inner(
    mut links: Links,
    control: &mut ControlStream,
    ctx: &Context,
    transfer: TransferId,
    dest: &Dest,
    from: &SendingSite,
) -> Result<Progress, TransferError> {
    let store = ctx.store.clone();
    // Delta bases name the chunks of the objects at the destination: only a sender that
    // may read the destination bucket hears them. A version's sender is told which chunks
    // of the namespace's other versions are here (it may hold them too), no more.
    let (suggest_bases, known) = match dest {
        Dest::Objects(selection) => (store.site_may(&selection.bucket, &from.name, SiteAccess::Read)?, HashSet::new()),
        Dest::Version { id, book } => (false, book.known_chunks(id)?),
    };
    // A sender may offer no more of a version than its publications say it has.
    let most = match dest {
        Dest::Objects(_) => None,
        Dest::Version { id, book } => Some(book.size(id)?),
    };
    // A version's files, as they complete.
    let mut files: Vec<SnapshotFile> = Vec::new();
    let mut session = Receiver::new();
    let mut pin = store.transfer_pin();
    let mut sink = store.chunk_sink(transfer);
    let (arrived_tx, mut arrived_rx) = mpsc::channel::<Arrived>(64);
    let suggested: Suggested = Arc::default();
    // Reads every data stream a connection brings, until the transfer ends.
    let accept_streams = |conn: Connection| {
        let store = store.clone();
        let arrived_tx = arrived_tx.clone();
        let suggested = suggested.clone();
        AbortOnDrop(tokio::spawn(async move {
            while let Ok(stream) = conn.accept_uni().await {
                tokio::spawn(read_data_stream(stream, store.clone(), suggested.clone(), arrived_tx.clone()));
            }
        }))
    };
    let mut accepting = vec![accept_streams(links.first.clone())];
    session.connection_added();
    let mut flush_tick = tokio::time::interval(FLUSH_INTERVAL);
    // The group being made durable (pack fsync, index commit) while the next one fills.
    let mut flushing = Flushing::default();
    // On any error, the group in flight still lands before this returns: the caller may
    // release the transfer next, and a group committed after that would hold its chunks
    // for a transfer that no longer exists.
    let received = async {
        let mut cancel = ctx.cancel.clone();
        while !session.is_complete() {
            // A sender cannot make this side hold more than so many objects: past that,
            // offers wait until some are committed (but an object begun must end).
            let (held_objects, held_refs) = session.holding();
            let room = session.in_object() || (held_objects < MAX_HELD_OBJECTS && held_refs < MAX_HELD_REFS);
            tokio::select! {
                Some(conn) = links.joined.recv() => {
                    accepting.push(accept_streams(conn));
                    session.connection_added();
                }
                msg = control.recv(), if room => match msg? {
                    Control::Offer { seq, objects } => {
                        let before = session.progress().objects;
                        let lookup = session.on_offer(seq, objects)?;
                        if let Some((files, bytes)) = most {
                            let offered = session.progress();
                            if offered.objects > files || offered.bytes_total > bytes {
                                return Err(Violation(format!(
                                    "the sender offers {} files of {} bytes; the version has {files} of {bytes}",
                                    offered.objects, offered.bytes_total
                                ))
                                .into());
                            }
                        }
                        // New objects are checked now, not after all their data came.
                        let new = (session.progress().objects - before) as usize;
                        if let Dest::Objects(selection) = dest {
                            for o in &session.objects()[session.objects().len() - new..] {
                                destination_meta(selection, o)?;
                            }
                        }
                        let ids: Vec<ChunkId> = lookup.iter().map(|c| c.id).collect();
                        // Only what the sender may read here is said to be held (the
                        // destination included, for a pull, when it is shared with the sender).
                        let mut held = store.hold_chunks_for(&mut pin, &transfer, &from.name, &ids)?;
                        let known_here: Vec<usize> = (0..ids.len()).filter(|&i| !held[i] && known.contains(&ids[i])).collect();
                        if !known_here.is_empty() {
                            let known_ids: Vec<ChunkId> = known_here.iter().map(|&i| ids[i]).collect();
                            for (i, found) in known_here.into_iter().zip(store.hold_chunks(&mut pin, &known_ids)?) {
                                held[i] = found;
                            }
                        }
                        let missing: Vec<ChunkRef> = lookup.iter().zip(held).filter(|(_, h)| !h).map(|(c, _)| *c).collect();
                        let mut bases = if let (true, Dest::Objects(selection)) = (suggest_bases, dest) {
                            choose_bases(&store, &mut pin, selection, session.objects(), &missing)?
                        } else {
                            HashMap::new()
                        };
                        {
                            let mut suggested = suggested.lock();
                            for (id, ids) in &bases {
                                suggested.suggest(*id, ids.clone());
                            }
                        }
                        let need =
                            session.need(seq, missing.into_iter().map(|c| (c, bases.remove(&c.id).unwrap_or_default())).collect());
                        control.send(&need).await?;
                    }
                    Control::OfferDone { offers } => session.on_offer_done(offers)?,
                    other => return Err(Violation(format!("unexpected message from the sender: {}", name(&other))).into()),
                },
                // The workers and readers report their own failures; the channel never closes first.
                Some(arrived) = arrived_rx.recv() => match arrived {
                    Arrived::Good { id, frame, plain_len, wire, delta } => {
                        session.on_chunk(&id, plain_len, wire, delta)?;
                        suggested.lock().settled(&id);
                        sink.append(id, frame, plain_len).await?;
                        if sink.unflushed_bytes() >= FLUSH_BYTES {
                            flushing.start(&mut sink).await?;
                        }
                    }
                    Arrived::Bad { id, wire, reason } => {
                        tracing::warn!(chunk = %id, %reason, "received chunk failed verification");
                        match session.on_bad_chunk(&id, wire)? {
                            Some(retry) => control.send(&retry).await?,
                            None => return Err(LocalFailure::Unverifiable { id, tries: MAX_RETRIES + 1, reason }.into()),
                        }
                    }
                    Arrived::Failed(e) => return Err(e),
                },
                _ = flush_tick.tick() => {
                    // Past a group's worth of objects, or out of room for more (a few
                    // objects of many chunks), the objects complete so far land.
                    if held_objects >= GROUP_OBJECTS || !room {
                        // Every chunk in so far made durable, the objects it completes land.
                        flushing.start(&mut sink).await?;
                        flushing.wait().await?;
                        let ready = session.take_ready();
                        match dest {
                            _ if ready.is_empty() => {}
                            Dest::Objects(selection) => {
                                from.may_still_write(&store, &selection.bucket)?;
                                store.commit_transfer_part(transfer, landing(selection, ready)?).await?;
                            }
                            // A version lands whole, at the end; its chunks stay the
                            // transfer's meanwhile.
                            Dest::Version { .. } => files.extend(ready.into_iter().map(version_file)),
                        }
                    } else if sink.unflushed_chunks() > 0 {
                        flushing.start(&mut sink).await?;
                    }
                }
                _ = cancel.changed() => return Err(TransferError::Cancelled),
            }
            *ctx.progress.lock() = session.progress().clone();
        }
        flushing.start(&mut sink).await
    }
    .await;
    let landed = flushing.wait().await;
    received?;
    landed?;
    let all_in = Instant::now();
    let count = session.progress().objects;
    let committing;
    match dest {
        Dest::Objects(selection) => {
            let objects = landing(selection, session.take_objects())?;
            // The bucket may have been unshared, or deleted and made again, while data came.
            from.may_still_write(&store, &selection.bucket)?;
            committing = Instant::now();
            store.commit_transfer(transfer, objects).await?;
        }
        Dest::Version { id, book } => {
            files.extend(session.take_objects().into_iter().map(version_file));
            committing = Instant::now();
            book.land(transfer, *id, files).await?;
        }
    }
    tracing::info!(
        objects = count,
        prepare_ms = (committing - all_in).as_millis() as u64,
        commit_ms = committing.elapsed().as_millis() as u64,
        "transfer committed"
    );
    control.send(&Control::Committed { objects: count }).await?;
    control.finish();
    // Let the sender read `Committed` before either side closes the connection: it
    // ends its side of the control stream once it has.
    let _ = tokio::time::timeout(Duration::from_secs(5), control.recv()).await;
    Ok(session.progress().clone())
}

/// Refuses, with the reason the peer is told, unless `bucket` here is shared with `site`
/// for `access`.
pub fn refuse_unless_shared(store: &Store, bucket: &str, site: &str, access: SiteAccess) -> Result<(), TransferError> {
    let verb = match access {
        SiteAccess::Read => "read",
        SiteAccess::Write => "write into",
    };
    match store.site_may(bucket, site, access) {
        Ok(true) => Ok(()),
        Ok(false) => Err(LocalFailure::Refused(format!(
            "{site} may not {verb} bucket {bucket}: its owner has not shared it with {site} for {access} \
             (`clusster bucket share {bucket} --site {site} --{access}` on the site holding it)",
            access = access.as_str()
        ))
        .into()),
        Err(e @ store::StoreError::NoSuchBucket(_)) => Err(LocalFailure::Refused(e.to_string()).into()),
        Err(e) => Err(e.into()),
    }
}

/// Offered objects as they land in `dest`.
fn landing(dest: &Selection, objects: Vec<IncomingObject>) -> Result<Vec<TransferredObject>, TransferError> {
    objects
        .into_iter()
        .map(|o| {
            let meta = destination_meta(dest, &o)?;
            Ok(TransferredObject {
                bucket: dest.bucket.clone(),
                key: if dest.prefix.is_empty() { o.head.key } else { format!("{}{}", dest.prefix, o.head.key) },
                head: ObjectHead {
                    size: o.head.size,
                    etag: o.head.etag,
                    checksums: o.head.checksums,
                    mtime_ms: o.head.mtime_ms,
                    meta,
                    part_sizes: o.head.part_sizes,
                },
                chunks: o.chunks.into_iter().map(|c| StoredChunk { id: c.id, len: c.len }).collect(),
            })
        })
        .collect()
}

/// A version's file as it came.
fn version_file(o: IncomingObject) -> SnapshotFile {
    SnapshotFile {
        path: o.head.key,
        head: ObjectHead {
            size: o.head.size,
            etag: o.head.etag,
            checksums: o.head.checksums,
            mtime_ms: o.head.mtime_ms,
            meta: store::ObjectMeta::default(),
            part_sizes: o.head.part_sizes,
        },
        chunks: o.chunks.into_iter().map(|c| StoredChunk { id: c.id, len: c.len }).collect(),
    }
}

/// An offered object's metadata, once its destination key is known to be valid.
fn destination_meta(dest: &Selection, o: &IncomingObject) -> Result<store::ObjectMeta, TransferError> {
    let key_len = dest.prefix.len() + o.head.key.len();
    if key_len > wire::MAX_KEY_LEN {
        return Err(LocalFailure::KeyTooLong(key_len).into());
    }
    Ok(postcard::from_bytes(&o.head.meta)
        .map_err(|e| Violation(format!("{:?}: undecodable metadata: {e}", o.head.key)))?)
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Delta bases for the missing chunks of the objects just offered: chunks of the object
/// currently at the same destination key (the rule is [`delta::bases_for_missing`]).
fn choose_bases(
    store: &Store,
    pin: &mut TransferPin,
    dest: &Selection,
    objects: &[IncomingObject],
    missing: &[ChunkRef],
) -> Result<HashMap<ChunkId, Vec<ChunkId>>, TransferError> {
    delta::bases_for_missing(
        objects,
        |o| &o.chunks[..],
        missing,
        |o| {
            let key = format!("{}{}", dest.prefix, o.head.key);
            match store.export_object(pin, &dest.bucket, &key) {
                Ok(old) if old.inline.is_none() => Ok(old.chunks.iter().map(to_wire).collect()),
                Ok(_) | Err(store::StoreError::NoSuchKey { .. }) => Ok(Vec::new()),
                Err(e) => Err(e.into()),
            }
        },
    )
}

fn to_wire(c: &StoredChunk) -> ChunkRef {
    ChunkRef { id: c.id, len: c.len }
}

/// Reads one data stream, checking each frame before handing it on.
async fn read_data_stream(mut stream: RecvStream, store: Arc<Store>, suggested: Suggested, out: mpsc::Sender<Arrived>) {
    loop {
        let body = match read_frame(&mut stream, MAX_DATA_LEN).await {
            Ok(Some(body)) => body,
            Ok(None) => return,
            Err(e) => {
                if let TransferError::Wire(w) = &e {
                    let _ = stream.stop(VarInt::from_u32(w.code()));
                }
                let _ = out.send(Arrived::Failed(e)).await;
                return;
            }
        };
        let wire = body.len() as u64 + 4;
        let arrived = match wire::decode_data(body) {
            Ok(data) => check_chunk(&store, &suggested, data, wire).await,
            Err(e) => {
                let _ = stream.stop(VarInt::from_u32(e.code()));
                Arrived::Failed(e.into())
            }
        };
        let failed = matches!(arrived, Arrived::Failed(_));
        if out.send(arrived).await.is_err() || failed {
            return;
        }
    }
}

/// Decodes and verifies a received chunk; returns the frame to store.
async fn check_chunk(store: &Arc<Store>, suggested: &Suggested, data: Data, wire: u64) -> Arrived {
    let (bases, raw) = match data {
        Data::Chunk(raw) => (Vec::new(), raw),
        Data::Delta { bases, frame } => (bases, frame),
    };
    let (header, payload) = match frame::decode(&raw) {
        Ok(decoded) => decoded,
        Err(e) => return Arrived::Failed(WireError::Malformed(format!("chunk frame: {e}")).into()),
    };
    let id = header.id;
    let bad = |reason: String| Arrived::Bad { id, wire, reason };
    if !bases.is_empty()
        && let Err(violation) = suggested.lock().check(&id, &bases)
    {
        return Arrived::Failed(violation.into());
    }
    let offload = store.offload();
    if bases.is_empty() {
        return match offload.run(frame::verify_job(&header, payload)).await {
            Ok(_) => Arrived::Good { id, frame: raw, plain_len: header.plain_len, wire, delta: false },
            Err(e) => bad(e.to_string()),
        };
    }
    let mut prefix = Vec::with_capacity(bases.len());
    for base in &bases {
        match store.read_chunk_by_id(base).await {
            Ok(Some(bytes)) => prefix.push(bytes),
            Ok(None) => return bad(format!("delta base {base} is not held here")),
            Err(e) => return bad(format!("delta base {base}: {e}")),
        }
    }
    let plain_len = header.plain_len;
    let decoded = tokio::task::spawn_blocking(move || {
        let prefix: Vec<&[u8]> = prefix.iter().map(|b| &b[..]).collect();
        delta::decode(&prefix, &payload, plain_len)
    });
    let plain = match decoded.await {
        Ok(Ok(plain)) => plain,
        Ok(Err(e)) => return bad(format!("delta does not decode: {e}")),
        Err(source) => return Arrived::Failed(LocalFailure::Task { task: "delta decoding task", source }.into()),
    };
    // Verify, and store it coded like any ingested chunk.
    let mut steps = vec![Step::Verify(id)];
    steps.extend(store.config().compress_step());
    match offload.run(Job::new(plain, steps)).await {
        Ok(out) => Arrived::Good {
            id,
            frame: frame::encode(&id, out.codec, plain_len, &out.data),
            plain_len,
            wire,
            delta: true,
        },
        Err(e) => bad(e.to_string()),
    }
}

// ---------------------------------------------------------------- repair

/// Serves a peer's repair: sends those of the asked chunks that an object of a bucket
/// shared with the peer for reading uses. Knowing a chunk's id is no right to its bytes
/// (a lying peer may have learnt the id without ever holding the content), and chunks
/// the peer may not read are answered as not held, so the answer tells nothing of them.
pub async fn serve_repair(
    conn: &Connection,
    mut control: ControlStream,
    ctx: Context,
    peer: &str,
    book: Option<&Arc<dyn VersionBook>>,
) -> Result<u64, TransferError> {
    let result = async {
        let ids = match control.recv().await? {
            Control::Wanted { ids } if ids.len() <= OFFER_MAX_CHUNKS => ids,
            other => {
                return Err(
                    Violation(format!("expected at most {OFFER_MAX_CHUNKS} wanted ids, got {}", name(&other))).into()
                );
            }
        };
        let store = ctx.store.clone();
        let mut readable = store.chunks_readable_by(peer, &ids)?;
        // A chunk of a version the peer may hold a copy of is the peer's to repair too.
        if let Some(book) = book {
            for (id, readable) in ids.iter().zip(readable.iter_mut()).filter(|(_, r)| !**r) {
                *readable = store.versions_using(id)?.iter().any(|v| book.may_hold(v, peer).is_ok());
            }
        }
        let ids: Vec<ChunkId> = ids.into_iter().zip(readable).filter(|(_, r)| *r).map(|(id, _)| id).collect();
        let mut pin = store.transfer_pin();
        let held: Vec<ChunkId> =
            ids.iter().zip(store.hold_chunks(&mut pin, &ids)?).filter(|(_, h)| *h).map(|(id, _)| *id).collect();
        control.send(&Control::Holding { ids: held.clone() }).await?;
        let (job_tx, job_rx) = mpsc::unbounded_channel::<SendJob>();
        let (sent_tx, mut sent_rx) = mpsc::channel::<Sent>(64);
        let stream = conn.open_uni().await.map_err(conn_err)?;
        // Finishes its stream once the queue is drained, and ends when the peer has read it.
        tokio::spawn(data_worker(stream, store, Arc::new(tokio::sync::Mutex::new(job_rx)), sent_tx, ctx.rate.clone()));
        for id in &held {
            let _ = job_tx.send(SendJob { id: *id, plain_len: 0, bases: Vec::new(), inline: None });
        }
        drop(job_tx);
        let mut sent = 0u64;
        while sent < held.len() as u64 {
            match sent_rx.recv().await {
                Some(Sent::Chunk { .. }) => sent += 1,
                Some(Sent::Failed(e)) => return Err(e),
                None => return Err(LocalFailure::WorkerEnded("repair stream ended early").into()),
            }
        }
        match control.recv().await? {
            Control::Committed { .. } => Ok(sent),
            other => Err(Violation(format!("expected Committed, got {}", name(&other))).into()),
        }
    }
    .await;
    if let Err(e) = &result {
        control.abort(e).await;
    }
    control.finish();
    result
}

/// Asks the peer for `ids` and keeps those it sends, each verified; returns the ids
/// repaired. Storing a chunk takes it out of quarantine.
pub async fn repair(
    conn: &Connection,
    mut control: ControlStream,
    ctx: Context,
    transfer: TransferId,
    ids: Vec<ChunkId>,
) -> Result<Vec<ChunkId>, TransferError> {
    let store = ctx.store.clone();
    let result = async {
        control.send(&Control::Wanted { ids: ids.clone() }).await?;
        let coming = match control.recv().await? {
            Control::Holding { ids: held } => held,
            other => return Err(Violation(format!("expected Holding, got {}", name(&other))).into()),
        };
        let asked: HashSet<ChunkId> = ids.into_iter().collect();
        let mut outstanding: HashSet<ChunkId> = coming.iter().copied().collect();
        if outstanding.iter().any(|id| !asked.contains(id)) {
            return Err(Violation("peer offers chunks that were not asked for".into()).into());
        }
        let mut sink = store.chunk_sink(transfer);
        let mut repaired = Vec::new();
        if !outstanding.is_empty() {
            let stream = conn.accept_uni().await.map_err(conn_err)?;
            let (tx, mut rx) = mpsc::channel::<Arrived>(16);
            // Repairs come whole: no delta bases are suggested, so none is accepted.
            let reader = AbortOnDrop(tokio::spawn(read_data_stream(stream, store.clone(), Suggested::default(), tx)));
            while !outstanding.is_empty() {
                match rx.recv().await {
                    Some(Arrived::Good { id, frame, plain_len, .. }) if outstanding.remove(&id) => {
                        sink.append(id, frame, plain_len).await?;
                        repaired.push(id);
                    }
                    Some(Arrived::Good { id, .. }) => {
                        return Err(Violation(format!("chunk {id} was not offered")).into());
                    }
                    Some(Arrived::Bad { id, reason, .. }) => {
                        tracing::warn!(chunk = %id, %reason, "repair copy failed verification");
                        outstanding.remove(&id);
                    }
                    Some(Arrived::Failed(e)) => return Err(e),
                    None => return Err(conn_err(ConnectionFailure::Closed("repair stream ended early"))),
                }
            }
            drop(reader);
        }
        sink.flush().await?;
        control.send(&Control::Committed { objects: 0 }).await?;
        Ok(repaired)
    }
    .await;
    // The objects that use the chunks hold them now; the transfer's references go.
    store.release_transfer(transfer).await?;
    if let Err(e) = &result {
        control.abort(e).await;
    }
    control.finish();
    result
}
