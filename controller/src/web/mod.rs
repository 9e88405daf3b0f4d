//! The web console and its API (`serve`'s third front end, beside the CLI and its
//! socket): pages embedded in the binary, `/api/v1/...` answering with the same JSON
//! documents as the CLI's `--json` (`crate::contract`), and a server-sent event stream
//! that keeps the Overview live. Every route but the login page, its script and style
//! needs a session cookie or an API token; every operation goes through
//! [`crate::ops::run`] after [`crate::ops::Operation::allowed`] with the caller's role,
//! and is audited under the person's name and how they logged in.
//!
//! Served with axum over hyper, HTTP/1.1, by serve's own bounded accept loop: at most
//! [`CONNECTIONS`] at once, request heads within [`HEAD_DEADLINE`] and
//! [`MAX_HEAD_BYTES`], bodies within [`MAX_BODY_BYTES`] and the same deadline.

pub mod oidc;
pub mod session;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::CtlError;
use crate::accept::Counted;
use crate::config::WebConfig;
use crate::ops::{Ctx, Invocation, Operation};
use session::{Caller, How, Sessions, Throttle};

/// Connections served at once (each open page holds one for its event stream).
pub const CONNECTIONS: usize = 64;
/// A request head must arrive within this.
pub const HEAD_DEADLINE: Duration = Duration::from_secs(10);
/// The largest request head.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// The largest request body (logins, apply requests: small JSON).
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// The session cookie's name.
pub const COOKIE: &str = "cm_session";
/// How often the event stream sends the nodes' ticks.
const TOP_EVERY: Duration = Duration::from_secs(2);
/// How often it sends the nodes' status (a ping of each, over warm connections).
const STATUS_EVERY: Duration = Duration::from_secs(10);
/// How often a repeated failed login is logged.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// The console's state, shared by every request.
pub struct Web {
    ctx: Arc<Ctx>,
    sessions: Sessions,
    throttle: Throttle,
    failed_logins: Counted,
    /// The live documents (`top`, `status`), worked out once per tick for every open
    /// page, only while one is open.
    live: tokio::sync::broadcast::Sender<(&'static str, Arc<String>)>,
    /// The newest of each, for a page that opens between ticks.
    latest: std::sync::Mutex<Vec<(&'static str, Arc<String>)>>,
    /// Served over TLS: cookies are `Secure`.
    secure: bool,
    /// Login through an OpenID provider, when `[web.oidc]` says.
    oidc: Option<oidc::Oidc>,
    /// Turns at checking a password (argon2id is memory-hard on purpose).
    hashing: tokio::sync::Semaphore,
}

/// The console's TLS, from `[web] tls`: the files given, or a certificate issued now
/// (in memory: its key is made where it is used) from the console CA kept in the home,
/// made the first time, whose fingerprint serve logs so browsers can be told to trust
/// it. `None` for plain HTTP (loopback only).
fn tls_acceptor(
    ctx: &Ctx,
    cfg: &WebConfig,
    addr: SocketAddr,
) -> Result<Option<tokio_rustls::TlsAcceptor>, CtlError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (chain_pem, key_pem) = match cfg.tls {
        crate::config::WebTls::Off => return Ok(None),
        crate::config::WebTls::Files => {
            let (cert, key) = match (&cfg.tls_cert, &cfg.tls_key) {
                (Some(c), Some(k)) => (c, k),
                _ => {
                    return Err(CtlError::BadSetting {
                        key: "[web] tls".into(),
                        why: "tls = \"files\" needs tls_cert and tls_key".into(),
                    });
                }
            };
            crate::home::check_owner_only(
                key,
                "the console's TLS key, readable or writable by group or others",
            )?;
            let c = std::fs::read_to_string(cert).map_err(|e| CtlError::io(cert, e))?;
            let k = std::fs::read_to_string(key).map_err(|e| CtlError::io(key, e))?;
            (c, zeroize::Zeroizing::new(k))
        }
        crate::config::WebTls::Issued => {
            let home = &ctx.home;
            let now = ctx.clock.now();
            let (ca_path, key_path) = (home.console_ca_cert(), home.console_ca_key());
            let ca = if ca_path.exists() {
                crate::home::check_owner_only(&key_path, "the console CA's key")?;
                let c = std::fs::read_to_string(&ca_path).map_err(|e| CtlError::io(&ca_path, e))?;
                let k = zeroize::Zeroizing::new(
                    std::fs::read_to_string(&key_path).map_err(|e| CtlError::io(&key_path, e))?,
                );
                crate::ca::Ca::load(&c, &k)?
            } else {
                let (ca, key) = crate::ca::Ca::create_console(&ctx.meta.name, now)?;
                crate::home::private_file(&key_path)?;
                crate::ops::write_file(&key_path, &key, 0o600)?;
                crate::ops::write_file(&ca_path, ca.cert_pem(), 0o644)?;
                ca
            };
            let mut names = cfg.tls_names.clone();
            if names.is_empty() {
                names.push(addr.ip().to_string());
                if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
                    names.push(h.trim().to_string());
                }
                if addr.ip().is_loopback() {
                    names.push("localhost".into());
                }
            }
            let (issued, key) = ca.issue_console(&names, now, time::Duration::days(397))?;
            let der: Vec<u8> = CertificateDer::pem_slice_iter(ca.cert_pem().as_bytes())
                .flatten()
                .next()
                .map(|c| c.to_vec())
                .unwrap_or_default();
            let fp = clustermgr_protocol::identity::sha256_hex(&der);
            tracing::info!(
                "the console's certificate is for {} and issued by the console CA {} (SHA-256 {fp}); give browsers that CA to trust",
                names.join(", "),
                ca_path.display()
            );
            (
                format!("{}{}", issued.pem, ca.cert_pem()),
                zeroize::Zeroizing::new(key),
            )
        }
    };
    let bad = |why: String| CtlError::BadSetting {
        key: "[web] tls".into(),
        why,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| bad(format!("the certificate chain is not PEM: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| bad(format!("the key is not a PEM private key: {e}")))?;
    let mut server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| bad(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(|e| bad(format!("the certificate and key do not go together: {e}")))?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(server))))
}

impl std::fmt::Debug for Web {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Web")
            .field("sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

/// The page shells and their assets, embedded: the console works with no internet.
mod assets {
    pub const INDEX: &str = include_str!("../../web/index.html");
    pub const LOGIN: &str = include_str!("../../web/login.html");
    pub const APP_JS: &str = include_str!("../../web/app.js");
    pub const LOGIN_JS: &str = include_str!("../../web/login.js");
    pub const CSS: &str = include_str!("../../web/app.css");
}

/// Serves the console for `serve` until the task is dropped: once the store has an
/// account (the console is never served without one; serve says how to make one), on
/// `[web] address`. A console that cannot listen is logged and left off; the rest of
/// `serve` goes on.
pub async fn run(ctx: Arc<Ctx>, cfg: WebConfig) {
    let addr = match cfg.listen() {
        Ok(Some(a)) => a,
        Ok(None) => return,
        Err(e) => {
            tracing::error!("the console is not served: {e}");
            return;
        }
    };
    // The port is held from the start, also while no account exists: another user on
    // this machine cannot take it and show a login page of their own meanwhile.
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(
                "cannot serve the web console on {addr}: {e}; set another [web] address in controller.toml (or \"off\") and restart serve"
            );
            return;
        }
    };
    let mut said = false;
    loop {
        match ctx.store.users() {
            Ok(u) if !u.is_empty() => break,
            Ok(_) if !said => {
                tracing::warn!(
                    "the web console is not served yet: there is no account. Make one with `clustermgr user add NAME --role admin`; the console starts on {addr} (held already) as soon as there is"
                );
                said = true;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("reading the console's accounts: {e}"),
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let tls = match tls_acceptor(&ctx, &cfg, addr) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!("the web console is not served: {e}");
            return;
        }
    };
    let oidc = cfg.oidc.clone().map(oidc::Oidc::new);
    if let Some(Err(e)) = oidc.as_ref().map(oidc::Oidc::check_issuer) {
        tracing::error!("the web console is not served: [web.oidc] in controller.toml: {e}");
        return;
    }
    let local = listener.local_addr().unwrap_or(addr);
    // Tests and `clustermgr dev` read the address from this line.
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!("serving the web console on {scheme}://{local}/");
    let web = Arc::new(Web {
        ctx,
        sessions: Sessions::new(
            Duration::from_secs(cfg.idle_minutes * 60),
            Duration::from_secs(cfg.absolute_hours * 3600),
        ),
        throttle: Throttle::default(),
        failed_logins: Counted::new(LOG_EVERY, "failed console logins".into()),
        live: tokio::sync::broadcast::channel(8).0,
        latest: std::sync::Mutex::default(),
        secure: tls.is_some(),
        oidc,
        hashing: tokio::sync::Semaphore::new(2),
    });
    let ticker = tokio::spawn(tick(web.clone()));
    serve_on(listener, web, tls).await;
    ticker.abort();
}

/// Works out the live documents every tick while a page listens: `top` every 2 s,
/// `status` every 10 s, once for all pages (both are a viewer's, the least role a
/// session has), as the console rather than any one person (reads are not audited).
async fn tick(web: Arc<Web>) {
    let mut top_tick = tokio::time::interval(TOP_EVERY);
    let mut status_tick = tokio::time::interval(STATUS_EVERY);
    loop {
        let (name, op) = tokio::select! {
            _ = top_tick.tick() => ("top", Operation::Top { nodes: "all".into() }),
            _ = status_tick.tick() => ("status", Operation::Status { nodes: "all".into() }),
        };
        if web.live.receiver_count() == 0 {
            web.latest.lock().unwrap_or_else(|p| p.into_inner()).clear();
            continue;
        }
        // One slow round must not hold the others: the next tick tries again.
        let doc =
            match tokio::time::timeout(STATUS_EVERY, report(&web, "console", op.clone())).await {
                Ok(Ok(r)) => crate::contract::document(&op, r),
                Ok(Err(e)) => Some(serde_json::json!({"error": e.to_string()})),
                Err(_) => continue,
            };
        let data = Arc::new(doc.map(|d| d.to_string()).unwrap_or_default());
        {
            let mut latest = web.latest.lock().unwrap_or_else(|p| p.into_inner());
            latest.retain(|(n, _)| *n != name);
            latest.push((name, data.clone()));
        }
        let _ = web.live.send((name, data));
    }
}

/// Serves `web` on `listener` (over TLS with `tls`), each connection with its peer's
/// address.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    web: Arc<Web>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let app = router(web.clone());
    let accepting = crate::accept::serve_bounded(
        PeerListener(listener),
        CONNECTIONS,
        "console",
        move |(stream, peer): (tokio::net::TcpStream, SocketAddr)| {
            let (app, tls) = (app.clone(), tls.clone());
            async move {
                match tls {
                    // The handshake within the head's deadline: a client that opens and
                    // says nothing gives its slot back.
                    Some(acceptor) => {
                        if let Ok(Ok(s)) =
                            tokio::time::timeout(HEAD_DEADLINE, acceptor.accept(stream)).await
                        {
                            serve_connection(s, app, peer).await;
                        }
                    }
                    None => serve_connection(stream, app, peer).await,
                }
            }
        },
    );
    web.failed_logins.flushing(accepting).await;
}

/// HTTP/1.1 on one connection, each request with its peer's address.
async fn serve_connection<IO>(io: IO, app: Router, peer: SocketAddr)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        let mut req = req.map(Body::new);
        req.extensions_mut().insert(Peer(peer.ip()));
        let mut app = app.clone();
        async move {
            Ok::<_, Infallible>(
                tower_service::Service::call(&mut app, req)
                    .await
                    .unwrap_or_else(|e| match e {}),
            )
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEAD_DEADLINE)
        .max_buf_size(MAX_HEAD_BYTES)
        .serve_connection(hyper_util::rt::TokioIo::new(io), svc)
        .await;
}

