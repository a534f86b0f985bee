//! Reloads keys and API keys without a restart: on SIGHUP, and when a key file changes
//! (checked every KEYS_RELOAD_INTERVAL).
//!
//! A reload that fails (a malformed or half-written file) keeps the keys in service and
//! says why; no connection is touched either way, since a connection's token was checked
//! once, at its upgrade.

use std::sync::Arc;
use std::time::Duration;

use super::active::ActiveKeys;
use super::key_files::KeySources;
use crate::telemetry::Metrics;

/// Watches the key sources and swaps what they hold into service.
pub struct KeyReloader {
    sources: KeySources,
    keys: Arc<ActiveKeys>,
    /// The files' contents last tried, loaded or not: a broken file is reported once.
    seen: u64,
    /// Zero: only SIGHUP reloads.
    interval: Duration,
    metrics: Arc<Metrics>,
}

impl KeyReloader {
    /// A reloader of `sources` into `keys`, whose files were just read.
    pub fn new(
        sources: KeySources,
        keys: Arc<ActiveKeys>,
        interval: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        let seen = sources.fingerprint();
        Self {
            sources,
            keys,
            seen,
            interval,
            metrics,
        }
    }

    /// Reloads on SIGHUP and on changed files, for as long as the node runs.
    pub async fn run(mut self) {
        let mut hangup = hangups();
        let mut tick = tokio::time::interval(if self.interval.is_zero() {
            Duration::from_secs(3600)
        } else {
            self.interval
        });
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            let forced = tokio::select! {
                _ = tick.tick() => false,
                Some(()) = hangup.recv() => true,
            };
            if !forced && (self.interval.is_zero() || self.sources.files().is_empty()) {
                continue;
            }
            let sources = self.sources.clone();
            // File reads and key parsing block: off the runtime's worker threads.
            let Ok((fingerprint, loaded)) =
                tokio::task::spawn_blocking(move || (sources.fingerprint(), sources.load())).await
            else {
                continue;
            };
            if !forced && fingerprint == self.seen {
                continue;
            }
            self.seen = fingerprint;
            self.apply(
                loaded,
                if forced {
                    "SIGHUP"
                } else {
                    "a key file changed"
                },
            );
        }
    }

    fn apply(
        &self,
        loaded: Result<super::key_files::LoadedKeys, super::keyring::KeyError>,
        why: &str,
    ) {
        let loaded = loaded.and_then(|l| {
            // A node that signed keeps signing: the issuer of its routes and refreshes
            // relies on it.
            if self.keys.keyring().signer().is_some() && l.keyring.signer().is_none() {
                Err(super::keyring::KeyError(
                    "no key left that signs; keep a signing key in the files".into(),
                ))
            } else {
                Ok(l)
            }
        });
        match loaded {
            Ok(loaded) => {
                let signing = loaded
                    .keyring
                    .signer()
                    .and_then(|s| s.kid().map(str::to_string));
                let kids: Vec<String> = loaded
                    .keyring
                    .kids()
                    .into_iter()
                    .map(String::from)
                    .collect();
                // Counted after the swap, so whoever sees the count sees the new keys.
                self.keys.replace(loaded.keyring, loaded.api_keys);
                self.metrics.keys_reloaded("success");
                tracing::info!(
                    trigger = why,
                    signing_kid = ?signing,
                    kids = ?kids,
                    "keys reloaded: new tokens use them, open connections keep running"
                );
            }
            Err(e) => {
                self.metrics.keys_reloaded("failure");
                tracing::warn!(
                    trigger = why,
                    "keys not reloaded, the ones in service stay: {e}"
                );
            }
        }
    }
}

/// SIGHUPs as a stream; never yields where there are no signals.
fn hangups() -> tokio::sync::mpsc::Receiver<()> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hup.recv().await.is_some() {
            if tx.send(()).await.is_err() {
                return;
            }
        }
    });
    #[cfg(not(unix))]
    drop(tx);
    rx
}
