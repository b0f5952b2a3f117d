//! The command line: one subcommand per mode, each taking the same flags
//! (a flag a mode has no use for is accepted and ignored, so any flag can
//! follow any mode), and a flag given twice keeps its last value.

use crate::Options;
use crate::clients::Transport;
use clap::{Args, Parser, Subcommand, ValueEnum};

/// Measures the push framework's server against the physical floor and a
/// no-framework axum baseline, on every transport.
///
/// The measured server always runs as a separate process (`loadgen serve`,
/// pinned with `taskset` when available, or any running server given by
/// `--server external --url … --pid …`), so that its CPU time, write syscalls
/// and memory come from `/proc/<pid>`. Every measuring mode prints a markdown
/// table row and one JSON line, and exits non-zero on any loss, duplicate or
/// reordering.
#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    version,
    arg_required_else_help = true,
    subcommand_value_name = "MODE",
    subcommand_help_heading = "Modes",
    after_help = "Run loadgen on one core and let it pin its servers to another, e.g. \
                  `taskset -c 1 loadgen fanout --transport ws --subscribers 1000 --events 200`. \
                  `loadgen <MODE> --help` lists the flags; the README's \"Performance\" section \
                  has the command of every row of the benchmark."
)]
pub struct Cli {
    #[command(subcommand)]
    pub mode: Mode,
}

/// What to measure (or serve).
#[derive(Debug, Subcommand)]
pub enum Mode {
    /// Subscribers of one topic, events published to them: server CPU per
    /// delivery, latency, loss
    ///
    /// `--subscribers` subscribers of one topic over `--transport`, then
    /// `--events` events published one after the other (`--lockstep`: each
    /// once every subscriber has the last; `--rate`: at that pace) or by
    /// `--publishers` concurrent publishers.
    Fanout(Flags),
    /// The physical floor: CPU per event of plain write()s to loopback sockets
    ///
    /// A writer process (`loadgen serve floor`) does one `write()` of
    /// `--batch` events of `--size` bytes to each of `--connections` sockets
    /// per round, `--events` / `--batch` rounds.
    Floor(Flags),
    /// Server memory per idle connection
    ///
    /// The server's resident memory before and after `--connections`
    /// subscribers over `--transport` connect and sit idle.
    Idle(Flags),
    /// Server CPU of an empty short poll answered 304 Not Modified
    ///
    /// `--polls` short polls, from 4 pollers, each carrying the current ETag.
    #[command(name = "poll304")]
    Poll304(Flags),
    /// Every row of the benchmark table, one after the other, with targets
    ///
    /// The floor, the no-framework baseline and the framework measured in
    /// the same run (about 11 minutes), then the table with each target and
    /// whether it is met. `--subscribers`, `--connections` and `--events` are
    /// ignored: each row sets its own.
    Table(Flags),
    /// Runs a server to measure, printing `listening on <address>` (what the
    /// other modes start)
    Serve {
        /// Which server
        #[arg(value_enum)]
        kind: ServeKind,
        #[command(flatten)]
        flags: Flags,
    },
}

impl Mode {
    /// The flags of any mode.
    pub fn flags(&self) -> &Flags {
        match self {
            Self::Fanout(flags)
            | Self::Floor(flags)
            | Self::Idle(flags)
            | Self::Poll304(flags)
            | Self::Table(flags)
            | Self::Serve { flags, .. } => flags,
        }
    }
}

/// The servers a run measures (`--server`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ServerKind {
    /// the framework with the chat example's channel, started by loadgen
    Push,
    /// a hand-written axum + tokio server with no framework, started by loadgen
    Baseline,
    /// a server already running, at `--url`, with process id `--pid`
    External,
}

impl ServerKind {
    /// The name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Push => "push",
            Self::Baseline => "baseline",
            Self::External => "external",
        }
    }
}

/// The servers `loadgen serve` runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ServeKind {
    /// the framework with the chat example's channel (`--history`, `--hyper`)
    Push,
    /// the no-framework axum + tokio baseline
    Baseline,
    /// the floor's writer: plain sockets, waits for a line on stdin
    /// (`--connections`, `--events` rounds, `--batch`, `--size`, `--epoll`)
    Floor,
}

