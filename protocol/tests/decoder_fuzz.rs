//! Decoder fuzz test: proves that malformed input never panics the frame decoder, the async
//! frame reader or the codec, by throwing over two million random and mutated frames at
//! `FrameDecoder`, `frame::read_frame` and `codec::decode` for every message type read off
//! the wire.
//!
//! Everything is driven by a small deterministic PRNG (splitmix64) from one fixed seed, so a
//! failure reproduces exactly; a failing test prints the seed, the case number and the input
//! bytes. For longer local runs, `CLUSTERMGR_FUZZ_SEED=<n>` picks another seed and
//! `CLUSTERMGR_FUZZ_SCALE=<k>` runs k times as many cases.
//!
//! Besides "never panics", every case checks real properties:
//! - (a) a valid, unmutated message always round-trips to an equal value, through the codec,
//!   the `FrameDecoder` (any chunking) and `read_frame`;
//! - (b) a length prefix above the limit is always `FrameTooLarge`, reported as soon as its
//!   4 bytes are in, before any payload;
//! - (c) `codec::decode` never returns `Ok` with bytes left over (`TrailingBytes` instead),
//!   and its verdicts are consistent: a strict prefix of a valid message is `Malformed`, an
//!   out-of-range variant tag is `Malformed`, anything accepted re-encodes and re-decodes to
//!   the same value;
//! - (d) the decoders allocate in proportion to the bytes they were given, never the length
//!   a frame or a sequence announces (measured by a thread-local allocation tracker), and
//!   the `FrameDecoder` holds exactly the bytes pushed and not yet taken;
//! - `FrameDecoder` and `read_frame` agree, on any byte stream and any chunking, with a
//!   ten-line reference model of the framing (frames, promptness and the final error).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::task::{Context, Poll};

use clustermgr_protocol::changeset::{
    Action, ApplyReport, ApplyResult, BackupInfo, Change, ChangeSet, Content, Entry, EntryPlan,
    HttpsProbe, LdapAttr, LdapObject, LdapValue, Meta, OpenDjReplication, PackageFile, PackageSpec,
    ProbeSpec, RestoreSpec, Scope, ServiceVerb, StepRun, Validator,
};
use clustermgr_protocol::frame::{self, DEFAULT_MAX_FRAME_BYTES, FrameDecoder, HEADER_BYTES};
use clustermgr_protocol::health::{
    CertProbe, CertState, CheckReport, CheckSpec, Consumer, Csn, Csync2State, Dirty, DiskUse,
    Heartbeat, KeptCopy, LdapServer, LdapState, OpenDjReplica, PortProbe, PortReach, ServiceKind,
    ServiceProbe, ServiceState,
};
use clustermgr_protocol::message::{
    Command, ErrorKind, ExecEvent, ExecInput, ExecSpec, ExitOutcome, GluuExport, GluuExportSpec,
    GluuFile, GluuInstall, GluuSetupSpec, Hello, HelloReply, KeyMake, KeysMade, KeysSpec, NodeInfo,
    RemoteError, Reply, Request, UpgradeSpec,
};
use clustermgr_protocol::telemetry::{Body, Record, Sample, TelemetryAck, TelemetryFrame};
use clustermgr_protocol::version::VersionRange;
use clustermgr_protocol::{NodeName, ProtocolError, codec};
use tokio::io::{AsyncRead, ReadBuf};

// ---------------------------------------------------------------------------------------
// Case counts.

const DEFAULT_SEED: u64 = 0xC1A5_7E4D_F022_2024;

const ROUND_TRIP_CASES: u64 = 20_000;
const CODEC_CASES: u64 = 1_000_000;
const DECODER_CASES: u64 = 1_000_000;
const OVERSIZE_CASES: u64 = 100_000;
const READ_FRAME_CASES: u64 = 100_000;

/// What one `codec::decode` call may allocate at once beyond what its input justifies:
/// serde preallocates at most 1 MiB for a sequence whatever length it announces. (postcard
/// passes the count on only when at least that many bytes are left, so below the cap a
/// sequence preallocates its element's size per byte left: up to 192 for an `Entry`.)
const DECODE_PREALLOC_ALLOWANCE: usize = 1024 * 1024;
/// What one `codec::decode` call may allocate per input byte besides that: a `Vec` grows
/// only as its elements arrive, to at most twice (amortised growth) the memory of those
/// decoded, and each took at least its smallest encoding. Memory per smallest-encoding byte
/// is at most 24: `String` (24 bytes from 1), `(String, String)` (48 from 2) and `Entry`
/// (192 from 8); then `EntryPlan` (160 from 8), `StepRun` (56 from 3), `Action` (40 from
/// 3), `BackupInfo` (48 from 6), `u8`. Doubled, 48; rounded up, 64.
/// `dense_sequences_allocate_in_proportion` checks each ratio and measures the growth.
const DECODE_BYTES_PER_INPUT_BYTE: usize = 64;
/// What one `read_frame` call may allocate beyond twice its input: it reads the payload in
/// chunks of (today) 64 KiB, so it allocates ahead of the data by at most a chunk or two.
const READ_FRAME_ALLOWANCE: usize = 1024 * 1024;

fn seed() -> u64 {
    match std::env::var("CLUSTERMGR_FUZZ_SEED") {
        Ok(s) => {
            let s = s.trim();
            let parsed = match s.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => s.parse(),
            };
            parsed.unwrap_or_else(|_| panic!("CLUSTERMGR_FUZZ_SEED={s:?} is not a number"))
        }
        Err(_) => DEFAULT_SEED,
    }
}

fn scaled(cases: u64) -> u64 {
    let scale = match std::env::var("CLUSTERMGR_FUZZ_SCALE") {
        Ok(s) => s
            .trim()
            .parse::<u64>()
            .unwrap_or_else(|_| panic!("CLUSTERMGR_FUZZ_SCALE={s:?} is not a whole number")),
        Err(_) => 1,
    };
    cases * scale.max(1)
}

// ---------------------------------------------------------------------------------------
// Allocation tracking: the largest single allocation made by this thread since the last
// reset. The decoders under test run on the test's own thread (the tokio runtime is a
// current-thread one), so the other tests running in parallel do not disturb it.

struct Tracking;

#[global_allocator]
static TRACKING: Tracking = Tracking;

thread_local! {
    static LARGEST_ALLOCATION: Cell<usize> = const { Cell::new(0) };
}

fn note_allocation(size: usize) {
    // `try_with` because the allocator may run while the thread's locals are torn down.
    let _ = LARGEST_ALLOCATION.try_with(|largest| {
        if size > largest.get() {
            largest.set(size);
        }
    });
}

#[allow(
    unsafe_code,
    reason = "a global allocator is the only way to observe allocations; it delegates to System"
)]
// SAFETY: every method forwards its arguments unchanged to `System`, which upholds the
// `GlobalAlloc` contract; the bookkeeping touches only a const-initialised thread-local
// `Cell` and never allocates.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation(layout.size());
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation(layout.size());
        // SAFETY: forwarded unchanged; the caller upholds `alloc_zeroed`'s contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation(new_size);
        // SAFETY: forwarded unchanged; the caller upholds `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged; the caller upholds `dealloc`'s contract.
        unsafe { System.dealloc(ptr, layout) }
    }
}

fn allocation_reset() {
    LARGEST_ALLOCATION.with(|largest| largest.set(0));
}

/// The largest single allocation since [`allocation_reset`].
fn allocation_largest() -> usize {
    LARGEST_ALLOCATION.with(Cell::get)
}

// ---------------------------------------------------------------------------------------
// The PRNG: splitmix64. Each case gets its own generator derived from (seed, test, case),
// so any case can be replayed alone.

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

struct Rng(u64);

