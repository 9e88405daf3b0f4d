//! What an agent binary needs of a host (architecture, glibc version), read from its
//! ELF headers, so bootstrap can refuse a host the binary cannot run on before
//! uploading it.
//!
//! A hand-written reader of 64-bit little-endian ELF files, the only kind clustermgr
//! ships. Every read is bounds-checked; a truncated or garbage file is an error, never
//! a panic. The glibc version comes from the version-needed table (`.gnu.version_r`),
//! found through the dynamic segment as the loader finds it, so a binary whose section
//! headers were stripped is still read correctly rather than taken for a static one.

use std::path::Path;

use crate::CtlError;

/// What a binary needs of the host that runs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BinaryFacts {
    /// The machine, as `uname -m` prints it: `"x86_64"`, `"aarch64"`.
    pub arch: String,
    /// The highest `GLIBC_x.y` symbol version the binary needs; `None` when it needs
    /// no versioned glibc symbol (a static binary).
    pub glibc_needed: Option<(u32, u32)>,
    /// The SHA-256 of the whole file, lowercase hex: what the node checks after upload.
    pub sha256: String,
}

/// Reads the facts of the ELF file at `path`.
pub fn inspect(path: &Path) -> Result<BinaryFacts, CtlError> {
    let bytes = std::fs::read(path).map_err(|e| CtlError::io(path, e))?;
    facts(path, &bytes)
}

/// The facts of `bytes`, the contents of the file at `path` (named in errors).
pub fn facts(path: &Path, bytes: &[u8]) -> Result<BinaryFacts, CtlError> {
    let (arch, glibc_needed) = parse(bytes).map_err(|message| CtlError::Binary {
        path: path.to_path_buf(),
        message,
    })?;
    Ok(BinaryFacts {
        arch: arch.to_string(),
        glibc_needed,
        sha256: clustermgr_protocol::identity::sha256_hex(bytes),
    })
}

impl BinaryFacts {
    /// Whether this binary runs on a host of machine `arch` (as `uname -m` prints it)
    /// whose glibc reports version `glibc` (`"2.17"`; `None` when the host has none,
    /// e.g. a musl system). The error says what the binary needs and what the host has.
    pub fn serves(&self, arch: &str, glibc: Option<&str>) -> Result<(), String> {
        if arch != self.arch {
            return Err(format!(
                "the agent binary is built for {}, but the host is {arch}",
                self.arch
            ));
        }
        let Some((major, minor)) = self.glibc_needed else {
            return Ok(());
        };
        let Some(reported) = glibc else {
            return Err(format!(
                "the agent binary needs glibc {major}.{minor} or newer, but the host has no glibc"
            ));
        };
        let have = parse_glibc(reported).ok_or_else(|| {
            format!(
                "the agent binary needs glibc {major}.{minor} or newer, and the host's glibc version {reported:?} cannot be read"
            )
        })?;
        if have < (major, minor) {
            return Err(format!(
                "the agent binary needs glibc {major}.{minor} or newer, but the host has glibc {reported}"
            ));
        }
        Ok(())
    }
}

/// `"2.17"`, also with a suffix as some distributions print it (`"2.17-326.el7"`).
fn parse_glibc(s: &str) -> Option<(u32, u32)> {
    let mut parts = s.trim().splitn(3, '.');
    let major = parts.next()?.parse().ok()?;
    let rest = parts.next()?;
    let digits = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    Some((major, rest[..digits].parse().ok()?))
}

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const DT_NULL: u64 = 0;
const DT_STRTAB: u64 = 5;
const DT_STRSZ: u64 = 10;
const DT_VERNEED: u64 = 0x6fff_fffe;
const DT_VERNEEDNUM: u64 = 0x6fff_ffff;

/// The ELF bytes, read only through checked accessors.
struct Elf<'a>(&'a [u8]);

impl<'a> Elf<'a> {
    fn bytes<const N: usize>(&self, at: u64) -> Result<[u8; N], String> {
        let start = usize::try_from(at).map_err(|_| truncated())?;
        let end = start.checked_add(N).ok_or_else(truncated)?;
        let slice = self.0.get(start..end).ok_or_else(truncated)?;
        Ok(slice.try_into().expect("slice has N bytes"))
    }
    fn u16(&self, at: u64) -> Result<u16, String> {
        self.bytes(at).map(u16::from_le_bytes)
    }
    fn u32(&self, at: u64) -> Result<u32, String> {
        self.bytes(at).map(u32::from_le_bytes)
    }
    fn u64(&self, at: u64) -> Result<u64, String> {
        self.bytes(at).map(u64::from_le_bytes)
    }
    /// The NUL-terminated string at `at`, within `limit` bytes.
    fn c_str(&self, at: u64, limit: u64) -> Result<&'a [u8], String> {
        let start = usize::try_from(at).map_err(|_| truncated())?;
        let rest = self.0.get(start..).ok_or_else(truncated)?;
        let rest = &rest[..rest.len().min(usize::try_from(limit).unwrap_or(usize::MAX))];
        let len = rest.iter().position(|&b| b == 0).ok_or_else(truncated)?;
        Ok(&rest[..len])
    }
}

