//! The console's account passwords and API tokens: a password is kept only as an
//! argon2id hash in the PHC string format (`$argon2id$v=19$m=...,t=...,p=...$SALT$HASH`,
//! what other tools read), made on the machine where it was typed, so the password
//! itself never crosses `serve`'s socket or reaches the store; a token is random and
//! kept as its SHA-256 (it has 256 bits of entropy, so a fast hash is enough).

use base64::Engine;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};

/// OWASP's argon2id setting: 19 MiB, two passes, one lane. A login costs about 30 ms
/// here; a stolen hash costs a guesser as much per guess.
const M_KIB: u32 = 19 * 1024;
const T: u32 = 2;
const P: u32 = 1;
/// Bytes of salt and of hash.
const SALT: usize = 16;
const OUT: usize = 32;

/// What API tokens start with, so one found in a log or a repository is recognised.
pub const TOKEN_PREFIX: &str = "cmt_";

/// `N` bytes from the system's random source.
pub(crate) fn random<const N: usize>() -> [u8; N] {
    use ring::rand::SecureRandom;
    let mut b = [0u8; N];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .expect("the system's random source");
    b
}

fn argon2(m: u32, t: u32, p: u32) -> Result<argon2::Argon2<'static>, String> {
    let params = argon2::Params::new(m, t, p, Some(OUT)).map_err(|e| e.to_string())?;
    Ok(argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        params,
    ))
}

/// glibc's largest dynamic mmap threshold on 64-bit (`DEFAULT_MMAP_THRESHOLD_MAX`,
/// 32 MiB) in argon2's 1 KiB blocks, and one block more.
const PAST_MMAP_THRESHOLD_BLOCKS: usize = 32 * 1024 + 1;

/// Runs argon2 in memory that goes back to the system when it returns. Left to itself
/// argon2 allocates its 19 MiB from the heap: glibc maps the first such allocation on
/// its own, raises its threshold to that size when it is freed, and from then on
/// serves each from the arena of the thread that hashes, where it stays resident.
/// `serve` checks logins on tokio's blocking threads, each with an arena of its own:
/// ten logins kept 150 MiB (the console bench, BENCHMARKS.md). Reserved past glibc's
/// largest threshold, the memory is always a mapping of its own, unmapped when
/// dropped (and zeroed by the kernel before anyone else gets it); only the blocks
/// written ever become resident.
fn hash_into(
    a: &argon2::Argon2<'_>,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> Result<(), String> {
    let blocks = a.params().block_count();
    let mut memory = Vec::with_capacity(blocks.max(PAST_MMAP_THRESHOLD_BLOCKS));
    memory.resize(blocks, argon2::Block::default());
    a.hash_password_into_with_memory(password, salt, out, memory.as_mut_slice())
        .map_err(|e| e.to_string())
}

/// The PHC string of `password` with a new salt.
pub fn hash(password: &str) -> String {
    let salt = random::<SALT>();
    let mut out = zeroize::Zeroizing::new([0u8; OUT]);
    argon2(M_KIB, T, P)
        .and_then(|a| hash_into(&a, password.as_bytes(), &salt, out.as_mut()))
        .expect("fixed, valid argon2 parameters");
    format!(
        "$argon2id$v=19$m={M_KIB},t={T},p={P}${}${}",
        STANDARD_NO_PAD.encode(salt),
        STANDARD_NO_PAD.encode(*out)
    )
}

/// Whether `password` is the one `phc` was made from (in constant time); a string
/// that is not an argon2id PHC string matches nothing.
pub fn verify(password: &str, phc: &str) -> bool {
    let Some(rest) = phc.strip_prefix("$argon2id$v=19$") else {
        return false;
    };
    let parts: Vec<&str> = rest.split('$').collect();
    let [params, salt, want] = parts.as_slice() else {
        return false;
    };
    let mut m = None;
    let mut t = None;
    let mut p = None;
    for kv in params.split(',') {
        match kv.split_once('=') {
            Some(("m", v)) => m = v.parse::<u32>().ok(),
            Some(("t", v)) => t = v.parse::<u32>().ok(),
            Some(("p", v)) => p = v.parse::<u32>().ok(),
            _ => return false,
        }
    }
    let (Some(m), Some(t), Some(p)) = (m, t, p) else {
        return false;
    };
    let (Ok(salt), Ok(want)) = (STANDARD_NO_PAD.decode(salt), STANDARD_NO_PAD.decode(want)) else {
        return false;
    };
    // A stored string's own cost, within bounds: a doctored one must not take the
    // controller's memory.
    if want.len() != OUT || m > 1024 * 1024 || t > 16 || p > 4 {
        return false;
    }
    let mut got = zeroize::Zeroizing::new([0u8; OUT]);
    let ok = argon2(m, t, p)
        .is_ok_and(|a| hash_into(&a, password.as_bytes(), &salt, got.as_mut()).is_ok());
    // No timing tells how close a guess came.
    ok && same_bytes(got.as_ref(), &want)
}

/// Equal in constant time: every byte looked at whatever the first difference (the
/// lengths are no secret).
pub(crate) fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A new API token and the SHA-256 (hex) it is kept as.
pub fn new_token() -> (zeroize::Zeroizing<String>, String) {
    let token = zeroize::Zeroizing::new(format!(
        "{TOKEN_PREFIX}{}",
        URL_SAFE_NO_PAD.encode(random::<32>())
    ));
    let digest = token_digest(&token);
    (token, digest)
}

/// What a token is kept and looked up as.
pub fn token_digest(token: &str) -> String {
    clustermgr_protocol::identity::sha256_hex(token.as_bytes())
}

/// A short public name for a token (its digest's first hex digits), for lists and
/// the audit log.
pub fn token_id(digest: &str) -> String {
    digest.chars().take(12).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let h = hash("correct horse battery");
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify("correct horse battery", &h));
        assert!(!verify("correct horse batterY", &h));
        assert_ne!(h, hash("correct horse battery"), "a new salt each time");
        for bad in [
            "",
            "plain",
            "$argon2i$v=19$m=19456,t=2,p=1$AAAA$AAAA",
            "$argon2id$v=19$m=99999999,t=2,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ] {
            assert!(!verify("x", bad), "{bad}");
        }
    }

    #[test]
    fn the_memory_given_to_argon2_changes_nothing_in_its_hash() {
        // Hashes made before, and by other tools, still verify.
        let a = argon2(M_KIB, T, P).unwrap();
        let (mut ours, mut theirs) = ([0u8; OUT], [0u8; OUT]);
        hash_into(&a, b"correct horse", b"sixteen byte slt", &mut ours).unwrap();
        a.hash_password_into(b"correct horse", b"sixteen byte slt", &mut theirs)
            .unwrap();
        assert_eq!(ours, theirs);
    }

    #[test]
    fn tokens_are_random_and_kept_as_digests() {
        let (a, da) = new_token();
        let (b, db) = new_token();
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() == TOKEN_PREFIX.len() + 43);
        assert_ne!(*a, *b);
        assert_eq!(token_digest(&a), da);
        assert_ne!(da, db);
        assert_eq!(token_id(&da).len(), 12);
    }
}
