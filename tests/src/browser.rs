//! Headless Chromium driven through WebDriver (Debian's `chromium` and
//! `chromium-driver`), for the console's tests: the W3C WebDriver commands the tests
//! need, spoken as JSON over HTTP with [`crate::web`]'s client (no WebDriver crate:
//! a dozen commands do not earn one). Each browser has a profile of its own and is
//! stopped when dropped; screenshots go to `target/screenshots/`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::web::request;

/// The screenshots the README shows.
const README_SHOWS: &[&str] = &["overview", "node", "replication"];

/// The key a WebDriver element reference is under.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// One browser session.
pub struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
    _profile: tempfile::TempDir,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser")
            .field("session", &self.session)
            .finish_non_exhaustive()
    }
}

fn call(addr: SocketAddr, method: &str, path: &str, body: Option<Value>) -> Value {
    try_call(addr, method, path, body)
        .unwrap_or_else(|(status, v)| panic!("WebDriver {method} {path}: {status} {v}"))
}

/// A WebDriver command; its error (status and answer) when it failed.
fn try_call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Result<Value, (u16, Value)> {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let a = request(
        addr,
        method,
        path,
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    );
    let v = a.json();
    if a.status == 200 {
        Ok(v["value"].clone())
    } else {
        Err((a.status, v))
    }
}

impl Browser {
    /// Starts chromedriver and a headless Chromium 1280 px wide.
    pub fn start() -> Browser {
        Browser::start_logging(false)
    }

    /// [`Browser::start`], keeping Chromium's network log ([`Browser::network_urls`]).
    pub fn start_with_network_log() -> Browser {
        Browser::start_logging(true)
    }

