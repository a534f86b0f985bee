//! TLS edges in front of a node: a throwaway CA and certificate (openssl CLI), real nginx and
//! Caddy processes rendered from the templates in deploy/, and HTTPS/WSS clients that trust
//! only that CA and connect from a loopback address of their choosing (127.0.0.0/8 is all
//! local on Linux), so the edge sees several distinct clients.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use serde_json::{Value, json};
use tokio_tungstenite::Connector;

use super::tools::{Scratch, run};
use super::{Client, DEADLINE, eventually, patient};

/// The pass-through site: Switchboard's own paths.
pub const HOST: &str = "signal.switchboard.test";
/// The same-origin site: `/auth/...` and `/signal/...`, stripped at the edge.
pub const APP_HOST: &str = "app.switchboard.test";

/// A CA made for one test and a certificate it signed for both sites and 127.0.0.1.
pub struct TestCa {
    dir: Scratch,
    /// The CA certificate (PEM), the only root the clients trust.
    pub ca_pem: Vec<u8>,
}

impl TestCa {
    /// Generates the CA and the edge's certificate with the openssl CLI (P-256 keys: fast).
    pub fn generate() -> TestCa {
        let dir = Scratch::new("edge-ca");
        let openssl = |args: &[&str]| {
            let (ok, out) = run(Command::new("openssl").args(args).current_dir(dir.path()));
            assert!(ok, "openssl {args:?} failed: {out}");
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        openssl(
            &[
                &["req", "-x509"][..],
                &ec,
                &["-keyout", "ca.key", "-out", "ca.crt", "-days", "2"],
                &["-subj", "/CN=switchboard test CA"],
                &["-addext", "basicConstraints=critical,CA:TRUE"],
                &["-addext", "keyUsage=critical,keyCertSign"],
            ]
            .concat(),
        );
        openssl(
            &[
                &["req"][..],
                &ec,
                &[
                    "-keyout",
                    "edge.key",
                    "-out",
                    "edge.csr",
                    "-subj",
                    "/CN=switchboard edge",
                ],
            ]
            .concat(),
        );
        std::fs::write(
            dir.join("edge.ext"),
            format!(
                "subjectAltName=DNS:{HOST},DNS:{APP_HOST},IP:127.0.0.1\n\
                 basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
            ),
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "edge.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "edge.ext",
            "-out",
            "edge.crt",
        ]);
        let ca_pem = std::fs::read(dir.join("ca.crt")).unwrap();
        TestCa { dir, ca_pem }
    }

    /// The edge's certificate (PEM).
    pub fn cert(&self) -> PathBuf {
        self.dir.join("edge.crt")
    }

    /// The edge's private key (PEM).
    pub fn key(&self) -> PathBuf {
        self.dir.join("edge.key")
    }
}

/// Which reverse proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proxy {
    /// nginx with deploy/nginx/switchboard.conf.
    Nginx,
    /// Caddy with deploy/caddy/Caddyfile.
    Caddy,
}

impl Proxy {
    /// Its command.
    pub fn command(self) -> &'static str {
        match self {
            Proxy::Nginx => "nginx",
            Proxy::Caddy => "caddy",
        }
    }
}

/// A template of deploy/.
pub fn template(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(relative)
}

/// A proxy process terminating TLS on 127.0.0.1 and forwarding to one node, killed when
/// dropped.
pub struct Edge {
    /// Its TLS port on 127.0.0.1 (both sites, told apart by name).
    pub port: u16,
    child: Child,
    dir: Scratch,
    proxy: Proxy,
}

