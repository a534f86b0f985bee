//! `idle`: open N connections that authenticate and join (two per room) and hold them;
//! the handshake rate, and with `--server-pid` the server's memory per connection.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use futures_util::StreamExt;
use tokio::sync::{Semaphore, watch};

use super::client::{Target, join};
use super::report::{IdleFigures, Report};
use super::{BenchError, IdleArgs, process, progress};

/// Connections one source address is given to one server port: the ephemeral port range
/// (32768-60999 by default) allows about 28,000.
pub const PER_SOURCE: usize = 25_000;

/// Loopback source addresses enough for `connections` to a loopback server.
pub fn loopback_sources(connections: usize) -> Vec<IpAddr> {
    let count = connections.div_ceil(PER_SOURCE).max(1);
    (1..=count)
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i as u8)))
        .collect()
}

/// Runs the scenario.
pub async fn run(target: &Arc<Target>, args: &IdleArgs) -> Result<Report, BenchError> {
    let fd_limit = switchboard::fd_limit::raise();
    if args.connections as u64 + 64 > fd_limit {
        return Err(BenchError::new(format!(
            "{} connections need more open files than this process may have ({fd_limit}); \
             raise the hard limit (ulimit -Hn, LimitNOFILE) or open fewer",
            args.connections
        )));
    }
    let pids = &target.server_pids;
    let rss_before = process::servers_rss(pids)?;
    let run = format!("{:x}", std::process::id());
    let gate = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let (stop, stopped) = watch::channel(false);
    let alive = Arc::new(AtomicU64::new(0));
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    let bar = progress::counter(args.connections as u64, "connections");
    let start = Instant::now();
    for i in 0..args.connections {
        let permit = gate
            .clone()
            .acquire_owned()
            .await
            .expect("the gate stays open");
        let (target, alive, done, mut stopped) = (
            target.clone(),
            alive.clone(),
            done_tx.clone(),
            stopped.clone(),
        );
        let room = format!("idle-{run}-{}", i / 2);
        tokio::spawn(async move {
            let opened = async {
                let mut socket = target.connect(i, &format!("idle{i}")).await?;
                join(&mut socket, &room).await?;
                Ok::<_, BenchError>(socket)
            }
            .await;
            drop(permit);
            let mut socket = match opened {
                Ok(s) => s,
                Err(e) => {
                    let _ = done.send(Err(e));
                    return;
                }
            };
            alive.fetch_add(1, Ordering::Relaxed);
            let _ = done.send(Ok(()));
            // Reading answers the server's pings; the connection is held until told to stop.
            loop {
                tokio::select! {
                    message = socket.next() => if !matches!(message, Some(Ok(_))) { break },
                    _ = stopped.changed() => break,
                }
            }
            alive.fetch_sub(1, Ordering::Relaxed);
        });
    }
    drop(done_tx);
    let (mut errors, mut first_error) = (0, None);
    for _ in 0..args.connections {
        match done_rx.recv().await {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                errors += 1;
                first_error.get_or_insert(e.0);
            }
            None => break,
        }
        bar.inc(1);
    }
    let opening = start.elapsed();
    bar.finish_and_clear();
    let hold = progress::timed(args.hold, "holding");
    tokio::time::sleep(args.hold).await;
    hold.finish_and_clear();
    let rss_after = process::servers_rss(pids)?;
    let held = alive.load(Ordering::Relaxed) as usize;
    let _ = stop.send(true);
    let opened = args.connections as u64 - errors;
    let bytes_per_connection = match (rss_before, rss_after) {
        (Some(b), Some(a)) if held > 0 => Some((a as f64 - b as f64) / held as f64),
        _ => None,
    };
    Ok(Report {
        scenario: "idle",
        mode: "hold",
        label: format!(
            "{} connections, 2 per room, over {} node(s)",
            args.connections,
            target.nodes()
        ),
        runs: Vec::new(),
        max_sustained_rate: None,
        latency_from: None,
        idle: Some(IdleFigures {
            connections: args.connections,
            held,
            errors,
            connect_rate: opened as f64 / opening.as_secs_f64().max(1e-9),
            server_rss_before: rss_before,
            server_rss_after: rss_after,
            bytes_per_connection,
            fd_limit,
        }),
        storm: None,
        soak: None,
        first_error,
    })
}
