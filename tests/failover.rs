//! Calls across three nodes through every Redis failure a deployment sees: a Cluster
//! master killed, a Sentinel master killed, Redis restarted empty, one node cut off from
//! Redis and healed. Every offer is numbered; each scenario holds the server to: nothing
//! lost silently (each offer delivered once or refused by an `error` naming it), nothing
//! duplicated or reordered, no client closed, every node ready throughout.
//!
//! Scale by environment: `FAULT_PAIRS` (default 10), `FAULT_RATE` (offers/s, default 200),
//! `FAULT_SDP_BYTES` (1024), `FAULT_CUT_SECONDS` (partition length, default 4) and
//! `FAULT_AFTER_SECONDS` (traffic after recovery, default 3). scripts/faults.sh runs them
//! at production scale.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::eventually::patient;
use common::fleet::{Fleet, HEARTBEAT, RESUME_GRACE, RedisAccess, Unready};
use common::proxy::{Cut, Proxy};
use common::redis::{RedisCluster, RedisServer, SentinelGroup};
use common::traffic::{Plan, Report, Traffic, holds_within};
use tokio::time::Instant;

/// How long a sender may wait for a held message before it is refused (FAILOVER_HOLD's
/// default), plus the time an answer needs to come back.
const SETTLE: Duration = Duration::from_secs(15);

/// The default scale: small enough for a test run, across every node pair.
fn plan() -> Plan {
    Plan::from_env(10, 200.0)
}

/// A duration in whole or fractional seconds from `name`, or `default`.
fn seconds_from_env(name: &str, default: f64) -> Duration {
    let seconds = std::env::var(name).map_or(default, |v| {
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number of seconds"))
    });
    Duration::from_secs_f64(seconds)
}

/// One scenario at a time: each runs three nodes, a Redis deployment and its traffic, and
/// four at once on a small machine measure CPU starvation, not the fault.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Traffic kept up after the fault is over, so late and held messages show.
fn after() -> Duration {
    seconds_from_env("FAULT_AFTER_SECONDS", 3.0)
}

/// Waits until traffic flows on every call: about a second of offers per direction.
async fn warm_up(traffic: &Traffic) {
    let enough = traffic.sides().len() * 10;
    common::eventually(
        "every call to get under way",
        Duration::from_secs(20),
        async || traffic.delivered() >= enough,
    )
    .await;
}

/// Keeps traffic going until every live direction has answered offers due `after()` past
/// the recovery (or the hold ran out), then accounts for every message.
async fn run_out(traffic: Traffic, scenario: &str, recovered: Instant) -> Report {
    let tail = after();
    traffic.wait_past(recovered + tail, tail + SETTLE).await;
    traffic.finish(scenario, SETTLE).await
}

/// The rooms whose membership in Redis is not exactly their two peers, as `room: members`.
async fn incomplete_rooms(url: &str, prefix: &str, rooms: &[(String, Vec<String>)]) -> Vec<String> {
    let unreadable = || vec![format!("Redis at {url} could not be read")];
    let Ok(client) = redis::Client::open(url) else {
        return unreadable();
    };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return unreadable();
    };
    let mut pipe = redis::pipe();
    for (room, _) in rooms {
        pipe.cmd("HKEYS")
            .arg(format!("{prefix}room:{{{room}}}:members"));
    }
    let Ok(members) = pipe.query_async::<Vec<Vec<String>>>(&mut conn).await else {
        return unreadable();
    };
    rooms
        .iter()
        .zip(members)
        .filter(|((_, expected), held)| {
            let held: HashSet<&String> = held.iter().collect();
            held != expected.iter().collect()
        })
        .map(|((room, _), held)| format!("{room}: {held:?}"))
        .collect()
}

/// Entries and bytes (`MEMORY USAGE`) left in the nodes' inboxes under `prefix`.
async fn retained(url: &str, prefix: &str) -> Option<(u64, u64)> {
    let client = redis::Client::open(url).ok()?;
    let mut conn = client.get_multiplexed_async_connection().await.ok()?;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}node:{{*}}:inbox"))
        .query_async(&mut conn)
        .await
        .ok()?;
    let (mut entries, mut bytes) = (0, 0);
    for key in keys {
        let len: u64 = redis::cmd("XLEN")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .ok()?;
        let size: Option<u64> = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .ok()?;
        entries += len;
        bytes += size.unwrap_or(0);
    }
    Some((entries, bytes))
}

/// Prints the scenario's report and fails listing everything that broke its promise.
fn conclude(report: &Report, unready: &[Unready], mut failures: Vec<String>, note: &str) {
    println!("{report}; {note}");
    for outage in unready {
        println!("  {outage}");
    }
    failures.splice(0..0, report.failures());
    if !unready.is_empty() {
        let spans: Vec<String> = unready.iter().take(6).map(|u| u.to_string()).collect();
        failures.push(format!(
            "{} unready spans: {}{}",
            unready.len(),
            spans.join("; "),
            if unready.len() > 6 { "; …" } else { "" }
        ));
    }
    assert!(
        failures.is_empty(),
        "{}: {}\n  - {}",
        report.scenario,
        note,
        failures.join("\n  - ")
    );
}

