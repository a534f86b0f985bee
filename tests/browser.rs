//! The web app in real browsers: headless Chromium (fake camera and microphone) driven over
//! WebDriver, real WebRTC between the browsers, Switchboard as a real process, and a real
//! coturn for relay-only calls.
//!
//! They need chromium, chromedriver and coturn; `scripts/test.sh` installs them.

mod common;

use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::process::Running;
use common::redis::free_port;
use common::{SECRET, eventually, eventually_blocking, patient};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// Browsers, WebRTC and ICE take longer than the protocol tests' deadline.
const CALL_DEADLINE: Duration = Duration::from_secs(45);

/// One browser test at a time: a call of three Chromiums already fills two cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A child process in a process group of its own, killed with everything it started
/// (chromedriver's browsers) when dropped, even when a test fails half-way.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.0.wait();
    }
}

/// Starts `program` and waits until it accepts TCP connections on `port`.
fn spawn_listening(program: &str, args: &[String], port: u16) -> Process {
    let child = Command::new(program)
        .args(args)
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("{program} could not start ({e}); scripts/test.sh installs it with apt-get")
        });
    let process = Process(child);
    eventually_blocking(format!("{program} to listen"), common::DEADLINE, || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    process
}

/// chromedriver on a free port.
fn chromedriver() -> (Process, String) {
    let port = free_port();
    let process = spawn_listening("chromedriver", &[format!("--port={port}")], port);
    (process, format!("http://127.0.0.1:{port}"))
}

/// A headless Chromium with fake media devices that grant permission by themselves.
async fn browser(driver: &str) -> Client {
    let binary = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("chromium is installed (scripts/test.sh installs it with apt-get)");
    let mut caps = serde_json::Map::new();
    caps.insert("browserName".into(), json!("chrome"));
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": binary,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                "--autoplay-policy=no-user-gesture-required", "--window-size=1280,800",
                "--mute-audio",
                // Host candidates as plain addresses: resolving mDNS names (.local) is not
                // reliable between headless browsers in a container.
                "--disable-features=WebRtcHideLocalIpsWithMdns",
                "--allow-loopback-in-peer-connection",
            ],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(driver)
        .await
        .expect("a chromium session through chromedriver")
}

