//! The telemetry store (`HOME/telemetry.redb`, apart from the inventory): each node's
//! ingest cursor, log lines in compressed blocks, and metric samples in Gorilla chunks
//! per series. One transaction per ingested batch moves the cursor with the data, so a
//! record is stored once however often it is delivered.

pub mod gorilla;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use clustermgr_protocol::telemetry::{Body, Record};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::healthlog::{Ack, EventRecord, HealthEvent, HealthState};
use serde::{Deserialize, Serialize};

use self::gorilla::Encoder;
use crate::CtlError;

/// Node → the highest sequence number stored.
const CURSORS: TableDefinition<&str, u64> = TableDefinition::new("cursors");
/// (last line's time, node, first seq) → a compressed block of log lines.
const LOGS: TableDefinition<(i64, &str, u64), &[u8]> = TableDefinition::new("logs");
/// `node` NUL `series` → series id.
const SERIES: TableDefinition<&str, u32> = TableDefinition::new("series");
/// (series id, first sample's time) → a Gorilla chunk (raw tier).
const CHUNKS: TableDefinition<(u32, i64), &[u8]> = TableDefinition::new("chunks_raw");
/// (series id, first point's time) → a chunk of 1-minute points.
const CHUNKS_1M: TableDefinition<(u32, i64), &[u8]> = TableDefinition::new("chunks_1m");
/// (series id, first point's time) → a chunk of 1-hour points.
const CHUNKS_1H: TableDefinition<(u32, i64), &[u8]> = TableDefinition::new("chunks_1h");
/// (tier, series id) → the end of the last bucket rolled up into that tier.
const ROLLED: TableDefinition<(u8, u32), i64> = TableDefinition::new("rolled");
/// Node → the time of the newest metric tick stored: buckets ending before it are
/// complete (a node's records arrive in order, also after a partition).
const WATERMARK: TableDefinition<&str, i64> = TableDefinition::new("watermark");
/// `format`, `next_series`.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// id → a health check's change of state (postcard of [`HealthEvent`]).
const HEALTH_EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("health_events");
/// `node\0check` → the check's state now (postcard of [`HealthState`]), so a restarted
/// `serve` neither repeats nor misses a change.
const HEALTH_STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("health_state");
/// event id → who acknowledged it (postcard of [`Ack`]).
const HEALTH_ACKS: TableDefinition<u64, &[u8]> = TableDefinition::new("health_acks");

/// What [`TelemetryStore::acknowledge`] did.
#[derive(Debug)]
pub enum Acknowledged {
    /// No event has that number.
    NoSuchEvent,
    /// The caller's rule refused this event; nothing was written.
    Refused(HealthEvent),
    /// The event with its acknowledgement, and whether this call wrote it.
    Done {
        /// The event and the acknowledgement it has.
        record: EventRecord,
        /// Whether it is this call's.
        new: bool,
    },
}

/// A metric tier: raw samples, or points per minute or hour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    /// As sampled.
    Raw,
    /// One point a minute: a gauge's average, a counter's last value.
    Minute,
    /// One point an hour.
    Hour,
}

impl Tier {
    fn table(self) -> TableDefinition<'static, (u32, i64), &'static [u8]> {
        match self {
            Tier::Raw => CHUNKS,
            Tier::Minute => CHUNKS_1M,
            Tier::Hour => CHUNKS_1H,
        }
    }

    fn bucket_ms(self) -> i64 {
        match self {
            Tier::Raw => 1,
            Tier::Minute => 60_000,
            Tier::Hour => 3_600_000,
        }
    }
}

pub use crate::config::Retention;

/// What one maintenance pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Maintained {
    /// Points written to the 1-minute and 1-hour tiers.
    pub rolled_up: usize,
    /// Chunks and log blocks removed by age or size.
    pub removed: usize,
    /// Bytes of stored values after it.
    pub stored_bytes: u64,
}

/// The store's layout version.
const FORMAT: u64 = 1;
/// A log block's encoding: lz4 (size-prepended) of the postcard lines.
const LOG_BLOCK_FORMAT: u8 = 1;
/// Samples in a raw chunk before a new one starts (two hours at 10 s).
pub const CHUNK_SAMPLES: usize = 720;
/// Series rolled up and pruned per transaction by [`TelemetryStore::maintain`].
const SERIES_PER_UPKEEP: usize = 256;
/// The largest block accepted when reading back (a damaged size prefix is not
/// allocated).
const MAX_BLOCK: usize = 64 << 20;

/// One stored log line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// The agent's sequence number.
    pub seq: u64,
    /// When the agent read it, Unix milliseconds.
    pub time_ms: i64,
    /// The source's name.
    pub source: String,
    /// The text.
    pub line: String,
}

