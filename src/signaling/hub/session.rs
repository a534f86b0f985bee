//! A connection's session on this node: attach (claim or resume), park while the
//! connection is gone, expire, detach, and the TTL refresh of a live one.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::oneshot;

use super::table::PeerSlot;
use super::{Hub, ROOM_TTL, Registration, Resumed};
use crate::bus::BusMessage;
use crate::net::websocket::Utf8Bytes;
use crate::signaling::outbox::{self, Inbox};
use crate::signaling::protocol::{LeaveReason, Metadata, close};
use crate::store::{Claim, Epoch, Previous, SessionRecord, StoreError};

/// How long a reconnect waits for the node that held its session to hand it over; past
/// that, the old connection is taken to be gone and the session starts afresh.
const HANDOVER_WAIT: Duration = Duration::from_secs(2);

/// A claim whose previous holder was another node: what it held, and its answer to come.
type PendingHandover = (Previous, oneshot::Receiver<bool>);

impl Hub {
    /// Registers a connection for a session. A session parked on this node or handed over
    /// by another one is resumed; otherwise the connection it replaces (on this node or
    /// another) is closed with 4004 and leaves its room with reason `replaced`. `peer` is
    /// `<user>-<session_id>`: the table reads both back from it.
    pub async fn attach(
        &self,
        session_id: &str,
        user: &str,
        peer: &Arc<str>,
        metadata: Option<Metadata>,
        ttl: Duration,
    ) -> Result<Registration, StoreError> {
        let peer_id: &str = peer;
        debug_assert!(
            peer_id
                .strip_suffix(session_id)
                .and_then(|p| p.strip_suffix('-'))
                == Some(user),
            "a peer id is <user>-<session_id>"
        );
        let (registration, handover) = {
            let _recovery = self.recovery.read().await;
            let _peer = self.enter_peer(peer_id).await;
            if let Some(resumed) = self.resume(session_id, peer_id, ttl).await? {
                return Ok(resumed);
            }
            self.claim(session_id, user, peer, metadata, ttl).await?
        };
        let Some((previous, reply)) = handover else {
            return Ok(registration);
        };
        let resumed = matches!(
            tokio::time::timeout(HANDOVER_WAIT, reply).await,
            Ok(Ok(true))
        );
        if !resumed {
            self.handovers_lock()
                .remove(&(peer_id.to_string(), registration.epoch));
        }
        Ok(self
            .take_over(session_id, peer_id, registration, previous, resumed)
            .await)
    }

    /// Claims the session for a new connection. When another node held it, that node is
    /// asked to hand it over and the answer is returned to wait for.
    async fn claim(
        &self,
        session_id: &str,
        user: &str,
        peer: &Arc<str>,
        metadata: Option<Metadata>,
        ttl: Duration,
    ) -> Result<(Registration, Option<PendingHandover>), StoreError> {
        let peer_id: &str = peer;
        let record = SessionRecord {
            session_id: session_id.to_string(),
            user: user.to_string(),
            peer_id: peer_id.to_string(),
            node: String::from(&*self.node),
        };
        let claim = match self.store.claim_session(&record, ttl).await {
            Ok(claim) => claim,
            // Readiness promises new clients are taken while Redis fails over or is
            // briefly away: hold the session here and write it when the store answers.
            Err(e) => {
                tracing::warn!(error = %e, "store unavailable: holding a new session on this node");
                self.unwritten();
                Claim {
                    epoch: crate::clock::unix_micros(),
                    previous: None,
                }
            }
        };
        let (outbox, inbox) = outbox::channel(self.queue);
        let old = self.write().peers.insert(
            peer.clone(),
            PeerSlot {
                epoch: claim.epoch,
                session_len: PeerSlot::session_len(session_id),
                expires: tokio::time::Instant::now() + ttl,
                outbox: outbox.clone(),
                room: None,
                metadata,
                parked: None,
            },
        );
        if let Some(old) = &old {
            old.outbox
                .close(Some(close::REPLACED), "replaced by a newer connection");
        }
        let previous_room = claim.previous.as_ref().and_then(|p| p.room.clone());
        let mut handover = None;
        match claim.previous {
            Some(previous) if *previous.node != *self.node => {
                // Messages for the peer from this node's members come here from now on,
                // so none of them overtakes what the old node hands over.
                if let Some(room) = &previous.room {
                    let _room = self.enter_rooms(&[room]).await;
                    self.write().take_place(room, peer_id);
                }
                let (tx, rx) = oneshot::channel();
                self.handovers_lock()
                    .insert((peer_id.to_string(), claim.epoch), tx);
                let ask = BusMessage::Handover {
                    peer: peer_id.to_string(),
                    epoch: previous.epoch,
                    node: String::from(&*self.node),
                    new_epoch: claim.epoch,
                };
                self.publish(&previous.node, &ask);
                handover = Some((previous, rx));
            }
            Some(previous) => {
                if let Some(room) = &previous.room {
                    let _room = self.enter_rooms(&[room]).await;
                    self.depart(room, peer_id, previous.epoch, LeaveReason::Replaced)
                        .await;
                }
            }
            None => {}
        }
        // A local predecessor whose room the session record did not name still leaves it.
        if let Some(old) = old
            && let Some(room) = old.room
            && previous_room.as_deref() != Some(&*room)
        {
            let _room = self.enter_rooms(&[&room]).await;
            self.depart(&room, peer_id, old.epoch, LeaveReason::Replaced)
                .await;
        }
        let registration = Registration {
            epoch: claim.epoch,
            outbox,
            inbox,
            resumed: None,
        };
        Ok((registration, handover))
    }

