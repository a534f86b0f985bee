//! A TCP proxy in front of one Redis address, to cut a single node's link to Redis and
//! heal it while Redis itself and every other node carry on: a network partition.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What a cut link does to its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Packets vanish: open connections hang (nothing passes, nothing closes) and new ones
    /// connect but never get an answer, as when a switch or a firewall drops traffic.
    /// After the heal, what was held passes on, as after TCP retransmits.
    Blackhole,
    /// Every connection is reset and new ones are closed at once, as when a host
    /// rejects traffic.
    Reset,
}

/// Whether the link passes traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Up,
    Down(Cut),
}

/// A proxy on 127.0.0.1 forwarding to `upstream`, stopped when dropped.
pub struct Proxy {
    /// Where clients connect.
    port: u16,
    link: watch::Sender<Link>,
    accept: JoinHandle<()>,
    /// Every forwarding task, so a reset cut and the drop can end them.
    pipes: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    /// Listens on a free port and forwards each connection to `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (link, _) = watch::channel(Link::Up);
        let pipes = Arc::new(Mutex::new(Vec::new()));
        let accept = tokio::spawn(accept_loop(
            listener,
            upstream.to_string(),
            link.clone(),
            pipes.clone(),
        ));
        Proxy {
            port,
            link,
            accept,
            pipes,
        }
    }

    /// `redis://127.0.0.1:port`, the URL to give the node instead of Redis's.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Cuts the link in the given way.
    pub fn cut(&self, how: Cut) {
        self.link.send_replace(Link::Down(how));
        if how == Cut::Reset {
            for pipe in self.pipes.lock().unwrap().drain(..) {
                pipe.abort();
            }
        }
    }

    /// Lets traffic pass again.
    pub fn heal(&self) {
        self.link.send_replace(Link::Up);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        for pipe in self.pipes.lock().unwrap().drain(..) {
            pipe.abort();
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: String,
    link: watch::Sender<Link>,
    pipes: Arc<Mutex<Vec<JoinHandle<()>>>>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let state = *link.borrow();
        if state == Link::Down(Cut::Reset) {
            drop(client);
            continue;
        }
        let link = link.subscribe();
        let upstream = upstream.clone();
        let pipe = tokio::spawn(async move {
            // A connection made during a blackhole waits for the heal before reaching Redis.
            let mut gate = link.clone();
            if passable(&mut gate).await.is_err() {
                return;
            }
            let Ok(server) = TcpStream::connect(&upstream).await else {
                return;
            };
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::select! {
                _ = pump(client_read, server_write, link.clone()) => {}
                _ = pump(server_read, client_write, link) => {}
            }
        });
        let mut pipes = pipes.lock().unwrap();
        pipes.retain(|p| !p.is_finished());
        pipes.push(pipe);
    }
}

/// Waits until the link is up; an error when the proxy is gone.
async fn passable(link: &mut watch::Receiver<Link>) -> Result<(), watch::error::RecvError> {
    link.wait_for(|l| *l == Link::Up).await.map(|_| ())
}

/// Copies one direction, holding whatever it read while the link is down.
async fn pump(
    mut from: impl AsyncReadExt + Unpin,
    mut to: impl AsyncWriteExt + Unpin,
    mut link: watch::Receiver<Link>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if passable(&mut link).await.is_err() || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