/// A TCP listener whose connections come with their peer's address.
struct PeerListener(tokio::net::TcpListener);

impl crate::accept::Listener for PeerListener {
    type Conn = (tokio::net::TcpStream, SocketAddr);
    async fn accept_one(&self) -> std::io::Result<Self::Conn> {
        self.0.accept().await
    }
}

/// The connection's peer address, which login throttling counts by.
#[derive(Clone, Copy, Debug)]
struct Peer(IpAddr);

/// Every route.
pub fn router(web: Arc<Web>) -> Router {
    let api =
        Router::new()
            .route("/session", get(session_doc))
            .route("/logout", post(logout))
            .route("/status", read(|q| Operation::Status { nodes: q.nodes() }))
            .route("/top", read(|q| Operation::Top { nodes: q.nodes() }))
            .route("/nodes", read(|_| Operation::NodeList))
            .route(
                "/nodes/{name}",
                get(on_node(|node| Operation::NodeShow { node })),
            )
            .route(
                "/nodes/{name}/drain",
                post(on_node(|node| Operation::Drain {
                    node,
                    undrain: false,
                })),
            )
            .route(
                "/nodes/{name}/undrain",
                post(on_node(|node| Operation::Drain {
                    node,
                    undrain: true,
                })),
            )
            .route("/health", read(|q| Operation::Health { nodes: q.nodes() }))
            .route("/replication", read(|_| Operation::Replication))
            .route("/ports", read(|_| Operation::Ports))
            .route(
                "/events",
                read(|q| Operation::Events {
                    since: q.since,
                    follow: false,
                    limit: q.limit.unwrap_or(100),
                }),
            )
            .route(
                "/events/{id}/ack",
                post(
                    |State(w): State<Arc<Web>>,
                     axum::Extension(c): Ext,
                     Path(id): Path<u64>,
                     body: axum::body::Bytes| async move {
                        let note = if body.is_empty() {
                            Ok(AckAsk::default())
                        } else {
                            serde_json::from_slice::<AckAsk>(&body)
                        };
                        match note {
                            Ok(a) => run_op(&w, &c, Operation::EventAck { id, note: a.note }).await,
                            Err(_) => error_response(
                                StatusCode::BAD_REQUEST,
                                "an acknowledgement is {\"note\": \"...\"} (or no body)",
                                2,
                            ),
                        }
                    },
                ),
            )
            .route(
                "/audit",
                read(|q| Operation::Audit {
                    limit: q.limit.unwrap_or(50),
                }),
            )
            .route("/certs", read(|_| Operation::CertStatus))
            .route("/cluster", read(|_| Operation::ClusterShow))
            .route(
                "/history",
                read(|q| Operation::History {
                    nodes: q.nodes(),
                    path: q.path,
                    limit: q.limit.unwrap_or(100),
                }),
            )
            .route(
                "/plan",
                read(|q| Operation::Plan {
                    nodes: q.nodes(),
                    drift: false,
                }),
            )
            .route(
                "/drift",
                read(|q| Operation::Plan {
                    nodes: q.nodes(),
                    drift: true,
                }),
            )
            .route("/apply", post(apply))
            .route(
                "/rollback",
                get(
                    |State(w): State<Arc<Web>>, axum::Extension(c): Ext, Query(q): Query<RollbackAsk>| async move {
                        run_op(&w, &c, q.op(true)).await
                    },
                )
                .post(
                    |State(w): State<Arc<Web>>, axum::Extension(c): Ext, body: axum::body::Bytes| async move {
                        match serde_json::from_slice::<RollbackAsk>(&body) {
                            Ok(q) if q.generation.is_some() => run_op(&w, &c, q.op(false)).await,
                            _ => error_response(
                                StatusCode::BAD_REQUEST,
                                "a rollback is {\"node\", \"path\", \"generation\"} (GET /api/v1/rollback?node=&path= lists the generations)",
                                2,
                            ),
                        }
                    },
                ),
            )
            .route("/stream", get(stream))
            .route(
                "/logs",
                read(|q| {
                    Operation::Logs(crate::telemetry::LogsSpec {
                        nodes: q.nodes(),
                        source: q.source,
                        since: q.since,
                        grep: q.grep,
                        follow: false,
                        limit: q.limit,
                    })
                }),
            )
            .route("/logs/stream", get(logs_stream))
            .route(
                "/metrics",
                read(|q| {
                    Operation::Metrics(crate::telemetry::MetricsSpec {
                        nodes: q.nodes(),
                        metric: q.metric,
                        since: q.since,
                        step_secs: q.step,
                    })
                }),
            )
            .route_layer(axum::middleware::from_fn_with_state(
                web.clone(),
                authenticate,
            ))
            .route("/login", post(login))
            .fallback(|| async { not_found() });
    Router::new()
        .route("/", get(index))
        .route("/login", get(login_page))
        .route("/login/methods", get(login_methods))
        .route("/login/oidc", get(oidc_begin))
        .route("/login/oidc/callback", get(oidc_callback))
        .route("/assets/{file}", get(asset))
        .nest("/api/v1", api)
        .fallback(|| async { not_found() })
        .layer(axum::middleware::from_fn(body_deadline))
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(web)
}