impl Rng {
    fn for_case(seed: u64, test: u64, case: u64) -> Self {
        Rng(mix(seed ^ mix(test.wrapping_add(mix(case)))))
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// Uniform in `0..n`; `n` must be positive.
    fn below(&mut self, n: usize) -> usize {
        assert!(n > 0, "Rng::below(0)");
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    fn bool(&mut self) -> bool {
        self.next_u64() & 1 == 1
    }

    fn byte(&mut self) -> u8 {
        (self.next_u64() >> 56) as u8
    }

    fn u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    /// Uniform in `lo..=u32::MAX`.
    fn u32_from(&mut self, lo: u32) -> u32 {
        let span = u64::from(u32::MAX - lo) + 1;
        lo + (self.next_u64() % span) as u32
    }

    fn fill(&mut self, out: &mut Vec<u8>, n: usize) {
        let mut left = n;
        while left >= 8 {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
            left -= 8;
        }
        out.extend_from_slice(&self.next_u64().to_le_bytes()[..left]);
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn pick_bytes<'a>(&mut self, items: &'a [Vec<u8>]) -> &'a [u8] {
        &items[self.below(items.len())]
    }

    /// A length for random input: mostly short, sometimes long.
    fn random_len(&mut self) -> usize {
        match self.below(10) {
            0..=5 => self.below(17),
            6..=8 => self.below(257),
            _ => self.below(4097),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Failure context: when a case panics (the decoder itself, or an assertion), unwinding
// drops this and it prints what is needed to reproduce the case.

struct CaseContext {
    test: &'static str,
    seed: u64,
    case: u64,
    detail: String,
    input: Vec<u8>,
}

impl CaseContext {
    fn new(test: &'static str, seed: u64) -> Self {
        println!("decoder_fuzz {test}: seed {seed:#018x}");
        CaseContext {
            test,
            seed,
            case: 0,
            detail: String::new(),
            input: Vec::new(),
        }
    }
}

impl Drop for CaseContext {
    fn drop(&mut self) {
        if std::thread::panicking() {
            const SHOWN: usize = 512;
            let hex: String = self
                .input
                .iter()
                .take(SHOWN)
                .map(|b| format!("{b:02x}"))
                .collect();
            let more = if self.input.len() > SHOWN { "..." } else { "" };
            eprintln!(
                "decoder_fuzz {}: FAILED at case {} with seed {:#018x} \
                 (replay with CLUSTERMGR_FUZZ_SEED={:#x}) {}\n  input ({} bytes): {hex}{more}",
                self.test,
                self.case,
                self.seed,
                self.seed,
                self.detail,
                self.input.len(),
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// The message types read off the wire, as one type.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Hello,
    HelloReply,
    Request,
    Reply,
    ExecInput,
    ExecEvent,
    TelemetryFrame,
    TelemetryAck,
}

const KINDS: [Kind; 8] = [
    Kind::Hello,
    Kind::HelloReply,
    Kind::Request,
    Kind::Reply,
    Kind::ExecInput,
    Kind::ExecEvent,
    Kind::TelemetryFrame,
    Kind::TelemetryAck,
];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Hello => "Hello",
            Kind::HelloReply => "HelloReply",
            Kind::Request => "Request",
            Kind::Reply => "Reply",
            Kind::ExecInput => "ExecInput",
            Kind::ExecEvent => "ExecEvent",
            Kind::TelemetryFrame => "TelemetryFrame",
            Kind::TelemetryAck => "TelemetryAck",
        }
    }

    /// Whether the top-level type is a struct (no variant tag leads its encoding).
    fn is_struct(self) -> bool {
        matches!(self, Kind::Hello | Kind::TelemetryAck)
    }

    /// Variants of the top-level enum (1 for the structs `Hello` and `TelemetryAck`). Kept in step with the
    /// message types by [`Msg::variant`], whose matches are exhaustive.
    fn variants(self) -> u32 {
        match self {
            Kind::Hello => 1,
            Kind::HelloReply => 2,
            Kind::Request => 24,
            Kind::Reply => 22,
            Kind::ExecInput => 3,
            Kind::ExecEvent => 5,
            Kind::TelemetryFrame => 3,
            Kind::TelemetryAck => 1,
        }
    }
}

// PartialEq only: samples carry f64 (the generators never make a NaN).
#[derive(Clone, Debug, PartialEq)]
enum Msg {
    Hello(Hello),
    HelloReply(HelloReply),
    Request(Request),
    Reply(Reply),
    ExecInput(ExecInput),
    ExecEvent(ExecEvent),
    TelemetryFrame(TelemetryFrame),
    TelemetryAck(TelemetryAck),
}

impl Msg {
    fn kind(&self) -> Kind {
        match self {
            Msg::Hello(_) => Kind::Hello,
            Msg::HelloReply(_) => Kind::HelloReply,
            Msg::Request(_) => Kind::Request,
            Msg::Reply(_) => Kind::Reply,
            Msg::ExecInput(_) => Kind::ExecInput,
            Msg::ExecEvent(_) => Kind::ExecEvent,
            Msg::TelemetryFrame(_) => Kind::TelemetryFrame,
            Msg::TelemetryAck(_) => Kind::TelemetryAck,
        }
    }

    fn encode(&self) -> Vec<u8> {
        match self {
            Msg::Hello(m) => codec::encode(m),
            Msg::HelloReply(m) => codec::encode(m),
            Msg::Request(m) => codec::encode(m),
            Msg::Reply(m) => codec::encode(m),
            Msg::ExecInput(m) => codec::encode(m),
            Msg::ExecEvent(m) => codec::encode(m),
            Msg::TelemetryFrame(m) => codec::encode(m),
            Msg::TelemetryAck(m) => codec::encode(m),
        }
    }

    /// The top-level variant index (0 for `Hello`). Exhaustive on purpose: a new variant
    /// fails to compile here, and then [`Kind::variants`] and [`gen_msg`] need updating.
    fn variant(&self) -> u32 {
        match self {
            Msg::Hello(Hello { .. }) => 0,
            Msg::HelloReply(m) => match m {
                HelloReply::Accepted { .. } => 0,
                HelloReply::Refused { .. } => 1,
            },
            Msg::Request(m) => match m {
                Request::Info => 0,
                Request::Exec(_) => 1,
                Request::Csr { .. } => 2,
                Request::InstallCert { .. } => 3,
                Request::Uninstall => 4,
                Request::Upgrade(_) => 5,
                Request::UpgradeCommit { .. } => 6,
                Request::Plan(_) => 7,
                Request::Apply(_) => 8,
                Request::Backups { .. } => 9,
                Request::Restore(_) => 10,
                Request::ExecInContainer { .. } => 11,
                Request::HostKey { .. } => 12,
                Request::Probe(_) => 13,
                Request::Telemetry { .. } => 14,
                Request::Checks(_) => 15,
                Request::LdapCert => 16,
                Request::PackagesMissing(_) => 17,
                Request::PackagePut(_) => 18,
                Request::KeysMake(_) => 19,
                Request::GluuExport(_) => 20,
                Request::GluuSetup(_) => 21,
                Request::GluuRemove { .. } => 22,
                Request::GluuAddComponents { .. } => 23,
            },
            Msg::Reply(m) => match m {
                Reply::Info(_) => 0,
                Reply::Csr { .. } => 1,
                Reply::CertInstalled => 2,
                Reply::Error(_) => 3,
                Reply::Uninstalling => 4,
                Reply::UpgradeReady => 5,
                Reply::UpToDate { .. } => 6,
                Reply::Upgrading { .. } => 7,
                Reply::UpgradeCommitted { .. } => 8,
                Reply::UpgradeRolledBack { .. } => 9,
                Reply::Planned(_) => 10,
                Reply::Applied(_) => 11,
                Reply::Backups(_) => 12,
                Reply::Probed(_) => 13,
                Reply::Checks(_) => 14,
                Reply::LdapCert(_) => 15,
                Reply::PackagesMissing(_) => 16,
                Reply::PackageStored => 17,
                Reply::KeysMade(_) => 18,
                Reply::GluuExported(_) => 19,
                Reply::GluuSetUp(_) => 20,
                Reply::GluuRemoved { .. } => 21,
            },
            Msg::ExecInput(m) => match m {
                ExecInput::Stdin(_) => 0,
                ExecInput::StdinEnd => 1,
                ExecInput::Cancel => 2,
            },
            Msg::ExecEvent(m) => match m {
                ExecEvent::Started { .. } => 0,
                ExecEvent::Stdout(_) => 1,
                ExecEvent::Stderr(_) => 2,
                ExecEvent::Finished(_) => 3,
                ExecEvent::Refused(_) => 4,
            },
            Msg::TelemetryFrame(m) => match m {
                TelemetryFrame::Batch(_) => 0,
                TelemetryFrame::Refused(_) => 1,
                TelemetryFrame::Packed(_) => 2,
            },
            Msg::TelemetryAck(TelemetryAck { .. }) => 0,
        }
    }

    /// Places in the encoding that hold a tag with a fixed number of valid values: the
    /// top-level variant, and nested tags whose offset follows from the message without a
    /// parser.
    fn tag_slots(&self) -> Vec<Slot> {
        let mut slots = Vec::new();
        let kind = self.kind();
        if !kind.is_struct() {
            slots.push(Slot::Varint {
                at: 0,
                valid: kind.variants(),
            });
        }
        match self {
            // The Command variant comes first in ExecSpec.
            Msg::Request(Request::Exec(_)) => slots.push(Slot::Varint { at: 1, valid: 2 }),
            // `new_key` is a bool: one byte, 0 or 1.
            Msg::Request(Request::Csr { .. }) => slots.push(Slot::Byte { at: 1, valid: 2 }),
            // RemoteError starts with its ErrorKind variant.
            Msg::ExecEvent(ExecEvent::Refused(_)) => slots.push(Slot::Varint { at: 1, valid: 3 }),
            Msg::Reply(Reply::Error(_)) => slots.push(Slot::Varint { at: 1, valid: 3 }),
            // ExitOutcome starts with `code: Option<i32>`: one byte, 0 or 1.
            Msg::ExecEvent(ExecEvent::Finished(_)) => slots.push(Slot::Byte { at: 1, valid: 2 }),
            // A change set starts with its revision and entry count; the first entry with
            // its path, then its Scope and Content variants.
            Msg::Request(Request::Plan(set) | Request::Apply(set)) => {
                if let Some(entry) = set.entries.first() {
                    let entries = 1 + varint_len(set.revision);
                    let at = after_str(entries + varint_len(set.entries.len() as u64), &entry.path);
                    slots.push(Slot::Varint { at, valid: 2 });
                    slots.push(Slot::Varint {
                        at: after_scope(at, &entry.scope),
                        valid: 5,
                    });
                }
            }
            // The Scope variant follows the path.
            Msg::Request(Request::Backups { path, .. }) => slots.push(Slot::Varint {
                at: after_str(1, path),
                valid: 2,
            }),
            // RestoreSpec: path, Scope, generation, then `validate: Option<Validator>`.
            Msg::Request(Request::Restore(spec)) => {
                let at = after_str(1, &spec.path);
                slots.push(Slot::Varint { at, valid: 2 });
                slots.push(Slot::Byte {
                    at: after_scope(at, &spec.scope) + varint_len(u64::from(spec.generation)),
                    valid: 2,
                });
            }
            // The ExecSpec, so its Command variant, follows the root.
            Msg::Request(Request::ExecInContainer { root, .. }) => slots.push(Slot::Varint {
                at: after_str(1, root),
                valid: 2,
            }),
            // The Scope variant follows the path.
            Msg::Request(Request::HostKey { path, .. }) => slots.push(Slot::Varint {
                at: after_str(1, path),
                valid: 2,
            }),
            // The first EntryPlan's Change variant follows its path, then
            // `old_sha256: Option<String>`.
            Msg::Reply(Reply::Planned(plans)) => {
                if let Some(plan) = plans.first() {
                    let at = after_str(1 + varint_len(plans.len() as u64), &plan.path);
                    slots.push(Slot::Varint { at, valid: 5 });
                    slots.push(Slot::Byte {
                        at: at + 1,
                        valid: 2,
                    });
                }
            }
            // ApplyReport: revision, entries (the first as in Planned), then the ApplyResult
            // variant, whose offset is known when there are no entries.
            Msg::Reply(Reply::Applied(report)) => {
                let entries = 1 + varint_len(report.revision);
                match report.entries.first() {
                    // Unchanged, Applied, RolledBack, Stale, NotInstalled.
                    None => slots.push(Slot::Varint {
                        at: entries + 1,
                        valid: 5,
                    }),
                    Some(plan) => slots.push(Slot::Varint {
                        at: after_str(
                            entries + varint_len(report.entries.len() as u64),
                            &plan.path,
                        ),
                        valid: 5,
                    }),
                }
            }
            _ => {}
        }
        slots
    }
}

/// How many bytes the postcard varint of `v` takes.
fn varint_len(v: u64) -> usize {
    let mut out = Vec::new();
    push_varint(&mut out, v);
    out.len()
}

/// Where what follows a string encoded at `at` starts.
fn after_str(at: usize, s: &str) -> usize {
    at + varint_len(s.len() as u64) + s.len()
}

/// Where what follows a Scope encoded at `at` starts.
fn after_scope(at: usize, scope: &Scope) -> usize {
    match scope {
        Scope::Host => at + 1,
        Scope::Container { root } => after_str(at + 1, root),
    }
}

fn decode_as(kind: Kind, bytes: &[u8]) -> Result<Msg, ProtocolError> {
    let what = kind.name();
    Ok(match kind {
        Kind::Hello => Msg::Hello(codec::decode(what, bytes)?),
        Kind::HelloReply => Msg::HelloReply(codec::decode(what, bytes)?),
        Kind::Request => Msg::Request(codec::decode(what, bytes)?),
        Kind::Reply => Msg::Reply(codec::decode(what, bytes)?),
        Kind::ExecInput => Msg::ExecInput(codec::decode(what, bytes)?),
        Kind::ExecEvent => Msg::ExecEvent(codec::decode(what, bytes)?),
        Kind::TelemetryFrame => Msg::TelemetryFrame(codec::decode(what, bytes)?),
        Kind::TelemetryAck => Msg::TelemetryAck(codec::decode(what, bytes)?),
    })
}

#[derive(Clone, Copy, Debug)]
enum Slot {
    /// A postcard varint `u32` enum tag with `valid` variants.
    Varint { at: usize, valid: u32 },
    /// A one-byte tag (bool, Option) with `valid` values.
    Byte { at: usize, valid: u8 },
}

// ---------------------------------------------------------------------------------------
// Generating valid messages.

fn gen_u64(rng: &mut Rng) -> u64 {
    match rng.below(6) {
        0 => 0,
        1 => *rng.pick(&[
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX - 1,
            u64::MAX,
        ]),
        2 => rng.next_u64(),
        3 => {
            let shift = rng.below(64) as u32;
            rng.next_u64() >> shift
        }
        _ => rng.below(100_000) as u64,
    }
}

fn gen_i64(rng: &mut Rng) -> i64 {
    match rng.below(5) {
        0 => *rng.pick(&[0, 1, -1, 63, -64, 64, -65, i64::MIN, i64::MAX]),
        1 => rng.next_u64() as i64,
        2 => 1_700_000_000_000 + rng.below(100_000_000_000) as i64,
        _ => gen_u64(rng) as i64,
    }
}

fn gen_i32(rng: &mut Rng) -> i32 {
    match rng.below(4) {
        0 => *rng.pick(&[0, 1, -1, 2, 127, 128, 255, i32::MIN, i32::MAX]),
        1 => rng.u32() as i32,
        _ => rng.below(256) as i32,
    }
}

fn gen_u16(rng: &mut Rng) -> u16 {
    match rng.below(4) {
        0 => *rng.pick(&[0, 1, 2, 127, 128, 16_383, 16_384, u16::MAX]),
        1 => rng.u32() as u16,
        _ => rng.range(1, 4) as u16,
    }
}

fn gen_range(rng: &mut Rng) -> VersionRange {
    VersionRange {
        min: gen_u16(rng),
        max: gen_u16(rng),
    }
}

fn gen_bool(rng: &mut Rng) -> bool {
    rng.bool()
}

fn gen_option<T>(rng: &mut Rng, f: impl FnOnce(&mut Rng) -> T) -> Option<T> {
    if rng.bool() { Some(f(rng)) } else { None }
}

fn gen_ascii(rng: &mut Rng, len: usize) -> String {
    (0..len)
        .map(|_| char::from(b' ' + rng.below(95) as u8))
        .collect()
}

fn gen_string(rng: &mut Rng) -> String {
    const PIECES: &[&str] = &[
        "a",
        "Z",
        "0",
        " ",
        "-",
        "/",
        ".",
        "_",
        "\"",
        "ü",
        "é",
        "ß",
        "日本",
        "🦀",
        "\n",
        "\t",
        "\u{0}",
        "\u{7f}",
        "\u{80}",
        "\u{7ff}",
        "\u{800}",
        "\u{fffd}",
        "\u{10ffff}",
        "gluu",
        "oxauth",
        "/opt/gluu-server",
    ];
    match rng.below(10) {
        0 => String::new(),
        1..=4 => {
            let len = rng.range(1, 24);
            gen_ascii(rng, len)
        }
        5..=7 => {
            let n = rng.range(1, 12);
            (0..n).map(|_| *rng.pick(PIECES)).collect()
        }
        8 => {
            let len = rng.range(100, 700);
            gen_ascii(rng, len)
        }
        _ => format!("{}.{}.{}", rng.below(10), rng.below(100), rng.below(1000)),
    }
}

fn gen_bytes(rng: &mut Rng) -> Vec<u8> {
    let len = match rng.below(6) {
        0 => 0,
        1..=3 => rng.range(1, 16),
        4 => rng.range(17, 130),
        _ => rng.range(131, 400),
    };
    let mut out = Vec::with_capacity(len);
    rng.fill(&mut out, len);
    out
}

fn gen_node(rng: &mut Rng) -> NodeName {
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
    const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    const INNER: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789-";
    let labels = rng.range(1, 3);
    let mut name = String::new();
    for label in 0..labels {
        if label > 0 {
            name.push('.');
        }
        let len = if rng.one_in(20) { 63 } else { rng.range(1, 12) };
        for i in 0..len {
            let set = if label == 0 && i == 0 {
                LETTERS // never all digits, which would look like an IP address
            } else if i == 0 || i == len - 1 {
                ALNUM
            } else {
                INNER
            };
            name.push(char::from(*rng.pick(set)));
        }
    }
    NodeName::new(&name).unwrap_or_else(|e| panic!("generated node name {name:?}: {e}"))
}

fn gen_remote_error(rng: &mut Rng) -> RemoteError {
    RemoteError {
        kind: *rng.pick(&[ErrorKind::Refused, ErrorKind::Invalid, ErrorKind::Internal]),
        message: gen_string(rng),
    }
}

fn gen_command(rng: &mut Rng) -> Command {
    if rng.bool() {
        let n = rng.below(6);
        Command::Argv((0..n).map(|_| gen_string(rng)).collect())
    } else {
        Command::Shell(gen_string(rng))
    }
}

fn gen_exec_spec(rng: &mut Rng) -> ExecSpec {
    let command = gen_command(rng);
    let n = rng.below(5);
    let env = (0..n).map(|_| (gen_string(rng), gen_string(rng))).collect();
    ExecSpec {
        command,
        env,
        cwd: gen_option(rng, gen_string),
        stdin: gen_bool(rng),
        timeout_ms: gen_option(rng, gen_u64),
        requested_by: gen_string(rng),
    }
}

fn gen_node_info(rng: &mut Rng) -> NodeInfo {
    NodeInfo {
        node: gen_node(rng),
        hostname: gen_string(rng),
        os_release: gen_string(rng),
        kernel: gen_string(rng),
        arch: gen_string(rng),
        glibc: gen_option(rng, gen_string),
        agent_version: gen_string(rng),
        uptime_secs: gen_u64(rng),
        clock_unix_ms: gen_i64(rng),
        gluu: gen_option(rng, |rng| {
            let n = rng.below(6);
            GluuInstall {
                version: gen_option(rng, gen_string),
                root: gen_string(rng),
                components: (0..n).map(|_| gen_string(rng)).collect(),
            }
        }),
        exec_allowed: gen_bool(rng),
    }
}

fn gen_exit(rng: &mut Rng) -> ExitOutcome {
    ExitOutcome {
        code: gen_option(rng, gen_i32),
        signal: gen_option(rng, gen_i32),
        timed_out: gen_bool(rng),
        cancelled: gen_bool(rng),
        duration_ms: gen_u64(rng),
    }
}

fn gen_u32(rng: &mut Rng) -> u32 {
    match rng.below(4) {
        0 => *rng.pick(&[0, 1, 127, 128, 0o644, 0o7777, 16_383, 16_384, u32::MAX]),
        1 => rng.u32(),
        _ => rng.below(70_000) as u32,
    }
}

/// A SHA-256 as the agent writes it, or any string.
fn gen_sha256(rng: &mut Rng) -> String {
    if rng.bool() {
        (0..64)
            .map(|_| char::from(*rng.pick(b"0123456789abcdef")))
            .collect()
    } else {
        gen_string(rng)
    }
}

fn gen_scope(rng: &mut Rng) -> Scope {
    if rng.bool() {
        Scope::Host
    } else {
        Scope::Container {
            root: gen_string(rng),
        }
    }
}

fn gen_ldap_attr(rng: &mut Rng) -> LdapAttr {
    let object = match rng.below(3) {
        0 => LdapObject::Data {
            dn: gen_string(rng),
        },
        1 => LdapObject::Config {
            dn: gen_string(rng),
        },
        _ => LdapObject::Database {
            suffix: gen_string(rng),
            child: gen_option(rng, gen_string),
        },
    };
    let strings = |rng: &mut Rng| {
        (0..rng.below(3))
            .map(|_| gen_string(rng))
            .collect::<Vec<_>>()
    };
    let value = match rng.below(3) {
        0 => LdapValue::Exactly(strings(rng)),
        1 => LdapValue::Include(strings(rng)),
        _ => LdapValue::JsonField {
            pointer: gen_string(rng),
            json: gen_string(rng),
        },
    };
    LdapAttr {
        object,
        attribute: gen_string(rng),
        value,
        create: (0..rng.below(3))
            .map(|_| (gen_string(rng), strings(rng)))
            .collect(),
        redact: strings(rng),
        bump_revision: gen_option(rng, gen_string),
        join: rng.bool(),
        encrypt: rng.bool(),
    }
}

fn gen_package_file(rng: &mut Rng) -> PackageFile {
    PackageFile {
        file: gen_string(rng),
        size: gen_u64(rng),
        sha256: gen_string(rng),
    }
}

fn gen_gluu_files(rng: &mut Rng) -> Vec<GluuFile> {
    (0..rng.below(3))
        .map(|_| GluuFile {
            name: gen_string(rng),
            mode: gen_u32(rng),
            uid: gen_u32(rng),
            gid: gen_u32(rng),
            bytes: gen_bytes(rng),
        })
        .collect()
}

fn gen_package_files(rng: &mut Rng) -> Vec<PackageFile> {
    (0..rng.below(3)).map(|_| gen_package_file(rng)).collect()
}

fn gen_content(rng: &mut Rng) -> Content {
    match rng.below(6) {
        5 => Content::Package(Box::new(PackageSpec {
            name: gen_string(rng),
            deb: (0..rng.below(3)).map(|_| gen_string(rng)).collect(),
            rpm: (0..rng.below(3)).map(|_| gen_string(rng)).collect(),
            files: gen_package_files(rng),
        })),
        4 => Content::OpenDj(Box::new(OpenDjReplication {
            host: gen_string(rng),
            peers: (0..rng.below(3)).map(|_| gen_string(rng)).collect(),
            base_dns: (0..rng.below(3)).map(|_| gen_string(rng)).collect(),
            admin_password: gen_string(rng),
            join: rng.bool(),
            leave: rng.bool(),
        })),
        3 => Content::Ldap(Box::new(gen_ldap_attr(rng))),
        0 => Content::File {
            bytes: gen_bytes(rng),
            mode: gen_u32(rng),
            owner: gen_option(rng, gen_string),
            group: gen_option(rng, gen_string),
        },
        1 => Content::Property {
            key: gen_string(rng),
            value: gen_string(rng),
        },
        _ => Content::Block {
            name: gen_string(rng),
            body: gen_string(rng),
        },
    }
}

fn gen_validator(rng: &mut Rng) -> Validator {
    match rng.below(3) {
        0 => Validator::Nginx,
        1 => Validator::Command(gen_command(rng)),
        _ => Validator::Replication {
            suffix: gen_string(rng),
            deadline_ms: gen_u64(rng),
        },
    }
}

fn gen_actions(rng: &mut Rng) -> Vec<Action> {
    let n = rng.below(4);
    (0..n)
        .map(|_| match rng.below(4) {
            0 => Action::Service {
                name: gen_string(rng),
                verb: *rng.pick(&[ServiceVerb::Reload, ServiceVerb::Restart]),
            },
            1 => Action::Command(gen_command(rng)),
            2 => Action::JavaTrust {
                alias: gen_string(rng),
                cert: gen_string(rng),
            },
            _ => Action::RestartInstalled {
                services: (0..rng.below(3)).map(|_| gen_string(rng)).collect(),
            },
        })
        .collect()
}

fn gen_change_set(rng: &mut Rng) -> ChangeSet {
    let n = rng.below(5);
    ChangeSet {
        revision: gen_u64(rng),
        entries: (0..n)
            .map(|_| Entry {
                path: gen_string(rng),
                scope: gen_scope(rng),
                content: gen_content(rng),
                secret: gen_bool(rng),
                validate: gen_option(rng, gen_validator),
                on_change: gen_actions(rng),
            })
            .collect(),
        requested_by: gen_string(rng),
    }
}

fn gen_meta(rng: &mut Rng) -> Meta {
    Meta {
        mode: gen_u32(rng),
        uid: gen_u32(rng),
        gid: gen_u32(rng),
    }
}

fn gen_entry_plans(rng: &mut Rng) -> Vec<EntryPlan> {
    const CHANGES: [Change; 5] = [
        Change::Unchanged,
        Change::Create,
        Change::Modify,
        Change::Metadata,
        Change::Waiting,
    ];
    let n = rng.below(5);
    (0..n)
        .map(|_| EntryPlan {
            path: gen_string(rng),
            change: *rng.pick(&CHANGES),
            old_sha256: gen_option(rng, gen_sha256),
            new_sha256: gen_sha256(rng),
            old_meta: gen_option(rng, gen_meta),
            new_meta: gen_option(rng, gen_meta),
            old_text: gen_option(rng, gen_string),
            new_text: gen_option(rng, gen_string),
        })
        .collect()
}

fn gen_apply_report(rng: &mut Rng) -> ApplyReport {
    let entries = gen_entry_plans(rng);
    let result = match rng.below(5) {
        4 => ApplyResult::NotInstalled {
            step: gen_string(rng),
            output: gen_string(rng),
        },
        0 => ApplyResult::Unchanged,
        1 => ApplyResult::Applied,
        2 => ApplyResult::Stale {
            applied: gen_u64(rng),
        },
        _ => ApplyResult::RolledBack {
            step: gen_string(rng),
            output: gen_string(rng),
            restored_cleanly: gen_bool(rng),
        },
    };
    ApplyReport {
        revision: gen_u64(rng),
        entries,
        result,
        steps: gen_steps(rng),
    }
}

fn gen_check_report(rng: &mut Rng) -> CheckReport {
    let ldap = gen_option(rng, |rng| {
        if gen_bool(rng) {
            return Err(gen_string(rng));
        }
        let n = rng.below(3);
        Ok(LdapState {
            server: [LdapServer::OpenLdap, LdapServer::OpenDj, LdapServer::Other][rng.below(3)],
            took_ms: gen_u64(rng),
            csns: (0..n)
                .map(|_| Csn {
                    server_id: gen_string(rng),
                    csn: gen_string(rng),
                })
                .collect(),
            consumers: (0..n)
                .map(|_| Consumer {
                    name: gen_string(rng),
                    provider: gen_string(rng),
                    connected: gen_bool(rng),
                    phase: gen_string(rng),
                    last_contact_ms: gen_option(rng, gen_i64),
                    next_connect_ms: gen_option(rng, gen_i64),
                })
                .collect(),
            replicas: (0..n)
                .map(|_| OpenDjReplica {
                    dn: gen_string(rng),
                    domain: gen_string(rng),
                    server_id: gen_string(rng),
                    missing_changes: gen_option(rng, gen_i64),
                    approximate_delay_ms: gen_option(rng, gen_i64),
                    oldest_unsynced_ms: gen_option(rng, gen_i64),
                    generation_id: gen_option(rng, gen_string),
                    connected_to: gen_option(rng, gen_string),
                })
                .collect(),
            heartbeats: (0..n)
                .map(|_| Heartbeat {
                    node: gen_string(rng),
                    written_ms: gen_i64(rng),
                    read_ms: gen_i64(rng),
                })
                .collect(),
            heartbeat_error: gen_option(rng, gen_string),
        })
    });
    let n = rng.below(3);
    CheckReport {
        started_ms: gen_i64(rng),
        ldap,
        disks: (0..n)
            .map(|_| DiskUse {
                mount: gen_string(rng),
                size_bytes: gen_u64(rng),
                avail_bytes: gen_u64(rng),
            })
            .collect(),
        ports: (0..n)
            .map(|_| PortReach {
                probe: gen_port_probe(rng),
                result: if gen_bool(rng) {
                    Ok(rng.below(1000) as u32)
                } else {
                    Err(gen_string(rng))
                },
            })
            .collect(),
        csync2: gen_option(rng, |rng| Csync2State {
            configured: gen_bool(rng),
            listener: if gen_bool(rng) {
                Ok(())
            } else {
                Err(gen_string(rng))
            },
            dirty: (0..n)
                .map(|_| Dirty {
                    peer: gen_string(rng),
                    path: gen_string(rng),
                })
                .collect(),
            dirty_total: rng.below(100) as u32,
            last_sync_ms: gen_option(rng, gen_i64),
            kept: (0..n)
                .map(|_| KeptCopy {
                    path: gen_string(rng),
                    time_ms: gen_i64(rng),
                })
                .collect(),
            error: gen_option(rng, gen_string),
        }),
        certs: (0..n)
            .map(|_| CertState {
                probe: gen_cert_probe(rng),
                result: if gen_bool(rng) {
                    Ok((gen_string(rng), gen_i64(rng)))
                } else {
                    Err(gen_string(rng))
                },
            })
            .collect(),
        services: (0..n)
            .map(|_| ServiceState {
                label: gen_string(rng),
                result: if gen_bool(rng) {
                    Ok(gen_string(rng))
                } else {
                    Err(gen_string(rng))
                },
            })
            .collect(),
    }
}

fn gen_service_probe(rng: &mut Rng) -> ServiceProbe {
    ServiceProbe {
        label: gen_string(rng),
        kind: if gen_bool(rng) {
            ServiceKind::Https {
                port: rng.below(65536) as u16,
                host: gen_string(rng),
                path: gen_string(rng),
                expect: gen_string(rng),
                cert: gen_string(rng),
            }
        } else if gen_bool(rng) {
            ServiceKind::RedisPing {
                addr: gen_string(rng),
            }
        } else {
            ServiceKind::RedisPingAuth {
                addr: gen_string(rng),
                password_file: gen_string(rng),
            }
        },
    }
}

fn gen_cert_probe(rng: &mut Rng) -> CertProbe {
    CertProbe {
        label: gen_string(rng),
        path: gen_string(rng),
    }
}

fn gen_port_probe(rng: &mut Rng) -> PortProbe {
    PortProbe {
        node: gen_string(rng),
        host: gen_string(rng),
        port: rng.below(65536) as u16,
    }
}

fn gen_steps(rng: &mut Rng) -> Vec<StepRun> {
    let n = rng.below(4);
    (0..n)
        .map(|_| StepRun {
            step: gen_string(rng),
            ok: gen_bool(rng),
            output: gen_string(rng),
        })
        .collect()
}

fn gen_probe(rng: &mut Rng) -> ProbeSpec {
    let n = rng.below(4);
    ProbeSpec {
        services: (0..n).map(|_| gen_string(rng)).collect(),
        https: gen_bool(rng).then(|| HttpsProbe {
            port: gen_u16(rng),
            host: gen_string(rng),
            path: gen_string(rng),
            cert_sha256: gen_string(rng),
        }),
    }
}

fn gen_backups(rng: &mut Rng) -> Vec<BackupInfo> {
    let n = rng.below(5);
    (0..n)
        .map(|_| BackupInfo {
            generation: gen_u32(rng),
            replaced_at_ms: gen_i64(rng),
            sha256: gen_sha256(rng),
            meta: gen_meta(rng),
        })
        .collect()
}

fn gen_restore_spec(rng: &mut Rng) -> RestoreSpec {
    RestoreSpec {
        path: gen_string(rng),
        scope: gen_scope(rng),
        generation: gen_u32(rng),
        validate: gen_option(rng, gen_validator),
        on_change: gen_actions(rng),
        requested_by: gen_string(rng),
    }
}

/// A random valid message of `kind`, top-level variant `variant`.
fn gen_f64(rng: &mut Rng) -> f64 {
    match rng.below(4) {
        0 => 0.0,
        1 => f64::from(rng.u32()),
        2 => -1.5e300,
        _ => f64::from_bits(gen_u64(rng) & !(0x7ff << 52)),
    }
}

fn gen_records(rng: &mut Rng) -> Vec<Record> {
    (0..rng.below(4))
        .map(|_| Record {
            seq: gen_u64(rng),
            time_ms: gen_i64(rng),
            body: match rng.below(3) {
                0 => Body::Log {
                    source: gen_string(rng),
                    line: gen_string(rng),
                },
                1 => Body::Metrics(
                    (0..rng.below(3))
                        .map(|_| Sample {
                            name: gen_string(rng),
                            labels: (0..rng.below(3))
                                .map(|_| (gen_string(rng), gen_string(rng)))
                                .collect(),
                            value: gen_f64(rng),
                        })
                        .collect(),
                ),
                _ => Body::Gap {
                    lost: gen_u64(rng),
                    why: gen_string(rng),
                },
            },
        })
        .collect()
}

fn gen_msg(rng: &mut Rng, kind: Kind, variant: u32) -> Msg {
    let msg = match (kind, variant) {
        (Kind::Hello, _) => Msg::Hello(Hello {
            versions: gen_range(rng),
            identity: gen_string(rng),
            software: gen_string(rng),
        }),
        (Kind::HelloReply, 0) => Msg::HelloReply(HelloReply::Accepted {
            version: gen_u16(rng),
            node: gen_node(rng),
            software: gen_string(rng),
        }),
        (Kind::HelloReply, _) => Msg::HelloReply(HelloReply::Refused {
            reason: gen_string(rng),
            versions: gen_range(rng),
        }),
        (Kind::Request, 0) => Msg::Request(Request::Info),
        (Kind::Request, 1) => Msg::Request(Request::Exec(gen_exec_spec(rng))),
        (Kind::Request, 2) => Msg::Request(Request::Csr {
            new_key: gen_bool(rng),
        }),
        (Kind::Request, 3) => Msg::Request(Request::InstallCert {
            cert_pem: gen_string(rng),
        }),
        (Kind::Request, 4) => Msg::Request(Request::Uninstall),
        (Kind::Request, 5) => Msg::Request(Request::Upgrade(UpgradeSpec {
            size: gen_u64(rng),
            sha256: gen_string(rng),
            commit_within_ms: gen_u64(rng),
        })),
        (Kind::Request, 6) => Msg::Request(Request::UpgradeCommit {
            sha256: gen_string(rng),
        }),
        (Kind::Request, 7) => Msg::Request(Request::Plan(gen_change_set(rng))),
        (Kind::Request, 8) => Msg::Request(Request::Apply(gen_change_set(rng))),
        (Kind::Request, 9) => Msg::Request(Request::Backups {
            path: gen_string(rng),
            scope: gen_scope(rng),
        }),
        (Kind::Request, 10) => Msg::Request(Request::Restore(gen_restore_spec(rng))),
        (Kind::Request, 11) => Msg::Request(Request::ExecInContainer {
            root: gen_string(rng),
            spec: gen_exec_spec(rng),
        }),
        (Kind::Request, 12) => Msg::Request(Request::HostKey {
            path: gen_string(rng),
            scope: gen_scope(rng),
        }),
        (Kind::Request, 13) => Msg::Request(Request::Probe(gen_probe(rng))),
        (Kind::Request, 14) => Msg::Request(Request::Telemetry {
            after: gen_u64(rng),
        }),
        (Kind::Request, 16) => Msg::Request(Request::LdapCert),
        (Kind::Request, 17) => Msg::Request(Request::PackagesMissing(gen_package_files(rng))),
        (Kind::Request, 18) => Msg::Request(Request::PackagePut(gen_package_file(rng))),
        (Kind::Request, 20) => Msg::Request(Request::GluuExport(GluuExportSpec {
            root: gen_string(rng),
            password: gen_bool(rng).then(|| gen_string(rng)),
        })),
        (Kind::Request, 21) => Msg::Request(Request::GluuSetup(Box::new(GluuSetupSpec {
            root: gen_string(rng),
            properties: gen_bytes(rng),
            no_data: gen_bool(rng),
            certs: gen_gluu_files(rng),
            schema: gen_gluu_files(rng),
            hostname: gen_string(rng),
        }))),
        (Kind::Request, 22) => Msg::Request(Request::GluuRemove {
            root: gen_string(rng),
        }),
        (Kind::Request, 23) => Msg::Request(Request::GluuAddComponents {
            root: gen_string(rng),
            components: (0..rng.below(3)).map(|_| gen_string(rng)).collect(),
        }),
        (Kind::Request, 19) => Msg::Request(Request::KeysMake(KeysSpec {
            root: gen_string(rng),
            keystore: gen_bytes(rng),
            password: gen_string(rng),
            delete: (0..rng.below(3)).map(|_| gen_string(rng)).collect(),
            make: (0..rng.below(3))
                .map(|_| KeyMake {
                    alias: gen_string(rng),
                    key_alg: gen_string(rng),
                    key_size: gen_u32(rng),
                    sig_alg: gen_string(rng),
                    validity_days: gen_u32(rng),
                })
                .collect(),
        })),
        (Kind::Request, _) => Msg::Request(Request::Checks(CheckSpec {
            interval_ms: gen_u64(rng),
            deadline_ms: gen_u64(rng),
            reach: (0..rng.below(3)).map(|_| gen_port_probe(rng)).collect(),
            csync2: gen_option(rng, gen_string),
            certs: (0..rng.below(3)).map(|_| gen_cert_probe(rng)).collect(),
            services: (0..rng.below(3)).map(|_| gen_service_probe(rng)).collect(),
            gluu_endpoints: gen_option(rng, gen_string),
        })),
        (Kind::Reply, 0) => Msg::Reply(Reply::Info(Box::new(gen_node_info(rng)))),
        (Kind::Reply, 1) => Msg::Reply(Reply::Csr {
            pem: gen_string(rng),
        }),
        (Kind::Reply, 2) => Msg::Reply(Reply::CertInstalled),
        (Kind::Reply, 3) => Msg::Reply(Reply::Error(gen_remote_error(rng))),
        (Kind::Reply, 4) => Msg::Reply(Reply::Uninstalling),
        (Kind::Reply, 5) => Msg::Reply(Reply::UpgradeReady),
        (Kind::Reply, 6) => Msg::Reply(Reply::UpToDate {
            version: gen_string(rng),
        }),
        (Kind::Reply, 7) => Msg::Reply(Reply::Upgrading {
            from: gen_string(rng),
            to: gen_string(rng),
        }),
        (Kind::Reply, 8) => Msg::Reply(Reply::UpgradeCommitted {
            version: gen_string(rng),
        }),
        (Kind::Reply, 9) => Msg::Reply(Reply::UpgradeRolledBack {
            version: gen_string(rng),
            reason: gen_string(rng),
        }),
        (Kind::Reply, 10) => Msg::Reply(Reply::Planned(gen_entry_plans(rng))),
        (Kind::Reply, 11) => Msg::Reply(Reply::Applied(Box::new(gen_apply_report(rng)))),
        (Kind::Reply, 12) => Msg::Reply(Reply::Backups(gen_backups(rng))),
        (Kind::Reply, 13) => Msg::Reply(Reply::Probed(gen_steps(rng))),
        (Kind::Reply, 15) => Msg::Reply(Reply::LdapCert(gen_option(rng, gen_string))),
        (Kind::Reply, 16) => Msg::Reply(Reply::PackagesMissing(gen_package_files(rng))),
        (Kind::Reply, 17) => Msg::Reply(Reply::PackageStored),
        (Kind::Reply, 19) => Msg::Reply(Reply::GluuExported(Box::new(GluuExport {
            properties: gen_bytes(rng),
            certs: gen_gluu_files(rng),
            schema: gen_gluu_files(rng),
        }))),
        (Kind::Reply, 20) => Msg::Reply(Reply::GluuSetUp(gen_steps(rng))),
        (Kind::Reply, 21) => Msg::Reply(Reply::GluuRemoved {
            moved_to: gen_string(rng),
        }),
        (Kind::Reply, 18) => Msg::Reply(Reply::KeysMade(KeysMade {
            keystore: gen_bytes(rng),
            certs: (0..rng.below(3))
                .map(|_| (gen_string(rng), gen_string(rng)))
                .collect(),
        })),
        (Kind::Reply, _) => Msg::Reply(Reply::Checks(Box::new(gen_check_report(rng)))),
        (Kind::ExecInput, 0) => Msg::ExecInput(ExecInput::Stdin(gen_bytes(rng))),
        (Kind::ExecInput, 1) => Msg::ExecInput(ExecInput::StdinEnd),
        (Kind::ExecInput, _) => Msg::ExecInput(ExecInput::Cancel),
        (Kind::ExecEvent, 0) => Msg::ExecEvent(ExecEvent::Started { pid: rng.u32() }),
        (Kind::ExecEvent, 1) => Msg::ExecEvent(ExecEvent::Stdout(gen_bytes(rng))),
        (Kind::ExecEvent, 2) => Msg::ExecEvent(ExecEvent::Stderr(gen_bytes(rng))),
        (Kind::ExecEvent, 3) => Msg::ExecEvent(ExecEvent::Finished(gen_exit(rng))),
        (Kind::ExecEvent, _) => Msg::ExecEvent(ExecEvent::Refused(gen_remote_error(rng))),
        (Kind::TelemetryFrame, 0) => Msg::TelemetryFrame(TelemetryFrame::Batch(gen_records(rng))),
        (Kind::TelemetryFrame, 1) => {
            Msg::TelemetryFrame(TelemetryFrame::Refused(gen_remote_error(rng)))
        }
        (Kind::TelemetryFrame, _) => Msg::TelemetryFrame(TelemetryFrame::Packed(gen_bytes(rng))),
        (Kind::TelemetryAck, _) => Msg::TelemetryAck(TelemetryAck {
            stored_through: gen_u64(rng),
        }),
    };
    assert_eq!(msg.variant(), variant.min(kind.variants() - 1));
    msg
}

fn gen_any_msg(rng: &mut Rng) -> Msg {
    let kind = *rng.pick(&KINDS);
    let variant = rng.below(kind.variants() as usize) as u32;
    gen_msg(rng, kind, variant)
}

/// Hand-picked extremes, on top of the random corpus.
fn edge_messages() -> Vec<Msg> {
    let node = |s: &str| NodeName::new(s).expect("valid node name");
    let exit = |code, signal, flag, duration_ms| ExitOutcome {
        code,
        signal,
        timed_out: flag,
        cancelled: flag,
        duration_ms,
    };
    let meta = |n| Meta {
        mode: n,
        uid: n,
        gid: n,
    };
    let plan = |path: &str, change, present: bool| EntryPlan {
        path: path.into(),
        change,
        old_sha256: present.then(String::new),
        new_sha256: if present {
            "0".repeat(64)
        } else {
            String::new()
        },
        old_meta: present.then(|| meta(0)),
        new_meta: present.then(|| meta(u32::MAX)),
        old_text: present.then(String::new),
        new_text: present.then(|| "é\n".repeat(5)),
    };
    let spec = |command, env, cwd, stdin| ExecSpec {
        command,
        env,
        cwd,
        stdin,
        timeout_ms: stdin.then_some(u64::MAX),
        requested_by: String::new(),
    };
    vec![
        Msg::Hello(Hello {
            versions: VersionRange { min: 0, max: 0 },
            identity: String::new(),
            software: String::new(),
        }),
        Msg::Hello(Hello {
            versions: VersionRange {
                min: u16::MAX,
                max: u16::MAX,
            },
            identity: "🦀".repeat(40),
            software: "\u{0}".repeat(3),
        }),
        Msg::Hello(Hello {
            versions: VersionRange::ours(),
            identity: "prod".into(),
            software: "0.1.0".into(),
        }),
        Msg::HelloReply(HelloReply::Accepted {
            version: u16::MAX,
            node: node("a"),
            software: String::new(),
        }),
        Msg::HelloReply(HelloReply::Refused {
            reason: String::new(),
            versions: VersionRange { min: 2, max: 1 },
        }),
        Msg::Request(Request::Info),
        Msg::Request(Request::Exec(ExecSpec {
            command: Command::Argv(vec![]),
            env: vec![],
            cwd: None,
            stdin: false,
            timeout_ms: None,
            requested_by: String::new(),
        })),
        Msg::Request(Request::Exec(ExecSpec {
            command: Command::Shell("true".into()),
            env: vec![(String::new(), String::new())],
            cwd: Some("/".into()),
            stdin: true,
            timeout_ms: Some(u64::MAX),
            requested_by: "root@controller".into(),
        })),
        Msg::Request(Request::Csr { new_key: true }),
        Msg::Request(Request::Csr { new_key: false }),
        Msg::Request(Request::InstallCert {
            cert_pem: String::new(),
        }),
        Msg::Reply(Reply::CertInstalled),
        Msg::Request(Request::Uninstall),
        Msg::Reply(Reply::Uninstalling),
        Msg::Request(Request::Upgrade(UpgradeSpec {
            size: u64::MAX,
            sha256: String::new(),
            commit_within_ms: 0,
        })),
        Msg::Request(Request::UpgradeCommit {
            sha256: "0".repeat(64),
        }),
        Msg::Reply(Reply::UpgradeReady),
        Msg::Reply(Reply::UpgradeRolledBack {
            version: String::new(),
            reason: String::new(),
        }),
        Msg::Reply(Reply::Csr { pem: "-".into() }),
        Msg::Reply(Reply::Error(RemoteError {
            kind: ErrorKind::Internal,
            message: String::new(),
        })),
        Msg::Reply(Reply::Info(Box::new(NodeInfo {
            node: node(&format!("{}.b", "a".repeat(63))),
            hostname: String::new(),
            os_release: String::new(),
            kernel: String::new(),
            arch: "x86_64".into(),
            glibc: None,
            agent_version: String::new(),
            uptime_secs: u64::MAX,
            clock_unix_ms: i64::MIN,
            gluu: Some(GluuInstall {
                version: None,
                root: "/".into(),
                components: vec![String::new(); 3],
            }),
            exec_allowed: true,
        }))),
        Msg::Request(Request::Plan(ChangeSet {
            revision: 0,
            entries: vec![],
            requested_by: String::new(),
        })),
        Msg::Request(Request::Apply(ChangeSet {
            revision: u64::MAX,
            entries: vec![
                Entry {
                    path: "/etc/nginx/nginx.conf".into(),
                    scope: Scope::Host,
                    content: Content::File {
                        bytes: vec![],
                        mode: 0,
                        owner: None,
                        group: None,
                    },
                    secret: false,
                    validate: Some(Validator::Nginx),
                    on_change: vec![Action::Service {
                        name: "nginx".into(),
                        verb: ServiceVerb::Reload,
                    }],
                },
                Entry {
                    path: String::new(),
                    scope: Scope::Container {
                        root: "/opt/gluu-server".into(),
                    },
                    content: Content::File {
                        bytes: vec![0xFF; 3],
                        mode: u32::MAX,
                        owner: Some(String::new()),
                        group: Some("0".into()),
                    },
                    secret: true,
                    validate: Some(Validator::Command(Command::Argv(vec![]))),
                    on_change: vec![
                        Action::Service {
                            name: String::new(),
                            verb: ServiceVerb::Restart,
                        },
                        Action::Command(Command::Shell(String::new())),
                    ],
                },
                Entry {
                    path: "/etc/gluu/conf/gluu.properties".into(),
                    scope: Scope::Container {
                        root: String::new(),
                    },
                    content: Content::Property {
                        key: String::new(),
                        value: String::new(),
                    },
                    secret: false,
                    validate: None,
                    on_change: vec![],
                },
                Entry {
                    path: "/".into(),
                    scope: Scope::Host,
                    content: Content::Block {
                        name: "🦀".into(),
                        body: "\n".repeat(3),
                    },
                    secret: true,
                    validate: Some(Validator::Command(Command::Shell("{}".into()))),
                    on_change: vec![Action::Command(Command::Argv(vec![String::new()]))],
                },
            ],
            requested_by: "root@controller".into(),
        })),
        Msg::Request(Request::Backups {
            path: String::new(),
            scope: Scope::Host,
        }),
        Msg::Request(Request::Backups {
            path: "/etc/hosts".into(),
            scope: Scope::Container { root: "/".into() },
        }),
        Msg::Request(Request::Restore(RestoreSpec {
            path: String::new(),
            scope: Scope::Host,
            generation: 0,
            validate: None,
            on_change: vec![],
            requested_by: String::new(),
        })),
        Msg::Request(Request::Restore(RestoreSpec {
            path: "/etc/stunnel/stunnel.conf".into(),
            scope: Scope::Container {
                root: "/opt/gluu-server".into(),
            },
            generation: u32::MAX,
            validate: Some(Validator::Nginx),
            on_change: vec![Action::Service {
                name: "stunnel4".into(),
                verb: ServiceVerb::Restart,
            }],
            requested_by: "🦀".into(),
        })),
        Msg::Request(Request::ExecInContainer {
            root: String::new(),
            spec: spec(Command::Argv(vec![]), vec![], None, false),
        }),
        Msg::Request(Request::ExecInContainer {
            root: "/opt/gluu-server".into(),
            spec: spec(
                Command::Shell("true".into()),
                vec![(String::new(), String::new())],
                Some("/".into()),
                true,
            ),
        }),
        Msg::Request(Request::HostKey {
            path: String::new(),
            scope: Scope::Host,
        }),
        Msg::Request(Request::HostKey {
            path: "/etc/stunnel/clustermgr/host.key".into(),
            scope: Scope::Container {
                root: "/opt/gluu-server".into(),
            },
        }),
        Msg::Reply(Reply::Planned(vec![])),
        Msg::Reply(Reply::Planned(vec![
            plan("", Change::Unchanged, false),
            plan("/etc/nginx/nginx.conf", Change::Create, true),
            plan("/", Change::Modify, false),
            plan("/etc/hosts", Change::Metadata, true),
            plan("/etc/gluu/conf/gluu.properties", Change::Waiting, false),
        ])),
        Msg::Reply(Reply::Applied(Box::new(ApplyReport {
            revision: 0,
            entries: vec![],
            result: ApplyResult::Unchanged,
            steps: vec![],
        }))),
        Msg::Reply(Reply::Applied(Box::new(ApplyReport {
            revision: u64::MAX,
            entries: vec![plan("/etc/nginx/nginx.conf", Change::Modify, true)],
            result: ApplyResult::Applied,
            steps: vec![
                StepRun {
                    step: "nginx -t -c /etc/nginx/nginx.conf".into(),
                    ok: true,
                    output: String::new(),
                },
                StepRun {
                    step: "reload nginx".into(),
                    ok: true,
                    output: "\u{0}".into(),
                },
            ],
        }))),
        Msg::Reply(Reply::Applied(Box::new(ApplyReport {
            revision: 1,
            entries: vec![plan("", Change::Create, false)],
            result: ApplyResult::RolledBack {
                step: String::new(),
                output: String::new(),
                restored_cleanly: false,
            },
            steps: vec![StepRun {
                step: String::new(),
                ok: false,
                output: String::new(),
            }],
        }))),
        Msg::Reply(Reply::Applied(Box::new(ApplyReport {
            revision: 3,
            entries: vec![],
            result: ApplyResult::Stale { applied: u64::MAX },
            steps: vec![],
        }))),
        Msg::Reply(Reply::Applied(Box::new(ApplyReport {
            revision: 128,
            entries: vec![],
            result: ApplyResult::RolledBack {
                step: "reload nginx".into(),
                output: "🦀".repeat(40),
                restored_cleanly: true,
            },
            steps: vec![],
        }))),
        Msg::Request(Request::Probe(ProbeSpec {
            services: vec![],
            https: None,
        })),
        Msg::Request(Request::Probe(ProbeSpec {
            services: vec!["nginx".into(), String::new()],
            https: Some(HttpsProbe {
                port: u16::MAX,
                host: "idp.example.org".into(),
                path: "/".into(),
                cert_sha256: "0".repeat(64),
            }),
        })),
        Msg::Reply(Reply::Probed(vec![])),
        Msg::Reply(Reply::Checks(Box::new(CheckReport {
            started_ms: i64::MIN,
            ldap: None,
            disks: vec![],
            ports: vec![],
            csync2: None,
            certs: vec![],
            services: vec![],
        }))),
        Msg::Request(Request::Checks(CheckSpec {
            interval_ms: 0,
            deadline_ms: u64::MAX,
            reach: vec![],
            csync2: None,
            certs: vec![],
            services: vec![],
            gluu_endpoints: None,
        })),
        Msg::Reply(Reply::Backups(vec![])),
        Msg::Reply(Reply::Backups(vec![
            BackupInfo {
                generation: 0,
                replaced_at_ms: i64::MIN,
                sha256: String::new(),
                meta: meta(0),
            },
            BackupInfo {
                generation: u32::MAX,
                replaced_at_ms: i64::MAX,
                sha256: "f".repeat(64),
                meta: meta(u32::MAX),
            },
        ])),
        Msg::ExecInput(ExecInput::Stdin(vec![])),
        Msg::ExecInput(ExecInput::Stdin(vec![0xFF; 3])),
        Msg::ExecInput(ExecInput::StdinEnd),
        Msg::ExecInput(ExecInput::Cancel),
        Msg::TelemetryFrame(TelemetryFrame::Batch(vec![])),
        Msg::TelemetryFrame(TelemetryFrame::Packed(vec![])),
        Msg::TelemetryFrame(TelemetryFrame::Batch(vec![
            Record {
                seq: u64::MAX,
                time_ms: i64::MIN,
                body: Body::Log {
                    source: String::new(),
                    line: "\u{0}🦀".into(),
                },
            },
            Record {
                seq: 1,
                time_ms: 0,
                body: Body::Metrics(vec![Sample {
                    name: "node_load1".into(),
                    labels: vec![],
                    value: f64::INFINITY,
                }]),
            },
            Record {
                seq: 2,
                time_ms: -1,
                body: Body::Gap {
                    lost: 0,
                    why: String::new(),
                },
            },
        ])),
        Msg::TelemetryAck(TelemetryAck { stored_through: 0 }),
        Msg::TelemetryAck(TelemetryAck {
            stored_through: u64::MAX,
        }),
        Msg::ExecEvent(ExecEvent::Started { pid: 0 }),
        Msg::ExecEvent(ExecEvent::Started { pid: u32::MAX }),
        Msg::ExecEvent(ExecEvent::Stdout(vec![0x80, 0x00])),
        Msg::ExecEvent(ExecEvent::Stderr(vec![])),
        Msg::ExecEvent(ExecEvent::Finished(exit(None, None, false, 0))),
        Msg::ExecEvent(ExecEvent::Finished(exit(
            Some(i32::MIN),
            Some(i32::MAX),
            true,
            u64::MAX,
        ))),
        Msg::ExecEvent(ExecEvent::Refused(RemoteError {
            kind: ErrorKind::Refused,
            message: "allow_exec = false".into(),
        })),
    ]
}

/// Messages large enough to cross `read_frame`'s 64 KiB read chunks.
fn big_messages(rng: &mut Rng) -> Vec<Msg> {
    let mut bytes = |n: usize| {
        let mut v = Vec::with_capacity(n);
        rng.fill(&mut v, n);
        v
    };
    let stdout = bytes(100_000);
    let stdin = bytes(70_000);
    let file = bytes(90_000);
    vec![
        Msg::ExecEvent(ExecEvent::Stdout(stdout)),
        Msg::ExecInput(ExecInput::Stdin(stdin)),
        Msg::Request(Request::InstallCert {
            cert_pem: "MIIB".repeat(16_500),
        }),
        Msg::Reply(Reply::Csr {
            pem: "é".repeat(40_000),
        }),
        Msg::Request(Request::Apply(ChangeSet {
            revision: 1,
            entries: vec![Entry {
                path: "/etc/certs/oxauth-keys.jks".into(),
                scope: Scope::Container {
                    root: "/opt/gluu-server".into(),
                },
                content: Content::File {
                    bytes: file,
                    mode: 0o600,
                    owner: Some("jetty".into()),
                    group: Some("jetty".into()),
                },
                secret: true,
                validate: None,
                on_change: vec![],
            }],
            requested_by: "root@controller".into(),
        })),
        Msg::Reply(Reply::Planned(vec![EntryPlan {
            path: "/etc/nginx/nginx.conf".into(),
            change: Change::Modify,
            old_sha256: Some("0".repeat(64)),
            new_sha256: "1".repeat(64),
            old_meta: None,
            new_meta: None,
            old_text: Some("server {}\n".repeat(4_000)),
            new_text: Some("server { }\n".repeat(4_000)),
        }])),
    ]
}

/// The valid messages every mutation starts from.
struct Corpus {
    msgs: Vec<Msg>,
    payloads: Vec<Vec<u8>>,
    big_payloads: Vec<Vec<u8>>,
    big_msgs: Vec<Msg>,
}

/// Random messages per (kind, variant) pair in the corpus.
const CORPUS_PER_VARIANT: usize = 16;

impl Corpus {
    fn build(seed: u64) -> Self {
        let mut rng = Rng::for_case(seed, 0xC0, 0);
        let mut msgs = edge_messages();
        for kind in KINDS {
            for variant in 0..kind.variants() {
                for _ in 0..CORPUS_PER_VARIANT {
                    msgs.push(gen_msg(&mut rng, kind, variant));
                }
            }
        }
        let big_msgs = big_messages(&mut rng);
        let payloads: Vec<Vec<u8>> = msgs.iter().map(Msg::encode).collect();
        let big_payloads = big_msgs.iter().map(Msg::encode).collect();
        for (msg, payload) in msgs.iter().zip(&payloads) {
            assert!(!payload.is_empty(), "{msg:?} encodes to nothing");
            if !msg.kind().is_struct() {
                assert_eq!(u32::from(payload[0]), msg.variant(), "{msg:?}");
            }
        }
        Corpus {
            msgs,
            payloads,
            big_payloads,
            big_msgs,
        }
    }

    fn pick(&self, rng: &mut Rng) -> usize {
        rng.below(self.msgs.len())
    }

    /// A payload for framing tests: now and then a big one.
    fn frame_payload(&self, rng: &mut Rng) -> &[u8] {
        if rng.one_in(400) {
            rng.pick_bytes(&self.big_payloads)
        } else {
            rng.pick_bytes(&self.payloads)
        }
    }
}

// ---------------------------------------------------------------------------------------
// Mutations.

/// Appends the canonical postcard varint of `v`.
fn push_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn push_frame(out: &mut Vec<u8>, payload: &[u8]) {
    let len = u32::try_from(payload.len()).expect("test payloads are small");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
}

/// One random structural mutation of `buf`.
fn mutate(rng: &mut Rng, buf: &mut Vec<u8>, donors: &[Vec<u8>]) {
    const INTERESTING: &[u8] = &[0x00, 0x01, 0x02, 0x7F, 0x80, 0x81, 0xFE, 0xFF];
    let len = buf.len();
    match rng.below(12) {
        // Flip a few bits.
        0 | 1 if len > 0 => {
            for _ in 0..rng.range(1, 8) {
                let at = rng.below(len);
                buf[at] ^= 1 << rng.below(8);
            }
        }
        // Overwrite a few bytes with boundary values.
        2 if len > 0 => {
            for _ in 0..rng.range(1, 4) {
                let at = rng.below(len);
                buf[at] = *rng.pick(INTERESTING);
            }
        }
        // Truncate.
        3 => buf.truncate(rng.below(len + 1)),
        // Extend with random bytes.
        4 => {
            let n = rng.range(1, 32);
            rng.fill(buf, n);
        }
        // Insert random bytes.
        5 => {
            let at = rng.below(len + 1);
            let mut extra = Vec::new();
            let n = rng.range(1, 16);
            rng.fill(&mut extra, n);
            buf.splice(at..at, extra);
        }
        // Delete a range.
        6 if len > 0 => {
            let at = rng.below(len);
            let n = rng.range(1, (len - at).min(16));
            buf.drain(at..at + n);
        }
        // Duplicate a range somewhere else.
        7 if len > 0 => {
            let at = rng.below(len);
            let n = rng.range(1, (len - at).min(32));
            let copy = buf[at..at + n].to_vec();
            let to = rng.below(len + 1);
            buf.splice(to..to, copy);
        }
        // Splice: our prefix, another message's suffix.
        8 => {
            let donor = rng.pick(donors);
            buf.truncate(rng.below(len + 1));
            buf.extend_from_slice(&donor[rng.below(donor.len() + 1)..]);
        }
        // A huge length or count: the varint of u32::MAX / u64::MAX / 2^k, or an invalid one.
        9 => {
            let at = rng.below(len + 1);
            let mut varint = Vec::new();
            match rng.below(5) {
                0 => push_varint(&mut varint, u64::from(u32::MAX)),
                1 => push_varint(&mut varint, u64::MAX),
                2 => push_varint(&mut varint, 1 << rng.below(64)),
                3 => varint.extend_from_slice(&[0xFF; 11]),
                _ => varint.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x10]),
            }
            if rng.bool() && at < len {
                buf.truncate(at); // the huge count at the very end, with nothing after it
            }
            buf.splice(at..at, varint);
        }
        // Re-encode a small byte as an overlong (non-canonical) varint.
        10 if len > 0 => {
            let at = rng.below(len);
            if buf[at] < 0x80 {
                let b = buf[at];
                buf.splice(at..=at, [b | 0x80, 0x00]);
            } else {
                buf[at] = rng.byte();
            }
        }
        // Overwrite a range with random bytes.
        _ if len > 0 => {
            let at = rng.below(len);
            for b in &mut buf[at..(at + rng.range(1, 8)).min(len)] {
                *b = rng.byte();
            }
        }
        _ => {
            let n = rng.range(1, 8);
            rng.fill(buf, n);
        }
    }
}

/// Makes the tag at `slot` out of range.
fn break_slot(rng: &mut Rng, buf: &mut Vec<u8>, slot: Slot) {
    match slot {
        Slot::Varint { at, valid } => {
            let mut replacement = Vec::new();
            match rng.below(6) {
                0 | 1 => push_varint(&mut replacement, rng.range(valid as usize, 127) as u64),
                2 => push_varint(&mut replacement, rng.range(128, 1 << 21) as u64),
                3 => push_varint(&mut replacement, u64::from(rng.u32_from(valid))),
                // Five bytes whose last carries more than 32 bits.
                4 => replacement.extend_from_slice(&[
                    0xFF,
                    0xFF,
                    0xFF,
                    0xFF,
                    0x10 | (rng.byte() & 0x7F),
                ]),
                // More than five bytes: too long for a u32 whatever follows.
                _ => replacement.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x80]),
            }
            buf.splice(at..=at, replacement);
        }
        Slot::Byte { at, valid } => buf[at] = rng.range(usize::from(valid), 255) as u8,
    }
}

