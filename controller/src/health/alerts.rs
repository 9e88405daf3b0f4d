//! Alerts: `serve` hands each health event to the configured command and webhook,
//! once each, in order, retrying a failed delivery a few times. Each sink keeps its
//! own cursor in the telemetry store, so a restart neither repeats nor skips one.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::config::AlertsConfig;
use crate::ctx::Ctx;

use super::HealthEvent;

/// Tries per event and the first pause between them (doubling).
const TRIES: u32 = 5;
const FIRST_PAUSE: Duration = Duration::from_millis(500);
/// How long a command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the sinks look for events even without being told.
const POLL: Duration = Duration::from_secs(5);

/// Delivers until `serve` stops. Each sink runs on its own, so a webhook that does
/// not answer never holds back the command.
pub async fn deliver(ctx: Arc<Ctx>) {
    tokio::join!(sink(ctx.clone(), "command"), sink(ctx, "webhook"));
}

/// One sink's loop: drain, then wait to be told of an event (or poll).
async fn sink(ctx: Arc<Ctx>, name: &'static str) {
    let mut told = ctx.health_events.subscribe();
    loop {
        let cfg = crate::config::ControllerConfig::load(&ctx.home.config())
            .map(|c| c.alerts)
            .unwrap_or_default();
        let configured = match name {
            "command" => !cfg.command.is_empty(),
            _ => cfg.webhook.is_some(),
        };
        if configured {
            drain(&ctx, name, &cfg).await;
        }
        tokio::select! {
            _ = told.recv() => {}
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

/// Sends `sink` every event after its cursor.
async fn drain(ctx: &Ctx, sink: &str, cfg: &AlertsConfig) {
    let Ok(store) = ctx.telemetry() else { return };
    let cursor = match store.alert_cursor(sink) {
        Ok(Some(c)) => c,
        // Newly configured: from now on, not the history.
        Ok(None) => match store
            .last_health_event()
            .and_then(|last| store.set_alert_cursor(sink, last).map(|()| last))
        {
            Ok(last) => last,
            Err(e) => return tracing::warn!("alerts: {e}"),
        },
        Err(e) => return tracing::warn!("alerts: {e}"),
    };
    let events = match store.health_events_after(cursor, 100) {
        Ok(e) => e,
        Err(e) => return tracing::warn!("alerts: {e}"),
    };
    for e in events {
        let body = payload(&ctx.meta.name, &e);
        let mut pause = FIRST_PAUSE;
        let mut tries = 0;
        loop {
            tries += 1;
            let result = match sink {
                "command" => run_command(&cfg.command, &body).await,
                _ => post_webhook(cfg.webhook.as_deref().unwrap_or_default(), &body).await,
            };
            match result {
                Ok(()) => break,
                Err(why) if tries < TRIES => {
                    tracing::info!(
                        "alert {} by {sink}: {why}; trying again in {:.1} s",
                        e.id,
                        pause.as_secs_f32()
                    );
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                Err(why) => {
                    tracing::error!(
                        "alert {} ({} {} -> {}) by {sink} failed {TRIES} times, the last: {why}; going on with the next (`clustermgr events` has it)",
                        e.id,
                        e.node,
                        e.check,
                        e.to.as_str()
                    );
                    break;
                }
            }
        }
        if let Err(err) = store.set_alert_cursor(sink, e.id) {
            return tracing::warn!("alerts: {err}");
        }
    }
}

/// The event as the sinks get it: its fields and the cluster's name, one JSON object.
pub fn payload(cluster: &str, e: &HealthEvent) -> Vec<u8> {
    let mut v = serde_json::to_value(e).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("cluster".into(), cluster.into());
    }
    let mut out = serde_json::to_vec(&v).unwrap_or_default();
    out.push(b'\n');
    out
}

async fn run_command(argv: &[String], body: &[u8]) -> Result<(), String> {
    let (program, args) = argv.split_first().ok_or("no command")?;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(body).await;
    }
    match tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output()).await {
        Err(_) => Err(format!(
            "{program} did not finish within {} s",
            COMMAND_TIMEOUT.as_secs()
        )),
        Ok(Err(e)) => Err(format!("{program}: {e}")),
        Ok(Ok(out)) if out.status.success() => Ok(()),
        Ok(Ok(out)) => Err(format!(
            "{program} exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

async fn post_webhook(url: &str, body: &[u8]) -> Result<(), String> {
    let target =
        crate::http::Target::parse(url, "[alerts] webhook", 80, "/").map_err(|e| e.to_string())?;
    match crate::http::post(&target, "application/json", None, body).await? {
        (code, _) if (200..300).contains(&code) => Ok(()),
        (code, reply) => Err(format!("{url} answered {code}: {}", reply.trim())),
    }
}