/// An operation's error as the API answers it: its status, its sentence, its exit code.
fn refusal(e: &CtlError) -> Response {
    error_response(status_of(e), &e.to_string(), e.exit_code())
}

/// The session cookie's `Set-Cookie` value: `value` for a new session, empty with
/// `Max-Age=0` to end one; `Secure` under TLS.
fn session_cookie(web: &Web, value: &str) -> String {
    let secure = if web.secure { "; Secure" } else { "" };
    let end = if value.is_empty() { "; Max-Age=0" } else { "" };
    format!("{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict{end}{secure}")
}

/// The refusal of a login the throttle holds back, with its `Retry-After`.
fn throttled(web: &Web, name: &str, addr: IpAddr) -> Option<Response> {
    let wait = web.throttle.wait(name, addr, Instant::now())?;
    let secs = wait.as_secs().max(1);
    let mut res = error_response(
        StatusCode::TOO_MANY_REQUESTS,
        &format!(
            "too many failed logins for this account or from this address; try again in {secs} s"
        ),
        1,
    );
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        res.headers_mut().insert(header::RETRY_AFTER, v);
    }
    Some(res)
}

/// Reads a request's whole body (at most [`MAX_BODY_BYTES`]) within
/// [`HEAD_DEADLINE`] before any handler runs: hyper's head deadline does not cover the
/// body, and a client that announces a body and never sends it would otherwise hold
/// one of the [`CONNECTIONS`] slots for good.
async fn body_deadline(req: Request<Body>, next: axum::middleware::Next) -> Response {
    let (parts, body) = req.into_parts();
    let read = axum::body::to_bytes(body, MAX_BODY_BYTES);
    let bytes = match tokio::time::timeout(HEAD_DEADLINE, read).await {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => {
            return error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("a request body is at most {MAX_BODY_BYTES} bytes"),
                2,
            );
        }
        Err(_) => {
            return error_response(
                StatusCode::REQUEST_TIMEOUT,
                &format!(
                    "the request's body did not arrive within {} s",
                    HEAD_DEADLINE.as_secs()
                ),
                2,
            );
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// The headers every answer carries: no script but our own files, no framing, no
/// sniffing, no referrer, no caching of what a session saw.
async fn security_headers(req: Request<Body>, next: axum::middleware::Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    let set = |h: &mut HeaderMap, k: &'static str, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    set(
        h,
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    );
    set(h, "x-content-type-options", "nosniff");
    set(h, "x-frame-options", "DENY");
    set(h, "referrer-policy", "no-referrer");
    set(h, "cross-origin-opener-policy", "same-origin");
    set(h, "cache-control", "no-store");
    res
}

fn json_response(status: StatusCode, v: &serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string(v).unwrap_or_default(),
    )
        .into_response()
}