/// Opens the app at `base` and joins `room` as `name`.
async fn join(browser: &Client, base: &str, room: &str, name: &str, extra: &str) {
    browser
        .goto(&format!("{base}/?room={room}&name={name}{extra}"))
        .await
        .unwrap();
    browser
        .wait()
        .at_most(patient(common::DEADLINE))
        .for_element(Locator::Css("#join"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// Alice and Bob, each in a browser of their own, join `room`.
async fn alice_and_bob(driver: &str, base: &str, room: &str, extra: &str) -> (Client, Client) {
    let alice = browser(driver).await;
    let bob = browser(driver).await;
    join(&alice, base, room, "alice", extra).await;
    join(&bob, base, room, "bob", extra).await;
    (alice, bob)
}

/// The app's view of its peer connections.
async fn peers(browser: &Client) -> Vec<Value> {
    let script = "const done = arguments[arguments.length - 1];
        window.switchboardCall.peers().then(done, (e) => done({error: String(e)}));";
    let value = browser.execute_async(script, vec![]).await.unwrap();
    match value {
        Value::Array(list) => list,
        other => panic!("the page reported {other}"),
    }
}

/// Text of the app's status line.
async fn status(browser: &Client) -> String {
    browser
        .execute(
            "return document.getElementById('status').textContent",
            vec![],
        )
        .await
        .unwrap()
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Waits until `browser` has exactly `count` peer connections, all connected, each
/// decoding video frames that keep coming; returns the peers.
async fn wait_for_call(browser: &Client, count: usize) -> Vec<Value> {
    let what = format!("a call with {count} peer(s) up");
    let first = eventually(what, CALL_DEADLINE, async || {
        let list = peers(browser).await;
        let up = list.len() == count
            && list.iter().all(|p| {
                p["connectionState"] == "connected" && p["framesDecoded"].as_u64() > Some(0)
            });
        if up {
            return Ok(list);
        }
        let errors = browser
            .execute("return window.switchboardCall.negotiationErrors", vec![])
            .await
            .unwrap();
        let shown = status(browser).await;
        Err(format!("{list:?}; status: {shown}; errors: {errors}"))
    })
    .await;
    // Frames keep being decoded: the media flows, it did not just start.
    eventually("the video to keep flowing", CALL_DEADLINE, async || {
        let list = peers(browser).await;
        let growing = list.len() == count
            && list.iter().all(|p| {
                let before = first
                    .iter()
                    .find(|f| f["peerId"] == p["peerId"])
                    .and_then(|f| f["framesDecoded"].as_u64())
                    .unwrap_or(u64::MAX);
                p["connectionState"] == "connected" && p["framesDecoded"].as_u64() > Some(before)
            });
        if growing {
            return Ok(list);
        }
        Err(format!("{first:?} then {list:?}"))
    })
    .await
}

/// Switchboard with the app, as a real process, on `port` (0: any).
fn switchboard(port: u16, extra: &[(&str, &str)]) -> (Running, String) {
    let mut vars = vec![("AUTH_SECRET", SECRET), ("DRAIN_TIMEOUT", "2s")];
    vars.extend_from_slice(extra);
    let (running, address) = Running::start_on(port, &vars);
    (running, format!("http://{address}"))
}

#[tokio::test]
async fn two_then_three_people_hold_a_call_and_one_leaves() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (_server, base) = switchboard(0, &[]);
    let (_driver, driver) = chromedriver();
    let (alice, bob) = alice_and_bob(&driver, &base, "standup", "").await;
    wait_for_call(&alice, 1).await;
    wait_for_call(&bob, 1).await;

    let carol = browser(&driver).await;
    join(&carol, &base, "standup", "carol", "").await;
    for b in [&alice, &bob, &carol] {
        wait_for_call(b, 2).await;
    }
    // Names on the tiles, not peer ids.
    let captions: Value = alice
        .execute(
            "return [...document.querySelectorAll('figcaption .who')].map((e) => e.textContent)",
            vec![],
        )
        .await
        .unwrap();
    let mut captions: Vec<String> = serde_json::from_value(captions).unwrap();
    captions.sort();
    assert_eq!(captions, ["alice (you)", "bob", "carol"]);
    let png = alice.screenshot().await.unwrap();
    let target = match std::env::var_os("SCREENSHOT_TO_DOCS") {
        Some(_) => std::path::PathBuf::from("docs/call.png"),
        None => std::env::temp_dir().join("switchboard-call.png"),
    };
    std::fs::write(&target, png).unwrap();

    // Carol leaves: the others drop her tile, and their own call stays up.
    carol
        .find(Locator::Css("#leave"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    for (b, other) in [(&alice, "bob-"), (&bob, "alice-")] {
        let left = wait_for_call(b, 1).await;
        assert!(left[0]["peerId"].as_str().unwrap().starts_with(other));
        let tiles: Value = b
            .execute("return document.querySelectorAll('figure').length", vec![])
            .await
            .unwrap();
        assert_eq!(tiles, 2, "own tile and one peer");
    }
    for b in [alice, bob, carol] {
        b.close().await.unwrap();
    }
}

#[tokio::test]
async fn a_restarted_node_does_not_end_the_call() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let port = free_port();
    let (server, base) = switchboard(port, &[]);
    let (_driver, driver) = chromedriver();
    let (alice, bob) = alice_and_bob(&driver, &base, "sturdy", "").await;
    wait_for_call(&alice, 1).await;
    wait_for_call(&bob, 1).await;

    // The node drains (goaway, 1012) and exits; a new process takes its port.
    let logs = server.terminate();
    assert!(logs.iter().any(|l| l.contains("draining")));
    let (_server, _) = switchboard(port, &[]);
    // Both pages reconnect by themselves (nobody reloads), join again, and the call is up.
    for b in [&alice, &bob] {
        eventually("the page to reconnect", CALL_DEADLINE, async || {
            let reconnects = b
                .execute("return window.switchboardCall.reconnects", vec![])
                .await
                .unwrap()
                .as_u64()
                .unwrap();
            if reconnects > 0 {
                return Ok(());
            }
            Err(format!("status: {}", status(b).await))
        })
        .await;
    }
    wait_for_call(&alice, 1).await;
    wait_for_call(&bob, 1).await;
    for b in [alice, bob] {
        b.close().await.unwrap();
    }
}

/// coturn on loopback with `use-auth-secret`; returns it and its port.
fn coturn(secret: &str) -> (Process, u16) {
    let port = free_port();
    let args = [
        "-n".to_string(),
        "--listening-ip=127.0.0.1".into(),
        "--relay-ip=127.0.0.1".into(),
        format!("--listening-port={port}"),
        "--use-auth-secret".into(),
        format!("--static-auth-secret={secret}"),
        "--realm=switchboard.test".into(),
        "--allow-loopback-peers".into(),
        "--no-tls".into(),
        "--no-dtls".into(),
        "--no-cli".into(),
        "--min-port=49152".into(),
        "--max-port=65535".into(),
    ];
    (spawn_listening("turnserver", &args, port), port)
}

/// Two browsers in a relay-only call, and the processes serving it.
struct RelayCall {
    alice: Client,
    bob: Client,
    _processes: (Running, Process, Process),
}

async fn relay_call(turn_secret: &str, coturn_secret: &str) -> RelayCall {
    let (turn, turn_port) = coturn(coturn_secret);
    let turn_url = format!("turn:127.0.0.1:{turn_port}?transport=udp");
    let (server, base) = switchboard(0, &[("TURN_URLS", &turn_url), ("TURN_SECRET", turn_secret)]);
    let (driver_process, driver) = chromedriver();
    let (alice, bob) = alice_and_bob(&driver, &base, "relayed", "&relay=1").await;
    RelayCall {
        alice,
        bob,
        _processes: (server, driver_process, turn),
    }
}

#[tokio::test]
async fn relay_only_calls_go_through_coturn_with_the_issued_credentials() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let call = relay_call("shared-turn-secret", "shared-turn-secret").await;
    for b in [&call.alice, &call.bob] {
        let list = wait_for_call(b, 1).await;
        assert_eq!(list[0]["localCandidateType"], "relay", "{list:?}");
    }
    call.alice.close().await.unwrap();
    call.bob.close().await.unwrap();
}

#[tokio::test]
async fn relay_only_calls_fail_when_the_turn_secret_differs() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let call = relay_call("not-the-turn-secret", "shared-turn-secret").await;
    // coturn refuses the allocation (401): no relay candidate, so no connection.
    for b in [&call.alice, &call.bob] {
        eventually(
            "coturn to refuse the allocation",
            CALL_DEADLINE,
            async || {
                let errors: Value = b
                    .execute("return window.switchboardCall.iceErrors", vec![])
                    .await
                    .unwrap();
                let refused = errors
                    .as_array()
                    .is_some_and(|e| e.iter().any(|e| e["errorCode"] == 401));
                if refused {
                    return Ok(());
                }
                Err(format!("ICE errors {errors}; peers: {:?}", peers(b).await))
            },
        )
        .await;
        let list = peers(b).await;
        assert!(
            list.iter().all(|p| p["connectionState"] != "connected"),
            "{list:?}"
        );
    }
    call.alice.close().await.unwrap();
    call.bob.close().await.unwrap();
}

/// Sends the Chrome DevTools Protocol command `cmd` to the page of `browser` through
/// chromedriver's CDP endpoint (WebDriver itself has no such command); returns its result.
async fn cdp(driver: &str, browser: &Client, cmd: &str, params: Value) -> Value {
    let session = browser.session_id().await.unwrap().expect("a session");
    let response = reqwest::Client::new()
        .post(format!("{driver}/session/{session}/goog/cdp/execute"))
        .json(&json!({ "cmd": cmd, "params": params }))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{cmd}: {body}");
    body["value"].clone()
}

#[tokio::test]
async fn the_app_is_installable() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (_server, base) = switchboard(0, &[]);
    let (_driver, driver) = chromedriver();

    // Every icon the manifest lists is served, with the type the manifest gives it.
    let manifest: Value = reqwest::get(format!("{base}/manifest.webmanifest"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let icons = manifest["icons"].as_array().unwrap();
    assert!(
        icons.iter().any(|i| i["src"] == "/icon-512.png"),
        "{manifest}"
    );
    for icon in icons {
        let response = reqwest::get(format!("{base}{}", icon["src"].as_str().unwrap()))
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{icon}");
        assert_eq!(
            response.headers()["content-type"],
            icon["type"].as_str().unwrap()
        );
    }

    // Chromium's own verdict, as DevTools shows it: 127.0.0.1 counts as a secure origin,
    // and every reason the page could not be installed is listed (no-manifest,
    // manifest-missing-suitable-icon, ...).
    let browser = browser(&driver).await;
    browser.goto(&format!("{base}/")).await.unwrap();
    let verdict = cdp(&driver, &browser, "Page.getInstallabilityErrors", json!({})).await;
    let errors = verdict["installabilityErrors"]
        .as_array()
        .unwrap_or_else(|| panic!("no installabilityErrors in {verdict}"));
    let read = cdp(&driver, &browser, "Page.getAppManifest", json!({})).await;
    assert!(
        errors.is_empty(),
        "not installable: {verdict}; the manifest as Chromium read it: {read}"
    );
    assert_eq!(read["errors"], json!([]), "manifest errors: {read}");
    browser.close().await.unwrap();
}

#[tokio::test]
async fn a_call_fits_a_phone_screen() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (_server, base) = switchboard(0, &[]);
    let (_driver, driver) = chromedriver();
    // Alice holds the call on a phone-sized screen (390 × 844 CSS pixels, touch), Bob on a
    // desktop one.
    let alice = browser(&driver).await;
    let phone = json!({ "width": 390, "height": 844, "deviceScaleFactor": 3, "mobile": true });
    cdp(&driver, &alice, "Emulation.setDeviceMetricsOverride", phone).await;
    let bob = browser(&driver).await;
    join(&alice, &base, "pocket", "alice", "").await;
    join(&bob, &base, "pocket", "bob", "").await;
    wait_for_call(&alice, 1).await;
    wait_for_call(&bob, 1).await;

    // Nothing scrolls sideways; every control and both tiles lie within the screen's width,
    // side by side.
    let layout = alice
        .execute(
            "const box = (e) => { const r = e.getBoundingClientRect();
                 return {left: r.left, right: r.right, top: r.top, width: r.width, height: r.height}; };
             return {
               width: window.innerWidth,
               scrollWidth: document.documentElement.scrollWidth,
               controls: ['#name', '#room', '#join', '#leave', '#mic', '#cam']
                 .map((s) => ({id: s, ...box(document.querySelector(s))})),
               tiles: [...document.querySelectorAll('figure')].map(box),
             };",
            vec![],
        )
        .await
        .unwrap();
    let width = layout["width"].as_f64().unwrap();
    assert_eq!(width, 390.0, "the phone's viewport: {layout}");
    assert!(
        layout["scrollWidth"].as_f64().unwrap() <= width,
        "the page scrolls sideways: {layout}"
    );
    let within = |b: &Value| {
        b["left"].as_f64().unwrap() >= 0.0
            && b["right"].as_f64().unwrap() <= width
            && b["width"].as_f64().unwrap() > 0.0
            && b["height"].as_f64().unwrap() > 0.0
    };
    for control in layout["controls"].as_array().unwrap() {
        assert!(within(control), "off screen or hidden: {control}");
    }
    let tiles = layout["tiles"].as_array().unwrap();
    assert_eq!(tiles.len(), 2, "own tile and Bob's: {layout}");
    for tile in tiles {
        assert!(within(tile), "tile off screen: {layout}");
    }
    let top = |t: &Value| {
        t["top"]
            .as_f64()
            .unwrap_or_else(|| panic!("no top: {layout}"))
    };
    assert_eq!(
        top(&tiles[0]),
        top(&tiles[1]),
        "two tiles side by side on a phone: {layout}"
    );
    for b in [alice, bob] {
        b.close().await.unwrap();
    }
}