// ---------------------------------------------------------------------------------------
// Checking one `codec::decode` call.

#[derive(Default)]
struct DecodeStats {
    decodes: u64,
    ok: u64,
    non_canonical_ok: u64,
    malformed: u64,
    trailing: u64,
}

enum Verdict {
    Ok(Msg),
    Malformed,
    Trailing(usize),
}

/// Decodes `bytes` as `kind` and checks everything that must hold for any input.
fn check_decode(
    kind: Kind,
    bytes: &[u8],
    rng: &mut Rng,
    scratch: &mut Vec<u8>,
    stats: &mut DecodeStats,
) -> Verdict {
    stats.decodes += 1;
    allocation_reset();
    let result = decode_as(kind, bytes);
    let largest = allocation_largest();
    let allowance = DECODE_PREALLOC_ALLOWANCE + DECODE_BYTES_PER_INPUT_BYTE * bytes.len();
    assert!(
        largest <= allowance,
        "decoding {} bytes as {kind:?} allocated {largest} bytes at once (allowed {allowance})",
        bytes.len()
    );
    match result {
        Ok(msg) => {
            stats.ok += 1;
            assert_eq!(msg.kind(), kind);
            // Whatever was accepted has a canonical encoding no longer than the input,
            // which decodes back to the same value.
            let canonical = msg.encode();
            assert!(
                canonical.len() <= bytes.len(),
                "{kind:?} accepted {} bytes but re-encodes to {} bytes: {msg:?}",
                bytes.len(),
                canonical.len()
            );
            if canonical != bytes {
                stats.non_canonical_ok += 1;
                match decode_as(kind, &canonical) {
                    // Compared as encodings: a metric's NaN is not equal to itself.
                    Ok(again) => assert_eq!(
                        again.encode(),
                        canonical,
                        "canonical re-encoding decodes differently: {again:?} from {msg:?}"
                    ),
                    Err(e) => panic!("the re-encoding of an accepted {kind:?} fails: {e}"),
                }
            }
            // (c) The same bytes followed by anything are refused as trailing bytes.
            scratch.clear();
            scratch.extend_from_slice(bytes);
            let extra = rng.range(1, 8);
            rng.fill(scratch, extra);
            match decode_as(kind, scratch) {
                Err(ProtocolError::TrailingBytes { what, extra: got }) => {
                    assert_eq!((what, got), (kind.name(), extra));
                }
                other => panic!(
                    "an accepted {kind:?} followed by {extra} bytes must be TrailingBytes, got {other:?}"
                ),
            }
            Verdict::Ok(msg)
        }
        Err(ProtocolError::Malformed { what, .. }) => {
            stats.malformed += 1;
            assert_eq!(what, kind.name());
            Verdict::Malformed
        }
        Err(ProtocolError::TrailingBytes { what, extra }) => {
            stats.trailing += 1;
            assert_eq!(what, kind.name());
            assert!(
                extra > 0 && extra < bytes.len(),
                "TrailingBytes with extra = {extra} of {} bytes",
                bytes.len()
            );
            // The bytes before the trailing ones are a whole message on their own.
            let head = &bytes[..bytes.len() - extra];
            if let Err(e) = decode_as(kind, head) {
                panic!(
                    "TrailingBytes {{ extra: {extra} }} but the {} bytes before fail: {e}",
                    head.len()
                );
            }
            Verdict::Trailing(extra)
        }
        Err(other) => {
            panic!("codec::decode as {kind:?} returned an unexpected error kind: {other:?}")
        }
    }
}

