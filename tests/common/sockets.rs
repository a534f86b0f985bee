//! The attacker's side of hostile-connection tests: raw TCP sockets that send nothing, or
//! trickle a request head, each watched until the server closes it.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
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

/// How a flood opens its sockets.
#[derive(Debug, Clone, Copy)]
pub struct Opening {
    /// Most connects in flight at once.
    pub parallel: usize,
    /// The attacker's own address (a loopback alias such as 127.0.0.2), else the system's
    /// choice (127.0.0.1 on loopback, the honest clients' address).
    pub from: Option<IpAddr>,
    /// A sustained attack: one new socket every this long, each held until the server
    /// closes it. `None`: as fast as `parallel` allows.
    pub every: Option<Duration>,
}

impl Opening {
    /// As fast as `parallel` connects at once allow, from the system's address.
    pub fn burst(parallel: usize) -> Opening {
        Opening {
            parallel,
            from: None,
            every: None,
        }
    }
}

/// The shortest and the longest a socket of a flood stayed open (from its connect to the
/// server's close).
#[derive(Debug, Clone, Copy)]
pub struct Lives {
    /// The shortest.
    pub shortest: Duration,
    /// The longest.
    pub longest: Duration,
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
    /// How long the sockets the server closed had been open.
    lives: Arc<Mutex<Option<Lives>>>,
    /// Set to stop refilling and to drop every socket.
    stop: Arc<AtomicBool>,
}

impl Flood {
    /// Opens `n` sockets to `addr` (connecting at most `parallel` at a time), each
    /// behaving as `behaviour` until the server closes it.
    pub async fn open(addr: SocketAddr, n: usize, behaviour: Behaviour, parallel: usize) -> Flood {
        Self::open_with(addr, n, behaviour, Opening::burst(parallel)).await
    }

    /// Opens `n` sockets to `addr` as `opening` says, each behaving as `behaviour` until
    /// the server closes it; returns once every one has connected.
    pub async fn open_with(
        addr: SocketAddr,
        n: usize,
        behaviour: Behaviour,
        opening: Opening,
    ) -> Flood {
        let flood = Flood {
            opened: Arc::default(),
            closed: Arc::default(),
            last_closed: Arc::default(),
            started: Instant::now(),
            lives: Arc::default(),
            stop: Arc::default(),
        };
        let gate = Arc::new(tokio::sync::Semaphore::new(opening.parallel));
        let mut pace = opening.every.map(|every| {
            let mut pace = tokio::time::interval(every);
            pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            pace
        });
        for _ in 0..n {
            if let Some(pace) = &mut pace {
                pace.tick().await;
            }
            let permit = gate.clone().acquire_owned().await.unwrap();
            let (opened, closed, last, lives) = (
                flood.opened.clone(),
                flood.closed.clone(),
                flood.last_closed.clone(),
                flood.lives.clone(),
            );
            let (stop, behaviour) = (flood.stop.clone(), behaviour.clone());
            tokio::spawn(async move {
                let socket = loop {
                    // A full accept queue drops SYNs: retry rather than wait for the kernel.
                    let connect = connect(addr, opening.from);
                    if let Ok(Ok(socket)) =
                        tokio::time::timeout(Duration::from_secs(1), connect).await
                    {
                        break socket;
                    }
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                };
                let connected = Instant::now();
                opened.fetch_add(1, Ordering::Relaxed);
                drop(permit);
                hold(socket, &behaviour, &stop).await;
                if !stop.load(Ordering::Relaxed) {
                    let now = Instant::now();
                    let life = now - connected;
                    closed.fetch_add(1, Ordering::Relaxed);
                    *last.lock().unwrap() = Some(now);
                    let mut lives = lives.lock().unwrap();
                    *lives = Some(match *lives {
                        None => Lives {
                            shortest: life,
                            longest: life,
                        },
                        Some(seen) => Lives {
                            shortest: seen.shortest.min(life),
                            longest: seen.longest.max(life),
                        },
                    });
                }
            });
        }
        // Every socket connected (the last permits come back once they are).
        let _ = gate.acquire_many(opening.parallel as u32).await.unwrap();
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

    /// The shortest and longest lives of the sockets the server closed so far.
    pub fn lives(&self) -> Option<Lives> {
        *self.lives.lock().unwrap()
    }
}

/// A TCP connection to `addr`, from `from` when given.
pub async fn connect(addr: SocketAddr, from: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let Some(from) = from else {
        return TcpStream::connect(addr).await;
    };
    let socket = match from {
        IpAddr::V4(_) => TcpSocket::new_v4()?,
        IpAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(addr).await
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