/// The flags, the same for every mode. A flag given twice keeps its last
/// value; a negative number is taken as the flag's (wrong) value, not as a
/// flag of its own.
#[derive(Clone, Debug, Args)]
#[command(args_override_self = true, allow_negative_numbers = true)]
pub struct Flags {
    /// The server to measure
    #[arg(long, value_enum, default_value_t = ServerKind::Push, help_heading = "Server")]
    pub server: ServerKind,
    /// The external server's base URL, e.g. http://127.0.0.1:3000 (a trailing
    /// `/` is dropped)
    #[arg(long, value_name = "URL", help_heading = "Server")]
    pub url: Option<String>,
    /// The external server's process id (its counters are read from /proc)
    #[arg(long, help_heading = "Server")]
    pub pid: Option<u32>,
    /// The core (a `taskset -c` list) the started server is pinned to, or
    /// `none` not to pin it
    #[arg(
        long,
        value_name = "N|none",
        default_value = "0",
        help_heading = "Server"
    )]
    pub server_core: String,
    /// Events of history of the framework's server (`--server push`, `serve push`)
    #[arg(
        long,
        value_name = "EVENTS",
        default_value_t = 16_384,
        help_heading = "Server"
    )]
    pub history: usize,

    /// The subscribers' transport [fanout, idle]
    #[arg(long, value_enum, default_value_t = Transport::Sse, help_heading = "Load")]
    pub transport: Transport,
    /// Subscribers of the topic [fanout]
    #[arg(long, default_value_t = 100, help_heading = "Load")]
    pub subscribers: usize,
    /// Events published [fanout], or written to each socket [floor]
    #[arg(long, default_value_t = 100, help_heading = "Load")]
    pub events: usize,
    /// Concurrent publishers (0 counts as 1) [fanout]
    #[arg(long, value_name = "K", default_value_t = 1, help_heading = "Load")]
    pub publishers: usize,
    /// Publish at this many events per second instead of as fast as possible [fanout]
    #[arg(long, value_name = "EVENTS_PER_S", help_heading = "Load")]
    pub rate: Option<f64>,
    /// Publish each event once every subscriber has the previous one [fanout]
    #[arg(long, help_heading = "Load")]
    pub lockstep: bool,
    /// Bytes of each event's JSON [fanout, floor]
    #[arg(
        long,
        value_name = "BYTES",
        default_value_t = 100,
        help_heading = "Load"
    )]
    pub size: usize,
    /// Connections [floor, idle]
    #[arg(long, default_value_t = 1000, help_heading = "Load")]
    pub connections: usize,
    /// Events per write() (0 counts as 1) [floor]
    #[arg(
        long,
        value_name = "EVENTS",
        default_value_t = 1,
        help_heading = "Load"
    )]
    pub batch: usize,
    /// The floor's sockets registered with tokio's epoll driver [floor, serve floor]
    #[arg(long, help_heading = "Load")]
    pub epoll: bool,
    /// Empty polls [poll304]
    #[arg(long, default_value_t = 10_000, help_heading = "Load")]
    pub polls: usize,
    /// Seconds to wait for the last deliveries [fanout]
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 60,
        help_heading = "Load"
    )]
    pub timeout: u64,

    /// The address to listen on [serve]
    #[arg(long, default_value = "127.0.0.1:0", help_heading = "Serve")]
    pub addr: String,
    /// Served by hyper-util with flat writes, not axum::serve [serve push]
    #[arg(long, help_heading = "Serve")]
    pub hyper: bool,
}

impl Flags {
    /// What the runs read.
    pub fn options(&self) -> Options {
        Options {
            server: self.server.name().to_owned(),
            url: self
                .url
                .as_deref()
                .map(|url| url.trim_end_matches('/').to_owned()),
            pid: self.pid,
            server_core: (self.server_core != "none").then(|| self.server_core.clone()),
            addr: self.addr.clone(),
            transport: self.transport,
            subscribers: self.subscribers,
            events: self.events,
            publishers: self.publishers.max(1),
            rate: self.rate,
            lockstep: self.lockstep,
            epoll: self.epoll,
            hyper: self.hyper,
            size: self.size,
            connections: self.connections,
            batch: self.batch.max(1),
            polls: self.polls,
            timeout_s: self.timeout,
            history: self.history,
        }
    }
}