/// A log line and its node, as queries return them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeLine {
    /// The node.
    pub node: String,
    /// The agent's sequence number.
    pub seq: u64,
    /// When the agent read it, Unix milliseconds.
    pub time_ms: i64,
    /// The source's name.
    pub source: String,
    /// The text.
    pub line: String,
}

impl NodeLine {
    /// `line` of `node`.
    pub fn of(node: &str, line: LogLine) -> NodeLine {
        NodeLine {
            node: node.to_string(),
            seq: line.seq,
            time_ms: line.time_ms,
            source: line.source,
            line: line.line,
        }
    }
}

/// What `logs` asks for.
#[derive(Clone, Debug, Default)]
pub struct LogQuery {
    /// Only these nodes (empty: all).
    pub nodes: Vec<String>,
    /// Only this source.
    pub source: Option<String>,
    /// Only lines at or after this time, Unix milliseconds.
    pub since_ms: Option<i64>,
    /// The last this many lines (after the other filters); older blocks are not read.
    pub limit: Option<usize>,
}

/// One series' samples.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeriesData {
    /// The node.
    pub node: String,
    /// The series (`name{labels}`).
    pub series: String,
    /// (time in Unix milliseconds, value), in time order.
    pub samples: Vec<(i64, f64)>,
}

/// What one ingest stored.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Ingested {
    /// The node's cursor after it.
    pub cursor: u64,
    /// Log lines stored.
    pub lines: usize,
    /// Metric samples stored.
    pub samples: usize,
    /// Records dropped as already stored.
    pub duplicates: usize,
    /// The log lines stored, for `logs -f`.
    pub new_lines: Vec<LogLine>,
    /// The metric ticks stored, for the exports.
    pub new_metrics: Vec<(i64, Vec<clustermgr_protocol::telemetry::Sample>)>,
}

/// The telemetry store.
pub struct TelemetryStore {
    db: Database,
    path: PathBuf,
    /// The open chunk of each series: (its start time, its encoder). Cleared when a
    /// transaction fails, so it never runs ahead of the file.
    open: Mutex<HashMap<u32, (i64, Encoder)>>,
}

impl std::fmt::Debug for TelemetryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// An error inside a transaction, in words.
#[derive(Debug)]
struct TxErr(String);

impl std::fmt::Display for TxErr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

macro_rules! tx_err_from {
    ($($t:ty),*) => {$(
        impl From<$t> for TxErr {
            fn from(e: $t) -> Self {
                TxErr(e.to_string())
            }
        }
    )*};
}
tx_err_from!(redb::TableError, redb::StorageError, String, &str);

fn series_key(node: &str, series: &str) -> String {
    format!("{node}\u{0}{series}")
}

fn encode_block(lines: &[LogLine]) -> Vec<u8> {
    let raw = clustermgr_protocol::codec::encode(&lines);
    let mut out = vec![LOG_BLOCK_FORMAT];
    out.extend(lz4_flex::compress_prepend_size(&raw));
    out
}

