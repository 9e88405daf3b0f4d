//! The console's sessions and login throttle, in `serve`'s memory only (a restart
//! logs everyone out, and no session secret is ever written down).
//!
//! A session is a random 256-bit cookie value, looked up by its SHA-256, with its own
//! CSRF token; it ends after `[web] idle_minutes` unused, `absolute_hours` after the
//! login, at logout, and when its account is removed or its password changes (checked
//! on every request against the store). Logins are throttled per account and per
//! address: after a few failures each further attempt waits longer, up to a quarter of
//! an hour, also with the right password, so guessing is slow and a flood of
//! addresses or names cannot grow memory past a bound.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::access::UserRole;

/// The most sessions kept; the least recently used goes first past it.
const MAX_SESSIONS: usize = 1024;
/// Live sessions per account: one more pushes out that account's oldest, never someone
/// else's (a viewer logging in again and again cannot log the admins out).
const PER_ACCOUNT: usize = 16;
/// Failures allowed before the throttle waits.
const FREE_FAILURES: u32 = 5;
/// The longest wait the throttle imposes.
const MAX_WAIT: Duration = Duration::from_secs(900);
/// A key with no failure for this long is forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(3600);
/// The most keys (accounts and addresses) the throttle remembers.
const MAX_KEYS: usize = 10_000;

/// How a person logged in, as the audit log says it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum How {
    /// The account's password.
    Password,
    /// An API token (its public name).
    Token(String),
    /// An OpenID provider (its issuer).
    Oidc(String),
}

/// Who is on the other end of a request.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The account.
    pub user: String,
    /// Its role now.
    pub role: UserRole,
    /// How it proved who it is.
    pub how: How,
    /// The session's CSRF token (none for a token, which no browser sends by itself).
    pub csrf: Option<String>,
}

impl How {
    /// How, in words (`password`, `API token ID`, `OpenID Connect ISSUER`).
    pub fn describe(&self) -> String {
        match self {
            How::Password => "password".into(),
            How::Token(id) => format!("API token {id}"),
            How::Oidc(issuer) => format!("OpenID Connect {issuer}"),
        }
    }

    /// The name the audit log records for `user` logged in this way.
    pub fn audit_name(&self, user: &str) -> String {
        match self {
            How::Token(_) => format!("{user} ({})", self.describe()),
            _ => format!("{user} (console, {})", self.describe()),
        }
    }
}

impl Caller {
    /// The name the audit log records.
    pub fn audit_name(&self) -> String {
        self.how.audit_name(&self.user)
    }
}

#[derive(Debug)]
struct Session {
    user: String,
    csrf: String,
    /// The account's password time at login: a later change ends the session.
    password_set_ms: i64,
    /// A login through an OpenID provider: the role its claim gave, and its issuer
    /// (no account of the store stands behind it).
    oidc: Option<(UserRole, String)>,
    created: Instant,
    last: Instant,
}

/// A live session, as a request finds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Live {
    /// Its account (or the person's name from the provider).
    pub user: String,
    /// The account's password time at login.
    pub password_set_ms: i64,
    /// Its CSRF token.
    pub csrf: String,
    /// The role and issuer of a login through an OpenID provider.
    pub oidc: Option<(UserRole, String)>,
}

/// The live sessions.
#[derive(Debug)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
    idle: Duration,
    absolute: Duration,
}

/// Makes room for one more entry in `map` at `max`, removing the one `age` says is the
/// oldest: the bound that keeps a flood from growing memory.
pub(crate) fn make_room<V, T: Ord>(
    map: &mut HashMap<String, V>,
    max: usize,
    age: impl Fn(&V) -> T,
) {
    if map.len() >= max
        && let Some(oldest) = map
            .iter()
            .min_by_key(|(_, v)| age(v))
            .map(|(k, _)| k.clone())
    {
        map.remove(&oldest);
    }
}

/// 256 random bits as base64url text: session cookies, CSRF tokens, OpenID states.
pub(crate) fn random_text() -> String {
    URL_SAFE_NO_PAD.encode(crate::password::random::<32>())
}

fn key_of(cookie: &str) -> String {
    clustermgr_protocol::identity::sha256_hex(cookie.as_bytes())
}

/// Equal in constant time (for CSRF tokens).
pub fn same(a: &str, b: &str) -> bool {
    crate::password::same_bytes(a.as_bytes(), b.as_bytes())
}

