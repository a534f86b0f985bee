//! The attacker's side of hostile-connection tests: raw TCP sockets that send nothing, or
//! trickle a request head, each watched until the server closes it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// What each attacking socket does once connected.
#[derive(Debug, Clone)]
pub enum Behaviour {
    /// Sends nothing.
    Idle,
    /// Sends `head`, then `line` every `every`, never ending the head.
    Trickle {
        /// The first bytes.
        head: String,
        /// Sent again and again.
        line: String,
        /// Pause between two lines.
        every: Duration,
    },
}

/// Attacking sockets, each watched by a task until the server closes it.
pub struct Flood {
    /// Sockets connected so far.
    pub opened: Arc<AtomicUsize>,
    /// Sockets the server closed.
    pub closed: Arc<AtomicUsize>,
    /// When the last one was closed.
    pub last_closed: Arc<Mutex<Option<Instant>>>,
    /// When the flood started.
    pub started: Instant,
    /// Set to stop refilling and to drop every socket.
    stop: Arc<AtomicBool>,
}

impl Flood {
    /// Opens `n` sockets to `addr` (connecting at most `parallel` at a time), each
    /// behaving as `behaviour` until the server closes it.
    pub async fn open(addr: SocketAddr, n: usize, behaviour: Behaviour, parallel: usize) -> Flood {
        let flood = Flood {
            opened: Arc::default(),
            closed: Arc::default(),
            last_closed: Arc::default(),
            started: Instant::now(),
            stop: Arc::default(),
        };
        let gate = Arc::new(tokio::sync::Semaphore::new(parallel));
        for _ in 0..n {
            let permit = gate.clone().acquire_owned().await.unwrap();
            let (opened, closed, last) = (
                flood.opened.clone(),
                flood.closed.clone(),
                flood.last_closed.clone(),
            );
            let (stop, behaviour) = (flood.stop.clone(), behaviour.clone());
            tokio::spawn(async move {
                let socket = loop {
                    // A full accept queue drops SYNs: retry rather than wait for the kernel.
                    let connect = TcpStream::connect(addr);
                    if let Ok(Ok(socket)) =
                        tokio::time::timeout(Duration::from_secs(1), connect).await
                    {
                        break socket;
                    }
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                };
                opened.fetch_add(1, Ordering::Relaxed);
                drop(permit);
                hold(socket, &behaviour, &stop).await;
                if !stop.load(Ordering::Relaxed) {
                    closed.fetch_add(1, Ordering::Relaxed);
                    *last.lock().unwrap() = Some(Instant::now());
                }
            });
        }
        // Every socket connected (the last permits come back once they are).
        let _ = gate.acquire_many(parallel as u32).await.unwrap();
        flood
    }

    /// Sockets still open.
    pub fn open_now(&self) -> usize {
        self.opened.load(Ordering::Relaxed) - self.closed.load(Ordering::Relaxed)
    }

    /// From the start of the flood to the last close seen.
    pub fn last_close_after(&self) -> Option<Duration> {
        self.last_closed.lock().unwrap().map(|at| at - self.started)
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Behaves as told until the server closes the socket (or the flood stops).
async fn hold(mut socket: TcpStream, behaviour: &Behaviour, stop: &AtomicBool) {
    let mut buf = [0u8; 1024];
    let (line, every) = match behaviour {
        Behaviour::Idle => (None, Duration::from_millis(200)),
        Behaviour::Trickle { head, line, every } => {
            if socket.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            (Some(line.as_bytes()), *every)
        }
    };
    while !stop.load(Ordering::Relaxed) {
        // Whatever the server answers is read; only the end of the stream counts.
        match tokio::time::timeout(every, socket.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return,
            Ok(Ok(_)) => continue,
            Err(_) => {}
        }
        if let Some(line) = line
            && socket.write_all(line).await.is_err()
        {
            return;
        }
    }
}

/// True when `GET /health/live` on a fresh connection answers 200 within `within`.
pub async fn live(addr: SocketAddr, within: Duration) -> bool {
    let ask = async {
        let mut socket = TcpStream::connect(addr).await.ok()?;
        socket
            .write_all(
                b"GET /health/live HTTP/1.1\r\nHost: switchboard\r\nConnection: close\r\n\r\n",
            )
            .await
            .ok()?;
        let mut answer = Vec::new();
        socket.read_to_end(&mut answer).await.ok()?;
        Some(answer.starts_with(b"HTTP/1.1 200"))
    };
    matches!(tokio::time::timeout(within, ask).await, Ok(Some(true)))
}

/// Reads from `socket` until the server closes it; how long that took, or `None` when it
/// stayed open for `within`. What it read is returned too.
pub async fn closed_within(
    socket: &mut TcpStream,
    within: Duration,
) -> Option<(Duration, Vec<u8>)> {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(within, read).await.ok()?;
    Some((started.elapsed(), got))
}