fn decode_block(bytes: &[u8]) -> Result<Vec<LogLine>, String> {
    match bytes.split_first() {
        Some((&LOG_BLOCK_FORMAT, rest)) => {
            let size = rest
                .get(..4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
                .ok_or("a log block without its size")?;
            if size > MAX_BLOCK {
                return Err(format!("a log block claims {size} bytes"));
            }
            let raw = lz4_flex::decompress_size_prepended(rest).map_err(|e| e.to_string())?;
            clustermgr_protocol::codec::decode("log block", &raw).map_err(|e| e.to_string())
        }
        Some((other, _)) => Err(format!(
            "a log block has format {other}, this clustermgr reads format {LOG_BLOCK_FORMAT}"
        )),
        None => Err("an empty log block".into()),
    }
}

impl TelemetryStore {
    /// Opens the store at `path`, making it if there is none.
    pub fn open(path: &Path) -> Result<TelemetryStore, CtlError> {
        let err = |e: &dyn std::fmt::Display| CtlError::Store {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        crate::home::private_file(path)?;
        let db = Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => err(
                &"another clustermgr process (serve) has it open; run the command while serve runs, and it goes through serve",
            ),
            e => err(&e),
        })?;
        let store = TelemetryStore {
            db,
            path: path.to_path_buf(),
            open: Mutex::new(HashMap::new()),
        };
        store.write(|txn| {
            let mut meta = txn.open_table(META)?;
            let format = meta.get("format")?.map(|v| v.value());
            match format {
                None => {
                    meta.insert("format", FORMAT)?;
                }
                Some(FORMAT) => {}
                Some(other) => {
                    return Err(TxErr(format!(
                        "the telemetry store has layout {other}, this clustermgr reads layout {FORMAT}; use the release that wrote it, or move the file aside to start a new one"
                    )));
                }
            }
            txn.open_table(CURSORS)?;
            txn.open_table(LOGS)?;
            txn.open_table(SERIES)?;
            txn.open_table(CHUNKS)?;
            txn.open_table(CHUNKS_1M)?;
            txn.open_table(CHUNKS_1H)?;
            txn.open_table(ROLLED)?;
            txn.open_table(WATERMARK)?;
            txn.open_table(HEALTH_EVENTS)?;
            txn.open_table(HEALTH_STATE)?;
            txn.open_table(HEALTH_ACKS)?;
            Ok(())
        })?;
        Ok(store)
    }

    /// Every check's last known state: (node, check) → state.
    pub fn health_state(&self) -> Result<BTreeMap<(String, String), HealthState>, CtlError> {
        self.read(|txn| {
            let mut out = BTreeMap::new();
            for row in txn.open_table(HEALTH_STATE)?.iter()? {
                let (k, v) = row?;
                let (node, check) = k.value().split_once('\u{0}').unwrap_or((k.value(), ""));
                let state: HealthState =
                    clustermgr_protocol::codec::decode("health state", v.value())
                        .map_err(|e| TxErr(e.to_string()))?;
                out.insert((node.to_string(), check.to_string()), state);
            }
            Ok(out)
        })
    }

    /// Stores a round: its changes as numbered events (returned with their numbers)
    /// and every check's state, in one transaction.
    pub fn record_health(
        &self,
        changes: Vec<HealthEvent>,
        states: &[(String, String, HealthState)],
    ) -> Result<Vec<HealthEvent>, CtlError> {
        self.write(|txn| {
            let mut events = txn.open_table(HEALTH_EVENTS)?;
            let first = events.last()?.map_or(1, |(k, _)| k.value() + 1);
            let mut out = Vec::with_capacity(changes.len());
            for (id, mut e) in (first..).zip(changes) {
                e.id = id;
                events.insert(e.id, clustermgr_protocol::codec::encode(&e).as_slice())?;
                out.push(e);
            }
            let mut table = txn.open_table(HEALTH_STATE)?;
            for (node, check, state) in states {
                table.insert(
                    format!("{node}\u{0}{check}").as_str(),
                    clustermgr_protocol::codec::encode(state).as_slice(),
                )?;
            }
            Ok(out)
        })
    }

    /// The health events after number `after`, oldest first, at most `limit`.
    pub fn health_events_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<HealthEvent>, CtlError> {
        self.read(|txn| {
            let mut out = Vec::new();
            for row in txn
                .open_table(HEALTH_EVENTS)?
                .range(after + 1..)?
                .take(limit)
            {
                let (_, v) = row?;
                out.push(
                    clustermgr_protocol::codec::decode("health event", v.value())
                        .map_err(|e| TxErr(e.to_string()))?,
                );
            }
            Ok(out)
        })
    }

    /// The number of the newest health event (0 when there is none).
    pub fn last_health_event(&self) -> Result<u64, CtlError> {
        self.read(|txn| {
            Ok(txn
                .open_table(HEALTH_EVENTS)?
                .last()?
                .map_or(0, |(k, _)| k.value()))
        })
    }

    /// How far alert sink `sink` has delivered: the last event number, if it ever
    /// started.
    pub fn alert_cursor(&self, sink: &str) -> Result<Option<u64>, CtlError> {
        self.read(|txn| {
            Ok(txn
                .open_table(META)?
                .get(format!("alerts:{sink}").as_str())?
                .map(|v| v.value()))
        })
    }

    /// Records that `sink` delivered (or gave up on) everything up to `id`.
    pub fn set_alert_cursor(&self, sink: &str, id: u64) -> Result<(), CtlError> {
        self.write(|txn| {
            txn.open_table(META)?
                .insert(format!("alerts:{sink}").as_str(), id)?;
            Ok(())
        })
    }

    /// The health events since `since_ms` (all, without), oldest first; at most the
    /// newest `limit`; each with its acknowledgement.
    pub fn health_events(
        &self,
        since_ms: Option<i64>,
        limit: usize,
    ) -> Result<Vec<EventRecord>, CtlError> {
        self.read(|txn| {
            let acks = txn.open_table(HEALTH_ACKS)?;
            let mut out = Vec::new();
            for row in txn.open_table(HEALTH_EVENTS)?.iter()?.rev() {
                let (_, v) = row?;
                let event: HealthEvent =
                    clustermgr_protocol::codec::decode("health event", v.value())
                        .map_err(|e| TxErr(e.to_string()))?;
                if since_ms.is_some_and(|s| event.time_ms < s) || out.len() >= limit {
                    break;
                }
                let ack = match acks.get(event.id)? {
                    Some(a) => Some(
                        clustermgr_protocol::codec::decode::<Ack>("acknowledgement", a.value())
                            .map_err(|e| TxErr(e.to_string()))?,
                    ),
                    None => None,
                };
                out.push(EventRecord { event, ack });
            }
            out.reverse();
            Ok(out)
        })
    }

    /// Records `ack` for event `id` when `may` allows it and the event has none yet, in
    /// one transaction; a second acknowledgement is told the first (so a second person
    /// learns who was first).
    pub fn acknowledge(
        &self,
        id: u64,
        ack: Ack,
        may: impl FnOnce(&HealthEvent) -> bool,
    ) -> Result<Acknowledged, CtlError> {
        self.write(|txn| {
            let Some(event) = txn.open_table(HEALTH_EVENTS)?.get(id)?.map(|v| {
                clustermgr_protocol::codec::decode::<HealthEvent>("health event", v.value())
            }) else {
                return Ok(Acknowledged::NoSuchEvent);
            };
            let event = event.map_err(|e| TxErr(e.to_string()))?;
            if !may(&event) {
                return Ok(Acknowledged::Refused(event));
            }
            let mut acks = txn.open_table(HEALTH_ACKS)?;
            let earlier = acks
                .get(id)?
                .map(|a| clustermgr_protocol::codec::decode::<Ack>("acknowledgement", a.value()));
            let (ack, new) = match earlier {
                Some(a) => (a.map_err(|e| TxErr(e.to_string()))?, false),
                None => {
                    acks.insert(id, clustermgr_protocol::codec::encode(&ack).as_slice())?;
                    (ack, true)
                }
            };
            let record = EventRecord {
                event,
                ack: Some(ack),
            };
            Ok(Acknowledged::Done { record, new })
        })
    }

    fn err(&self, e: impl std::fmt::Display) -> CtlError {
        CtlError::Store {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    fn write<T>(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<T, TxErr>,
    ) -> Result<T, CtlError> {
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        let out = f(&txn).map_err(|e| self.err(e))?;
        txn.commit().map_err(|e| self.err(e))?;
        Ok(out)
    }

    fn read<T>(
        &self,
        f: impl FnOnce(&redb::ReadTransaction) -> Result<T, TxErr>,
    ) -> Result<T, CtlError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        f(&txn).map_err(|e| self.err(e))
    }

    /// The highest sequence number stored for `node` (0: none).
    pub fn cursor(&self, node: &str) -> Result<u64, CtlError> {
        self.read(|txn| {
            let t = txn.open_table(CURSORS).map_err(|e| e.to_string())?;
            Ok(t.get(node)
                .map_err(|e| e.to_string())?
                .map_or(0, |v| v.value()))
        })
    }

    /// Stores a batch from `node`: what is past its cursor, once.
    pub fn ingest(&self, node: &str, records: &[Record]) -> Result<Ingested, CtlError> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let result = self.write(|txn| ingest_in(txn, node, records, &mut open));
        if result.is_err() {
            open.clear();
        }
        result
    }

    /// Log lines matching `q`, in time order across nodes.
    pub fn logs(
        &self,
        q: &LogQuery,
        matches: &dyn Fn(&LogLine) -> bool,
    ) -> Result<Vec<NodeLine>, CtlError> {
        use std::cmp::Reverse;
        self.read(|txn| {
            let t = txn.open_table(LOGS).map_err(|e| e.to_string())?;
            let since = q.since_ms.unwrap_or(i64::MIN);
            let mut out = Vec::new();
            // The newest `limit` times seen: once the oldest of them is newer than a
            // block's newest line, no older block can place a line among the last.
            let mut newest: std::collections::BinaryHeap<Reverse<i64>> = Default::default();
            let mut rows = t.range((since, "", 0u64)..).map_err(|e| e.to_string())?;
            while let Some(row) = rows.next_back() {
                let (k, v) = row.map_err(|e| e.to_string())?;
                let (block_newest, node, _) = k.value();
                if let Some(n) = q.limit
                    && newest.len() >= n
                    && newest.peek().is_some_and(|Reverse(t)| *t > block_newest)
                {
                    break;
                }
                if !q.nodes.is_empty() && !q.nodes.iter().any(|n| n == node) {
                    continue;
                }
                let node = node.to_string();
                for line in decode_block(v.value())? {
                    if line.time_ms < since
                        || q.source.as_ref().is_some_and(|s| *s != line.source)
                        || !matches(&line)
                    {
                        continue;
                    }
                    if let Some(n) = q.limit {
                        newest.push(Reverse(line.time_ms));
                        if newest.len() > n {
                            newest.pop();
                        }
                    }
                    out.push(NodeLine::of(&node, line));
                }
            }
            out.sort_by(|a, b| (a.time_ms, &a.node, a.seq).cmp(&(b.time_ms, &b.node, b.seq)));
            if let Some(n) = q.limit
                && out.len() > n
            {
                out.drain(..out.len() - n);
            }
            Ok(out)
        })
    }

    /// The log sources stored for `nodes` (empty: all) at or after `since_ms`: what
    /// `logs --source` could have meant when it found nothing. Reads every block, so
    /// it is asked only then.
    pub fn log_sources(
        &self,
        nodes: &[String],
        since_ms: Option<i64>,
    ) -> Result<std::collections::BTreeSet<String>, CtlError> {
        self.read(|txn| {
            let t = txn.open_table(LOGS).map_err(|e| e.to_string())?;
            let since = since_ms.unwrap_or(i64::MIN);
            let mut out = std::collections::BTreeSet::new();
            for row in t.range((since, "", 0u64)..).map_err(|e| e.to_string())? {
                let (k, v) = row.map_err(|e| e.to_string())?;
                let (_, node, _) = k.value();
                if !nodes.is_empty() && !nodes.iter().any(|n| n == node) {
                    continue;
                }
                for line in decode_block(v.value())? {
                    if line.time_ms >= since && !out.contains(&line.source) {
                        out.insert(line.source);
                    }
                }
            }
            Ok(out)
        })
    }

    /// The series of `nodes` (empty: all) whose name is `metric` (or all), with their
    /// samples at or after `since_ms`.
    pub fn series(
        &self,
        nodes: &[String],
        metric: Option<&str>,
        since_ms: i64,
    ) -> Result<Vec<SeriesData>, CtlError> {
        self.series_in(Tier::Raw, nodes, metric, since_ms)
    }

    /// [`TelemetryStore::series`] from one tier.
    pub fn series_in(
        &self,
        tier: Tier,
        nodes: &[String],
        metric: Option<&str>,
        since_ms: i64,
    ) -> Result<Vec<SeriesData>, CtlError> {
        self.read(|txn| {
            let series = txn.open_table(SERIES).map_err(|e| e.to_string())?;
            let chunks = txn.open_table(tier.table()).map_err(|e| e.to_string())?;
            let mut out = Vec::new();
            for row in series.iter().map_err(|e| e.to_string())? {
                let (k, id) = row.map_err(|e| e.to_string())?;
                let key = k.value();
                let Some((node, s)) = key.split_once('\u{0}') else {
                    continue;
                };
                let name = s.split('{').next().unwrap_or(s);
                if !nodes.is_empty() && !nodes.iter().any(|n| n == node)
                    || metric.is_some_and(|m| m != name)
                {
                    continue;
                }
                let id = id.value();
                let mut samples = Vec::new();
                for c in chunks
                    .range((id, i64::MIN)..=(id, i64::MAX))
                    .map_err(|e| e.to_string())?
                {
                    let (_, v) = c.map_err(|e| e.to_string())?;
                    samples.extend(
                        gorilla::decode(v.value())?
                            .into_iter()
                            .filter(|(t, _)| *t >= since_ms),
                    );
                }
                if !samples.is_empty() {
                    out.push(SeriesData {
                        node: node.to_string(),
                        series: s.to_string(),
                        samples,
                    });
                }
            }
            Ok(out)
        })
    }

    /// Rolls complete buckets up into the 1-minute and 1-hour tiers, then drops what
    /// `keep` no longer keeps by age, and with `check_size` by size (which reads every
    /// stored value, so callers do it seldom; only when the file is larger than the
    /// bound, which it always is when the values are). Stateless: what was rolled up
    /// is in the store, so a restart costs nothing. One transaction per series.
    pub fn maintain(
        &self,
        now_ms: i64,
        keep: &Retention,
        check_size: bool,
    ) -> Result<Maintained, CtlError> {
        let mut done = Maintained::default();
        let ids: Vec<(String, u32)> = self.read(|txn| {
            let t = txn.open_table(SERIES)?;
            let mut out = Vec::new();
            for row in t.iter()? {
                let (k, v) = row?;
                out.push((k.value().to_string(), v.value()));
            }
            Ok(out)
        })?;
        let day = 86_400_000i64;
        // A few hundred series per transaction: one commit (and fsync) per series would
        // be thousands a minute with a hundred nodes, and one for all would hold up the
        // ingest for the whole pass.
        for batch in ids.chunks(SERIES_PER_UPKEEP) {
            let (rolled_up, removed) = self.write(|txn| {
                let (mut rolled_up, mut removed) = (0, 0);
                for (key, id) in batch {
                    let id = *id;
                    let (node, series) = key.split_once('\u{0}').unwrap_or((key, ""));
                    let counter = series
                        .split('{')
                        .next()
                        .unwrap_or(series)
                        .ends_with("_total");
                    let wm = txn.open_table(WATERMARK)?.get(node)?.map(|v| v.value());
                    if let Some(wm) = wm {
                        for (tag, tier) in [(1u8, Tier::Minute), (2u8, Tier::Hour)] {
                            rolled_up += roll_up(txn, id, tag, tier, counter, wm)?;
                        }
                    }
                    let hours_have = txn
                        .open_table(ROLLED)?
                        .get((2u8, id))?
                        .map_or(i64::MIN, |v| v.value());
                    // Raw chunks go once the hour tier has them; the tiers by age.
                    let raw_cut = (now_ms - i64::from(keep.raw_days) * day).min(hours_have);
                    removed += drop_older(txn, Tier::Raw, id, raw_cut)?;
                    removed += drop_older(
                        txn,
                        Tier::Minute,
                        id,
                        now_ms - i64::from(keep.minute_days) * day,
                    )?;
                    removed += drop_older(
                        txn,
                        Tier::Hour,
                        id,
                        now_ms - i64::from(keep.hour_days) * day,
                    )?;
                }
                Ok((rolled_up, removed))
            })?;
            done.rolled_up += rolled_up;
            done.removed += removed;
        }
        let log_cut = now_ms - i64::from(keep.log_days) * 86_400_000;
        done.removed += self.write(|txn| {
            let mut logs = txn.open_table(LOGS)?;
            let old: Vec<(i64, String, u64)> = logs
                .range(..(log_cut, "", 0u64))?
                .map(|r| {
                    r.map(|(k, _)| {
                        let (t, n, s) = k.value();
                        (t, n.to_string(), s)
                    })
                })
                .collect::<Result<_, _>>()?;
            for (t, n, s) in &old {
                logs.remove((*t, n.as_str(), *s))?;
            }
            Ok(old.len())
        })?;
        // Then by size: the oldest log blocks and raw chunks, a tenth at a time.
        let max = keep.max_mib.saturating_mul(1 << 20);
        while check_size && self.file_bytes() > max {
            done.stored_bytes = self.stored_bytes()?;
            if done.stored_bytes <= max {
                break;
            }
            let removed = self.write(shed_oldest)?;
            if removed == 0 {
                break;
            }
            done.removed += removed;
        }
        Ok(done)
    }

    /// (bytes, samples) of `tier`'s chunks: what a stored sample costs.
    pub fn tier_stats(&self, tier: Tier) -> Result<(u64, u64), CtlError> {
        self.read(|txn| {
            let (mut bytes, mut samples) = (0u64, 0u64);
            for row in txn.open_table(tier.table())?.iter()? {
                let v = row?.1;
                let v = v.value();
                bytes += v.len() as u64;
                samples += gorilla::sample_count(v) as u64;
            }
            Ok((bytes, samples))
        })
    }

    /// [`Self::tier_stats`] per metric name (every node and label set together):
    /// name → (bytes, samples, chunks). For finding what the encoding spends on.
    pub fn tier_stats_by_metric(
        &self,
        tier: Tier,
    ) -> Result<BTreeMap<String, (u64, u64, u64)>, CtlError> {
        self.read(|txn| {
            let mut names: HashMap<u32, String> = HashMap::new();
            for row in txn.open_table(SERIES)?.iter()? {
                let (k, id) = row?;
                let key = k.value();
                let series = key.split_once('\u{0}').map_or(key, |(_, s)| s);
                let name = series.split_once('{').map_or(series, |(n, _)| n);
                names.insert(id.value(), name.to_string());
            }
            let mut out: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
            for row in txn.open_table(tier.table())?.iter()? {
                let (k, v) = row?;
                let name = names.get(&k.value().0).cloned().unwrap_or_default();
                let e = out.entry(name).or_default();
                e.0 += v.value().len() as u64;
                e.1 += gorilla::sample_count(v.value()) as u64;
                e.2 += 1;
            }
            Ok(out)
        })
    }

    /// Bytes of every stored value (log blocks and chunks of every tier).
    pub fn stored_bytes(&self) -> Result<u64, CtlError> {
        self.read(|txn| {
            let mut total = 0u64;
            for row in txn.open_table(LOGS)?.iter()? {
                total += row?.1.value().len() as u64;
            }
            for tier in [Tier::Raw, Tier::Minute, Tier::Hour] {
                for row in txn.open_table(tier.table())?.iter()? {
                    total += row?.1.value().len() as u64;
                }
            }
            Ok(total)
        })
    }

    /// Bytes the file takes on disk.
    pub fn file_bytes(&self) -> u64 {
        std::fs::metadata(&self.path).map_or(0, |m| m.len())
    }
}

