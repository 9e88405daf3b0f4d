//! What an agent binary needs of a host: its architecture and the newest glibc symbol
//! version it links against, read from its ELF headers, so bootstrap can refuse a host
//! the binary cannot run on before uploading anything.

use std::path::Path;

use crate::CtlError;

/// A glibc version, (major, minor).
pub type Version = (u32, u32);

/// What a binary needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BinaryFacts {
    /// As `uname -m` prints it ("x86_64", "aarch64").
    pub arch: String,
    /// The newest `GLIBC_x.y` it needs; `None` for a static binary.
    pub glibc_needed: Option<Version>,
    /// SHA-256 of the file, lowercase hex.
    pub sha256: String,
}

impl BinaryFacts {
    /// Whether a host with `arch` and glibc `glibc` ("2.17"; `None` when the host has
    /// another C library) can run it; the error says what is missing.
    pub fn serves(&self, arch: &str, glibc: Option<&str>) -> Result<(), String> {
        if arch != self.arch {
            return Err(format!(
                "the host is {arch} and the binary is built for {}",
                self.arch
            ));
        }
        let Some((maj, min)) = self.glibc_needed else {
            return Ok(());
        };
        let have = glibc.and_then(parse_version);
        match have {
            None => Err(format!(
                "the binary needs glibc {maj}.{min} or newer and the host has no glibc"
            )),
            Some(h) if h < (maj, min) => Err(format!(
                "the binary needs glibc {maj}.{min} or newer and the host has {}",
                glibc.unwrap_or_default()
            )),
            Some(_) => Ok(()),
        }
    }
}

fn parse_version(v: &str) -> Option<Version> {
    let mut it = v.trim().split('.');
    let maj = it.next()?.parse().ok()?;
    let min = it.next().map_or(Some(0), |m| m.parse().ok())?;
    Some((maj, min))
}

/// Reads `path`'s ELF headers and hashes it.
pub fn inspect(path: &Path) -> Result<BinaryFacts, CtlError> {
    let bytes = std::fs::read(path).map_err(|e| CtlError::io(path, e))?;
    let bad = |why: &str| {
        CtlError::Usage(format!(
            "{} is not a usable agent binary: {why}; build it with `cargo build --release -p clustermgr-agent` or give another with --agent-binary",
            path.display()
        ))
    };
    let (arch, glibc_needed) = parse(&bytes).map_err(bad)?;
    let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
    let sha256 = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    Ok(BinaryFacts {
        arch,
        glibc_needed,
        sha256,
    })
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}
fn u64_at(b: &[u8], at: usize) -> Option<usize> {
    usize::try_from(u64::from_le_bytes(
        b.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
    .ok()
}

const SHT_GNU_VERNEED: u32 = 0x6fff_fffe;

fn parse(b: &[u8]) -> Result<(String, Option<Version>), &'static str> {
    if b.get(..4) != Some(b"\x7fELF") {
        return Err("it is not an ELF file");
    }
    if b.get(4) != Some(&2) || b.get(5) != Some(&1) {
        return Err("it is not a 64-bit little-endian ELF file");
    }
    let truncated = "its ELF headers are truncated";
    let arch = match u16_at(b, 0x12).ok_or(truncated)? {
        62 => "x86_64",
        183 => "aarch64",
        _ => return Err("it is built for an architecture clustermgr does not ship"),
    };
    let shoff = u64_at(b, 0x28).ok_or(truncated)?;
    let shentsize = usize::from(u16_at(b, 0x3a).ok_or(truncated)?);
    let shnum = usize::from(u16_at(b, 0x3c).ok_or(truncated)?);
    let section = |i: usize| -> Option<usize> {
        let at = shoff.checked_add(i.checked_mul(shentsize)?)?;
        (at.checked_add(0x40)? <= b.len()).then_some(at)
    };
    let mut newest: Option<Version> = None;
    for i in 0..shnum {
        let sh = section(i).ok_or(truncated)?;
        if u32_at(b, sh + 4) != Some(SHT_GNU_VERNEED) {
            continue;
        }
        let off = u64_at(b, sh + 0x18).ok_or(truncated)?;
        let count = u32_at(b, sh + 0x2c).ok_or(truncated)?;
        let strtab = section(u32_at(b, sh + 0x28).ok_or(truncated)? as usize).ok_or(truncated)?;
        let stroff = u64_at(b, strtab + 0x18).ok_or(truncated)?;
        let name = |at: u32| -> Option<&[u8]> {
            let start = stroff.checked_add(at as usize)?;
            let rest = b.get(start..)?;
            Some(&rest[..rest.iter().position(|&c| c == 0)?])
        };
        let mut need = off;
        for _ in 0..count.min(1024) {
            let cnt = u16_at(b, need + 2).ok_or(truncated)?;
            let mut aux = need
                .checked_add(u32_at(b, need + 8).ok_or(truncated)? as usize)
                .ok_or(truncated)?;
            for _ in 0..cnt {
                let n = name(u32_at(b, aux + 8).ok_or(truncated)?).ok_or(truncated)?;
                if let Some(v) = std::str::from_utf8(n)
                    .ok()
                    .and_then(|n| n.strip_prefix("GLIBC_"))
                    .and_then(parse_version)
                {
                    newest = newest.max(Some(v));
                }
                let next = u32_at(b, aux + 12).ok_or(truncated)? as usize;
                if next == 0 {
                    break;
                }
                aux = aux.checked_add(next).ok_or(truncated)?;
            }
            let next = u32_at(b, need + 12).ok_or(truncated)? as usize;
            if next == 0 {
                break;
            }
            need = need.checked_add(next).ok_or(truncated)?;
        }
    }
    Ok((arch.to_string(), newest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_test_binary_is_read() {
        let exe = std::env::current_exe().unwrap();
        let f = inspect(&exe).unwrap();
        assert_eq!(f.arch, std::env::consts::ARCH);
        let (maj, min) = f.glibc_needed.expect("a dynamically linked test binary");
        assert_eq!(maj, 2);
        assert!(min >= 2);
        assert_eq!(f.sha256.len(), 64);
    }

    #[test]
    fn hosts_are_judged() {
        let f = BinaryFacts {
            arch: "x86_64".into(),
            glibc_needed: Some((2, 17)),
            sha256: String::new(),
        };
        assert!(f.serves("x86_64", Some("2.17")).is_ok());
        assert!(f.serves("x86_64", Some("2.31")).is_ok());
        assert!(
            f.serves("x86_64", Some("2.12"))
                .unwrap_err()
                .contains("2.17")
        );
        assert!(
            f.serves("aarch64", Some("2.31"))
                .unwrap_err()
                .contains("aarch64")
        );
        assert!(f.serves("x86_64", None).is_err());
    }

    #[test]
    fn garbage_is_refused_without_panicking() {
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        for cut in [0, 3, 16, 0x20, 0x40, 0x1000, exe.len() / 2] {
            let _ = parse(&exe[..cut.min(exe.len())]);
        }
        assert!(parse(b"not an elf").is_err());
        let mut bad = exe[..0x40].to_vec();
        bad[0x28..0x30].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(parse(&bad).is_err());
    }
}