impl Sessions {
    /// Sessions that end after `idle` unused or `absolute` after the login.
    pub fn new(idle: Duration, absolute: Duration) -> Sessions {
        Sessions {
            map: Mutex::default(),
            idle,
            absolute,
        }
    }

    /// A new session for `user`: the cookie value and the CSRF token.
    pub fn start(&self, user: &str, password_set_ms: i64, now: Instant) -> (String, String) {
        self.start_with(user, password_set_ms, None, now)
    }

    /// A new session of a person an OpenID provider vouched for, with the role its
    /// claim gave.
    pub fn start_oidc(
        &self,
        user: &str,
        role: UserRole,
        issuer: &str,
        now: Instant,
    ) -> (String, String) {
        self.start_with(user, 0, Some((role, issuer.to_string())), now)
    }

    fn start_with(
        &self,
        user: &str,
        password_set_ms: i64,
        oidc: Option<(UserRole, String)>,
        now: Instant,
    ) -> (String, String) {
        let cookie = random_text();
        let csrf = random_text();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, s| !self.expired(s, now));
        let own = map.iter().filter(|(_, s)| s.user == user);
        if own.clone().count() >= PER_ACCOUNT
            && let Some(oldest) = own.min_by_key(|(_, s)| s.last).map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        make_room(&mut map, MAX_SESSIONS, |s| s.last);
        map.insert(
            key_of(&cookie),
            Session {
                user: user.to_string(),
                csrf: csrf.clone(),
                password_set_ms,
                oidc,
                created: now,
                last: now,
            },
        );
        (cookie, csrf)
    }

    fn expired(&self, s: &Session, now: Instant) -> bool {
        now.saturating_duration_since(s.last) >= self.idle
            || now.saturating_duration_since(s.created) >= self.absolute
    }

    /// The session of `cookie`, if it is live. Touches it.
    pub fn get(&self, cookie: &str, now: Instant) -> Option<Live> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let key = key_of(cookie);
        let s = map.get_mut(&key)?;
        if self.expired(s, now) {
            map.remove(&key);
            return None;
        }
        s.last = now;
        Some(Live {
            user: s.user.clone(),
            password_set_ms: s.password_set_ms,
            csrf: s.csrf.clone(),
            oidc: s.oidc.clone(),
        })
    }

    /// Ends the session of `cookie`.
    pub fn end(&self, cookie: &str) {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key_of(cookie));
    }

    /// How many are live (tests, benchmarks).
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether none are.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, Clone, Copy)]
struct Strikes {
    failures: u32,
    last: Instant,
    wait_until: Option<Instant>,
}

/// Failed logins by account and by address.
#[derive(Debug, Default)]
pub struct Throttle {
    map: Mutex<HashMap<String, Strikes>>,
}