fn ingest_in(
    txn: &redb::WriteTransaction,
    node: &str,
    records: &[Record],
    open: &mut HashMap<u32, (i64, Encoder)>,
) -> Result<Ingested, TxErr> {
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let mut cursors = txn.open_table(CURSORS).map_err(|x| e(&x))?;
    let mut cursor = cursors
        .get(node)
        .map_err(|x| e(&x))?
        .map_or(0, |v| v.value());
    let mut out = Ingested::default();
    let mut lines = Vec::new();
    let mut watermark = i64::MIN;
    // Chunks touched in this batch: id → start.
    let mut touched: BTreeMap<u32, i64> = BTreeMap::new();
    let mut series = txn.open_table(SERIES).map_err(|x| e(&x))?;
    let mut chunks = txn.open_table(CHUNKS).map_err(|x| e(&x))?;
    let mut meta = txn.open_table(META).map_err(|x| e(&x))?;
    for rec in records {
        if rec.seq <= cursor {
            out.duplicates += 1;
            continue;
        }
        cursor = rec.seq;
        match &rec.body {
            Body::Log { source, line } => lines.push(LogLine {
                seq: rec.seq,
                time_ms: rec.time_ms,
                source: source.clone(),
                line: line.clone(),
            }),
            // Told where it happened, among the node's lines.
            Body::Gap { lost, why } => lines.push(LogLine {
                seq: rec.seq,
                time_ms: rec.time_ms,
                source: "clustermgr".into(),
                line: format!("{lost} records from this node were lost: {why}"),
            }),
            Body::Metrics(samples) => {
                out.new_metrics.push((rec.time_ms, samples.clone()));
                watermark = watermark.max(rec.time_ms);
                for s in samples {
                    let key = series_key(node, &s.series());
                    let known = series
                        .get(key.as_str())
                        .map_err(|x| e(&x))?
                        .map(|v| v.value());
                    let id = match known {
                        Some(id) => id,
                        None => {
                            let next = meta
                                .get("next_series")
                                .map_err(|x| e(&x))?
                                .map_or(1, |v| v.value());
                            let id = u32::try_from(next)
                                .map_err(|_| "the store has run out of series numbers")?;
                            meta.insert("next_series", next + 1).map_err(|x| e(&x))?;
                            series.insert(key.as_str(), id).map_err(|x| e(&x))?;
                            id
                        }
                    };
                    if let std::collections::hash_map::Entry::Vacant(v) = open.entry(id) {
                        // The series' newest chunk, continued if it has room.
                        let last = chunks
                            .range((id, i64::MIN)..=(id, i64::MAX))
                            .map_err(|x| e(&x))?
                            .next_back()
                            .transpose()
                            .map_err(|x| e(&x))?;
                        if let Some((k, bytes)) = last {
                            let (_, start) = k.value();
                            if let Ok(enc) = Encoder::resume(bytes.value())
                                && enc.len() < CHUNK_SAMPLES
                            {
                                v.insert((start, enc));
                            }
                        }
                    }
                    let fits = match open.get_mut(&id) {
                        Some((_, enc)) if enc.len() < CHUNK_SAMPLES => {
                            if rec.time_ms <= enc.last_time() {
                                // Already stored (a sample can come twice only if
                                // the cursor was lost); never out of order.
                                continue;
                            }
                            enc.push(rec.time_ms, s.value)
                        }
                        _ => false,
                    };
                    if !fits {
                        if let Some((start, enc)) = open.get(&id) {
                            chunks
                                .insert((id, *start), enc.bytes().as_slice())
                                .map_err(|x| e(&x))?;
                        }
                        open.insert(id, (rec.time_ms, Encoder::new(rec.time_ms, s.value)));
                    }
                    if let Some((start, _)) = open.get(&id) {
                        touched.insert(id, *start);
                    }
                    out.samples += 1;
                }
            }
        }
    }
    for (id, start) in touched {
        if let Some((_, enc)) = open.get(&id) {
            chunks
                .insert((id, start), enc.bytes().as_slice())
                .map_err(|x| e(&x))?;
        }
    }
    if let Some(last) = lines.last() {
        let mut logs = txn.open_table(LOGS).map_err(|x| e(&x))?;
        let key_time = lines
            .iter()
            .map(|l| l.time_ms)
            .max()
            .unwrap_or(last.time_ms);
        let first = lines[0].seq;
        logs.insert((key_time, node, first), encode_block(&lines).as_slice())
            .map_err(|x| e(&x))?;
    }
    if watermark > i64::MIN {
        let mut w = txn.open_table(WATERMARK).map_err(|x| e(&x))?;
        let old = w.get(node).map_err(|x| e(&x))?.map(|v| v.value());
        if old.is_none_or(|o| o < watermark) {
            w.insert(node, watermark).map_err(|x| e(&x))?;
        }
    }
    out.lines = lines.len();
    out.new_lines = lines;
    cursors.insert(node, cursor).map_err(|x| e(&x))?;
    out.cursor = cursor;
    Ok(out)
}