/// A failover or restart is held and retried within FAILOVER_HOLD: nobody is refused.
fn no_refusals(report: &Report) -> Vec<String> {
    if report.refused.is_empty() {
        return Vec::new();
    }
    vec![format!(
        "{} offers refused ({:?}): a failover shorter than FAILOVER_HOLD must be held and \
         retried, not refused",
        report.refused_total(),
        report.refused
    )]
}

// Several threads: a few hundred clients, the readiness probes and a proxy share the runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_master_killed_mid_call_loses_refuses_and_closes_nothing() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let mut cluster = RedisCluster::start_with_replicas(1).await;
    let seeds = RedisAccess::Cluster(cluster.seeds().join(","));
    let fleet = Fleet::start(&[seeds.clone(), seeds.clone(), seeds], &[]).await;
    let readiness = fleet.watch_readiness();
    let traffic = Traffic::start(&fleet.addrs(), plan()).await;
    warm_up(&traffic).await;

    // The shard holding call-0's room: at least one call has its state there.
    let key = format!("{}room:{{call-0}}:members", fleet.prefix);
    let (promoted, took) = cluster.kill_master_of_and_wait_failover(&key).await;
    let report = run_out(traffic, "cluster master killed", Instant::now()).await;

    let note = format!(
        "replica {promoted} promoted {:.1} s after the kill",
        took.as_secs_f64()
    );
    conclude(&report, &readiness.stop(), no_refusals(&report), &note);
}

// Several threads: a few hundred clients, the readiness probes and a proxy share the runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_master_killed_mid_call_loses_refuses_and_closes_nothing() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let mut group = SentinelGroup::start_set(3, 2).await;
    let access = RedisAccess::Sentinel {
        sentinels: group.sentinel_addrs(),
        master: group.master_name.clone(),
    };
    let fleet = Fleet::start(&[access.clone(), access.clone(), access], &[]).await;
    let readiness = fleet.watch_readiness();
    let traffic = Traffic::start(&fleet.addrs(), plan()).await;
    warm_up(&traffic).await;

    let killed = Instant::now();
    let promoted = group.kill_master_and_wait_failover().await;
    let took = killed.elapsed();
    let report = run_out(traffic, "sentinel master killed", Instant::now()).await;

    let note = format!(
        "replica {promoted} promoted {:.1} s after the kill",
        took.as_secs_f64()
    );
    conclude(&report, &readiness.stop(), no_refusals(&report), &note);
}

