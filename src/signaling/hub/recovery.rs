//! Recovery: writing this node's state back after a store outage, and cleaning up after
//! nodes that died (or an earlier process of this one).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{Hub, ROOM_TTL, other_nodes};
use crate::bus::BusMessage;
use crate::signaling::protocol::{LeaveReason, close};
use crate::store::{Epoch, Seating, SessionRecord, StoreError};

/// Why a node writes its state back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rewrite {
    /// The store was unreachable or missed writes: its view of other nodes' members holds.
    Outage,
    /// Redis lost its data: every node is writing its own members back, so members missing
    /// from the store are kept until [`Hub::reconcile_rooms`] runs.
    DataLost,
    /// The other nodes declared this node lost and told their peers its peers left: its
    /// own peers hear of every remote member again, so both sides renegotiate.
    Evicted,
}

impl Hub {
    /// Writes this node's sessions and memberships back to the store after an outage (or
    /// after the store lost them), reconciles each room with what the store says, and
    /// tells the other nodes about this node's members (see [`Rewrite`] for the cases).
    pub async fn reregister(&self, why: Rewrite) -> Result<(), StoreError> {
        let _recovery = self.recovery.write().await;
        self.unwritten.store(false, Ordering::Relaxed);
        let written = self.rewrite(why).await;
        if written.is_err() {
            self.unwritten();
        }
        written
    }

