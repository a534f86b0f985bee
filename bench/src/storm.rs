//! `join-storm`: token + connect + join handshakes as fast as the deployment takes them,
//! with latency percentiles; each connection closes once joined.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::client::{Target, join};
use super::report::{Latency, Report, StormFigures, histogram};
use super::{BenchError, StormArgs, process, progress};

/// Runs the scenario.
pub async fn run(target: &Arc<Target>, args: &StormArgs) -> Result<Report, BenchError> {
    let fd_limit = switchboard::fd_limit::raise();
    let concurrency = args
        .concurrency
        .clamp(1, fd_limit.saturating_sub(64).max(1) as usize);
    let pids = &target.server_pids;
    let meter = process::Meter::start(pids)?;
    let run = format!("{:x}", std::process::id());
    let gate = Arc::new(Semaphore::new(concurrency));
    let bar = progress::counter(args.joins as u64, "joins");
    let deadline = tokio::time::Instant::now() + args.timeout;
    let mut tasks = JoinSet::new();
    let mut latency = histogram();
    let (mut completed, mut errors, mut first_error) = (0u64, 0u64, None);
    let mut record = |outcome: Result<u64, BenchError>| {
        match outcome {
            Ok(ns) => {
                completed += 1;
                let _ = latency.record(ns.max(1));
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert(e.0);
            }
        }
        bar.inc(1);
    };
    for i in 0..args.joins {
        let permit = tokio::select! {
            permit = gate.clone().acquire_owned() => permit.expect("the gate stays open"),
            _ = tokio::time::sleep_until(deadline) => break,
        };
        while let Some(done) = tasks.try_join_next() {
            record(done.expect("handshake task"));
        }
        let target = target.clone();
        let room = format!("storm-{run}-{}", i / 2);
        tasks.spawn(async move {
            let began = Instant::now();
            let mut socket = target.connect(i, &format!("storm{i}")).await?;
            join(&mut socket, &room).await?;
            let took = began.elapsed().as_nanos() as u64;
            drop(permit);
            let _ = socket.close(None).await; // the server sees a clean leave
            Ok(took)
        });
    }
    while let Ok(Some(done)) = tokio::time::timeout_at(deadline, tasks.join_next()).await {
        record(done.expect("handshake task"));
    }
    let elapsed = meter.started().elapsed();
    tasks.abort_all();
    bar.finish_and_clear();
    let cpu = meter.stop()?.server_cpu;
    let how = match target.tokens {
        super::TokenSource::Mint(_) => "tokens minted by the bench",
        super::TokenSource::Http { .. } => "tokens from the token endpoint",
    };
    Ok(Report {
        scenario: "join-storm",
        mode: "closed-loop",
        label: format!("{} handshakes, {concurrency} in flight, {how}", args.joins),
        runs: Vec::new(),
        max_sustained_rate: None,
        latency_from: None,
        idle: None,
        storm: Some(StormFigures {
            joins: args.joins,
            completed,
            errors,
            rate: completed as f64 / elapsed.as_secs_f64().max(1e-9),
            latency_us: Latency::of(&latency),
            server_cpu_us_per_join: cpu.map(|c| c.as_secs_f64() * 1e6 / completed.max(1) as f64),
        }),
        soak: None,
        first_error,
    })
}
