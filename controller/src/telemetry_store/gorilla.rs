//! The on-disk encoding of one series' samples: a chunk of (time, value) pairs,
//! compressed as Facebook's Gorilla does (delta-of-delta timestamps, XOR-ed floats),
//! plus an integer variant for values that are whole numbers (byte and packet
//! counters, sizes), whose deltas-of-deltas are smaller than their XORs.
//!
//! Layout: `[FORMAT][kind][count u16 LE][first time i64 LE][first value 8 bytes]` then
//! the bit stream. Times are Unix milliseconds; the agent stamps each tick with its
//! scheduled time, so a steady series costs one bit per timestamp.

/// The chunk format this code writes and reads; a chunk of another is refused.
pub const FORMAT: u8 = 1;
/// The most samples in a chunk.
pub const MAX_SAMPLES: usize = u16::MAX as usize;

const HEADER: usize = 1 + 1 + 2 + 8 + 8;

/// How a chunk's values are encoded. A chunk takes the narrowest kind that holds all
/// its values, and widens (re-encoding itself) when a value needs it: whole numbers
/// are hundredths, hundredths are thousandths, and everything is a float.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// XOR of successive IEEE 754 bit patterns.
    Xor,
    /// Delta-of-delta of whole numbers (exact up to 2^53) that are all multiples of
    /// 2^shift, stored divided by it: bytes counted in sectors, pages or KiB move by
    /// multiples of 512, 4096 or 1024, and those low bits would be spent on every
    /// sample.
    Int(u32),
    /// Delta-of-delta of hundredths: values that are exactly `n / 100.0` (CPU seconds
    /// from clock ticks, load averages).
    Centi,
    /// Delta-of-delta of thousandths: seconds from milliseconds (disk busy time).
    Milli,
}

/// The largest power of two an integer chunk divides its values by.
const MAX_SHIFT: u32 = 32;

impl Kind {
    /// The header byte: the kind in the low two bits, an integer chunk's shift above.
    fn byte(self) -> u8 {
        match self {
            Kind::Xor => 0,
            Kind::Int(shift) => 1 | ((shift.min(MAX_SHIFT) as u8) << 2),
            Kind::Centi => 2,
            Kind::Milli => 3,
        }
    }

    fn from_byte(b: u8) -> Result<Kind, String> {
        match (b & 3, b >> 2) {
            (0, 0) => Ok(Kind::Xor),
            (1, shift) if u32::from(shift) <= MAX_SHIFT => Ok(Kind::Int(u32::from(shift))),
            (2, 0) => Ok(Kind::Centi),
            (3, 0) => Ok(Kind::Milli),
            _ => Err(format!("unknown value encoding {b}")),
        }
    }
}

/// The narrowest kind that holds every one of `values`.
fn fitting(values: &[f64]) -> Kind {
    if values.iter().all(|v| integral(*v)) {
        let shift = values
            .iter()
            .map(|v| (*v as i64).trailing_zeros())
            .fold(MAX_SHIFT, u32::min);
        return Kind::Int(shift);
    }
    [Kind::Centi, Kind::Milli]
        .into_iter()
        .find(|k| values.iter().all(|v| scaled(*k, *v).is_some()))
        .unwrap_or(Kind::Xor)
}

/// The integer a value is stored as in a chunk of `kind`, if it fits that kind.
fn scaled(kind: Kind, v: f64) -> Option<i64> {
    let decimal = |per: f64| {
        let i = (v * per).round();
        (i.abs() <= (1u64 << 53) as f64
            && (i / per).to_bits() == v.to_bits()
            && !(v == 0.0 && v.is_sign_negative()))
        .then_some(i as i64)
    };
    match kind {
        Kind::Xor => None,
        Kind::Int(shift) => {
            (integral(v) && (v as i64).trailing_zeros() >= shift).then_some((v as i64) >> shift)
        }
        Kind::Centi => decimal(100.0),
        Kind::Milli => decimal(1000.0),
    }
}

fn unscaled(kind: Kind, i: i64) -> f64 {
    match kind {
        Kind::Int(shift) => i.wrapping_shl(shift) as f64,
        Kind::Centi => i as f64 / 100.0,
        Kind::Milli => i as f64 / 1000.0,
        Kind::Xor => i as f64,
    }
}