fn error_response(status: StatusCode, message: &str, exit_code: i32) -> Response {
    json_response(
        status,
        &serde_json::to_value(crate::contract::ErrorDoc {
            error: message.to_string(),
            exit_code,
        })
        .unwrap_or_default(),
    )
}

fn not_found() -> Response {
    error_response(StatusCode::NOT_FOUND, "no such page or API route", 2)
}

fn unauthorized() -> Response {
    error_response(
        StatusCode::UNAUTHORIZED,
        "log in first: no live session or API token came with this request",
        1,
    )
}

/// The HTTP status of an operation's error.
fn status_of(e: &CtlError) -> StatusCode {
    match e {
        CtlError::Forbidden { .. } => StatusCode::FORBIDDEN,
        CtlError::UnknownNode { .. } | CtlError::UnknownUser { .. } => StatusCode::NOT_FOUND,
        _ if e.exit_code() == crate::exit::USAGE => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The value of the cookie `name` the request carries.
fn cookie_named(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// The session cookie's value.
fn cookie_of(headers: &HeaderMap) -> Option<String> {
    cookie_named(headers, COOKIE)
}

fn bearer_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(|t| t.trim().to_string())
}

/// Who sent `headers`, if anyone live: a session cookie (whose account still exists
/// with the same password) or an API token of an account.
fn caller_of(web: &Web, headers: &HeaderMap) -> Option<Caller> {
    let users = web.ctx.store.users().ok()?;
    if let Some(token) = bearer_of(headers) {
        let digest = crate::password::token_digest(&token);
        return users.iter().find_map(|u| {
            let t = u
                .tokens
                .iter()
                .find(|t| session::same(&t.sha256, &digest))?;
            Some(Caller {
                user: u.name.clone(),
                role: u.role,
                how: How::Token(t.id.clone()),
                csrf: None,
            })
        });
    }
    let cookie = cookie_of(headers)?;
    let live = web.sessions.get(&cookie, Instant::now())?;
    if let Some((role, issuer)) = live.oidc {
        return Some(Caller {
            user: live.user,
            role,
            how: How::Oidc(issuer),
            csrf: Some(live.csrf),
        });
    }
    let Some(u) = users
        .iter()
        .find(|u| u.name == live.user && u.password_set_ms == live.password_set_ms)
    else {
        // Removed, or its password changed: the session is over.
        web.sessions.end(&cookie);
        return None;
    };
    Some(Caller {
        user: live.user,
        role: u.role,
        how: How::Password,
        csrf: Some(live.csrf),
    })
}

/// A request from another site: its `Origin` (browsers send one with every POST) is
/// not this host's.
fn cross_site(headers: &HeaderMap) -> Option<String> {
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok())?;
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    (origin != format!("http://{host}") && origin != format!("https://{host}")).then(|| {
        format!(
            "its Origin is {origin:?} and its Host {host:?}; behind a proxy, keep the Host header the browser sent"
        )
    })
}

/// The API's gate: a live caller, and for a state-changing request with a session
/// cookie, the session's CSRF token in `X-CSRF-Token` and no foreign `Origin`.
async fn authenticate(
    State(web): State<Arc<Web>>,
    mut req: Request<Body>,
    next: axum::middleware::Next,
) -> Response {
    let Some(caller) = caller_of(&web, req.headers()) else {
        return unauthorized();
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        if let Some(seen) = cross_site(req.headers()) {
            return error_response(
                StatusCode::FORBIDDEN,
                &format!("refused: this request comes from another site's page ({seen})"),
                1,
            );
        }
        if let Some(csrf) = &caller.csrf {
            let sent = req
                .headers()
                .get("x-csrf-token")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if !session::same(sent, csrf) {
                return error_response(
                    StatusCode::FORBIDDEN,
                    "refused: the request lacks this session's CSRF token (reload the page)",
                    1,
                );
            }
        }
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

/// Runs `op` for `caller` and answers with its `--json` document.
async fn run_op(web: &Web, caller: &Caller, op: Operation) -> Response {
    let who = caller.audit_name();
    if let Err(e) = op.allowed(&who, caller.role) {
        return refusal(&e);
    }
    match report(web, &who, op.clone()).await {
        Ok(report) => match crate::contract::document(&op, report) {
            Some(doc) => json_response(StatusCode::OK, &doc),
            None => error_response(
                StatusCode::NOT_FOUND,
                &format!(
                    "`{}` has no JSON document to answer with (see docs/schema/README.md for what the API returns)",
                    op.command()
                ),
                2,
            ),
        },
        Err(e) => refusal(&e),
    }
}

/// Runs `op` as `who` through the one operation path, its events let go.
async fn report(web: &Web, who: &str, op: Operation) -> Result<crate::ops::Report, CtlError> {
    let (tx, mut rx) = mpsc::channel(64);
    let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let inv = Invocation {
        user: who.to_string(),
        op,
        connect_timeout_ms: None,
    };
    let r = crate::ops::run(web.ctx.clone(), inv, tx).await;
    let _ = drain.await;
    r
}

type Ext = axum::Extension<Caller>;

async fn index(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    if caller_of(&web, &headers).is_none() {
        return (StatusCode::SEE_OTHER, [(header::LOCATION, "/login")]).into_response();
    }
    html(assets::INDEX)
}

async fn login_page() -> Response {
    html(assets::LOGIN)
}

fn html(body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "app.js" => (assets::APP_JS, "text/javascript; charset=utf-8"),
        "login.js" => (assets::LOGIN_JS, "text/javascript; charset=utf-8"),
        "app.css" => (assets::CSS, "text/css; charset=utf-8"),
        _ => return not_found(),
    };
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

#[derive(Deserialize)]
struct LoginBody {
    name: String,
    password: String,
}

impl std::fmt::Debug for LoginBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginBody")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// `POST /api/v1/login` with `{"name", "password"}` as JSON (a cross-site form cannot
/// send that without the browser asking first, and nothing here says yes).
async fn login(
    State(web): State<Arc<Web>>,
    axum::Extension(Peer(addr)): axum::Extension<Peer>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json {
        return error_response(
            StatusCode::FORBIDDEN,
            "refused: a login is JSON (Content-Type: application/json) sent by the console's own page",
            1,
        );
    }
    if let Some(seen) = cross_site(&headers) {
        return error_response(
            StatusCode::FORBIDDEN,
            &format!("refused: this login comes from another site's page ({seen})"),
            1,
        );
    }
    let Ok(b) = serde_json::from_slice::<LoginBody>(&body) else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "a login is {\"name\": ..., \"password\": ...}",
            2,
        );
    };
    // A name no account can have is refused before it reaches the throttle, whose table
    // would otherwise keep every made-up name (up to a body's 16 KiB each).
    if crate::users::check_name(&b.name).is_err() {
        return error_response(
            StatusCode::UNAUTHORIZED,
            "wrong account name or password",
            1,
        );
    }
    if let Some(res) = throttled(&web, &b.name, addr) {
        return res;
    }
    let users = match web.ctx.store.users() {
        Ok(u) => u,
        Err(e) => {
            // Not told to a caller who has not logged in; serve's log has it.
            tracing::error!("a console login could not read the accounts: {e}");
            return error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the console cannot read its accounts now; try again, or ask an admin to look at serve's log",
                1,
            );
        }
    };
    let user = users.iter().find(|u| u.name == b.name);
    // The hash is worked out for unknown names too, so timing does not tell which exist.
    let decoy = "$argon2id$v=19$m=19456,t=2,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let hash = user.map_or(decoy.to_string(), |u| u.password_hash.clone());
    let password = zeroize::Zeroizing::new(b.password);
    // Two hashes at once at most: each takes 19 MiB for its 30 ms, and 64 connections
    // hashing together would take over a GiB.
    let Ok(_turn) = web.hashing.acquire().await else {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "the console is stopping",
            1,
        );
    };
    // Asked again once it is this login's turn: the logins that queued for the hash
    // behind a failure must not all get their guess.
    if let Some(res) = throttled(&web, &b.name, addr) {
        return res;
    }
    let now = Instant::now();
    let good = tokio::task::spawn_blocking(move || crate::password::verify(&password, &hash))
        .await
        .unwrap_or(false);
    let Some(user) = user.filter(|_| good) else {
        let n = web.throttle.failed(&b.name, addr, now);
        if let Some(earlier) = web.failed_logins.admit() {
            tracing::warn!(
                "failed console login for {:?} from {addr} ({n} for that account lately; {earlier} more failed logins since the last such line)",
                b.name
            );
        }
        return error_response(
            StatusCode::UNAUTHORIZED,
            "wrong account name or password",
            1,
        );
    };
    web.throttle.succeeded(&user.name);
    let (cookie, csrf) = web.sessions.start(&user.name, user.password_set_ms, now);
    let who = How::Password.audit_name(&user.name);
    if let Err(e) = web
        .ctx
        .audit(&who, "console login", &[], &format!("from {addr}"))
    {
        tracing::warn!("recording a console login: {e}");
    }
    let mut res = json_response(
        StatusCode::OK,
        &serde_json::json!({"user": user.name, "role": user.role, "csrf": csrf}),
    );
    if let Ok(v) = HeaderValue::from_str(&session_cookie(&web, &cookie)) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}