/// The account's key and the address's: an IPv6 client is counted by its /64, which
/// one host usually holds whole, so fresh addresses from it are one address here.
fn keys(user: &str, addr: IpAddr) -> [String; 2] {
    let addr = match addr {
        IpAddr::V6(a) if a.to_ipv4_mapped().is_none() => {
            let s = a.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        IpAddr::V6(a) => a
            .to_ipv4_mapped()
            .map(|v4| v4.to_string())
            .unwrap_or_default(),
        IpAddr::V4(a) => a.to_string(),
    };
    [format!("user:{user}"), format!("addr:{addr}")]
}

impl Throttle {
    /// How long `user` from `addr` must still wait before a login is tried at all.
    pub fn wait(&self, user: &str, addr: IpAddr, now: Instant) -> Option<Duration> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        keys(user, addr)
            .iter()
            .filter_map(|k| map.get(k)?.wait_until)
            .map(|until| until.saturating_duration_since(now))
            .filter(|d| !d.is_zero())
            .max()
    }

    /// Counts a failed login; returns the failures of the account so far.
    pub fn failed(&self, user: &str, addr: IpAddr, now: Instant) -> u32 {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        // Room for both keys, so the table never holds more than MAX_KEYS.
        if map.len() + 2 > MAX_KEYS {
            map.retain(|_, s| now.saturating_duration_since(s.last) < FORGET_AFTER);
            make_room(&mut map, MAX_KEYS - 1, |s| s.last);
            make_room(&mut map, MAX_KEYS - 1, |s| s.last);
        }
        let mut account = 0;
        for (i, k) in keys(user, addr).into_iter().enumerate() {
            let s = map.entry(k).or_insert(Strikes {
                failures: 0,
                last: now,
                wait_until: None,
            });
            if now.saturating_duration_since(s.last) >= FORGET_AFTER {
                s.failures = 0;
            }
            s.failures += 1;
            s.last = now;
            if s.failures >= FREE_FAILURES {
                let doubling = (s.failures - FREE_FAILURES).min(10);
                let wait = Duration::from_secs(1u64 << doubling).min(MAX_WAIT);
                s.wait_until = Some(now + wait);
            }
            if i == 0 {
                account = s.failures;
            }
        }
        account
    }

    /// Forgets the account's failures after a login (the address's stay: one good
    /// account does not clear an address that guesses at others).
    pub fn succeeded(&self, user: &str) {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&format!("user:{user}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_account_logging_in_again_and_again_pushes_out_only_its_own_sessions() {
        let s = Sessions::new(Duration::from_secs(600), Duration::from_secs(6000));
        let t0 = Instant::now();
        let (bob, _) = s.start("bob", 1, t0);
        let mut alice = Vec::new();
        for i in 1..=(PER_ACCOUNT as u64 + 4) {
            alice.push(s.start("alice", 1, t0 + Duration::from_millis(i)).0);
        }
        let later = t0 + Duration::from_secs(1);
        assert!(s.get(&bob, later).is_some(), "bob's session stays");
        let live = alice.iter().filter(|c| s.get(c, later).is_some()).count();
        assert_eq!(live, PER_ACCOUNT);
        assert!(s.get(&alice[0], later).is_none(), "alice's oldest went");
        assert!(s.get(alice.last().unwrap(), later).is_some());
    }

    #[test]
    fn sessions_end_when_idle_at_their_absolute_end_and_at_logout() {
        let s = Sessions::new(Duration::from_secs(60), Duration::from_secs(600));
        let t0 = Instant::now();
        let (cookie, csrf) = s.start("alice", 1, t0);
        assert_ne!(cookie, csrf);
        assert_eq!(
            s.get(&cookie, t0 + Duration::from_secs(59)),
            Some(Live {
                user: "alice".into(),
                password_set_ms: 1,
                csrf: csrf.clone(),
                oidc: None
            })
        );
        // Used at 59 s: idle counts from there.
        assert!(s.get(&cookie, t0 + Duration::from_secs(118)).is_some());
        assert!(s.get(&cookie, t0 + Duration::from_secs(178)).is_none());
        // Kept busy, it still ends at the absolute limit.
        let (c2, _) = s.start("alice", 1, t0);
        let mut t = t0;
        for _ in 0..19 {
            t += Duration::from_secs(30);
            assert!(s.get(&c2, t).is_some(), "{:?}", t - t0);
        }
        assert!(s.get(&c2, t0 + Duration::from_secs(600)).is_none());
        let (c3, _) = s.start("bob", 1, t0);
        s.end(&c3);
        assert!(s.get(&c3, t0).is_none());
        assert!(s.get("made-up", t0).is_none());
    }

    #[test]
    fn the_throttle_waits_longer_after_a_few_failures_per_account_and_address() {
        let t = Throttle::default();
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let now = Instant::now();
        for _ in 0..4 {
            t.failed("alice", a, now);
            assert_eq!(t.wait("alice", a, now), None);
        }
        assert_eq!(t.failed("alice", a, now), 5);
        assert_eq!(t.wait("alice", a, now), Some(Duration::from_secs(1)));
        // The account waits from another address too, and the address for another
        // account.
        assert!(t.wait("alice", b, now).is_some());
        assert!(t.wait("bob", a, now).is_some());
        assert_eq!(t.wait("bob", b, now), None);
        t.failed("alice", a, now);
        assert_eq!(t.wait("alice", b, now), Some(Duration::from_secs(2)));
        assert_eq!(t.wait("alice", b, now + Duration::from_secs(2)), None);
        for _ in 0..30 {
            t.failed("alice", a, now);
        }
        assert_eq!(t.wait("alice", b, now), Some(MAX_WAIT));
        t.succeeded("alice");
        assert_eq!(t.wait("alice", b, now), None);
        assert!(t.wait("bob", a, now).is_some(), "the address still waits");
    }

    #[test]
    fn csrf_tokens_compare_whole() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "ab"));
    }
}