    /// Takes back a session parked on this node, if there is one and the store still says
    /// it is this connection's: same epoch, same room, queued messages kept in order.
    async fn resume(
        &self,
        session_id: &str,
        peer_id: &str,
        ttl: Duration,
    ) -> Result<Option<Registration>, StoreError> {
        let Some(epoch) = self
            .read()
            .peers
            .get(peer_id)
            .filter(|s| s.parked.is_some())
            .map(|s| s.epoch)
        else {
            return Ok(None);
        };
        match self.store.refresh_session(session_id, epoch, ttl).await {
            Ok(true) => {}
            Ok(false) => return Ok(None),
            // The session is parked here: resume it, and write it back once the store
            // answers (a newer owner found then closes this connection as replaced).
            Err(e) => {
                tracing::warn!(error = %e, "store unavailable: resuming from this node's copy");
                self.unwritten();
            }
        }
        let mut table = self.write();
        let Some(slot) = table.peers.get_mut(peer_id).filter(|s| s.epoch == epoch) else {
            return Ok(None);
        };
        let Some((inbox, unsent)) = slot.parked.take().map(|p| *p) else {
            return Ok(None);
        };
        slot.expires = tokio::time::Instant::now() + ttl;
        let outbox = slot.outbox.clone();
        let room = slot.room.clone();
        let metadata = slot.metadata.clone();
        let peers = room
            .as_ref()
            .map(|r| table.room_peers(r, peer_id))
            .unwrap_or_default();
        self.metrics.resumed("succeeded");
        Ok(Some(Registration {
            epoch,
            outbox,
            inbox,
            resumed: Some(Resumed {
                room,
                peers,
                metadata,
                queued: unsent,
            }),
        }))
    }

    /// Parks a session whose connection dropped: it stays in its room (nobody is told yet)
    /// and messages for it queue up; it ends with `peer_left` `timeout` if nobody resumes
    /// it within `grace` or the queue overflows.
    pub async fn park(
        self: &Arc<Self>,
        peer_id: &str,
        epoch: Epoch,
        parked: (Inbox, Vec<Utf8Bytes>),
        grace: Duration,
    ) -> bool {
        let _peer = self.enter_peer(peer_id).await;
        if self.shutting.load(Ordering::Relaxed) {
            return false;
        }
        let closing = {
            let mut table = self.write();
            let Some(slot) = table.peers.get_mut(peer_id).filter(|s| s.epoch == epoch) else {
                return false;
            };
            if slot.outbox.is_full() {
                return false;
            }
            slot.outbox.reopen();
            slot.parked = Some(Box::new(parked));
            slot.outbox.watch_closing()
        };
        let hub = self.clone();
        let peer = peer_id.to_string();
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(grace) => {}
                // The queue overflowed, or the node is draining.
                _ = closing.closed() => {}
            }
            hub.expire(&peer, epoch).await;
        });
        true
    }

    /// Ends a parked session that nobody resumed.
    async fn expire(&self, peer_id: &str, epoch: Epoch) {
        let session_id = {
            let table = self.read();
            match table.peers.get(peer_id) {
                Some(s) if s.epoch == epoch && s.parked.is_some() => s.session_id(peer_id),
                _ => return,
            }
        };
        self.metrics.resumed("expired");
        self.detach(session_id, peer_id, epoch, LeaveReason::Timeout)
            .await;
    }

    /// Removes a connection that ended; a no-op when a newer connection owns the session.
    pub async fn detach(&self, session_id: &str, peer_id: &str, epoch: Epoch, reason: LeaveReason) {
        let _recovery = self.recovery.read().await;
        let _peer = self.enter_peer(peer_id).await;
        let slot = {
            let mut table = self.write();
            if table.owned(peer_id, epoch).is_none() {
                return;
            }
            table.peers.remove(peer_id).expect("checked above")
        };
        if let Some(room) = &slot.room {
            let _room = self.enter_rooms(&[room]).await;
            self.depart(room, peer_id, epoch, reason).await;
        }
        if let Err(e) = self
            .store
            .release_session(&self.node, session_id, epoch)
            .await
        {
            tracing::warn!(error = %e, "could not release a session in the store");
        }
    }

    /// Refreshes the TTLs of a live connection's session and room.
    pub async fn refresh(
        &self,
        session_id: &str,
        peer_id: &str,
        epoch: Epoch,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let room = {
            let mut table = self.write();
            let slot = table.peers.get_mut(peer_id).filter(|s| s.epoch == epoch);
            slot.and_then(|s| {
                s.expires = tokio::time::Instant::now() + ttl;
                s.room.clone()
            })
        };
        if !self.store.refresh_session(session_id, epoch, ttl).await? {
            return Ok(false);
        }
        if let Some(room) = room {
            self.store.touch_room(&room, ROOM_TTL).await?;
        }
        Ok(true)
    }
}