// ---------------------------------------------------------------------------------------
// The reference model of the framing.

/// How a byte stream ends, for both `FrameDecoder::finish` / `next_frame` and `read_frame`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Clean,
    Truncated { got: usize, expected: usize },
    TooLarge { announced: u64, limit: u32 },
    Stream,
}

impl End {
    fn of_error(e: &ProtocolError) -> End {
        match *e {
            ProtocolError::Truncated { got, expected } => End::Truncated { got, expected },
            ProtocolError::FrameTooLarge { announced, limit } => End::TooLarge { announced, limit },
            ProtocolError::Stream(_) => End::Stream,
            ref other => panic!("framing returned an unexpected error kind: {other:?}"),
        }
    }

    fn of_finish(r: Result<(), ProtocolError>) -> End {
        match r {
            Ok(()) => End::Clean,
            Err(e) => End::of_error(&e),
        }
    }
}

struct Model {
    /// The payload ranges of the whole frames, in order.
    frames: Vec<Range<usize>>,
    /// Where the bytes after the last whole frame start.
    rest: usize,
    end: End,
}

fn header_at(stream: &[u8], at: usize) -> u32 {
    let header: [u8; HEADER_BYTES] = stream[at..at + HEADER_BYTES].try_into().expect("4 bytes");
    u32::from_be_bytes(header)
}