/// Whether `v` is a whole number an f64 holds exactly and an i64 can subtract safely.
fn integral(v: f64) -> bool {
    v.fract() == 0.0 && v.abs() <= (1u64 << 53) as f64 && !(v == 0.0 && v.is_sign_negative())
}

#[derive(Debug, Default)]
struct BitWriter {
    bytes: Vec<u8>,
    /// Bits used in the last byte (0 = a new byte is needed).
    used: u8,
}

impl BitWriter {
    fn bit(&mut self, b: bool) {
        if self.used == 0 {
            self.bytes.push(0);
        }
        if b {
            let last = self.bytes.len() - 1;
            self.bytes[last] |= 0x80 >> self.used;
        }
        self.used = (self.used + 1) % 8;
    }

    fn bits(&mut self, v: u64, n: u32) {
        for i in (0..n).rev() {
            self.bit((v >> i) & 1 == 1);
        }
    }
}

struct BitReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl BitReader<'_> {
    fn bit(&mut self) -> Result<bool, String> {
        let byte = self.bytes.get(self.pos / 8).ok_or("the chunk ends early")?;
        let b = byte & (0x80 >> (self.pos % 8)) != 0;
        self.pos += 1;
        Ok(b)
    }

    fn bits(&mut self, n: u32) -> Result<u64, String> {
        let mut v = 0u64;
        for _ in 0..n {
            v = (v << 1) | u64::from(self.bit()?);
        }
        Ok(v)
    }
}

/// Writes a signed delta-of-delta in Gorilla's buckets.
fn put_dod(w: &mut BitWriter, dod: i64) {
    let zig = |v: i64, bits: u32| (v as u64) & ((1u64 << bits) - 1);
    match dod {
        0 => w.bit(false),
        -63..=64 => {
            w.bits(0b10, 2);
            w.bits(zig(dod, 7), 7);
        }
        -255..=256 => {
            w.bits(0b110, 3);
            w.bits(zig(dod, 9), 9);
        }
        -2047..=2048 => {
            w.bits(0b1110, 4);
            w.bits(zig(dod, 12), 12);
        }
        // A wider bucket than Gorilla's: whole-number values (memory, bytes) move by
        // more than a timestamp does.
        -2_147_483_647..=2_147_483_648 => {
            w.bits(0b11110, 5);
            w.bits(zig(dod, 32), 32);
        }
        _ => {
            w.bits(0b11111, 5);
            w.bits(dod as u64, 64);
        }
    }
}

fn get_dod(r: &mut BitReader) -> Result<i64, String> {
    let sign = |v: u64, bits: u32| {
        let shift = 64 - bits;
        ((v << shift) as i64) >> shift
    };
    if !r.bit()? {
        return Ok(0);
    }
    if !r.bit()? {
        return Ok(sign(r.bits(7)?, 7));
    }
    if !r.bit()? {
        return Ok(sign(r.bits(9)?, 9));
    }
    if !r.bit()? {
        return Ok(sign(r.bits(12)?, 12));
    }
    if !r.bit()? {
        return Ok(sign(r.bits(32)?, 32));
    }
    Ok(r.bits(64)? as i64)
}

/// Builds one chunk, sample by sample.
#[derive(Debug)]
pub struct Encoder {
    kind: Kind,
    count: u16,
    first: (i64, f64),
    w: BitWriter,
    last_t: i64,
    last_dt: i64,
    // Xor state.
    last_bits: u64,
    leading: u32,
    trailing: u32,
    // Int state.
    last_i: i64,
    last_di: i64,
}

impl Encoder {
    /// A chunk starting with `(t, v)`.
    pub fn new(t: i64, v: f64) -> Encoder {
        Encoder::of_kind(fitting(&[v]), t, v)
    }

    fn of_kind(kind: Kind, t: i64, v: f64) -> Encoder {
        let mut e = Encoder {
            kind,
            count: 1,
            first: (t, v),
            w: BitWriter::default(),
            last_t: t,
            last_dt: 0,
            last_bits: v.to_bits(),
            leading: u32::MAX,
            trailing: 0,
            last_i: 0,
            last_di: 0,
        };
        e.last_i = scaled(e.kind, v).unwrap_or(0);
        e
    }

