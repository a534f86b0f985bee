//! What operators and the Auth service do to a node's sessions: revoke one, drain the
//! node, close everything.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Hub;
use crate::bus::BusMessage;
use crate::signaling::protocol::{Outgoing, close};
use crate::store::{Epoch, StoreError};

impl Hub {
    /// Revokes a session: new upgrades are refused for `ttl` (at least the session's own
    /// remaining life), and its live connection, on whichever node, is closed with 1008.
    /// Returns whether a live connection was found.
    pub async fn revoke(&self, session_id: &str, ttl: Duration) -> Result<bool, StoreError> {
        let owner = self.store.session_owner(session_id).await?;
        let ttl = owner.as_ref().map_or(ttl, |o| o.ttl.max(ttl));
        self.store.revoke(session_id, ttl).await?;
        let Some(owner) = owner else {
            return Ok(false);
        };
        if *owner.node == *self.node {
            self.close_revoked(&owner.peer_id, owner.epoch);
        } else {
            let message = BusMessage::Revoke {
                peer: owner.peer_id,
                epoch: owner.epoch,
            };
            self.publish(&owner.node, &message);
        }
        Ok(true)
    }

    /// Closes a revoked session's connection with 1008, if `epoch` still holds it here.
    pub(super) fn close_revoked(&self, peer: &str, epoch: Epoch) {
        if let Some(slot) = self.read().owned(peer, epoch) {
            slot.outbox.close(Some(close::POLICY), close::REVOKED_TEXT);
        }
    }

    /// Checks `session_id`'s revocation again until the store answers (at most until the
    /// token expires at `expires`, unix seconds): it was admitted while the store could not
    /// say. A revoked session's connection here is closed with 1008.
    pub fn recheck_revocation(self: &Arc<Self>, session_id: &str, peer: &str, expires: u64) {
        let (hub, session_id, peer) = (self.clone(), session_id.to_owned(), peer.to_owned());
        tokio::spawn(async move {
            let mut pause = Duration::from_millis(250);
            while crate::clock::unix_now() < expires {
                tokio::time::sleep(pause).await;
                match hub.store.is_revoked(&session_id).await {
                    Ok(false) => return,
                    Ok(true) => {
                        let table = hub.read();
                        if let Some(slot) = table
                            .peers
                            .get(peer.as_str())
                            .filter(|s| s.session_id(&peer) == session_id)
                        {
                            tracing::info!(
                                "a session admitted during a store outage was revoked; closing it"
                            );
                            slot.outbox.close(Some(close::POLICY), close::REVOKED_TEXT);
                        }
                        return;
                    }
                    Err(_) => pause = (pause * 2).min(Duration::from_secs(2)),
                }
            }
        });
    }

    /// Closes this node's inbox on the way out: whatever other nodes sent it and it will
    /// not read is reported to their senders at once, not after `FAILOVER_HOLD`.
    pub async fn close_inbox(&self) -> Result<(), StoreError> {
        self.bus.close(&self.node).await
    }

    /// Tells every client to go (`goaway` with a reconnect hint spread over `spread`) and
    /// closes each connection with 1012 when its hint comes due. Sessions stay resumable:
    /// a client reconnecting elsewhere takes its session and queue with it.
    pub fn drain(self: &Arc<Self>, spread: Duration) {
        self.draining.store(true, Ordering::Relaxed);
        let table = self.read();
        for (peer, slot) in table.peers.iter().filter(|(_, s)| s.parked.is_none()) {
            let mut bytes = [0u8; 8];
            let _ = getrandom::fill(&mut bytes);
            let jitter_ms = u64::from_le_bytes(bytes) % (spread.as_millis() as u64 + 1);
            let frame = Outgoing::Goaway {
                reason: "shutdown",
                reconnect_in_ms: jitter_ms,
            }
            .to_frame();
            slot.outbox.deliver(frame);
            let (hub, peer, epoch) = (self.clone(), peer.clone(), slot.epoch);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(jitter_ms)).await;
                // Not a session that parked meanwhile: closing it would end it.
                if let Some(slot) = hub.read().owned(&peer, epoch)
                    && slot.parked.is_none()
                {
                    slot.outbox.close(Some(close::RESTART), "server restarting");
                }
            });
        }
    }

    /// Asks every connection to close with `code` (shutdown); parked sessions end, and no
    /// more are parked.
    pub fn close_all(&self, code: u16, text: &'static str) {
        self.shutting.store(true, Ordering::Relaxed);
        for slot in self.read().peers.values() {
            slot.outbox.close(Some(code), text);
        }
    }
}
