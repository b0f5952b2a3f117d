//! Headless Chromium driven over WebDriver (chromedriver started on a free
//! port), and servers for the browser tests.
//!
//! Outside CI the tests skip with a message when Chromium or chromedriver is
//! missing; in CI (`CI` set) they fail.

use fantoccini::{Client, ClientBuilder};
use serde_json::{Value, json};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The longest any single wait may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// One browser at a time: the machine is small and a browser is heavy.
pub static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A program from `$<env>` or the first of `candidates` that exists.
fn program(env: &str, candidates: &[&str]) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(env) {
        return Some(PathBuf::from(path));
    }
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|path| path.exists())
}

/// A headless Chromium session; the driver (and with it the browser) stops when dropped.
pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: TempDir,
}

impl Browser {
    /// Starts chromedriver and a fresh headless Chromium, or `None` (outside
    /// CI) when they are not installed.
    pub async fn start() -> Option<Self> {
        Self::start_with_args(&[]).await
    }

    /// As [`Browser::start`], with more Chromium command-line arguments
    /// (e.g. `--ignore-certificate-errors` for a test's own certificate).
    pub async fn start_with_args(extra: &[&str]) -> Option<Self> {
        let chromium = program(
            "CHROME_BIN",
            &["/usr/bin/chromium", "/usr/bin/chromium-browser"],
        );
        let driver = program("CHROMEDRIVER", &["/usr/bin/chromedriver"]);
        let (Some(chromium), Some(driver)) = (chromium, driver) else {
            let reason =
                "Chromium or chromedriver is missing (apt-get install chromium chromium-driver)";
            assert!(std::env::var_os("CI").is_none(), "{reason}");
            eprintln!("skipping: {reason}");
            return None;
        };
        let port = free_port();
        let driver = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let profile = TempDir::new("chromium-profile");
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1500,1150",
        ]
        .iter()
        .chain(extra)
        .map(|arg| arg.to_string())
        .chain([format!("--user-data-dir={}", profile.0.display())])
        .collect::<Vec<_>>();
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            // Third-party cookies allowed, as in a default desktop profile:
            // the credentials tests send a session cookie to another site.
            json!({
                "binary": chromium,
                "args": args,
                "prefs": { "profile.cookie_controls_mode": 0, "profile.block_third_party_cookies": false }
            }),
        );
        // Do not wait for the load event: a page with a forever frame may not
        // see it for a long time.
        capabilities.insert("pageLoadStrategy".into(), json!("eager"));
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + PATIENCE;
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(capabilities.clone())
                .connect(&url)
                .await
            {
                Ok(client) => break client,
                Err(error) if Instant::now() < deadline => {
                    let _ = error;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => panic!("no WebDriver session from chromedriver: {error}"),
            }
        };
        Some(Self {
            client,
            driver,
            _profile: profile,
        })
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute(script, args)
            .await
            .unwrap_or_else(|error| panic!("script failed: {error}\n{script}"))
    }

    /// Waits until `script` returns something truthy, or fails with `what` and its last value.
    pub async fn wait_for(&self, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let value = match self.client.execute(script, vec![]).await {
                Ok(value) => value,
                Err(error) => json!(format!("script error: {error}")),
            };
            if value
                .as_str()
                .is_some_and(|text| text.starts_with("script error"))
            {
                if Instant::now() > deadline {
                    panic!("timed out waiting for {what}; {value}");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            let truthy = !matches!(&value, Value::Null | Value::Bool(false))
                && value != json!(0)
                && value != json!("");
            if truthy {
                return value;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}; last value {value}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs `scenario`, then ends the session whatever happened.
    pub async fn run<'a, F, Fut>(&'a self, scenario: F)
    where
        F: FnOnce(&'a Browser) -> Fut,
        Fut: Future<Output = ()> + 'a,
    {
        use futures_util::FutureExt;
        let outcome = std::panic::AssertUnwindSafe(scenario(self))
            .catch_unwind()
            .await;
        let _ = self.client.clone().close().await;
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// A directory under target/browser, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let unique = format!("{name}-{}-{:?}", std::process::id(), Instant::now());
        let unique: String = unique
            .chars()
            .map(|ch| {
                if ch.is_ascii_alphanumeric() || ch == '-' {
                    ch
                } else {
                    '_'
                }
            })
            .collect();
        let path = output_dir().join("tmp").join(unique);
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `target/browser`, where screenshots go.
pub fn output_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/browser")
}

/// A loopback listener whose origin is known before its app is built.
pub struct Site {
    pub addr: SocketAddr,
    listener: Option<TcpListener>,
    task: Option<JoinHandle<()>>,
}

impl Site {
    pub async fn bind() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Self {
            addr: listener.local_addr().expect("local addr"),
            listener: Some(listener),
            task: None,
        }
    }

    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin())
    }

    pub fn serve(&mut self, app: axum::Router) {
        let listener = self.listener.take().expect("served once");
        self.task = Some(tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve");
        }));
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// A TCP relay in front of a server, standing for it: [`Relay::kill`] drops
/// the listener and every connection through it at once (a crash, as the
/// client sees it: refused connections, streams cut without a goodbye), and
/// [`Relay::restart`] listens again on the same port. The server behind it
/// keeps running, so its hub keeps its history.
pub struct Relay {
    pub addr: SocketAddr,
    upstream: SocketAddr,
    accept: Option<JoinHandle<()>>,
    connections: std::sync::Arc<std::sync::Mutex<tokio::task::JoinSet<()>>>,
    /// Connections accepted so far.
    pub accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Relay {
    /// Listens on a free loopback port, relaying to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let mut relay = Self {
            addr: listener.local_addr().expect("local addr"),
            upstream,
            accept: None,
            connections: Default::default(),
            accepted: Default::default(),
        };
        relay.listen(listener);
        relay
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn listen(&mut self, listener: TcpListener) {
        let upstream = self.upstream;
        let connections = self.connections.clone();
        let accepted = self.accepted.clone();
        self.accept = Some(tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                connections.lock().expect("connections").spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        }));
    }

    /// Stops listening and cuts every connection; returns once they are gone.
    pub async fn kill(&mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort();
            let _ = accept.await;
        }
        let mut connections = std::mem::take(&mut *self.connections.lock().expect("connections"));
        connections.shutdown().await;
    }

    /// Listens again on the same port (waiting, within [`PATIENCE`], for the
    /// port to be free to bind).
    pub async fn restart(&mut self) {
        let deadline = Instant::now() + PATIENCE;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(error) if Instant::now() < deadline => {
                    let _ = error;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(error) => panic!("rebind {}: {error}", self.addr),
            }
        };
        self.listen(listener);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(accept) = &self.accept {
            accept.abort();
        }
        if let Ok(mut connections) = self.connections.lock() {
            connections.abort_all();
        }
    }
}