    /// Writes what it can: a key on a failing shard does not hold back the others (its
    /// failure is returned at the end, and the next heartbeat tries again).
    async fn rewrite(&self, why: Rewrite) -> Result<(), StoreError> {
        let mut failed = self.retry_departures().await.err();
        let now = tokio::time::Instant::now();
        let (sessions, rooms) = {
            let table = self.read();
            let sessions: Vec<(SessionRecord, Epoch, Option<Arc<str>>, Duration)> = table
                .peers
                .iter()
                .map(|(peer, s)| {
                    let record = SessionRecord {
                        session_id: s.session_id(peer).to_string(),
                        user: s.user(peer).to_string(),
                        peer_id: peer.to_string(),
                        node: self.node.to_string(),
                    };
                    (
                        record,
                        s.epoch,
                        s.room.clone(),
                        s.expires.saturating_duration_since(now),
                    )
                })
                .collect();
            (sessions, table.local_members(&self.node))
        };
        for (record, epoch, room, ttl) in &sessions {
            let restored = self
                .store
                .restore_session(
                    record,
                    *epoch,
                    room.as_deref(),
                    (*ttl).max(Duration::from_secs(1)),
                )
                .await;
            let kept = match restored {
                Ok(kept) => kept,
                Err(e) => {
                    failed.get_or_insert(e);
                    continue;
                }
            };
            if !kept && let Some(slot) = self.read().owned(&record.peer_id, *epoch) {
                // A newer connection of this session took it elsewhere meanwhile.
                slot.outbox
                    .close(Some(close::REPLACED), "replaced by a newer connection");
            }
        }
        for (room, members) in rooms {
            let _room = self.enter_rooms(&[&room]).await;
            let mut written = Ok(());
            for member in &members {
                // Never refused: these peers are in the room already.
                written = written.and(
                    self.store
                        .join_room(&room, member, Seating::Keep, usize::MAX, ROOM_TTL)
                        .await
                        .map(|_| ()),
                );
            }
            let truth = match written {
                Ok(()) => self.store.room_members(&room).await,
                Err(e) => Err(e),
            };
            let truth = match truth {
                Ok(truth) => truth,
                Err(e) => {
                    failed.get_or_insert(e);
                    continue;
                }
            };
            {
                let mut table = self.write();
                let notices = table.reconcile(
                    &room,
                    &truth,
                    &self.node,
                    why == Rewrite::Evicted,
                    why != Rewrite::DataLost,
                );
                table.deliver(notices);
            }
            for node in other_nodes(&truth, &self.node) {
                for member in &members {
                    let joined = BusMessage::PeerJoined {
                        room: room.to_string(),
                        peer: member.peer_id.clone(),
                        node: self.node.to_string(),
                        epoch: member.epoch,
                        metadata: member.metadata.clone(),
                    };
                    self.publish(&node, &joined);
                }
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        tracing::info!(
            sessions = sessions.len(),
            duration_ms = now.elapsed().as_millis() as u64,
            "re-registered this node's sessions and rooms"
        );
        Ok(())
    }

    /// Makes this node's view of each of its rooms match the store, members missing from
    /// it included: run once the other nodes had time to write their state back after
    /// Redis lost its data.
    pub async fn reconcile_rooms(&self) -> Result<(), StoreError> {
        let _recovery = self.recovery.read().await;
        let rooms: Vec<Arc<str>> = self
            .read()
            .local_members(&self.node)
            .into_iter()
            .map(|(room, _)| room)
            .collect();
        for room in rooms {
            let _room = self.enter_rooms(&[&room]).await;
            let truth = self.store.room_members(&room).await?;
            let mut table = self.write();
            let notices = table.reconcile(&room, &truth, &self.node, false, true);
            table.deliver(notices);
        }
        Ok(())
    }

    /// Cleans up after dead nodes: exactly one survivor removes each dead node's members
    /// and tells every room's remaining members (`peer_left`, reason `node_lost`).
    pub async fn reap_dead_nodes(&self, lock_ttl: Duration) -> Result<usize, StoreError> {
        let dead = self.store.dead_nodes(&self.node).await?;
        let mut reaped = 0;
        for node in dead {
            if !self
                .store
                .claim_cleanup(&node, &self.node, lock_ttl)
                .await?
            {
                continue;
            }
            let removed = self.evict(&node).await?;
            tracing::warn!(dead = %node, peers = removed, "a node died; its peers were removed");
            reaped += 1;
        }
        Ok(reaped)
    }

    /// At start-up, removes what an earlier process with this node id left behind (a crash
    /// followed by a restart under the same `NODE_ID`, faster than the survivors noticed).
    pub async fn evict_previous_incarnation(&self) -> Result<(), StoreError> {
        let removed = self.evict(&self.node).await?;
        // This node is alive: the eviction notice is for a node that comes back.
        self.store.take_eviction_notice(&self.node).await?;
        if removed > 0 {
            tracing::warn!(
                peers = removed,
                "removed peers left behind by an earlier process with this node id"
            );
        }
        Ok(())
    }

    /// Removes `node`'s members from every room and announces `node_lost`; returns how many.
    async fn evict(&self, node: &str) -> Result<usize, StoreError> {
        let _recovery = self.recovery.write().await;
        let evictions = self.store.evict_node(node).await?;
        if node != &*self.node {
            // Later sends to it fail at once; what this node sent it and it never read
            // goes back to the senders (other nodes do the same on hearing `node_lost`).
            if let Err(e) = self.bus.close(node).await {
                tracing::warn!(error = %e, "could not close a lost node's inbox");
            }
            self.bus.abandon(node);
        }
        let mut removed = 0;
        for eviction in evictions {
            let _room = self.enter_rooms(&[&eviction.room]).await;
            for gone in &eviction.removed {
                removed += 1;
                {
                    let mut table = self.write();
                    let notices = table.lost(&eviction.room, &gone.peer_id);
                    table.deliver(notices);
                }
                let left = BusMessage::PeerLeft {
                    room: eviction.room.clone(),
                    peer: gone.peer_id.clone(),
                    epoch: gone.epoch,
                    reason: LeaveReason::NodeLost,
                };
                self.tell_other_nodes(&eviction.remaining, &left);
            }
        }
        Ok(removed)
    }

    /// Closes every local peer with 4003 so its client reconnects and the state is rebuilt:
    /// used when this node's registration vanished (it was declared dead while alive, or
    /// Redis lost its data).
    pub fn resync_all(&self, why: &'static str) {
        let table = self.read();
        for slot in table.peers.values() {
            slot.outbox.close(Some(close::RESYNC), why);
        }
        tracing::warn!(
            peers = table.peers.len(),
            "{why}: asked every peer to reconnect"
        );
    }
}