/// `GET /login/methods`: how one may log in (for the login page).
async fn login_methods(State(web): State<Arc<Web>>) -> Response {
    json_response(
        StatusCode::OK,
        &serde_json::json!({
            "password": true,
            "oidc": web.oidc.as_ref().map(|o| o.issuer().to_string()),
        }),
    )
}

/// The cookie binding a login through the provider to this browser. `Lax`: the
/// provider sends the browser back with a cross-site navigation.
const OIDC_COOKIE: &str = "cm_oidc";

/// A small page in words: where an OpenID login ended badly, or (with `refresh`) the
/// step back to the console after it went well (a page of ours, so the browser sends
/// the `SameSite=Strict` session cookie on the next request, which a redirect chain
/// that began at the provider would not).
fn page(status: StatusCode, text: &str, refresh: bool) -> Response {
    let meta = if refresh {
        "<meta http-equiv=\"refresh\" content=\"0;url=/\">"
    } else {
        ""
    };
    let escaped = text
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">{meta}<title>clustermgr</title><link rel=\"stylesheet\" href=\"/assets/app.css\"></head><body class=\"login\"><main><h1>clustermgr</h1><p id=\"said\">{escaped}</p><p><a href=\"/login\">Back to the login page</a></p></main></body></html>"
    );
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