    fn start_logging(network: bool) -> Browser {
        let port = crate::slapd::free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver; tests/run installs it)");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = std::net::TcpStream::connect(addr).is_ok()
                && request(addr, "GET", "/status", &[], b"").json()["value"]["ready"] == true;
            if ready {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile = tempfile::tempdir().expect("a profile directory");
        let logging = if network {
            json!({"performance": "ALL"})
        } else {
            json!({})
        };
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:loggingPrefs": logging,
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu",
                    "--disable-dev-shm-usage", "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        }}});
        let v = call(addr, "POST", "/session", Some(caps));
        let session = v["sessionId"].as_str().expect("a session id").to_string();
        Browser {
            driver,
            addr,
            session,
            _profile: profile,
        }
    }

    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        call(
            self.addr,
            method,
            &format!("/session/{}{path}", self.session),
            body,
        )
    }

    /// Opens `url`.
    pub fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url })));
    }

    /// The page's URL now.
    pub fn url(&self) -> String {
        self.cmd("GET", "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The elements matching a CSS selector now.
    pub fn find_all(&self, css: &str) -> Vec<String> {
        self.cmd(
            "POST",
            "/elements",
            Some(json!({"using": "css selector", "value": css})),
        )
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e[ELEMENT].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
    }

    /// Waits for an element matching `css`, within `patience`.
    pub fn wait_for(&self, css: &str, patience: Duration) -> String {
        let deadline = Instant::now() + patience;
        loop {
            if let Some(e) = self.find_all(css).into_iter().next() {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "no {css} within {patience:?} on {}: {}",
                self.url(),
                self.text_of("body")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until `cond` holds, within `patience`.
    pub fn wait_until(
        &self,
        what: &str,
        patience: Duration,
        mut cond: impl FnMut(&Browser) -> bool,
    ) {
        let deadline = Instant::now() + patience;
        while !cond(self) {
            assert!(
                Instant::now() < deadline,
                "{what}: not within {patience:?} on {}: {}",
                self.url(),
                self.text_of("body")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Types `text` into an element.
    pub fn type_into(&self, element: &str, text: &str) {
        self.cmd(
            "POST",
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        );
    }

    /// Clicks an element.
    pub fn click(&self, element: &str) {
        self.cmd(
            "POST",
            &format!("/element/{element}/click"),
            Some(json!({})),
        );
    }

    /// Clicks `element`; false if the page had replaced it since it was found (a
    /// stale reference: nothing was clicked).
    pub fn try_click(&self, element: &str) -> bool {
        let path = format!("/session/{}/element/{element}/click", self.session);
        match try_call(self.addr, "POST", &path, Some(json!({}))) {
            Ok(_) => true,
            Err((_, v)) if v["value"]["error"] == "stale element reference" => false,
            Err((status, v)) => panic!("WebDriver POST {path}: {status} {v}"),
        }
    }

    /// Clicks the first element matching `css`, waiting for one within `patience` and
    /// finding it again when the page replaced it between finding and clicking (a page
    /// still loading, or one that redraws).
    pub fn click_on(&self, css: &str, patience: Duration) {
        let deadline = Instant::now() + patience;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let e = self.wait_for(css, left.max(Duration::from_millis(1)));
            if self.try_click(&e) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{css} was replaced at every click for {patience:?} on {}",
                self.url()
            );
        }
    }

    /// The rendered text of the first element matching `css` (empty if none). A page
    /// that redraws the element between finding and reading it (a live page does, every
    /// tick) is read again.
    pub fn text_of(&self, css: &str) -> String {
        for _ in 0..5 {
            let Some(e) = self.find_all(css).into_iter().next() else {
                return String::new();
            };
            let path = format!("/session/{}/element/{e}/text", self.session);
            match try_call(self.addr, "GET", &path, None) {
                Ok(v) => return v.as_str().unwrap_or_default().to_string(),
                Err((_, v)) if v["value"]["error"] == "stale element reference" => continue,
                Err((status, v)) => panic!("WebDriver GET {path}: {status} {v}"),
            }
        }
        String::new()
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns its value.
    pub fn execute(&self, script: &str, args: Value) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
    }

    /// Runs `script` asynchronously: it ends by calling its last argument with the
    /// value to return (how a test awaits the page's own `fetch`).
    pub fn execute_async(&self, script: &str, args: Value) -> Value {
        self.cmd(
            "POST",
            "/execute/async",
            Some(json!({"script": script, "args": args})),
        )
    }

    /// The URLs the browser requested since the last call (from its network log).
    pub fn network_urls(&self) -> Vec<String> {
        let entries = self.cmd("POST", "/se/log", Some(json!({"type": "performance"})));
        entries
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| serde_json::from_str::<Value>(e["message"].as_str()?).ok())
                    .filter(|m| m["message"]["method"] == "Network.requestWillBeSent")
                    .filter_map(|m| {
                        m["message"]["params"]["request"]["url"]
                            .as_str()
                            .map(str::to_string)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Resizes the window.
    pub fn resize(&self, width: u32, height: u32) {
        self.cmd(
            "POST",
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        );
    }

    /// Saves a screenshot of the page as `NAME.png` under `target/screenshots/` (and,
    /// with `UPDATE_SCREENSHOTS=1`, the ones the README shows under
    /// `docs/screenshots/`).
    pub fn screenshot(&self, name: &str) -> PathBuf {
        use base64::Engine;
        let b64 = self.cmd("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap_or_default())
            .expect("a PNG");
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let dir = crate::bin_dir()
            .parent()
            .map(|t| t.join("screenshots"))
            .unwrap_or_else(|| root.join("target/screenshots"));
        std::fs::create_dir_all(&dir).expect("the screenshot directory");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, &png).expect("the screenshot");
        if std::env::var_os("UPDATE_SCREENSHOTS").is_some() && README_SHOWS.contains(&name) {
            let docs = root.join("docs/screenshots");
            std::fs::create_dir_all(&docs).expect("docs/screenshots");
            std::fs::write(docs.join(format!("{name}.png")), &png).expect("the screenshot");
        }
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = request(
            self.addr,
            "DELETE",
            &format!("/session/{}", self.session),
            &[],
            b"",
        );
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