/// What the decoder must say about the unconsumed bytes `stream[from..to]`.
fn leftover(stream: &[u8], from: usize, to: usize, max: u32) -> End {
    let n = to - from;
    if n == 0 {
        return End::Clean;
    }
    if n < HEADER_BYTES {
        return End::Truncated {
            got: n,
            expected: HEADER_BYTES,
        };
    }
    let announced = header_at(stream, from);
    if announced > max {
        return End::TooLarge {
            announced: u64::from(announced),
            limit: max,
        };
    }
    End::Truncated {
        got: n - HEADER_BYTES,
        expected: announced as usize,
    }
}

fn model(stream: &[u8], max: u32, frames: &mut Vec<Range<usize>>) -> Model {
    frames.clear();
    let mut at = 0;
    loop {
        if stream.len() - at >= HEADER_BYTES {
            let announced = header_at(stream, at);
            if announced <= max && stream.len() - at - HEADER_BYTES >= announced as usize {
                let start = at + HEADER_BYTES;
                frames.push(start..start + announced as usize);
                at = start + announced as usize;
                continue;
            }
        }
        return Model {
            frames: std::mem::take(frames),
            rest: at,
            end: leftover(stream, at, stream.len(), max),
        };
    }
}

/// Builds a random byte stream of (mostly) mutated frames; returns the frame limit to use.
fn stream_case(rng: &mut Rng, corpus: &Corpus, out: &mut Vec<u8>, scratch: &mut Vec<u8>) -> u32 {
    out.clear();
    let max = match rng.below(10) {
        0..=5 => DEFAULT_MAX_FRAME_BYTES,
        6 => rng.below(64) as u32,
        7 => rng.below(1024) as u32,
        8 => u32::MAX,
        // The limit right at a frame's size.
        _ => (rng.pick_bytes(&corpus.payloads).len() + rng.below(3)).saturating_sub(1) as u32,
    };
    let items = rng.range(1, 4);
    for _ in 0..items {
        let payload = corpus.frame_payload(rng);
        let item_start = out.len();
        match rng.below(12) {
            // A valid frame.
            0..=2 => push_frame(out, payload),
            // A valid frame around a mutated payload.
            3 => {
                scratch.clear();
                scratch.extend_from_slice(payload);
                mutate(rng, scratch, &corpus.payloads);
                push_frame(out, scratch);
            }
            // A payload behind a wrong length prefix.
            4 | 5 => {
                let announced = match rng.below(8) {
                    0 => rng.u32(),
                    1 => max.saturating_add(1),
                    2 => u32::MAX,
                    3 => (payload.len() + rng.below(3)).saturating_sub(1) as u32,
                    4 => 0,
                    5 => rng.below(64) as u32,
                    6 => max,
                    _ => rng.u32_from(max.saturating_add(1)),
                };
                out.extend_from_slice(&announced.to_be_bytes());
                out.extend_from_slice(payload);
            }
            // Random bytes.
            6 => {
                let n = rng.random_len();
                rng.fill(out, n);
            }
            // A cut frame followed by a whole one.
            7 => {
                push_frame(out, payload);
                out.truncate(item_start + rng.below(payload.len() + HEADER_BYTES));
                push_frame(out, rng.pick_bytes(&corpus.payloads));
            }
            // One frame's header with another's payload.
            8 => {
                let other = rng.pick_bytes(&corpus.payloads);
                out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
                out.extend_from_slice(other);
            }
            // An empty frame.
            9 => push_frame(out, &[]),
            // A frame mutated as a whole, header included.
            10 => {
                push_frame(out, payload);
                let mut frame = out.split_off(item_start);
                for _ in 0..rng.range(1, 3) {
                    mutate(rng, &mut frame, &corpus.payloads);
                }
                out.append(&mut frame);
            }
            // A bare header, or a header and part of its payload.
            _ => {
                push_frame(out, payload);
                out.truncate(item_start + HEADER_BYTES + rng.below(payload.len() + 1));
            }
        }
    }
    if rng.one_in(6) {
        out.truncate(rng.below(out.len() + 1));
    }
    max
}

