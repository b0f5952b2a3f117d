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
//! cargo build --release -p loadgen
//! L=target/release/loadgen
//! taskset -c 1 $L fanout --transport sse --subscribers 1000 --events 200     # framework, sequential publisher
//! taskset -c 1 $L fanout --transport ws --server baseline --publishers 8     # baseline, bursts
//! taskset -c 1 $L compare --subscribers 10000 --events 80 --rate 8 --serve   # both servers, medians of 3 runs
//! taskset -c 1 $L floor --connections 1000 --events 200 --batch 1            # one write per event
//! taskset -c 1 $L floor --connections 1000 --events 200 --batch 1 --epoll    # the same, sockets in epoll
//! taskset -c 0 $L serve push --hyper                                         # served by hyper-util, flat writes
//! taskset -c 1 $L idle --transport ws --connections 10000                    # memory per idle connection
//! taskset -c 1 $L poll304 --polls 20000                                      # CPU of an empty short poll
//! ```
//!
//! The modes and flags, with their defaults, are in `loadgen --help` and
//! `loadgen <mode> --help` (parsed by clap, see `cli.rs`).

mod cli;
mod clients;
mod measure;
mod run;
mod server;
mod table;

use clap::Parser;
use cli::{Cli, Mode, ServeKind};
use std::process::ExitCode;

/// What a run reads: the command line's flags, typed, with `--url`'s
/// trailing `/` dropped, `--server-core none` as `None` and `--publishers`
/// and `--batch` at least 1. `table` derives each row's from its own.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
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
    /// `compare`: runs of each server, at least 1.
    pub repeat: usize,
    /// `floor --epoll`: the floor's sockets registered with tokio's epoll driver.
    pub epoll: bool,
    /// `serve push --hyper`: served by hyper-util with flat writes, not axum::serve.
    pub hyper: bool,
    /// `serve push --backpressure <ahead>`: paced publishing.
    pub backpressure: Option<u64>,
    /// `--backpressure-wait <ms>`: a paced publish's longest wait.
    pub backpressure_wait_ms: u64,
    /// `serve push --serve`: served by `push_runtime::serve::Server`; the
    /// measuring modes start the server so with `--serve` or `--http2`.
    pub serve: bool,
    /// `--http2 <streams>`: SSE and forever-frame subscribers share h2c
    /// connections, this many streams each (0: HTTP/1.1, one each).
    pub http2: usize,
    pub size: usize,
    pub connections: usize,
    pub batch: usize,
    pub polls: usize,
    pub timeout_s: u64,
    pub history: usize,
}

fn execute(mode: &Mode) -> Result<(), String> {
    let o = mode.flags().options();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    match mode {
        Mode::Serve { kind, .. } => match kind {
            ServeKind::Push => runtime
                .block_on(server::push(&o))
                .map_err(|e| e.to_string()),
            ServeKind::Baseline => runtime
                .block_on(server::baseline(&o.addr))
                .map_err(|e| e.to_string()),
            ServeKind::Floor => {
                server::floor(&o.addr, o.connections, o.events, o.batch, o.size, o.epoll)
                    .map_err(|e| e.to_string())
            }
        },
        Mode::Fanout(_) => runtime.block_on(run::fanout(&o)).map(drop),
        Mode::Compare(_) => runtime.block_on(run::compare(&o)),
        Mode::Floor(_) => runtime.block_on(run::floor(&o)).map(drop),
        Mode::Idle(_) => runtime.block_on(run::idle(&o)).map(drop),
        Mode::Poll304(_) => runtime.block_on(run::poll304(&o)).map(drop),
        Mode::Table(_) => runtime.block_on(table::run(&o)),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match execute(&cli.mode) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("loadgen: {error}");
            ExitCode::FAILURE
        }
    }
}