/// `GET /login/oidc`: to the provider, with a state, nonce and PKCE challenge.
async fn oidc_begin(State(web): State<Arc<Web>>) -> Response {
    let Some(o) = &web.oidc else {
        return not_found();
    };
    match o.begin().await {
        Ok((url, state)) => {
            let secure = if web.secure { "; Secure" } else { "" };
            let cookie = format!(
                "{OIDC_COOKIE}={state}; Path=/login/oidc; HttpOnly; SameSite=Lax; Max-Age={}{secure}",
                oidc::PENDING_FOR.as_secs()
            );
            let mut res = (StatusCode::SEE_OTHER, [(header::LOCATION, url)]).into_response();
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                res.headers_mut().insert(header::SET_COOKIE, v);
            }
            res
        }
        Err(e) => {
            tracing::warn!("console login through OpenID Connect: {e}");
            page(StatusCode::BAD_GATEWAY, &e.to_string(), false)
        }
    }
}

#[derive(Deserialize)]
struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// `GET /login/oidc/callback`: the code exchanged, the ID token checked, a session.
async fn oidc_callback(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Query(q): Query<Callback>,
) -> Response {
    let Some(o) = &web.oidc else {
        return not_found();
    };
    if let Some(e) = &q.error {
        let why = q.error_description.as_deref().unwrap_or("");
        return page(
            StatusCode::FORBIDDEN,
            &format!("the OpenID provider refused the login: {e} {why}"),
            false,
        );
    }
    let (Some(code), Some(state)) = (&q.code, &q.state) else {
        return page(StatusCode::BAD_REQUEST, "no code or state came back", false);
    };
    let cookie = cookie_named(&headers, OIDC_COOKIE);
    let now = web.ctx.clock.unix();
    match o.finish(code, state, cookie.as_deref(), now).await {
        Ok(person) => {
            let (session, _) =
                web.sessions
                    .start_oidc(&person.name, person.role, o.issuer(), Instant::now());
            let who = How::Oidc(o.issuer().to_string()).audit_name(&person.name);
            if let Err(e) =
                web.ctx
                    .audit(&who, "console login", &[], &format!("as {}", person.role))
            {
                tracing::warn!("recording a console login: {e}");
            }
            let mut res = page(StatusCode::OK, "Logged in; on to the console.", true);
            for c in [
                session_cookie(&web, &session),
                format!("{OIDC_COOKIE}=; Path=/login/oidc; HttpOnly; SameSite=Lax; Max-Age=0"),
            ] {
                if let Ok(v) = HeaderValue::from_str(&c) {
                    res.headers_mut().append(header::SET_COOKIE, v);
                }
            }
            res
        }
        Err(e) => {
            if let Some(earlier) = web.failed_logins.admit() {
                tracing::warn!(
                    "failed console login through OpenID Connect: {e} ({earlier} more failed logins since the last such line)"
                );
            }
            page(StatusCode::FORBIDDEN, &e.to_string(), false)
        }
    }
}