/// Where to split `len` bytes into pushes: increasing cut points ending at `len`, with
/// repeats meaning empty pushes.
fn chunk_cuts(rng: &mut Rng, len: usize, m: &Model, cuts: &mut Vec<usize>) {
    cuts.clear();
    match rng.below(6) {
        // All at once.
        0 => {}
        // Byte by byte.
        1 if len <= 4096 => cuts.extend(1..len),
        // Small pushes, some empty.
        1 | 2 => {
            let mut at = 0;
            while at < len {
                at += rng.below(9);
                cuts.push(at.min(len));
            }
        }
        // A few random cuts.
        3 => {
            for _ in 0..rng.range(1, 6) {
                cuts.push(rng.below(len + 1));
            }
            cuts.sort_unstable();
        }
        // Around every frame boundary, header and payload.
        4 => {
            for frame in &m.frames {
                let header = frame.start - HEADER_BYTES;
                for at in [
                    header,
                    header + 1,
                    frame.start - 1,
                    frame.start,
                    frame.end - 1,
                    frame.end,
                ] {
                    cuts.push(at.max(cuts.last().copied().unwrap_or(0)).min(len));
                }
            }
            for at in m.rest..=(m.rest + HEADER_BYTES + 1).min(len) {
                cuts.push(at);
            }
        }
        // Mixed sizes.
        _ => {
            let mut at = 0;
            while at < len {
                at += match rng.below(4) {
                    0 => 0,
                    1 => rng.range(1, 4),
                    2 => rng.range(1, 64),
                    _ => rng.below(len + 1),
                };
                cuts.push(at.min(len));
            }
        }
    }
    cuts.push(len);
}

#[derive(Default)]
struct FrameStats {
    streams: u64,
    bytes: u64,
    frames: u64,
    pushes: u64,
    clean: u64,
    truncated: u64,
    too_large: u64,
    stream_errors: u64,
}

impl FrameStats {
    fn count_end(&mut self, end: End) {
        match end {
            End::Clean => self.clean += 1,
            End::Truncated { .. } => self.truncated += 1,
            End::TooLarge { .. } => self.too_large += 1,
            End::Stream => self.stream_errors += 1,
        }
    }
}

/// Feeds `stream` to a `FrameDecoder` in the pushes `cuts` describes and checks it against
/// the model after every push. Returns the frames it produced.
fn drive_decoder(
    stream: &[u8],
    max: u32,
    m: &Model,
    cuts: &[usize],
    stats: &mut FrameStats,
    mut on_frame: impl FnMut(Vec<u8>),
) {
    let mut d = FrameDecoder::new(max);
    let mut pushed = 0;
    let mut consumed = 0;
    let mut next = 0;
    for &cut in cuts {
        let before = pushed;
        allocation_reset();
        d.push(&stream[before..cut]);
        let mut largest = allocation_largest();
        pushed = cut;
        stats.pushes += 1;
        loop {
            // Measure the decoder alone, not what this loop does with its frames.
            allocation_reset();
            let result = d.next_frame();
            largest = largest.max(allocation_largest());
            match result {
                Ok(Some(frame)) => {
                    let Some(want) = m.frames.get(next) else {
                        panic!(
                            "decoder produced frame #{next}, the model has {}",
                            m.frames.len()
                        );
                    };
                    assert!(
                        frame == stream[want.clone()],
                        "decoder frame #{next} differs from stream[{want:?}]"
                    );
                    consumed = want.end;
                    next += 1;
                    stats.frames += 1;
                    on_frame(frame);
                }
                Ok(None) => break,
                Err(e) => {
                    let end = End::of_error(&e);
                    assert_eq!(
                        end, m.end,
                        "decoder error {e} where the model says {:?}",
                        m.end
                    );
                    assert!(
                        matches!(end, End::TooLarge { .. }),
                        "next_frame may only fail with FrameTooLarge: {e}"
                    );
                    assert_eq!(
                        next,
                        m.frames.len(),
                        "FrameTooLarge before all frames were taken"
                    );
                    // (b) Reported by the very push that completed the header.
                    let header_end = m.rest + HEADER_BYTES;
                    assert!(
                        before < header_end && header_end <= pushed,
                        "FrameTooLarge reported after pushing {pushed} bytes, header complete at {header_end}"
                    );
                    // (d) Nothing of the announced length was allocated.
                    assert!(
                        largest <= 2 * pushed + 64,
                        "decoder allocated {largest} bytes after {pushed} pushed"
                    );
                    // It keeps refusing.
                    assert!(matches!(
                        d.next_frame(),
                        Err(ProtocolError::FrameTooLarge { .. })
                    ));
                    assert!(d.finish().is_err());
                    stats.count_end(end);
                    return;
                }
            }
        }
        // (d) The decoder's buffer grows with the bytes pushed, not the bytes announced.
        assert!(
            largest <= 2 * pushed + 64,
            "decoder allocated {largest} bytes at once after {pushed} bytes were pushed"
        );
        // Frames come out as soon as their last byte is in, errors as soon as the header is.
        match m.frames.get(next) {
            Some(want) => assert!(
                want.end > pushed,
                "frame #{next} complete but not delivered"
            ),
            None => {
                if matches!(m.end, End::TooLarge { .. }) {
                    assert!(
                        m.rest + HEADER_BYTES > pushed,
                        "oversized header in but no error"
                    );
                }
            }
        }
        // (d) It holds exactly the pushed bytes not yet taken, as `finish` reports them.
        assert_eq!(
            End::of_finish(d.finish()),
            leftover(stream, consumed, pushed, max),
            "finish() after {pushed} bytes pushed and {consumed} taken"
        );
    }
    assert_eq!(next, m.frames.len());
    let end = End::of_finish(d.finish());
    assert_eq!(end, m.end);
    stats.count_end(end);
}

// ---------------------------------------------------------------------------------------
// An in-memory reader that hands out bytes in random dribbles, sometimes returns Pending
// (waking itself at once), and can fail instead of reaching the end.

struct Dribble<'a> {
    data: &'a [u8],
    rng: Rng,
    max_read: usize,
    fail_at_end: bool,
}

impl AsyncRead for Dribble<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.rng.one_in(4) {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        if this.data.is_empty() {
            return Poll::Ready(if this.fail_at_end {
                Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "injected failure",
                ))
            } else {
                Ok(())
            });
        }
        let n = this
            .data
            .len()
            .min(buf.remaining())
            .min(this.rng.range(1, this.max_read));
        buf.put_slice(&this.data[..n]);
        this.data = &this.data[n..];
        Poll::Ready(Ok(()))
    }
}

/// Wraps a reader to fail the test, instead of hanging it, when `read_frame` keeps
/// reading after the input ended.
struct Budgeted<'a, R> {
    inner: &'a mut R,
    reads_left: usize,
}