/// A port nothing listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Edge {
    /// Starts `proxy` in front of the node at `node` (host:port) with `ca`'s certificate,
    /// and waits until a request through it reaches the node.
    pub async fn start(proxy: Proxy, ca: &TestCa, node: &str) -> Edge {
        let dir = Scratch::new(proxy.command());
        let port = free_port();
        // The templates name three nodes; one node standing in for all three is enough
        // to carry a call, and keeps every per-IP count on one node.
        let vars = [
            ("SWITCHBOARD_HOST", HOST.to_string()),
            ("SWITCHBOARD_APP_HOST", APP_HOST.to_string()),
            ("SWITCHBOARD_CERT", ca.cert().display().to_string()),
            ("SWITCHBOARD_KEY", ca.key().display().to_string()),
            ("SWITCHBOARD_NODE_1", node.to_string()),
            ("SWITCHBOARD_NODE_2", node.to_string()),
            ("SWITCHBOARD_NODE_3", node.to_string()),
        ];
        let child = match proxy {
            Proxy::Nginx => spawn_nginx(&dir, port, &vars),
            Proxy::Caddy => spawn_caddy(&dir, port, &vars),
        };
        let edge = Edge {
            port,
            child,
            dir,
            proxy,
        };
        let client = EdgeClient::new(ca, port, "127.0.0.1".parse().unwrap());
        eventually(
            format!("{proxy:?} to forward /health/live"),
            DEADLINE,
            async || match client.get(HOST, "/health/live").await {
                Ok(r) if r.status() == 200 => Ok(()),
                Ok(r) => Err(format!("status {}; log:\n{}", r.status(), edge.log())),
                Err(e) => Err(format!("{e}; log:\n{}", edge.log())),
            },
        )
        .await;
        edge
    }

    /// What the proxy logged: its error log and its access log.
    pub fn log(&self) -> String {
        let read = |name| std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        match self.proxy {
            Proxy::Nginx => format!("{}{}", read("error.log"), read("access.log")),
            Proxy::Caddy => read("caddy.log"),
        }
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Renders deploy/nginx/switchboard.conf (its `${NAME}` placeholders, as envsubst would)
/// into a minimal nginx.conf whose every path is in `dir`, and starts nginx on it.
fn spawn_nginx(dir: &Scratch, port: u16, vars: &[(&str, String)]) -> Child {
    let mut conf = std::fs::read_to_string(template("nginx/switchboard.conf")).unwrap();
    let listen = format!("127.0.0.1:{port}");
    let access = dir.join("access.log").display().to_string();
    let extra = [
        ("SWITCHBOARD_LISTEN", listen.as_str()),
        ("SWITCHBOARD_ACCESS_LOG", access.as_str()),
    ];
    for (name, value) in vars.iter().map(|(n, v)| (*n, v.as_str())).chain(extra) {
        conf = conf.replace(&format!("${{{name}}}"), value);
    }
    // Comments may name placeholders; every directive must have had its value.
    let unfilled: Vec<&str> = conf
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && l.contains("${SWITCHBOARD_"))
        .collect();
    assert!(
        unfilled.is_empty(),
        "placeholders the test does not fill: {unfilled:?}"
    );
    std::fs::write(dir.join("switchboard.conf"), conf).unwrap();
    let d = dir.path().display();
    // One process, no workers: killing it (Drop, or a panicking test) leaves nothing
    // behind. A master killed with SIGKILL would orphan its workers and their sockets.
    let main = format!(
        "master_process off;\n\
         pid {d}/nginx.pid;\n\
         error_log {d}/error.log info;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n\
         client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
         access_log off;\n\
         include {d}/switchboard.conf;\n\
         }}\n"
    );
    std::fs::write(dir.join("nginx.conf"), main).unwrap();
    Command::new("nginx")
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .arg("-e")
        .arg(dir.join("error.log"))
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx runs")
}

/// Starts Caddy on deploy/caddy/Caddyfile as it is: Caddy fills its `{$NAME}` placeholders
/// from the environment. Its state (HOME, XDG dirs) stays in `dir`.
fn spawn_caddy(dir: &Scratch, port: u16, vars: &[(&str, String)]) -> Child {
    let log = std::fs::File::create(dir.join("caddy.log")).unwrap();
    let mut command = Command::new("caddy");
    command
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(template("caddy/Caddyfile"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir.path())
        .env("XDG_DATA_HOME", dir.join("data"))
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .env("SWITCHBOARD_HTTPS_PORT", port.to_string())
        // The HTTP→HTTPS redirect listener, unused here, on a port of its own.
        .env("SWITCHBOARD_HTTP_PORT", free_port().to_string())
        .env("SWITCHBOARD_CADDY_ADMIN", "off")
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    for (name, value) in vars {
        command.env(name, value);
    }
    command.spawn().expect("caddy runs")
}

/// Which paths a client uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `https://HOST/auth/token`, `wss://HOST/ws/signal`.
    PassThrough,
    /// `https://APP_HOST/auth/auth/token`, `wss://APP_HOST/signal/ws/signal`: the original
    /// reference deployment's same-origin paths.
    SameOrigin,
}