    /// Samples in the chunk.
    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    /// Never: a chunk starts with a sample.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The time of the last sample.
    pub fn last_time(&self) -> i64 {
        self.last_t
    }

    /// Adds a sample; `false` when it does not fit this chunk (full, or not after the
    /// last sample): seal this one and start another.
    pub fn push(&mut self, t: i64, v: f64) -> bool {
        if self.len() >= MAX_SAMPLES || t <= self.last_t {
            return false;
        }
        let i = scaled(self.kind, v);
        if self.kind != Kind::Xor && i.is_none() {
            // Widened: a kind changes at most a few times in a chunk, mostly while it
            // is young, so re-encoding costs little.
            let Ok(mut samples) = decode(&self.bytes()) else {
                return false;
            };
            samples.push((t, v));
            let values: Vec<f64> = samples.iter().map(|s| s.1).collect();
            let mut e = Encoder::of_kind(fitting(&values), samples[0].0, samples[0].1);
            for &(t, v) in &samples[1..] {
                e.append(t, v, scaled(e.kind, v));
            }
            *self = e;
            return true;
        }
        self.append(t, v, i);
        true
    }

    /// Adds a sample known to fit: after the last, and `i` is its scaled value when
    /// the kind has one.
    fn append(&mut self, t: i64, v: f64, i: Option<i64>) {
        let dt = t.wrapping_sub(self.last_t);
        put_dod(&mut self.w, dt.wrapping_sub(self.last_dt));
        self.last_dt = dt;
        self.last_t = t;
        match self.kind {
            Kind::Int(_) | Kind::Centi | Kind::Milli => {
                let i = i.unwrap_or(0);
                let di = i.wrapping_sub(self.last_i);
                put_dod(&mut self.w, di.wrapping_sub(self.last_di));
                self.last_i = i;
                self.last_di = di;
            }
            Kind::Xor => {
                let bits = v.to_bits();
                let x = bits ^ self.last_bits;
                self.last_bits = bits;
                if x == 0 {
                    self.w.bit(false);
                } else {
                    self.w.bit(true);
                    let lead = x.leading_zeros().min(31);
                    let trail = x.trailing_zeros();
                    if self.leading != u32::MAX && lead >= self.leading && trail >= self.trailing {
                        // Inside the previous window: only the meaningful bits.
                        self.w.bit(false);
                        let n = 64 - self.leading - self.trailing;
                        self.w.bits(x >> self.trailing, n);
                    } else {
                        self.w.bit(true);
                        let n = 64 - lead - trail;
                        self.w.bits(u64::from(lead), 5);
                        // 1..=64 meaningful bits, stored as n - 1 in 6 bits.
                        self.w.bits(u64::from(n - 1), 6);
                        self.w.bits(x >> trail, n);
                        self.leading = lead;
                        self.trailing = trail;
                    }
                }
            }
        }
        self.count += 1;
    }

    /// The chunk's bytes.
    pub fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + self.w.bytes.len());
        out.push(FORMAT);
        out.push(self.kind.byte());
        out.extend_from_slice(&self.count.to_le_bytes());
        out.extend_from_slice(&self.first.0.to_le_bytes());
        out.extend_from_slice(&self.first.1.to_bits().to_le_bytes());
        out.extend_from_slice(&self.w.bytes);
        out
    }

    /// Continues a stored chunk (to append to it after a restart).
    pub fn resume(bytes: &[u8]) -> Result<Encoder, String> {
        let samples = decode(bytes)?;
        let mut it = samples.into_iter();
        let (t, v) = it.next().ok_or("an empty chunk")?;
        let mut e = Encoder::of_kind(Kind::from_byte(bytes[1])?, t, v);
        for (t, v) in it {
            let i = scaled(e.kind, v);
            if t <= e.last_t || (e.kind != Kind::Xor && i.is_none()) {
                return Err("the chunk's samples do not fit its encoding".into());
            }
            e.append(t, v, i);
        }
        Ok(e)
    }
}

/// How many samples a chunk holds, from its header alone (0 for a damaged one).
pub fn sample_count(bytes: &[u8]) -> usize {
    match bytes {
        [FORMAT, _, lo, hi, ..] if bytes.len() >= HEADER => {
            usize::from(u16::from_le_bytes([*lo, *hi]))
        }
        _ => 0,
    }
}