/// Appends one tier's complete buckets of series `id` up to the watermark; returns the
/// points written.
fn roll_up(
    txn: &redb::WriteTransaction,
    id: u32,
    tag: u8,
    tier: Tier,
    counter: bool,
    watermark: i64,
) -> Result<usize, TxErr> {
    let bucket = tier.bucket_ms();
    let mut rolled = txn.open_table(ROLLED)?;
    let from = rolled.get((tag, id))?.map_or(i64::MIN, |v| v.value());
    // The bucket holding the watermark may still get samples.
    let until = watermark.div_euclid(bucket) * bucket;
    if until <= from {
        return Ok(0);
    }
    let raw = txn.open_table(CHUNKS)?;
    // Start at the chunk that holds `from`, not at the series' first.
    let start = raw
        .range((id, i64::MIN)..=(id, from.max(i64::MIN + 1)))?
        .next_back()
        .transpose()?
        .map_or(i64::MIN, |(k, _)| k.value().1);
    // bucket start → (sum, count, last)
    let mut buckets: BTreeMap<i64, (f64, u32, f64)> = BTreeMap::new();
    for row in raw.range((id, start)..=(id, until))? {
        let (_, v) = row?;
        for (t, x) in gorilla::decode(v.value())? {
            if t < from || t >= until {
                continue;
            }
            let b = buckets
                .entry(t.div_euclid(bucket) * bucket)
                .or_insert((0.0, 0, x));
            b.0 += x;
            b.1 += 1;
            b.2 = x;
        }
    }
    drop(raw);
    let mut table = txn.open_table(tier.table())?;
    let last = table
        .range((id, i64::MIN)..=(id, i64::MAX))?
        .next_back()
        .transpose()?
        .map(|(k, v)| (k.value().1, v.value().to_vec()));
    let mut open: Option<(i64, Encoder)> = match last {
        Some((start, bytes)) => match Encoder::resume(&bytes) {
            Ok(e) if e.len() < CHUNK_SAMPLES => Some((start, e)),
            _ => None,
        },
        None => None,
    };
    let mut n = 0;
    for (t, (sum, count, last)) in buckets {
        let v = if counter {
            last
        } else {
            sum / f64::from(count)
        };
        let fits = open
            .as_mut()
            .is_some_and(|(_, e)| e.len() < CHUNK_SAMPLES && e.push(t, v));
        if !fits {
            if let Some((s, e)) = &open {
                table.insert((id, *s), e.bytes().as_slice())?;
            }
            open = Some((t, Encoder::new(t, v)));
        }
        n += 1;
    }
    if let Some((s, e)) = &open {
        table.insert((id, *s), e.bytes().as_slice())?;
    }
    rolled.insert((tag, id), until)?;
    Ok(n)
}