/// `POST /api/v1/logout`: the session ends on the server, not only in the browser.
async fn logout(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    if let Some(c) = cookie_of(&headers) {
        web.sessions.end(&c);
    }
    let mut res = json_response(
        StatusCode::OK,
        &serde_json::json!({"message": "logged out"}),
    );
    if let Ok(v) = HeaderValue::from_str(&session_cookie(&web, "")) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}

/// `GET /api/v1/session`: who is logged in, their role, and the CSRF token the page
/// sends back with every change.
async fn session_doc(axum::Extension(c): Ext) -> Response {
    json_response(
        StatusCode::OK,
        &serde_json::json!({"user": c.user, "role": c.role, "how": c.how.describe(), "csrf": c.csrf}),
    )
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Sel {
    nodes: Option<String>,
    limit: Option<usize>,
    since: Option<String>,
    path: Option<String>,
    source: Option<String>,
    grep: Option<String>,
    metric: Option<String>,
    step: Option<u64>,
}

impl Sel {
    fn nodes(&self) -> String {
        self.nodes.clone().unwrap_or_else(|| "all".into())
    }
}

/// The handler of a route about one node (`/nodes/NODE...`): the operation `op` makes
/// of the node's name.
fn on_node(
    op: fn(String) -> Operation,
) -> impl Fn(State<Arc<Web>>, Ext, Path<String>) -> Answer + Clone + Send + Sync + 'static {
    move |State(w), axum::Extension(c), Path(node)| {
        Box::pin(async move { run_op(&w, &c, op(node)).await })
    }
}

/// A handler's answer, boxed so one function can make handlers of several operations.
type Answer = std::pin::Pin<Box<dyn std::future::Future<Output = Response> + Send>>;

/// A route answering `GET` with the operation its query asks for.
fn read(op: fn(Sel) -> Operation) -> axum::routing::MethodRouter<Arc<Web>> {
    get(
        move |State(w): State<Arc<Web>>, axum::Extension(c): Ext, Query(q): Query<Sel>| async move {
            run_op(&w, &c, op(q)).await
        },
    )
}

/// `POST /api/v1/events/{id}/ack`'s body.
#[derive(Deserialize, Default)]
struct AckAsk {
    #[serde(default)]
    note: String,
}

/// A rollback, or the list of what it could put back.
#[derive(Deserialize)]
struct RollbackAsk {
    node: String,
    path: String,
    #[serde(default)]
    generation: Option<u32>,
    #[serde(default)]
    in_container: bool,
}

impl RollbackAsk {
    fn op(self, list: bool) -> Operation {
        Operation::Rollback {
            node: self.node,
            path: self.path,
            generation: self.generation,
            list,
            in_container: self.in_container,
        }
    }
}

#[derive(Deserialize)]
struct ApplyBody {
    /// The digest of the plan the person saw: the apply is exactly that or nothing.
    plan: String,
    #[serde(default)]
    nodes: Option<String>,
    #[serde(default)]
    rolling: bool,
}

/// `POST /api/v1/apply` with `{"plan": DIGEST}`: only the plan that was shown.
/// With `Accept: text/event-stream`, its progress as server-sent events: `working`
/// (the nodes, in order), `node` as each is done (`node-results`' entries), then `done`
/// with the `apply` document, or `error` with the error document.
async fn apply(
    State(w): State<Arc<Web>>,
    axum::Extension(c): Ext,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Ok(b) = serde_json::from_slice::<ApplyBody>(&body) else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "an apply is {\"plan\": DIGEST} with the digest of the plan shown (GET /api/v1/plan)",
            2,
        );
    };
    let op = Operation::Apply {
        nodes: b.nodes.unwrap_or_else(|| "all".into()),
        rolling: b.rolling,
        plan: Some(b.plan),
    };
    let streamed = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    if !streamed {
        return run_op(&w, &c, op).await;
    }
    let who = c.audit_name();
    if let Err(e) = op.allowed(&who, c.role) {
        return refusal(&e);
    }
    let (tx, rx) = mpsc::channel::<SseEvent>(64);
    let ctx = w.ctx.clone();
    tokio::spawn(async move {
        let (etx, mut erx) = mpsc::channel(64);
        let inv = Invocation {
            user: who,
            op: op.clone(),
            connect_timeout_ms: None,
        };
        // The apply runs to its end even if the page goes: it is not cancelled halfway.
        let run = tokio::spawn(crate::ops::run(ctx, inv, etx));
        while let Some(e) = erx.recv().await {
            let ev = match e {
                crate::ops::Event::Working {
                    what,
                    nodes,
                    sequential,
                } => SseEvent::default().event("working").data(
                    serde_json::json!({"what": what, "nodes": nodes, "sequential": sequential})
                        .to_string(),
                ),
                crate::ops::Event::NodeDone(o) => SseEvent::default().event("node").data(
                    serde_json::to_string(&crate::contract::NodeResult::from(&o))
                        .unwrap_or_default(),
                ),
                _ => continue,
            };
            let _ = tx.send(ev).await;
        }
        let last = match run.await {
            Ok(Ok(report)) => SseEvent::default().event("done").data(
                crate::contract::document(&op, report)
                    .map(|d| d.to_string())
                    .unwrap_or_default(),
            ),
            Ok(Err(e)) => SseEvent::default().event("error").data(
                serde_json::json!({"error": e.to_string(), "exit_code": e.exit_code()}).to_string(),
            ),
            Err(e) => SseEvent::default()
                .event("error")
                .data(serde_json::json!({"error": e.to_string(), "exit_code": 1}).to_string()),
        };
        let _ = tx.send(last).await;
    });
    sse(w, headers, rx)
}