impl Layout {
    /// The site's name.
    pub fn host(self) -> &'static str {
        match self {
            Layout::PassThrough => HOST,
            Layout::SameOrigin => APP_HOST,
        }
    }

    /// The path of `POST /auth/token` on this site.
    pub fn token_path(self) -> &'static str {
        match self {
            Layout::PassThrough => "/auth/token",
            Layout::SameOrigin => "/auth/auth/token",
        }
    }

    /// The path of `/ws/signal` on this site.
    pub fn signal_path(self) -> &'static str {
        match self {
            Layout::PassThrough => "/ws/signal",
            Layout::SameOrigin => "/signal/ws/signal",
        }
    }
}

/// A client of the edge on 127.0.0.1:`port`, connecting from `from` and trusting only the
/// test CA.
pub struct EdgeClient {
    http: reqwest::Client,
    tls: Arc<rustls::ClientConfig>,
    port: u16,
    from: IpAddr,
}

impl EdgeClient {
    /// A client from the loopback address `from` (e.g. 127.0.0.7).
    pub fn new(ca: &TestCa, port: u16, from: IpAddr) -> EdgeClient {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let at = SocketAddr::from(([127, 0, 0, 1], port));
        let http = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca.ca_pem).unwrap())
            .https_only(true)
            .local_address(from)
            .resolve(HOST, at)
            .resolve(APP_HOST, at)
            .timeout(patient(DEADLINE))
            .build()
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(&ca.ca_pem).unwrap())
            .unwrap();
        let tls = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        EdgeClient {
            http,
            tls: Arc::new(tls),
            port,
            from,
        }
    }

    /// `GET https://host:port/path`.
    pub async fn get(&self, host: &str, path: &str) -> reqwest::Result<reqwest::Response> {
        let url = format!("https://{host}:{}{path}", self.port);
        self.http.get(url).send().await
    }

    /// `POST` a token request for `user` through `layout`, with `X-Forwarded-For` set to
    /// `forged` if given (what a client may send the edge; it must not be believed).
    pub async fn request_token(
        &self,
        layout: Layout,
        user: &str,
        forged: Option<&str>,
    ) -> (u16, String) {
        let url = format!(
            "https://{}:{}{}",
            layout.host(),
            self.port,
            layout.token_path()
        );
        let mut request = self.http.post(url).json(&json!({"userId": user}));
        if let Some(forged) = forged {
            request = request.header("x-forwarded-for", forged);
        }
        let response = request.send().await.expect("the edge answers");
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }

    /// A token for `user` through `layout`: (token, peer id).
    pub async fn token(&self, layout: Layout, user: &str) -> (String, String) {
        let (status, body) = self.request_token(layout, user, None).await;
        assert_eq!(status, 200, "token through {layout:?}: {body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        let token = body["token"].as_str().unwrap().to_string();
        let peer = body["peerId"].as_str().unwrap().to_string();
        (token, peer)
    }

    /// Opens `wss://…/ws/signal?token=` through `layout`; the upgrade's outcome.
    pub async fn upgrade(
        &self,
        layout: Layout,
        token: &str,
    ) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(self.from, 0)).unwrap();
        let stream = socket
            .connect(SocketAddr::from(([127, 0, 0, 1], self.port)))
            .await
            .expect("the edge accepts");
        let url = format!(
            "wss://{}:{}{}?token={token}",
            layout.host(),
            self.port,
            layout.signal_path()
        );
        let connector = Connector::Rustls(self.tls.clone());
        let connect =
            tokio_tungstenite::client_async_tls_with_config(url, stream, None, Some(connector));
        let (ws, _) = tokio::time::timeout(patient(DEADLINE), connect)
            .await
            .expect("the upgrade is answered before the deadline")?;
        Ok(Client {
            ws,
            peer_id: String::new(),
        })
    }

    /// A token and a registered signaling session for `user` through `layout`.
    pub async fn connect(&self, layout: Layout, user: &str) -> Client {
        let (token, peer) = self.token(layout, user).await;
        let mut client = self
            .upgrade(layout, &token)
            .await
            .unwrap_or_else(|e| panic!("upgrade through {layout:?}: {e}"));
        client.peer_id = peer;
        client.send(json!({"type": "ping"})).await;
        client.expect("pong").await;
        client
    }
}