impl<R: AsyncRead + Unpin> AsyncRead for Budgeted<'_, R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let poll = Pin::new(&mut *this.inner).poll_read(cx, buf);
        if poll.is_ready() {
            assert!(
                this.reads_left > 0,
                "read_frame keeps reading after the input ended"
            );
            this.reads_left -= 1;
        }
        poll
    }
}

/// Reads frames until the end or an error, checking allocations on the way.
async fn read_all<R: AsyncRead + Unpin>(
    r: &mut R,
    max: u32,
    input_len: usize,
    frames: &mut Vec<Vec<u8>>,
) -> End {
    // A read that returns data takes at least a byte; a read that returns the end (or an
    // error) ends its read_frame call, and there is at most one call per 4 bytes, plus one.
    let r = &mut Budgeted {
        inner: r,
        reads_left: 2 * input_len + 8,
    };
    // Every frame takes at least its 4-byte header, so this bounds a correct reader.
    for _ in 0..=input_len / HEADER_BYTES + 1 {
        allocation_reset();
        let result = frame::read_frame(r, max).await;
        let largest = allocation_largest();
        assert!(
            largest <= 2 * input_len + READ_FRAME_ALLOWANCE,
            "read_frame allocated {largest} bytes at once from a {input_len}-byte input"
        );
        match result {
            Ok(Some(frame)) => frames.push(frame),
            Ok(None) => return End::Clean,
            Err(e) => return End::of_error(&e),
        }
    }
    panic!("read_frame produced more frames than the input can hold");
}

fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread tokio runtime")
}

// ---------------------------------------------------------------------------------------
// The tests.

/// (a) Valid messages round-trip unchanged through the codec, the decoder and read_frame.
#[test]
fn valid_messages_round_trip() {
    let seed = seed();
    let corpus = Corpus::build(seed);
    let rt = current_thread_runtime();
    let mut ctx = CaseContext::new("valid_messages_round_trip", seed);
    let mut stats = FrameStats::default();
    let mut cuts = Vec::new();
    let mut frames = Vec::new();

    // Every top-level variant of every type is in the corpus.
    for kind in KINDS {
        for variant in 0..kind.variants() {
            assert!(
                corpus
                    .msgs
                    .iter()
                    .any(|m| m.kind() == kind && m.variant() == variant),
                "corpus lacks {kind:?} variant {variant}"
            );
        }
    }

    let fixed: Vec<Msg> = corpus
        .msgs
        .iter()
        .chain(&corpus.big_msgs)
        .cloned()
        .collect();
    let cases = fixed.len() as u64 + scaled(ROUND_TRIP_CASES);
    for case in 0..cases {
        ctx.case = case;
        let mut rng = Rng::for_case(seed, 1, case);
        // One to three messages, the first from the corpus while it lasts.
        let mut msgs = Vec::new();
        if let Some(m) = fixed.get(case as usize) {
            msgs.push(m.clone());
        }
        while msgs.is_empty() || (msgs.len() < 3 && rng.bool()) {
            msgs.push(gen_any_msg(&mut rng));
        }

        let stream = &mut ctx.input;
        stream.clear();
        for msg in &msgs {
            let payload = msg.encode();
            match decode_as(msg.kind(), &payload) {
                Ok(back) => assert_eq!(&back, msg, "codec round trip"),
                Err(e) => panic!("a valid {:?} does not decode: {e}\n{msg:?}", msg.kind()),
            }
            let framed = frame::encode_frame(&payload);
            assert_eq!(framed[..HEADER_BYTES], (payload.len() as u32).to_be_bytes());
            assert_eq!(framed[HEADER_BYTES..], payload[..]);
            stream.extend_from_slice(&framed);
        }
        let max = DEFAULT_MAX_FRAME_BYTES;
        let m = model(stream, max, &mut frames);
        assert_eq!((m.frames.len(), m.end), (msgs.len(), End::Clean));
        chunk_cuts(&mut rng, stream.len(), &m, &mut cuts);

        let mut decoded = Vec::new();
        drive_decoder(stream, max, &m, &cuts, &mut stats, |f| decoded.push(f));
        let mut read = Vec::new();
        if case % 4 == 0 {
            let mut reader: &[u8] = stream;
            let end = rt.block_on(read_all(&mut reader, max, stream.len(), &mut read));
            assert_eq!(end, End::Clean);
            assert_eq!(read, decoded, "read_frame and FrameDecoder disagree");
        }
        for (msg, payload) in msgs.iter().zip(&decoded) {
            match decode_as(msg.kind(), payload) {
                Ok(back) => assert_eq!(&back, msg, "framed round trip"),
                Err(e) => panic!("a framed valid {:?} does not decode: {e}", msg.kind()),
            }
        }
        stats.streams += 1;
        frames = m.frames;
    }
    drop(ctx);
    println!(
        "decoder_fuzz valid_messages_round_trip: {} cases, {} messages round-tripped through codec, FrameDecoder ({} pushes) and read_frame",
        stats.streams, stats.frames, stats.pushes
    );
}

/// (c) Mutated and random payloads decoded as every message type: errors, never panics,
/// never Ok with trailing bytes, consistent verdicts.
#[test]
fn codec_decode_rejects_malformed_payloads() {
    let seed = seed();
    let corpus = Corpus::build(seed);
    let mut ctx = CaseContext::new("codec_decode_rejects_malformed_payloads", seed);
    let mut stats = DecodeStats::default();
    let mut scratch = Vec::new();
    let mut expectations = [0u64; 5];
    let cases = scaled(CODEC_CASES);

    for case in 0..cases {
        ctx.case = case;
        let mut rng = Rng::for_case(seed, 2, case);
        let input = &mut ctx.input;
        input.clear();
        let idx = corpus.pick(&mut rng);
        let source = &corpus.msgs[idx];
        let base = &corpus.payloads[idx];
        let kind = source.kind();

        #[derive(Debug)]
        enum Expect {
            Valid,
            Prefix,
            Extended(usize),
            BadTag,
            Anything,
        }
        let expect = match rng.below(100) {
            0..=3 => {
                input.extend_from_slice(base);
                Expect::Valid
            }
            4..=13 => {
                input.extend_from_slice(&base[..rng.below(base.len())]);
                Expect::Prefix
            }
            14..=23 => {
                input.extend_from_slice(base);
                if rng.one_in(4) {
                    input.extend_from_slice(rng.pick_bytes(&corpus.payloads));
                } else {
                    let n = rng.range(1, 16);
                    rng.fill(input, n);
                }
                Expect::Extended(input.len() - base.len())
            }
            24..=31 => {
                input.extend_from_slice(base);
                let slots = source.tag_slots();
                if slots.is_empty() {
                    mutate(&mut rng, input, &corpus.payloads);
                    Expect::Anything
                } else {
                    let slot = *rng.pick(&slots);
                    break_slot(&mut rng, input, slot);
                    Expect::BadTag
                }
            }
            32..=51 => {
                let n = rng.random_len();
                rng.fill(input, n);
                // Often a plausible tag first, to get past the first byte.
                if !input.is_empty() && rng.bool() {
                    input[0] = rng.below(6) as u8;
                }
                Expect::Anything
            }
            _ => {
                input.extend_from_slice(base);
                for _ in 0..rng.range(1, 4) {
                    mutate(&mut rng, input, &corpus.payloads);
                }
                Expect::Anything
            }
        };
        let input = &ctx.input;

        for k in KINDS {
            let verdict = check_decode(k, input, &mut rng, &mut scratch, &mut stats);
            if k != kind {
                continue;
            }
            match (&expect, verdict) {
                (Expect::Valid, Verdict::Ok(back)) => {
                    assert_eq!(&back, source, "a valid message must round-trip");
                    expectations[0] += 1;
                }
                (Expect::Prefix, Verdict::Malformed) => expectations[1] += 1,
                (Expect::Extended(n), Verdict::Trailing(extra)) if *n == extra => {
                    expectations[2] += 1
                }
                (Expect::BadTag, Verdict::Malformed) => expectations[3] += 1,
                (Expect::Anything, _) => expectations[4] += 1,
                (expect, Verdict::Ok(msg)) => {
                    panic!("{expect:?} input decoded as {kind:?} to Ok: {msg:?}")
                }
                (expect, Verdict::Malformed) => {
                    panic!("{expect:?} input decoded as {kind:?} to Malformed")
                }
                (expect, Verdict::Trailing(extra)) => {
                    panic!(
                        "{expect:?} input decoded as {kind:?} to TrailingBytes {{ extra: {extra} }}"
                    )
                }
            }
        }
    }
    drop(ctx);
    println!(
        "decoder_fuzz codec_decode_rejects_malformed_payloads: {cases} payloads x {} message types = {} decodes: \
         {} ok ({} from non-canonical bytes), {} malformed, {} trailing bytes; \
         checked expectations: {} valid, {} prefixes, {} extended, {} bad tags, {} arbitrary",
        KINDS.len(),
        stats.decodes,
        stats.ok,
        stats.non_canonical_ok,
        stats.malformed,
        stats.trailing,
        expectations[0],
        expectations[1],
        expectations[2],
        expectations[3],
        expectations[4],
    );
    assert!(
        stats.ok > 0 && stats.non_canonical_ok > 0 && stats.malformed > 0 && stats.trailing > 0
    );
    assert!(
        expectations.iter().all(|&n| n > 0),
        "some mutation never ran: {expectations:?}"
    );
}

/// Random and mutated byte streams, pushed into a `FrameDecoder` in arbitrary chunks,
/// agree with the model; frames taken out are decoded as a random type.
#[test]
fn frame_decoder_matches_the_model() {
    let seed = seed();
    let corpus = Corpus::build(seed);
    let mut ctx = CaseContext::new("frame_decoder_matches_the_model", seed);
    let mut stats = FrameStats::default();
    let mut decode_stats = DecodeStats::default();
    let mut scratch = Vec::new();
    let mut decode_scratch = Vec::new();
    let mut cuts = Vec::new();
    let mut frames = Vec::new();
    let cases = scaled(DECODER_CASES);

    for case in 0..cases {
        ctx.case = case;
        let mut rng = Rng::for_case(seed, 3, case);
        let stream = &mut ctx.input;
        let max = if rng.one_in(5) {
            // Purely random bytes.
            stream.clear();
            let n = rng.random_len();
            rng.fill(stream, n);
            *rng.pick(&[DEFAULT_MAX_FRAME_BYTES, 16, u32::MAX])
        } else {
            stream_case(&mut rng, &corpus, stream, &mut scratch)
        };
        let stream = &ctx.input;
        let m = model(stream, max, &mut frames);
        chunk_cuts(&mut rng, stream.len(), &m, &mut cuts);
        let mut taken = Vec::new();
        drive_decoder(stream, max, &m, &cuts, &mut stats, |f| taken.push(f));
        for frame in &taken {
            let kind = *rng.pick(&KINDS);
            check_decode(
                kind,
                frame,
                &mut rng,
                &mut decode_scratch,
                &mut decode_stats,
            );
        }
        stats.streams += 1;
        stats.bytes += stream.len() as u64;
        frames = m.frames;
    }
    drop(ctx);
    println!(
        "decoder_fuzz frame_decoder_matches_the_model: {} streams ({} bytes, {} pushes): {} frames taken \
         ({} decoded ok); ended {} clean, {} truncated, {} too large",
        stats.streams,
        stats.bytes,
        stats.pushes,
        stats.frames,
        decode_stats.ok,
        stats.clean,
        stats.truncated,
        stats.too_large,
    );
    assert!(stats.clean > 0 && stats.truncated > 0 && stats.too_large > 0 && decode_stats.ok > 0);
}

/// (b) A length prefix above the limit is FrameTooLarge from its 4 bytes alone, from both
/// the `FrameDecoder` and `read_frame`, even after valid frames.
#[test]
fn oversized_length_prefix_fails_from_the_header_alone() {
    let seed = seed();
    let corpus = Corpus::build(seed);
    let rt = current_thread_runtime();
    let mut ctx = CaseContext::new("oversized_length_prefix_fails_from_the_header_alone", seed);
    let mut reads = 0u64;
    let cases = scaled(OVERSIZE_CASES);

    for case in 0..cases {
        ctx.case = case;
        let mut rng = Rng::for_case(seed, 4, case);
        let max = match rng.below(8) {
            0 => 0,
            1 => rng.below(16) as u32,
            2 => rng.below(100_000) as u32,
            3 => rng.u32_from(1) - 1,
            4 => u32::MAX - 1,
            _ => DEFAULT_MAX_FRAME_BYTES,
        };
        let announced = match rng.below(4) {
            0 => max + 1,
            1 => u32::MAX,
            _ => rng.u32_from(max + 1),
        };

        // Valid frames first, sometimes.
        let input = &mut ctx.input;
        input.clear();
        let mut valid = 0;
        while rng.one_in(3) {
            let payload = rng.pick_bytes(&corpus.payloads);
            if payload.len() <= max as usize {
                push_frame(input, payload);
                valid += 1;
            }
        }
        let header_start = input.len();
        input.extend_from_slice(&announced.to_be_bytes());
        let input = &ctx.input;

        let mut d = FrameDecoder::new(max);
        allocation_reset();
        d.push(&input[..header_start]);
        for _ in 0..valid {
            assert!(matches!(d.next_frame(), Ok(Some(_))));
        }
        // Only the 4 header bytes, in up to 4 pushes.
        let mut at = header_start;
        while at < input.len() {
            let to = rng.range(at + 1, input.len());
            d.push(&input[at..to]);
            at = to;
            match d.next_frame() {
                Ok(None) if at < input.len() => {}
                Err(ProtocolError::FrameTooLarge {
                    announced: a,
                    limit,
                }) if at == input.len() => {
                    assert_eq!((a, limit), (u64::from(announced), max));
                }
                other => panic!(
                    "after {} of 4 header bytes announcing {announced} (limit {max}): {other:?}",
                    at - header_start
                ),
            }
        }
        let largest = allocation_largest();
        assert!(
            largest <= 2 * input.len() + 64,
            "decoder allocated {largest} bytes"
        );
        assert!(matches!(
            d.finish(),
            Err(ProtocolError::FrameTooLarge { .. })
        ));

        if case % 4 == 0 {
            reads += 1;
            let mut reader: &[u8] = input;
            let mut got = Vec::new();
            let end = rt.block_on(read_all(&mut reader, max, input.len(), &mut got));
            assert_eq!(got.len(), valid);
            assert_eq!(
                end,
                End::TooLarge {
                    announced: u64::from(announced),
                    limit: max
                },
                "read_frame must refuse the header, not wait for the payload"
            );
        }
    }
    drop(ctx);
    println!(
        "decoder_fuzz oversized_length_prefix_fails_from_the_header_alone: {cases} oversized headers \
         through FrameDecoder, {reads} of them through read_frame too"
    );
}