fn truncated() -> String {
    "the file is truncated or its ELF headers point outside it".to_string()
}

fn add(a: u64, b: u64) -> Result<u64, String> {
    a.checked_add(b).ok_or_else(truncated)
}

/// One program header, the fields used here.
struct Segment {
    kind: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
}

/// The machine and the highest glibc version an ELF image needs.
type Needs = (&'static str, Option<(u32, u32)>);

fn parse(data: &[u8]) -> Result<Needs, String> {
    let elf = Elf(data);
    let ident: [u8; 6] = elf
        .bytes(0)
        .map_err(|_| "not an ELF file (too short)".to_string())?;
    if ident[..4] != *b"\x7fELF" {
        return Err("not an ELF file".into());
    }
    if ident[4] != 2 || ident[5] != 1 {
        return Err("not a 64-bit little-endian ELF file".into());
    }
    let arch = machine(elf.u16(0x12)?)?;
    let phoff = elf.u64(0x20)?;
    let phentsize = u64::from(elf.u16(0x36)?);
    let phnum = elf.u16(0x38)?;
    if phnum > 0 && phentsize < 56 {
        return Err(format!(
            "program headers of {phentsize} bytes are too small"
        ));
    }
    let mut segments = Vec::with_capacity(usize::from(phnum));
    for i in 0..u64::from(phnum) {
        let at = add(phoff, i.checked_mul(phentsize).ok_or_else(truncated)?)?;
        segments.push(Segment {
            kind: elf.u32(at)?,
            offset: elf.u64(add(at, 8)?)?,
            vaddr: elf.u64(add(at, 16)?)?,
            filesz: elf.u64(add(at, 32)?)?,
        });
    }
    let Some(dynamic) = segments.iter().find(|s| s.kind == PT_DYNAMIC) else {
        return Ok((arch, None));
    };
    let (mut strtab, mut strsz, mut verneed, mut verneednum) = (None, None, None, None);
    for i in 0..dynamic.filesz / 16 {
        let at = add(dynamic.offset, i * 16)?;
        let (tag, val) = (elf.u64(at)?, elf.u64(add(at, 8)?)?);
        match tag {
            DT_NULL => break,
            DT_STRTAB => strtab = Some(val),
            DT_STRSZ => strsz = Some(val),
            DT_VERNEED => verneed = Some(val),
            DT_VERNEEDNUM => verneednum = Some(val),
            _ => {}
        }
    }
    let (Some(verneed), Some(count)) = (verneed, verneednum) else {
        return Ok((arch, None));
    };
    let (Some(strtab), Some(strsz)) = (strtab, strsz) else {
        return Err("the dynamic segment has version needs but no string table".into());
    };
    // The dynamic segment holds addresses; the file is read at offsets.
    let file_offset = |addr: u64| -> Result<u64, String> {
        segments
            .iter()
            .find(|s| s.kind == PT_LOAD && addr >= s.vaddr && addr - s.vaddr < s.filesz)
            .ok_or_else(|| format!("address {addr:#x} is in no loaded segment"))
            .and_then(|s| add(s.offset, addr - s.vaddr))
    };
    let strtab = file_offset(strtab)?;
    let mut highest = None;
    let mut need = file_offset(verneed)?;
    // Real binaries need a few dozen versions; a crafted chain of entries a byte
    // apart would otherwise take time quadratic in the file's size.
    let mut budget = 1u32 << 16;
    for _ in 0..count {
        // Elf64_Verneed: vn_version, vn_cnt, vn_file, vn_aux, vn_next.
        let aux_count = elf.u16(add(need, 2)?)?;
        let mut aux = add(need, u64::from(elf.u32(add(need, 8)?)?))?;
        for _ in 0..aux_count {
            budget = budget
                .checked_sub(1)
                .ok_or("the version-needed table has too many entries")?;
            // Elf64_Vernaux: vna_hash, vna_flags, vna_other, vna_name, vna_next.
            let name_at = u64::from(elf.u32(add(aux, 8)?)?);
            let name = elf.c_str(add(strtab, name_at)?, strsz.saturating_sub(name_at))?;
            if let Some(v) = glibc_version(name) {
                highest = highest.max(Some(v));
            }
            match elf.u32(add(aux, 12)?)? {
                0 => break,
                next => aux = add(aux, u64::from(next))?,
            }
        }
        match elf.u32(add(need, 12)?)? {
            0 => break,
            next => need = add(need, u64::from(next))?,
        }
    }
    Ok((arch, highest))
}

/// `GLIBC_2.17` → (2, 17); `GLIBC_2.2.5` → (2, 2). Names that are no version (such as
/// `GLIBC_PRIVATE`) are none, except the one marker that stands for a version.
fn glibc_version(name: &[u8]) -> Option<(u32, u32)> {
    let rest = name.strip_prefix(b"GLIBC_")?;
    // Binaries linked with packed relative relocations need the loader of glibc 2.36.
    if rest == b"ABI_DT_RELR" {
        return Some((2, 36));
    }
    let mut parts = std::str::from_utf8(rest).ok()?.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// `e_machine` as `uname -m` names it, for the 64-bit little-endian machines Linux runs.
fn machine(e_machine: u16) -> Result<&'static str, String> {
    Ok(match e_machine {
        62 => "x86_64",
        183 => "aarch64",
        21 => "ppc64le",
        243 => "riscv64",
        258 => "loongarch64",
        other => return Err(format!("ELF machine {other} is not one Linux hosts run")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal dynamically linked ELF64 image: one PT_LOAD covering the file at
    /// address 0x400000, a PT_DYNAMIC, and a version-needed table naming `versions`
    /// (all needed from libc.so.6).
    fn image(machine: u16, versions: &[&str]) -> Vec<u8> {
        const BASE: u64 = 0x40_0000;
        let mut strtab = b"\0libc.so.6\0".to_vec();
        let mut names = Vec::new();
        for v in versions {
            names.push(strtab.len() as u32);
            strtab.extend_from_slice(v.as_bytes());
            strtab.push(0);
        }
        let phoff = 64u64;
        let dyn_off = phoff + 2 * 56;
        let dyn_len = 5 * 16;
        let str_off = dyn_off + dyn_len;
        let need_off = str_off + strtab.len() as u64;

        let mut f = vec![0u8; 64];
        f[..6].copy_from_slice(b"\x7fELF\x02\x01");
        f[0x12..0x14].copy_from_slice(&machine.to_le_bytes());
        f[0x20..0x28].copy_from_slice(&phoff.to_le_bytes());
        f[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        f[0x38..0x3a].copy_from_slice(&2u16.to_le_bytes());
        let total = need_off + 16 + 16 * versions.len() as u64;
        for (kind, offset, vaddr, size) in [
            (PT_LOAD, 0, BASE, total),
            (PT_DYNAMIC, dyn_off, BASE + dyn_off, dyn_len),
        ] {
            let mut ph = [0u8; 56];
            ph[..4].copy_from_slice(&kind.to_le_bytes());
            ph[8..16].copy_from_slice(&offset.to_le_bytes());
            ph[16..24].copy_from_slice(&vaddr.to_le_bytes());
            ph[32..40].copy_from_slice(&size.to_le_bytes());
            f.extend_from_slice(&ph);
        }
        for (tag, val) in [
            (DT_STRTAB, BASE + str_off),
            (DT_STRSZ, strtab.len() as u64),
            (DT_VERNEED, BASE + need_off),
            (DT_VERNEEDNUM, 1),
            (DT_NULL, 0),
        ] {
            f.extend_from_slice(&tag.to_le_bytes());
            f.extend_from_slice(&val.to_le_bytes());
        }
        f.extend_from_slice(&strtab);
        // Verneed: version 1, cnt, file "libc.so.6" at 1, aux right after, no next.
        f.extend_from_slice(&1u16.to_le_bytes());
        f.extend_from_slice(&(versions.len() as u16).to_le_bytes());
        f.extend_from_slice(&1u32.to_le_bytes());
        f.extend_from_slice(&16u32.to_le_bytes());
        f.extend_from_slice(&0u32.to_le_bytes());
        for (i, name) in names.iter().enumerate() {
            let next = if i + 1 == names.len() { 0u32 } else { 16 };
            f.extend_from_slice(&[0; 8]);
            f.extend_from_slice(&name.to_le_bytes());
            f.extend_from_slice(&next.to_le_bytes());
        }
        assert_eq!(f.len() as u64, total);
        f
    }

    fn facts(arch: &str, glibc: Option<(u32, u32)>) -> BinaryFacts {
        BinaryFacts {
            arch: arch.into(),
            glibc_needed: glibc,
            sha256: String::new(),
        }
    }

    #[test]
    fn the_highest_glibc_version_wins_and_other_names_are_ignored() {
        let f = image(
            62,
            &["GLIBC_2.2.5", "GLIBC_2.17", "GLIBC_PRIVATE", "GLIBC_2.3.4"],
        );
        assert_eq!(parse(&f), Ok(("x86_64", Some((2, 17)))));
        let f = image(183, &["GLIBC_2.17", "GLIBC_ABI_DT_RELR", "GCC_3.0"]);
        assert_eq!(parse(&f), Ok(("aarch64", Some((2, 36)))));
    }

    #[test]
    fn a_binary_without_version_needs_is_static() {
        // Cut the program headers down to the PT_LOAD alone: no dynamic segment.
        let mut f = image(62, &["GLIBC_2.17"]);
        f[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        assert_eq!(parse(&f), Ok(("x86_64", None)));
    }

    #[test]
    fn this_test_binary_is_read_like_the_shipped_ones() {
        let me = std::env::current_exe().unwrap();
        let facts = inspect(&me).unwrap();
        assert_eq!(facts.arch, std::env::consts::ARCH);
        if cfg!(target_env = "gnu") {
            assert!(facts.glibc_needed.is_some_and(|v| v >= (2, 2)), "{facts:?}");
        }
        assert_eq!(facts.sha256.len(), 64);
    }

    #[test]
    fn the_digest_is_lowercase_sha256_of_the_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bin");
        let f = image(62, &["GLIBC_2.17"]);
        std::fs::write(&path, &f).unwrap();
        let digest = ring::digest::digest(&ring::digest::SHA256, &f);
        let expected: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(inspect(&path).unwrap().sha256, expected);
    }

    #[test]
    fn every_truncation_is_an_error_never_a_panic() {
        let f = image(62, &["GLIBC_2.17", "GLIBC_2.14"]);
        for len in 0..f.len() {
            assert!(
                parse(&f[..len]).is_err(),
                "a file cut to {len} bytes parsed"
            );
        }
    }

    #[test]
    fn garbage_and_flipped_bytes_never_panic() {
        // xorshift: deterministic, so a failure reproduces.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let good = image(62, &["GLIBC_2.17", "GLIBC_2.14"]);
        for _ in 0..20_000 {
            let mut f = good.clone();
            for _ in 0..1 + next() % 4 {
                let i = (next() % f.len() as u64) as usize;
                f[i] = next() as u8;
            }
            let _ = parse(&f);
            let len = (next() % 512) as usize;
            let mut junk: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if junk.len() >= 6 {
                junk[..6].copy_from_slice(b"\x7fELF\x02\x01");
            }
            let _ = parse(&junk);
        }
    }

    #[test]
    fn offsets_near_the_end_of_the_address_space_are_errors() {
        let good = image(62, &["GLIBC_2.17"]);
        // The PT_LOAD's p_offset, then e_phoff: sums with them must not overflow.
        for field in [64 + 8, 0x20] {
            let mut f = good.clone();
            f[field..field + 8].copy_from_slice(&(u64::MAX - 8).to_le_bytes());
            assert!(parse(&f).is_err());
        }
    }

    #[test]
    fn other_files_are_refused_with_the_reason() {
        assert_eq!(parse(b"#!/bin/sh\n").unwrap_err(), "not an ELF file");
        let mut f = image(62, &[]);
        f[4] = 1;
        assert!(parse(&f).unwrap_err().contains("64-bit little-endian"));
        let f = image(3, &[]);
        assert!(parse(&f).unwrap_err().contains("machine 3"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent");
        std::fs::write(&path, "not a binary").unwrap();
        let err = inspect(&path).unwrap_err().to_string();
        assert!(err.contains(&*path.to_string_lossy()), "{err}");
    }

    #[test]
    fn serves_compares_architecture_and_glibc_with_the_host() {
        let baseline = facts("x86_64", Some((2, 17)));
        assert_eq!(baseline.serves("x86_64", Some("2.17")), Ok(()));
        assert_eq!(baseline.serves("x86_64", Some("2.31")), Ok(()));
        assert_eq!(baseline.serves("x86_64", Some("2.17-326.el7")), Ok(()));
        let err = baseline.serves("aarch64", Some("2.28")).unwrap_err();
        assert_eq!(
            err,
            "the agent binary is built for x86_64, but the host is aarch64"
        );
        let err = facts("x86_64", Some((2, 28)))
            .serves("x86_64", Some("2.17"))
            .unwrap_err();
        assert_eq!(
            err,
            "the agent binary needs glibc 2.28 or newer, but the host has glibc 2.17"
        );
        // 2.9 is older than 2.17: versions compare as numbers, not text.
        assert!(baseline.serves("x86_64", Some("2.9")).is_err());
        assert!(
            baseline
                .serves("x86_64", None)
                .unwrap_err()
                .contains("no glibc")
        );
        assert!(baseline.serves("x86_64", Some("unknown")).is_err());
        assert_eq!(facts("x86_64", None).serves("x86_64", None), Ok(()));
    }
}