/// Removes the chunks of series `id` in `tier` whose every point is before `cut`
/// (those followed by a chunk starting at or before it); returns how many.
fn drop_older(txn: &redb::WriteTransaction, tier: Tier, id: u32, cut: i64) -> Result<usize, TxErr> {
    let mut table = txn.open_table(tier.table())?;
    let starts: Vec<i64> = table
        .range((id, i64::MIN)..=(id, cut))?
        .map(|r| r.map(|(k, _)| k.value().1))
        .collect::<Result<_, _>>()?;
    // All but the last start at or before `cut` are wholly before it.
    let old = starts.len().saturating_sub(1);
    for s in &starts[..old] {
        table.remove((id, *s))?;
    }
    Ok(old)
}

/// Removes about a tenth of the log blocks (the oldest) and each series' oldest raw
/// chunk (never its newest); returns how many went.
fn shed_oldest(txn: &redb::WriteTransaction) -> Result<usize, TxErr> {
    let mut n = 0;
    let mut logs = txn.open_table(LOGS)?;
    let count = logs.len()? as usize;
    let old: Vec<(i64, String, u64)> = logs
        .iter()?
        .take(count.div_ceil(10))
        .map(|r| {
            r.map(|(k, _)| {
                let (t, node, s) = k.value();
                (t, node.to_string(), s)
            })
        })
        .collect::<Result<_, _>>()?;
    for (t, node, s) in &old {
        logs.remove((*t, node.as_str(), *s))?;
        n += 1;
    }
    let mut raw = txn.open_table(CHUNKS)?;
    let mut firsts: BTreeMap<u32, (i64, usize)> = BTreeMap::new();
    for row in raw.iter()? {
        let (k, _) = row?;
        let (id, start) = k.value();
        firsts.entry(id).or_insert((start, 0)).1 += 1;
    }
    for (id, (start, chunks)) in firsts {
        if chunks > 1 {
            raw.remove((id, start))?;
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests;
