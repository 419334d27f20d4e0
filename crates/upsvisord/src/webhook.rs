//! Optional push: after every poll cycle, POST the VM table and the events
//! since the last push as JSON (the patent's "send the VM management data
//! to the management terminal").
//!
//! Runs on its own thread with a blocking client (ureq), so a slow or dead
//! receiver never holds up the engine; a failed POST is logged and the
//! events are carried into the next one (up to [`MAX_PENDING`]).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use upsvisor_core::Secret;

use crate::runtime::Shared;

/// Events kept for a receiver that is down.
pub const MAX_PENDING: usize = 1000;

/// Where to push.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Webhook {
    /// `http://...`.
    pub url: String,
    /// Bearer token for the receiver.
    pub token: Option<Secret>,
}

impl Webhook {
    /// A webhook to `url`.
    pub fn new(url: impl Into<String>, token: Option<Secret>) -> Self {
        Webhook {
            url: url.into(),
            token,
        }
    }
}

/// Starts the push thread; it ends when the event stream closes.
pub fn start(shared: Arc<Shared>, hook: Webhook) -> std::io::Result<std::thread::JoinHandle<()>> {
    let mut rx = shared.subscribe();
    std::thread::Builder::new()
        .name("upsvisor-webhook".into())
        .spawn(move || {
            let agent = ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(5))
                .build();
            let mut pending: Vec<Value> = Vec::new();
            loop {
                let v = match rx.blocking_recv() {
                    Ok(v) => v,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                let is_table = v.get("type").and_then(Value::as_str) == Some("table");
                if !is_table {
                    if pending.len() >= MAX_PENDING {
                        pending.remove(0);
                    }
                    pending.push((*v).clone());
                    continue;
                }
                let snap = shared.snapshot();
                let body = json!({
                    "cycle": snap.table.cycle,
                    "table": &*snap.table,
                    "power": snap.verdicts,
                    "episode": snap.episode,
                    "events": pending,
                });
                let mut req = agent
                    .post(&hook.url)
                    .set("Content-Type", "application/json");
                if let Some(t) = &hook.token {
                    req = req.set("Authorization", &format!("Bearer {}", t.expose()));
                }
                match req.send_string(&body.to_string()) {
                    Ok(_) => pending.clear(),
                    Err(e) => {
                        // The URL may carry a path but never a secret; the token is a header.
                        tracing::warn!(url = %hook.url, error = %e, "webhook POST failed; events kept for the next one");
                    }
                }
            }
        })
}