// Several threads: a few hundred clients, the readiness probes and a proxy share the runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_empty_mid_call_is_healed_without_closing_anyone() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let mut redis = RedisServer::start().await;
    let url = RedisAccess::Url(redis.url());
    let fleet = Fleet::start(&[url.clone(), url.clone(), url], &[]).await;
    let readiness = fleet.watch_readiness();
    let traffic = Traffic::start(&fleet.addrs(), plan()).await;
    warm_up(&traffic).await;
    let rooms = traffic.rooms();

    let down = Instant::now();
    redis.restart().await;
    let back = Instant::now();
    // Every room is whole again within two heartbeats of Redis answering.
    let (redis_url, prefix) = (redis.url(), fleet.prefix.clone());
    let healed = holds_within(HEARTBEAT * 2, async || {
        incomplete_rooms(&redis_url, &prefix, &rooms)
            .await
            .is_empty()
    })
    .await;
    let mut failures = Vec::new();
    if !healed {
        let missing = incomplete_rooms(&redis_url, &prefix, &rooms).await;
        failures.push(format!(
            "{} of {} rooms not rewritten within two heartbeats ({:?}) of the restart, \
             e.g. {}",
            missing.len(),
            rooms.len(),
            HEARTBEAT * 2,
            missing
                .iter()
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    let report = run_out(traffic, "redis restarted empty", back).await;
    // Relayed data leaves Redis once delivered: what a commit read is trimmed by a later
    // one, at the latest by the commit an idle reader makes once per blocking read (1 s).
    let emptied = holds_within(HEARTBEAT * 2 + Duration::from_secs(1), async || {
        retained(&redis_url, &prefix)
            .await
            .is_some_and(|(entries, _)| entries == 0)
    })
    .await;
    let left = retained(&redis_url, &prefix).await;
    if !emptied {
        failures.push(format!(
            "the inboxes still hold {left:?} (entries, bytes) after every message was answered"
        ));
    }

    failures.extend(no_refusals(&report));
    let note = format!(
        "Redis down {:.1} s, rooms whole within two heartbeats: {healed}; inboxes after the \
         run (entries, bytes): {left:?}",
        (back - down).as_secs_f64()
    );
    conclude(&report, &readiness.stop(), failures, &note);
}

// Several threads: a few hundred clients, the readiness probes and a proxy share the runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_redis_and_healed_keeps_its_clients_and_loses_nothing() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let cut_for = seconds_from_env("FAULT_CUT_SECONDS", 4.0);
    assert!(
        cut_for > HEARTBEAT * 2 && cut_for < RESUME_GRACE,
        "FAULT_CUT_SECONDS must lie between two heartbeats and RESUME_GRACE"
    );
    let redis = RedisServer::start().await;
    let proxy = Proxy::start(&redis.addr()).await;
    let direct = RedisAccess::Url(redis.url());
    let fleet = Fleet::start(
        &[RedisAccess::Url(proxy.url()), direct.clone(), direct],
        &[],
    )
    .await;
    let readiness = fleet.watch_readiness();
    let traffic = Traffic::start(&fleet.addrs(), plan()).await;
    warm_up(&traffic).await;

    // The sides elsewhere whose partner sits on the cut-off node 0.
    let sides = traffic.sides().to_vec();
    let watchers: Vec<usize> = (0..sides.len())
        .filter(|&s| sides[s].node != 0 && sides[sides[s].partner].node == 0)
        .collect();
    let cut_at = Instant::now();
    proxy.cut(Cut::Blackhole);

    // Everyone elsewhere learns the partner's node is lost (measured, then judged).
    let lost_at = |s: usize| {
        let partner = &sides[sides[s].partner].peer_id;
        traffic.log(s, |log| {
            log.peer_left
                .iter()
                .find(|(peer, reason, at)| {
                    peer == partner && reason == "node_lost" && *at >= cut_at
                })
                .map(|(_, _, at)| *at - cut_at)
        })
    };
    holds_within(cut_for, async || {
        watchers.iter().all(|&s| lost_at(s).is_some())
    })
    .await;
    tokio::time::sleep_until(cut_at + cut_for).await;
    proxy.heal();
    let healed_at = Instant::now();

    // After the heal both sides of each affected call see the other join again.
    let affected: Vec<usize> = watchers
        .iter()
        .flat_map(|&s| [s, sides[s].partner])
        .collect();
    let rejoined = |s: usize| {
        let partner = &sides[sides[s].partner].peer_id;
        traffic.log(s, |log| {
            log.peer_joined
                .iter()
                .any(|(peer, at)| peer == partner && *at >= cut_at)
        })
    };
    let all_rejoined = holds_within(Duration::from_secs(10), async || {
        affected.iter().all(|&s| rejoined(s))
    })
    .await;
    let rooms = traffic.rooms();
    let (redis_url, prefix) = (redis.url(), fleet.prefix.clone());
    let no_ghosts = holds_within(HEARTBEAT * 2, async || {
        incomplete_rooms(&redis_url, &prefix, &rooms)
            .await
            .is_empty()
    })
    .await;

    let mut failures = Vec::new();
    let limit = patient(HEARTBEAT * 3);
    let announced: Vec<Option<Duration>> = watchers.iter().map(|&s| lost_at(s)).collect();
    let late: Vec<String> = watchers
        .iter()
        .zip(&announced)
        .filter(|(_, at)| at.is_none_or(|at| at > limit))
        .map(|(&s, at)| match at {
            Some(at) => format!("{} after {:.1} s", sides[s].name, at.as_secs_f64()),
            None => format!("{} never", sides[s].name),
        })
        .collect();
    if !late.is_empty() {
        failures.push(format!(
            "{} of {} peers elsewhere not told node_lost within three heartbeats ({limit:?}): {}",
            late.len(),
            watchers.len(),
            late.iter().take(6).cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    if !all_rejoined {
        let missing: Vec<&str> = affected
            .iter()
            .filter(|&&s| !rejoined(s))
            .map(|&s| sides[s].name.as_str())
            .collect();
        failures.push(format!(
            "{} of {} sides of cut calls never saw their partner join again after the heal: {}",
            missing.len(),
            affected.len(),
            missing
                .iter()
                .take(8)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if !no_ghosts {
        let wrong = incomplete_rooms(&redis_url, &prefix, &rooms).await;
        failures.push(format!(
            "{} rooms in Redis are not exactly their two peers after the heal, e.g. {}",
            wrong.len(),
            wrong.iter().take(3).cloned().collect::<Vec<_>>().join("; ")
        ));
    }
    let report = run_out(traffic, "node partitioned", healed_at).await;

    let slowest = announced.iter().flatten().max().copied();
    let note = format!(
        "node-0 cut off {:.1} s; node_lost seen by {}/{} (slowest {}), rejoined: {all_rejoined}",
        cut_for.as_secs_f64(),
        announced.iter().flatten().count(),
        watchers.len(),
        slowest.map_or("-".into(), |s| format!("{:.1} s", s.as_secs_f64()))
    );
    conclude(&report, &readiness.stop(), failures, &note);
}