/// `GET /api/v1/stream`: server-sent events for the live pages: `top` (the nodes'
/// latest ticks) every 2 s, `status` every 10 s, and each health change as `event`
/// (from `events -f`'s operation), as long as the session lives.
async fn stream(
    State(w): State<Arc<Web>>,
    axum::Extension(c): Ext,
    headers: HeaderMap,
) -> Response {
    let who = c.audit_name();
    let follow = Operation::Events {
        since: None,
        follow: true,
        limit: 0,
    };
    for op in [
        Operation::Top {
            nodes: "all".into(),
        },
        Operation::Status {
            nodes: "all".into(),
        },
        follow.clone(),
    ] {
        if let Err(e) = op.allowed(&who, c.role) {
            return refusal(&e);
        }
    }
    let (tx, rx) = mpsc::channel::<SseEvent>(16);
    tokio::spawn(forward(w.clone(), who, follow, tx.clone()));
    let mut live = w.live.subscribe();
    let latest = w.latest.lock().unwrap_or_else(|p| p.into_inner()).clone();
    tokio::spawn(async move {
        for (name, data) in latest {
            if tx
                .send(SseEvent::default().event(name).data(data.as_str()))
                .await
                .is_err()
            {
                return;
            }
        }
        loop {
            let (name, data) = tokio::select! {
                d = live.recv() => match d {
                    Ok(d) => d,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return,
                },
                _ = tx.closed() => return,
            };
            if tx
                .send(SseEvent::default().event(name).data(data.as_str()))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    sse(w, headers, rx)
}

use axum::response::sse::Event as SseEvent;

/// How often a stream looks whether its session still lives.
const SESSION_CHECK: Duration = Duration::from_secs(1);

/// The server-sent event response of `rx`, which ends once the session of `headers`
/// does (logout, expiry, a removed account or a new password), whatever the tasks
/// feeding it are doing.
fn sse(w: Arc<Web>, headers: HeaderMap, rx: mpsc::Receiver<SseEvent>) -> Response {
    use axum::response::sse::{KeepAlive, Sse};
    let (ended_tx, ended) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(SESSION_CHECK);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = ended_tx.closed() => return,
            }
            if caller_of(&w, &headers).is_none() {
                let _ = ended_tx.send(true);
                return;
            }
        }
    });
    let events = futures_util::stream::unfold((rx, ended), |(mut rx, mut ended)| async move {
        let next = tokio::select! {
            e = rx.recv() => e,
            _ = ended.wait_for(|e| *e) => None,
        };
        next.map(|e| (Ok::<_, Infallible>(e), (rx, ended)))
    });
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// Runs a following operation (`logs -f`, `events -f`) as `who`, sending its lines to
/// `tx` as `log` and `event` server-sent events, until the page goes away (which drops
/// the operation).
async fn forward(w: Arc<Web>, who: String, op: Operation, tx: mpsc::Sender<SseEvent>) {
    let (etx, mut erx) = mpsc::channel(64);
    let inv = Invocation {
        user: who,
        op,
        connect_timeout_ms: None,
    };
    let run = crate::ops::run(w.ctx.clone(), inv, etx);
    tokio::pin!(run);
    loop {
        tokio::select! {
            _ = &mut run => return,
            _ = tx.closed() => return,
            e = erx.recv() => {
                let (name, data) = match e {
                    Some(crate::ops::Event::Log(l)) => (
                        "log",
                        crate::contract::line(&crate::contract::LogLine::Log(l.into())),
                    ),
                    Some(crate::ops::Event::Health(h)) => (
                        "event",
                        crate::contract::line(&crate::contract::EventLine::Event(h.into())),
                    ),
                    Some(_) => continue,
                    None => return,
                };
                if tx.send(SseEvent::default().event(name).data(data)).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// `GET /api/v1/logs/stream?nodes=&source=&grep=`: `logs -f` as server-sent `log`
/// events (operators: following logs is theirs).
async fn logs_stream(
    State(w): State<Arc<Web>>,
    axum::Extension(c): Ext,
    headers: HeaderMap,
    Query(q): Query<Sel>,
) -> Response {
    let who = c.audit_name();
    let op = Operation::Logs(crate::telemetry::LogsSpec {
        nodes: q.nodes(),
        source: q.source,
        since: None,
        grep: q.grep,
        follow: true,
        // The newest lines first, as a terminal's tail shows them, then live.
        limit: Some(100),
    });
    if let Err(e) = op.allowed(&who, c.role) {
        return refusal(&e);
    }
    let (tx, rx) = mpsc::channel::<SseEvent>(64);
    tokio::spawn(forward(w.clone(), who, op, tx));
    sse(w, headers, rx)
}