/// Random and mutated byte streams through `read_frame`, from a plain `&[u8]` and from a
/// reader that dribbles, stalls and fails, agree with the model.
#[test]
fn read_frame_matches_the_model() {
    let seed = seed();
    let corpus = Corpus::build(seed);
    let rt = current_thread_runtime();
    let mut ctx = CaseContext::new("read_frame_matches_the_model", seed);
    let mut stats = FrameStats::default();
    let mut scratch = Vec::new();
    let mut model_frames = Vec::new();
    let mut read = Vec::new();
    let cases = scaled(READ_FRAME_CASES);

    for case in 0..cases {
        ctx.case = case;
        let mut rng = Rng::for_case(seed, 5, case);
        let stream = &mut ctx.input;
        let max = if rng.one_in(5) {
            stream.clear();
            let n = rng.random_len();
            rng.fill(stream, n);
            *rng.pick(&[DEFAULT_MAX_FRAME_BYTES, 16, u32::MAX])
        } else {
            stream_case(&mut rng, &corpus, stream, &mut scratch)
        };
        let stream = &ctx.input;
        let m = model(stream, max, &mut model_frames);
        read.clear();
        let (end, expected_end) = if rng.bool() {
            let mut reader: &[u8] = stream;
            let end = rt.block_on(read_all(&mut reader, max, stream.len(), &mut read));
            (end, m.end)
        } else {
            let fail_at_end = rng.one_in(4);
            let mut reader = Dribble {
                data: stream,
                rng: Rng::for_case(seed, 6, case),
                max_read: *rng.pick(&[1, 3, 8, 100, 1 << 20]),
                fail_at_end,
            };
            let end = rt.block_on(read_all(&mut reader, max, stream.len(), &mut read));
            // A failing reader turns every ending but an oversized header into a stream error.
            let expected = match m.end {
                End::TooLarge { .. } => m.end,
                _ if fail_at_end => End::Stream,
                other => other,
            };
            (end, expected)
        };
        assert_eq!(end, expected_end);
        assert_eq!(read.len(), m.frames.len(), "read_frame frame count");
        for (i, (got, want)) in read.iter().zip(&m.frames).enumerate() {
            assert!(
                *got == stream[want.clone()],
                "read_frame frame #{i} differs"
            );
        }
        stats.streams += 1;
        stats.bytes += stream.len() as u64;
        stats.frames += read.len() as u64;
        stats.count_end(end);
        model_frames = m.frames;
    }
    drop(ctx);
    println!(
        "decoder_fuzz read_frame_matches_the_model: {} streams ({} bytes): {} frames read; \
         ended {} clean, {} truncated, {} too large, {} stream errors",
        stats.streams,
        stats.bytes,
        stats.frames,
        stats.clean,
        stats.truncated,
        stats.too_large,
        stats.stream_errors,
    );
    assert!(
        stats.clean > 0 && stats.truncated > 0 && stats.too_large > 0 && stats.stream_errors > 0
    );
}

/// (d) Announcing a frame, or a sequence, of up to 4 GiB costs nothing until the bytes
/// arrive: the decoder, read_frame and the codec allocate by what they received.
#[test]
fn announced_length_is_never_allocated() {
    let seed = seed();
    let rt = current_thread_runtime();
    let mut ctx = CaseContext::new("announced_length_is_never_allocated", seed);
    let mut rng = Rng::for_case(seed, 7, 0);
    let mut cases = 0u64;

    for (max, announced) in [
        (u32::MAX, u32::MAX),
        (u32::MAX, u32::MAX - 1),
        (u32::MAX, 1 << 31),
        (u32::MAX, 1 << 30),
        (DEFAULT_MAX_FRAME_BYTES, DEFAULT_MAX_FRAME_BYTES),
        (DEFAULT_MAX_FRAME_BYTES, DEFAULT_MAX_FRAME_BYTES - 1),
        (DEFAULT_MAX_FRAME_BYTES, 1 << 20),
    ] {
        for sent in [0, 1, 7, 100, 5000, 70_000] {
            ctx.case = cases;
            cases += 1;
            ctx.detail = format!("(max {max}, announced {announced}, {sent} payload bytes)");
            let input = &mut ctx.input;
            input.clear();
            input.extend_from_slice(&announced.to_be_bytes());
            rng.fill(input, sent);
            let input = &ctx.input;

            // The decoder, in one push and in dribbles.
            for whole in [true, false] {
                let mut d = FrameDecoder::new(max);
                allocation_reset();
                let mut at = 0;
                while at < input.len() {
                    let to = if whole {
                        input.len()
                    } else {
                        (at + rng.range(1, 64)).min(input.len())
                    };
                    d.push(&input[at..to]);
                    at = to;
                    assert!(matches!(d.next_frame(), Ok(None)));
                    let largest = allocation_largest();
                    assert!(
                        largest <= 2 * at + 64,
                        "decoder allocated {largest} bytes after {at} pushed"
                    );
                }
                assert!(matches!(
                    d.finish(),
                    Err(ProtocolError::Truncated { got, expected })
                        if got == sent && expected == announced as usize
                ));
            }

            // read_frame, from a slice and from a stalling dribble.
            let mut reader: &[u8] = input;
            let mut frames = Vec::new();
            let end = rt.block_on(read_all(&mut reader, max, input.len(), &mut frames));
            assert_eq!(
                end,
                End::Truncated {
                    got: sent,
                    expected: announced as usize
                }
            );
            let mut reader = Dribble {
                data: input,
                rng: Rng::for_case(seed, 8, cases),
                max_read: 1000,
                fail_at_end: false,
            };
            let end = rt.block_on(read_all(&mut reader, max, input.len(), &mut frames));
            assert_eq!(
                end,
                End::Truncated {
                    got: sent,
                    expected: announced as usize
                }
            );
            assert!(frames.is_empty());
        }
    }

    // The codec: a sequence or string announcing up to 2^64 elements in a few bytes.
    let mut stats = DecodeStats::default();
    let mut scratch = Vec::new();
    for count in [u64::from(u32::MAX), u64::MAX, 1 << 40, 1 << 24, 1 << 20] {
        for (kind, prefix) in [
            (Kind::ExecInput, &[0u8][..]),     // Stdin(Vec<u8>)
            (Kind::ExecEvent, &[1u8][..]),     // Stdout(Vec<u8>)
            (Kind::Request, &[3u8][..]),       // InstallCert { cert_pem: String }
            (Kind::Request, &[1u8, 0][..]),    // Exec(Command::Argv(Vec<String>))
            (Kind::Request, &[1u8, 1, 0][..]), // Exec: Shell(""), then env: Vec<(String, String)>
            (Kind::Hello, &[1u8, 1][..]),      // versions, then identity: String
            (Kind::Request, &[7u8, 0][..]),    // Plan: revision 0, then entries: Vec<Entry>
            // Apply: revision 0, one entry: path "", Host, File, then bytes: Vec<u8>
            (Kind::Request, &[8u8, 0, 1, 0, 0, 0][..]),
            // Restore: path "", Host, generation 0, no validator, then on_change: Vec<Action>
            (Kind::Request, &[10u8, 0, 0, 0, 0][..]),
            // Plan: one entry: path "", Host, Property "" = "", not secret, a Command
            // validator, then Argv(Vec<String>)
            (Kind::Request, &[7u8, 0, 1, 0, 0, 1, 0, 0, 0, 1, 1, 0][..]),
            (Kind::Request, &[11u8, 0, 0][..]), // ExecInContainer: root "", then Argv(Vec<String>)
            (Kind::Reply, &[10u8][..]),         // Planned(Vec<EntryPlan>)
            (Kind::Reply, &[11u8, 0][..]),      // Applied: revision 0, then entries: Vec<EntryPlan>
            // Applied: revision 0, no entries, Unchanged, then steps: Vec<StepRun>
            (Kind::Reply, &[11u8, 0, 0, 0][..]),
            (Kind::Reply, &[12u8][..]), // Backups(Vec<BackupInfo>)
        ] {
            ctx.case = cases;
            cases += 1;
            ctx.detail = format!("({kind:?} with a count of {count})");
            let input = &mut ctx.input;
            input.clear();
            input.extend_from_slice(prefix);
            push_varint(input, count);
            let filler = rng.below(64);
            rng.fill(input, filler);
            match check_decode(kind, &ctx.input, &mut rng, &mut scratch, &mut stats) {
                Verdict::Malformed => {}
                _ => panic!(
                    "a {count}-element sequence in {} bytes decoded",
                    ctx.input.len()
                ),
            }
        }
    }
    drop(ctx);
    println!("decoder_fuzz announced_length_is_never_allocated: {cases} cases");
}

/// (d) Sequences of their smallest elements, long enough to outgrow serde's preallocation:
/// the `Vec` grows as its elements arrive, and the largest allocation stays within
/// `DECODE_BYTES_PER_INPUT_BYTE` per input byte with no allowance at all, for every
/// sequence type in the messages.
#[test]
fn dense_sequences_allocate_in_proportion() {
    /// A sequence in a message, to fill with its smallest elements.
    struct Dense {
        /// The sequence's type.
        what: &'static str,
        /// The message type that holds it.
        kind: Kind,
        /// The bytes before its count.
        before: &'static [u8],
        /// Its smallest element.
        element: &'static [u8],
        /// The bytes after the elements.
        after: &'static [u8],
        /// The element's size in memory.
        size: usize,
    }

    let seed = seed();
    let mut ctx = CaseContext::new("dense_sequences_allocate_in_proportion", seed);
    let mut rng = Rng::for_case(seed, 9, 0);
    let mut stats = DecodeStats::default();
    let mut scratch = Vec::new();
    let mut worst = 0;

    let sequences = [
        // ExecInput::Stdin; also ExecEvent::Stdout and Stderr, Content::File.
        Dense {
            what: "Vec<u8>",
            kind: Kind::ExecInput,
            before: &[0],
            element: &[0x2A],
            after: &[],
            size: size_of::<u8>(),
        },
        // Request::Exec: Argv of empty strings, no env, cwd, stdin, timeout, requester.
        // Also ExecInContainer, validators, actions and GluuInstall::components.
        Dense {
            what: "Vec<String>",
            kind: Kind::Request,
            before: &[1, 0],
            element: &[0],
            after: &[0, 0, 0, 0, 0],
            size: size_of::<String>(),
        },
        // Request::Exec: Shell(""), then env of empty pairs.
        Dense {
            what: "Vec<(String, String)>",
            kind: Kind::Request,
            before: &[1, 1, 0],
            element: &[0, 0],
            after: &[0, 0, 0, 0],
            size: size_of::<(String, String)>(),
        },
        // Request::Plan, revision 0: entries of path "", Host, Property "" = "", not
        // secret, no validator, no actions; no requester.
        Dense {
            what: "Vec<Entry>",
            kind: Kind::Request,
            before: &[7, 0],
            element: &[0, 0, 1, 0, 0, 0, 0, 0],
            after: &[0],
            size: size_of::<Entry>(),
        },
        // Request::Restore of "", Host, generation 0, no validator: on_change of
        // Command(Argv([])); no requester. Also Entry::on_change.
        Dense {
            what: "Vec<Action>",
            kind: Kind::Request,
            before: &[10, 0, 0, 0, 0],
            element: &[1, 0, 0],
            after: &[0],
            size: size_of::<Action>(),
        },
        // Reply::Planned: path "", Unchanged, every option None, new_sha256 "". Also
        // ApplyReport::entries.
        Dense {
            what: "Vec<EntryPlan>",
            kind: Kind::Reply,
            before: &[10],
            element: &[0; 8],
            after: &[],
            size: size_of::<EntryPlan>(),
        },
        // Reply::Applied, revision 0, no entries, Unchanged: steps of "", failed, "".
        Dense {
            what: "Vec<StepRun>",
            kind: Kind::Reply,
            before: &[11, 0, 0, 0],
            element: &[0; 3],
            after: &[],
            size: size_of::<StepRun>(),
        },
        // Reply::Backups: all zero.
        Dense {
            what: "Vec<BackupInfo>",
            kind: Kind::Reply,
            before: &[12],
            element: &[0; 6],
            after: &[],
            size: size_of::<BackupInfo>(),
        },
    ];
    for (case, dense) in sequences.into_iter().enumerate() {
        let Dense {
            what,
            kind,
            before,
            element,
            after,
            size,
        } = dense;
        ctx.case = case as u64;
        ctx.detail = format!("({what} in a {kind:?})");
        // The reasoning behind the constant, per element type.
        assert!(
            2 * size <= DECODE_BYTES_PER_INPUT_BYTE * element.len(),
            "{what}: an element of {size} bytes in memory from {} input bytes needs more than \
             DECODE_BYTES_PER_INPUT_BYTE = {DECODE_BYTES_PER_INPUT_BYTE}",
            element.len()
        );
        // One element more than 1 MiB holds: whatever serde preallocates, the Vec grows.
        let count = DECODE_PREALLOC_ALLOWANCE / size + 1;
        let input = &mut ctx.input;
        input.clear();
        input.extend_from_slice(before);
        push_varint(input, count as u64);
        for _ in 0..count {
            input.extend_from_slice(element);
        }
        input.extend_from_slice(after);
        let input = &ctx.input;

        allocation_reset();
        let result = decode_as(kind, input);
        let largest = allocation_largest();
        if let Err(e) = result {
            panic!("{count} smallest elements do not decode: {e}");
        }
        assert!(
            largest > DECODE_PREALLOC_ALLOWANCE,
            "the Vec did not outgrow the preallocation: {largest} bytes"
        );
        assert!(
            largest <= DECODE_BYTES_PER_INPUT_BYTE * input.len(),
            "decoding {} bytes allocated {largest} bytes at once",
            input.len()
        );
        let per_byte = largest as f64 / input.len() as f64;
        println!(
            "decoder_fuzz dense_sequences_allocate_in_proportion: {what} ({size} bytes from {}): \
             {count} elements in {} bytes, largest allocation {largest} bytes ({per_byte:.1} per \
             input byte)",
            element.len(),
            input.len(),
        );
        worst = worst.max(largest.div_ceil(input.len()));
        match check_decode(kind, input, &mut rng, &mut scratch, &mut stats) {
            Verdict::Ok(_) => {}
            _ => panic!("{count} smallest elements do not decode"),
        }
    }
    drop(ctx);
    println!(
        "decoder_fuzz dense_sequences_allocate_in_proportion: at most {worst} bytes allocated per \
         input byte (allowed {DECODE_BYTES_PER_INPUT_BYTE})"
    );
}