/// Reads a chunk back.
pub fn decode(bytes: &[u8]) -> Result<Vec<(i64, f64)>, String> {
    if bytes.len() < HEADER {
        return Err("the chunk is shorter than its header".into());
    }
    if bytes[0] != FORMAT {
        return Err(format!(
            "the chunk has format {}, this clustermgr reads format {FORMAT}",
            bytes[0]
        ));
    }
    let kind = Kind::from_byte(bytes[1])?;
    let count = u16::from_le_bytes([bytes[2], bytes[3]]) as usize;
    let word = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(b)
    };
    let mut t = word(4) as i64;
    let v0 = f64::from_bits(word(12));
    let mut out = Vec::with_capacity(count);
    out.push((t, v0));
    let mut r = BitReader {
        bytes: &bytes[HEADER..],
        pos: 0,
    };
    let mut i = scaled(kind, v0).unwrap_or(0);
    let (mut dt, mut bits, mut di) = (0i64, v0.to_bits(), 0i64);
    let (mut leading, mut trailing) = (0u32, 0u32);
    for _ in 1..count {
        dt = dt.wrapping_add(get_dod(&mut r)?);
        t = t.wrapping_add(dt);
        let v = match kind {
            Kind::Int(_) | Kind::Centi | Kind::Milli => {
                di = di.wrapping_add(get_dod(&mut r)?);
                i = i.wrapping_add(di);
                unscaled(kind, i)
            }
            Kind::Xor => {
                if r.bit()? {
                    if r.bit()? {
                        leading = r.bits(5)? as u32;
                        let n = r.bits(6)? as u32 + 1;
                        if leading + n > 64 {
                            return Err("a value's bit window is out of range".into());
                        }
                        trailing = 64 - leading - n;
                    }
                    let n = 64 - leading - trailing;
                    bits ^= r.bits(n)? << trailing;
                }
                f64::from_bits(bits)
            }
        };
        out.push((t, v));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodes into as many chunks as the samples need; returns them.
    fn chunks(samples: &[(i64, f64)]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut e = Encoder::new(samples[0].0, samples[0].1);
        for &(t, v) in &samples[1..] {
            if !e.push(t, v) {
                out.push(e.bytes());
                e = Encoder::new(t, v);
            }
        }
        out.push(e.bytes());
        out
    }

    fn round_trip(samples: &[(i64, f64)]) -> Vec<u8> {
        let chunks = chunks(samples);
        let mut back = Vec::new();
        for c in &chunks {
            back.extend(decode(c).unwrap());
            // A stored chunk can be continued.
            assert_eq!(&Encoder::resume(c).unwrap().bytes(), c);
        }
        assert_eq!(back.len(), samples.len());
        for (a, b) in back.iter().zip(samples) {
            assert_eq!(a.0, b.0);
            assert_eq!(a.1.to_bits(), b.1.to_bits(), "{} vs {}", a.1, b.1);
        }
        chunks.into_iter().max_by_key(Vec::len).unwrap_or_default()
    }

    #[test]
    fn every_kind_of_series_comes_back_bit_for_bit() {
        let t = |i: i64| 1_700_000_000_000 + i * 10_000;
        // Steady whole-number counter, constant gauge, jittered float, wild values.
        round_trip(
            &(0..500)
                .map(|i| (t(i), (i * 4096) as f64))
                .collect::<Vec<_>>(),
        );
        round_trip(&(0..500).map(|i| (t(i), 8.0)).collect::<Vec<_>>());
        round_trip(
            &(0..500)
                .map(|i| (t(i) + (i * 7919 % 13), 0.25 + (i as f64).sin()))
                .collect::<Vec<_>>(),
        );
        round_trip(&[
            (0, f64::MIN_POSITIVE),
            (1, -0.0),
            (i64::MAX / 4, f64::INFINITY),
            (i64::MAX / 2, f64::MAX),
            (i64::MAX / 2 + 1, f64::NAN),
            (i64::MAX / 2 + 2, 1e-300),
        ]);
        round_trip(&[
            (5, 1.0),
            (6, -9_007_199_254_740_992.0),
            (7_000_000_000_000, 3.0),
        ]);
        round_trip(&[(5, -0.0), (6, 0.0)]);
    }

    #[test]
    fn a_chunk_widens_its_encoding_for_a_value_that_needs_it() {
        let mut e = Encoder::new(100, 8192.0);
        assert_eq!(e.kind, Kind::Int(13));
        assert!(!e.push(100, 2.0), "not after the last");
        let values = [
            (200, 3072.0, Kind::Int(10)),
            (300, 3073.0, Kind::Int(0)),
            (400, 2.5, Kind::Centi),
            (500, 2.125, Kind::Milli),
            (600, 7.0, Kind::Milli),
            (700, 1.0 / 3.0, Kind::Xor),
            (800, 4.0, Kind::Xor),
        ];
        for (t, v, kind) in values {
            assert!(e.push(t, v), "{v} at {t}");
            assert_eq!(e.kind, kind, "after {v}");
        }
        let back = decode(&e.bytes()).unwrap();
        let want: Vec<(i64, f64)> = std::iter::once((100, 8192.0))
            .chain(values.iter().map(|(t, v, _)| (*t, *v)))
            .collect();
        assert_eq!(back.len(), want.len());
        for (a, b) in back.iter().zip(&want) {
            assert_eq!((a.0, a.1.to_bits()), (b.0, b.1.to_bits()));
        }
        assert_eq!(Encoder::resume(&e.bytes()).unwrap().bytes(), e.bytes());
        let mut x = Encoder::new(100, 0.5);
        assert!(x.push(200, 2.0), "whole numbers fit a float chunk");
        assert_eq!(x.kind, Kind::Centi);
    }

    #[test]
    fn a_damaged_chunk_is_an_error_not_a_panic() {
        let t = |i: i64| 1_700_000_000_000 + i * 1000;
        let bytes = round_trip(
            &(0..100)
                .map(|i| (t(i), 0.5 + i as f64 * 0.37))
                .collect::<Vec<_>>(),
        );
        for cut in 0..bytes.len() {
            let _ = decode(&bytes[..cut]);
        }
        let mut other = bytes.clone();
        other[0] = 9;
        assert!(decode(&other).unwrap_err().contains("format 9"));
        let mut flip = bytes.clone();
        for i in HEADER..flip.len() {
            flip[i] ^= 0x5a;
            let _ = decode(&flip);
        }
    }

    #[test]
    fn steady_host_metrics_cost_little_more_than_a_byte_a_sample() {
        // A day of 10-second ticks of the kinds of series an agent sends.
        let n = 8640;
        let t = |i: i64| 1_700_000_000_000 + i * 10_000;
        let (mut total, mut samples) = (0usize, 0usize);
        let series: Vec<Box<dyn Fn(i64) -> f64>> = vec![
            Box::new(|_| 8_589_934_592.0), // memory total
            // Memory available, from /proc/meminfo's KiB.
            Box::new(|i| (4_000_000 - (i * 7919) % 1000) as f64 * 1024.0),
            // Sectors written, in bytes.
            Box::new(|i| (i * 800 + (i * 13) % 64) as f64 * 512.0),
            // Disk busy seconds, from milliseconds.
            Box::new(|i| (i * 37 + (i * 7) % 11) as f64 / 1000.0),
            Box::new(|i| (i * 1234 + (i * 7) % 100) as f64), // a byte counter
            Box::new(|i| (i * 3) as f64),                    // a packet counter
            // CPU seconds, from clock ticks as the agent computes them.
            Box::new(|i| (i * 987 + (i * 31) % 7) as f64 / 100.0),
            // A load average wandering by hundredths.
            Box::new(|i| 1.0 + ((i * 13) % 9) as f64 / 100.0),
            // A float with no short form (a ratio).
            Box::new(|i| 1.0 / (3.0 + (i % 5) as f64)),
            Box::new(|_| 2.0), // processes
        ];
        for f in &series {
            let s: Vec<(i64, f64)> = (0..n).map(|i| (t(i), f(i))).collect();
            total += chunks(&s).iter().map(Vec::len).sum::<usize>();
            samples += s.len();
        }
        let per = total as f64 / samples as f64;
        eprintln!("{per:.3} bytes per sample");
        // A regression guard on a synthetic mix, not the target, which is
        // measured on real agents' data (BENCHMARKS.md).
        assert!(per < 1.5, "{per:.3} bytes per sample");
    }
}
