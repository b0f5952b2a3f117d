//! The load generator: measures the framework's server against the physical
//! floor and a no-framework axum baseline, on every transport.
//!
//! The measured server always runs as a separate process (this binary in
//! `serve` mode, pinned with `taskset` when available, or any running server
//! given by `--url` and `--pid`), so that its CPU time, write syscalls and
//! memory come from `/proc/<pid>`. Every mode prints a markdown table row and
//! one JSON line. See the README's "Performance" section for the commands that
//! reproduce the issue's table.
//!
//! ```text
//! cargo build --release --example loadgen
//! L=target/release/examples/loadgen
//! taskset -c 1 $L fanout --transport sse --subscribers 1000 --events 200     # framework, sequential publisher
//! taskset -c 1 $L fanout --transport ws --server baseline --publishers 8     # baseline, bursts
//! taskset -c 1 $L floor --connections 1000 --events 200 --batch 1            # one write per event
//! taskset -c 1 $L floor --connections 1000 --events 200 --batch 1 --epoll    # the same, sockets in epoll
//! taskset -c 0 $L serve push --hyper                                         # served by hyper-util, flat writes
//! taskset -c 1 $L idle --transport ws --connections 10000                    # memory per idle connection
//! taskset -c 1 $L poll304 --polls 20000                                      # CPU of an empty short poll
//! ```
//!
//! Options (defaults in brackets): `--server push|baseline|external` [push],
//! `--url` and `--pid` (external server), `--server-core N|none` [0],
//! `--transport sse|ws|poll|long-poll|iframe` [sse], `--subscribers` [100],
//! `--events` [100], `--publishers K` [1], `--rate` (events/s, one publisher),
//! `--lockstep` (publish the next event once every subscriber has the last),
//! `--size` (event JSON bytes) [100], `--connections` [1000], `--batch` [1],
//! `--polls` [10000], `--timeout` (seconds to wait for deliveries) [60].

mod clients;
mod measure;
mod run;
mod server;
mod table;

use std::process::ExitCode;

/// The command line, parsed.
#[derive(Clone, Debug)]
pub struct Options {
    pub mode: String,
    pub serve_kind: String,
    pub server: String,
    pub url: Option<String>,
    pub pid: Option<u32>,
    pub server_core: Option<String>,
    pub addr: String,
    pub transport: clients::Transport,
    pub subscribers: usize,
    pub events: usize,
    pub publishers: usize,
    pub rate: Option<f64>,
    pub lockstep: bool,
    /// `floor --epoll`: the floor's sockets registered with tokio's epoll driver.
    pub epoll: bool,
    /// `serve push --hyper`: served by hyper-util with flat writes, not axum::serve.
    pub hyper: bool,
    pub size: usize,
    pub connections: usize,
    pub batch: usize,
    pub polls: usize,
    pub timeout_s: u64,
    pub history: usize,
}

fn options() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let mode = args
        .next()
        .ok_or("usage: loadgen fanout|floor|idle|poll304|serve … (see the source's docs)")?;
    let mut o = Options {
        serve_kind: String::new(),
        mode,
        server: "push".into(),
        url: None,
        pid: None,
        server_core: Some("0".into()),
        addr: "127.0.0.1:0".into(),
        transport: clients::Transport::Sse,
        subscribers: 100,
        events: 100,
        publishers: 1,
        rate: None,
        lockstep: false,
        epoll: false,
        hyper: false,
        size: 100,
        connections: 1000,
        batch: 1,
        polls: 10_000,
        timeout_s: 60,
        history: 16_384,
    };
    if o.mode == "serve" {
        o.serve_kind = args.next().ok_or("serve push|baseline|floor")?;
    }
    while let Some(flag) = args.next() {
        if flag == "--lockstep" {
            o.lockstep = true;
            continue;
        }
        if flag == "--epoll" {
            o.epoll = true;
            continue;
        }
        if flag == "--hyper" {
            o.hyper = true;
            continue;
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || value.parse::<usize>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--server" => o.server = value,
            "--url" => o.url = Some(value.trim_end_matches('/').to_owned()),
            "--pid" => o.pid = Some(number()? as u32),
            "--server-core" => o.server_core = (value != "none").then_some(value),
            "--addr" => o.addr = value,
            "--transport" => {
                o.transport = clients::Transport::parse(&value).ok_or_else(|| {
                    format!("unknown transport {value}: sse|ws|poll|long-poll|iframe")
                })?
            }
            "--subscribers" => o.subscribers = number()?,
            "--events" => o.events = number()?,
            "--publishers" => o.publishers = number()?.max(1),
            "--rate" => o.rate = Some(value.parse().map_err(|e| format!("--rate: {e}"))?),
            "--size" => o.size = number()?,
            "--connections" => o.connections = number()?,
            "--batch" => o.batch = number()?.max(1),
            "--polls" => o.polls = number()?,
            "--timeout" => o.timeout_s = number()? as u64,
            "--history" => o.history = number()?,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok(o)
}

fn main() -> ExitCode {
    let result = options().and_then(|o| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        match o.mode.as_str() {
            "serve" => match o.serve_kind.as_str() {
                "push" => runtime
                    .block_on(server::push(&o.addr, o.history, o.hyper))
                    .map_err(|e| e.to_string()),
                "baseline" => runtime
                    .block_on(server::baseline(&o.addr))
                    .map_err(|e| e.to_string()),
                "floor" => {
                    server::floor(&o.addr, o.connections, o.events, o.batch, o.size, o.epoll)
                        .map_err(|e| e.to_string())
                }
                other => Err(format!("unknown server {other}: push|baseline|floor")),
            },
            "fanout" => runtime.block_on(run::fanout(&o)).map(drop),
            "floor" => runtime.block_on(run::floor(&o)).map(drop),
            "idle" => runtime.block_on(run::idle(&o)).map(drop),
            "poll304" => runtime.block_on(run::poll304(&o)).map(drop),
            "table" => runtime.block_on(table::run(&o)),
            other => Err(format!(
                "unknown mode {other}: fanout|floor|idle|poll304|table|serve"
            )),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("loadgen: {error}");
            ExitCode::FAILURE
        }
    }
}
