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
    /// The same fan-out against the no-framework baseline and the framework,
    /// alternately, `--repeat` times each: medians and ratios
    ///
    /// Every flag of `fanout` applies to both servers (`--serve`: the
    /// framework served by `push_runtime::serve::Server`). Prints each run's
    /// row, then per server the median of each figure over its runs, and the
    /// framework's medians as a multiple of the baseline's.
    Compare(Flags),
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
    /// the same run (about 13 minutes), then the table with each target and
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
            | Self::Compare(flags)
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

    /// fanout, idle: the subscribers' transport
    #[arg(long, value_enum, default_value_t = Transport::Sse, help_heading = "Load")]
    pub transport: Transport,
    /// fanout: subscribers of the topic
    #[arg(long, default_value_t = 100, help_heading = "Load")]
    pub subscribers: usize,
    /// fanout: events published; floor: events written to each socket
    #[arg(long, default_value_t = 100, help_heading = "Load")]
    pub events: usize,
    /// fanout: concurrent publishers, 0 counting as 1
    #[arg(long, value_name = "K", default_value_t = 1, help_heading = "Load")]
    pub publishers: usize,
    /// fanout: publish at this many events per second instead of as fast as possible
    #[arg(long, value_name = "EVENTS_PER_S", help_heading = "Load")]
    pub rate: Option<f64>,
    /// fanout: publish each event once every subscriber has the previous one
    #[arg(long, help_heading = "Load")]
    pub lockstep: bool,
    /// compare: runs of each server
    #[arg(long, value_name = "RUNS", default_value_t = 3, help_heading = "Load")]
    pub repeat: usize,
    /// fanout, floor: bytes of each event's JSON
    #[arg(
        long,
        value_name = "BYTES",
        default_value_t = 100,
        help_heading = "Load"
    )]
    pub size: usize,
    /// floor, idle: connections
    #[arg(long, default_value_t = 1000, help_heading = "Load")]
    pub connections: usize,
    /// floor: events per write(), 0 counting as 1
    #[arg(
        long,
        value_name = "EVENTS",
        default_value_t = 1,
        help_heading = "Load"
    )]
    pub batch: usize,
    /// floor, serve floor: the floor's sockets registered with tokio's epoll driver
    #[arg(long, help_heading = "Load")]
    pub epoll: bool,
    /// poll304: empty polls
    #[arg(long, default_value_t = 10_000, help_heading = "Load")]
    pub polls: usize,
    /// fanout: seconds to wait for the last deliveries
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 60,
        help_heading = "Load"
    )]
    pub timeout: u64,

    /// serve: the address to listen on
    #[arg(long, default_value = "127.0.0.1:0", help_heading = "Serve")]
    pub addr: String,
    /// serve push: served by hyper-util with flat writes, not axum::serve
    #[arg(long, help_heading = "Serve")]
    pub hyper: bool,
    /// serve push (and the push server fanout and compare start): paced
    /// publishing (`HubConfig::backpressure`), a publish completing once
    /// the event this many events back was taken by every subscriber that
    /// keeps up
    #[arg(long, value_name = "AHEAD", help_heading = "Serve")]
    pub backpressure: Option<u64>,
    /// serve push: the longest a paced publish waits, in milliseconds
    #[arg(long, value_name = "MS", default_value_t = 250, help_heading = "Serve")]
    pub backpressure_wait: u64,
    /// serve push: served by push_runtime::serve::Server (HTTP/1.1 and h2c
    /// on one port); fanout, idle: the started push server is served so
    #[arg(long, help_heading = "Serve")]
    pub serve: bool,
    /// fanout, idle (sse, iframe): subscribers share HTTP/2 (h2c)
    /// connections, this many streams on each, and the push server is
    /// started with --serve; 0: one HTTP/1.1 connection per subscriber
    #[arg(
        long,
        value_name = "STREAMS",
        default_value_t = 0,
        help_heading = "Load"
    )]
    pub http2: usize,
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
            repeat: self.repeat.max(1),
            epoll: self.epoll,
            hyper: self.hyper,
            backpressure: self.backpressure,
            backpressure_wait_ms: self.backpressure_wait,
            serve: self.serve,
            http2: self.http2,
            size: self.size,
            connections: self.connections,
            batch: self.batch.max(1),
            polls: self.polls,
            timeout_s: self.timeout,
            history: self.history,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use clap::error::ErrorKind;

    /// What the hand-written parser this replaced gave with no flags.
    fn defaults() -> Options {
        Options {
            server: "push".into(),
            url: None,
            pid: None,
            server_core: Some("0".into()),
            addr: "127.0.0.1:0".into(),
            transport: Transport::Sse,
            subscribers: 100,
            events: 100,
            publishers: 1,
            rate: None,
            lockstep: false,
            repeat: 3,
            epoll: false,
            hyper: false,
            backpressure: None,
            backpressure_wait_ms: 250,
            serve: false,
            http2: 0,
            size: 100,
            connections: 1000,
            batch: 1,
            polls: 10_000,
            timeout_s: 60,
            history: 16_384,
        }
    }

    fn parse(line: &str) -> Result<Mode, clap::Error> {
        Cli::try_parse_from(std::iter::once("loadgen").chain(line.split_whitespace()))
            .map(|cli| cli.mode)
    }

    /// The options of `line`, which must parse as a mode of the name `mode`.
    fn options(mode: &str, line: &str) -> Options {
        let parsed = parse(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        let name = match &parsed {
            Mode::Fanout(_) => "fanout",
            Mode::Compare(_) => "compare",
            Mode::Floor(_) => "floor",
            Mode::Idle(_) => "idle",
            Mode::Poll304(_) => "poll304",
            Mode::Table(_) => "table",
            Mode::Serve { kind, .. } => match kind {
                ServeKind::Push => "serve push",
                ServeKind::Baseline => "serve baseline",
                ServeKind::Floor => "serve floor",
            },
        };
        assert_eq!(name, mode, "{line}");
        parsed.flags().options()
    }

    #[test]
    fn the_command_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_mode_alone_has_the_defaults() {
        for mode in [
            "fanout",
            "compare",
            "floor",
            "idle",
            "poll304",
            "table",
            "serve push",
            "serve baseline",
            "serve floor",
        ] {
            assert_eq!(options(mode, mode), defaults(), "{mode}");
        }
    }

    #[test]
    fn value_names_are_the_report_names() {
        for transport in Transport::value_variants() {
            let value = transport.to_possible_value().unwrap();
            assert_eq!(value.get_name(), transport.name());
        }
        for server in ServerKind::value_variants() {
            let value = server.to_possible_value().unwrap();
            assert_eq!(value.get_name(), server.name());
        }
    }

    /// `.ci/smoke-loadgen`: its `run` appends `--server-core none --timeout 20`.
    #[test]
    fn smoke_loadgen_command_lines() {
        let smoke = Options {
            server_core: None,
            timeout_s: 20,
            ..defaults()
        };
        for (name, transport) in [
            ("sse", Transport::Sse),
            ("ws", Transport::Ws),
            ("poll", Transport::Poll),
            ("long-poll", Transport::LongPoll),
            ("iframe", Transport::Iframe),
        ] {
            let line = format!(
                "fanout --transport {name} --subscribers 4 --events 20 --server-core none --timeout 20"
            );
            let expected = Options {
                transport,
                subscribers: 4,
                events: 20,
                ..smoke.clone()
            };
            assert_eq!(options("fanout", &line), expected);
            let line = format!(
                "fanout --transport {name} --subscribers 4 --events 40 --publishers 4 --server-core none --timeout 20"
            );
            let expected = Options {
                transport,
                subscribers: 4,
                events: 40,
                publishers: 4,
                ..smoke.clone()
            };
            assert_eq!(options("fanout", &line), expected);
            let line = format!(
                "fanout --server baseline --transport {name} --subscribers 4 --events 20 --server-core none --timeout 20"
            );
            let expected = Options {
                server: "baseline".into(),
                transport,
                subscribers: 4,
                events: 20,
                ..smoke.clone()
            };
            assert_eq!(options("fanout", &line), expected);
        }
        assert_eq!(
            options(
                "floor",
                "floor --connections 8 --events 20 --batch 4 --server-core none --timeout 20"
            ),
            Options {
                connections: 8,
                events: 20,
                batch: 4,
                ..smoke.clone()
            }
        );
        for (name, transport) in [("sse", Transport::Sse), ("long-poll", Transport::LongPoll)] {
            let line =
                format!("idle --transport {name} --connections 20 --server-core none --timeout 20");
            let expected = Options {
                transport,
                connections: 20,
                ..smoke.clone()
            };
            assert_eq!(options("idle", &line), expected);
        }
        assert_eq!(
            options(
                "poll304",
                "poll304 --polls 200 --server-core none --timeout 20"
            ),
            Options {
                polls: 200,
                ..smoke.clone()
            }
        );
        assert_eq!(
            options(
                "poll304",
                "poll304 --server baseline --polls 200 --server-core none --timeout 20"
            ),
            Options {
                server: "baseline".into(),
                polls: 200,
                ..smoke.clone()
            }
        );
        assert_eq!(
            options(
                "fanout",
                "fanout --server external --url http://127.0.0.1:41234 --pid 4321 --transport ws --subscribers 4 --events 20 --server-core none --timeout 20"
            ),
            Options {
                server: "external".into(),
                url: Some("http://127.0.0.1:41234".into()),
                pid: Some(4321),
                transport: Transport::Ws,
                subscribers: 4,
                events: 20,
                ..smoke
            }
        );
    }

    /// `.ci/callgrind-delivery`, with and without `SERVER=…`.
    #[test]
    fn callgrind_delivery_command_lines() {
        assert_eq!(options("serve push", "serve push"), defaults());
        assert_eq!(options("serve baseline", "serve baseline"), defaults());
        assert_eq!(
            options("serve push", "serve push --hyper"),
            Options {
                hyper: true,
                ..defaults()
            }
        );
        assert_eq!(
            options("serve push", "serve push --serve"),
            Options {
                serve: true,
                ..defaults()
            }
        );
        assert_eq!(
            options(
                "idle",
                "idle --transport sse --connections 10000 --http2 250"
            ),
            Options {
                transport: Transport::Sse,
                connections: 10_000,
                http2: 250,
                ..defaults()
            }
        );
        let external = Options {
            server: "external".into(),
            url: Some("http://127.0.0.1:40000".into()),
            pid: Some(777),
            ..defaults()
        };
        assert_eq!(
            options(
                "poll304",
                "poll304 --server external --url http://127.0.0.1:40000 --pid 777 --polls 4000"
            ),
            Options {
                polls: 4000,
                ..external.clone()
            }
        );
        assert_eq!(
            options(
                "fanout",
                "fanout --server external --url http://127.0.0.1:40000 --pid 777 --transport long-poll --subscribers 200 --events 100 --lockstep --timeout 300"
            ),
            Options {
                transport: Transport::LongPoll,
                subscribers: 200,
                events: 100,
                lockstep: true,
                timeout_s: 300,
                ..external
            }
        );
    }

    /// What `run.rs` gives the server processes it starts.
    #[test]
    fn spawned_server_command_lines() {
        assert_eq!(
            options(
                "serve push",
                "serve push --history 16384 --addr 127.0.0.7:0"
            ),
            Options {
                addr: "127.0.0.7:0".into(),
                ..defaults()
            }
        );
        assert_eq!(
            options("serve baseline", "serve baseline --addr 127.0.0.8:0"),
            Options {
                addr: "127.0.0.8:0".into(),
                ..defaults()
            }
        );
        assert_eq!(
            options(
                "serve floor",
                "serve floor --connections 8 --events 5 --batch 4 --size 100 --epoll --addr 127.0.0.9:0"
            ),
            Options {
                connections: 8,
                events: 5,
                batch: 4,
                epoll: true,
                addr: "127.0.0.9:0".into(),
                ..defaults()
            }
        );
    }

    /// The README's commands (and the ones at the top of main.rs).
    #[test]
    fn readme_command_lines() {
        let fanout = |subscribers, events| Options {
            subscribers,
            events,
            ..defaults()
        };
        assert_eq!(
            options("fanout", "fanout --subscribers 1000 --events 200"),
            fanout(1000, 200)
        );
        for batch in [1, 4, 8] {
            let floor = Options {
                connections: 1000,
                events: 200,
                batch,
                ..defaults()
            };
            let line = format!("floor --connections 1000 --events 200 --batch {batch}");
            assert_eq!(options("floor", &line), floor);
            assert_eq!(
                options("floor", &format!("{line} --epoll")),
                Options {
                    epoll: true,
                    ..floor
                }
            );
        }
        assert_eq!(
            options(
                "fanout",
                "fanout --transport sse --subscribers 1000 --events 200"
            ),
            fanout(1000, 200)
        );
        assert_eq!(
            options(
                "fanout",
                "fanout --transport ws --subscribers 1000 --events 200 --server baseline --lockstep"
            ),
            Options {
                transport: Transport::Ws,
                server: "baseline".into(),
                lockstep: true,
                ..fanout(1000, 200)
            }
        );
        assert_eq!(
            options(
                "fanout",
                "fanout --transport sse --subscribers 1000 --events 1000 --publishers 8"
            ),
            Options {
                publishers: 8,
                ..fanout(1000, 1000)
            }
        );
        assert_eq!(
            options(
                "fanout",
                "fanout --transport sse --subscribers 10000 --events 50 --timeout 120"
            ),
            Options {
                timeout_s: 120,
                ..fanout(10_000, 50)
            }
        );
        assert_eq!(
            options(
                "fanout",
                "fanout --transport sse --subscribers 1000 --events 250 --rate 50"
            ),
            Options {
                rate: Some(50.0),
                ..fanout(1000, 250)
            }
        );
        for (name, transport) in [
            ("sse", Transport::Sse),
            ("ws", Transport::Ws),
            ("long-poll", Transport::LongPoll),
        ] {
            let line = format!("idle --transport {name} --connections 10000");
            let expected = Options {
                transport,
                connections: 10_000,
                ..defaults()
            };
            assert_eq!(options("idle", &line), expected);
        }
        assert_eq!(
            options(
                "fanout",
                "fanout --transport long-poll --subscribers 1000 --events 200 --rate 50 --server baseline"
            ),
            Options {
                transport: Transport::LongPoll,
                rate: Some(50.0),
                server: "baseline".into(),
                ..fanout(1000, 200)
            }
        );
        assert_eq!(
            options("poll304", "poll304 --polls 20000 --server baseline"),
            Options {
                polls: 20_000,
                server: "baseline".into(),
                ..defaults()
            }
        );
        assert_eq!(
            options(
                "compare",
                "compare --transport ws --subscribers 10000 --events 80 --rate 8 --serve --repeat 5 --timeout 120"
            ),
            Options {
                transport: Transport::Ws,
                rate: Some(8.0),
                serve: true,
                repeat: 5,
                timeout_s: 120,
                ..fanout(10_000, 80)
            }
        );
        assert_eq!(
            options(
                "fanout",
                "fanout --subscribers 10000 --events 100 --serve --backpressure 0 --backpressure-wait 100"
            ),
            Options {
                serve: true,
                backpressure: Some(0),
                backpressure_wait_ms: 100,
                ..fanout(10_000, 100)
            }
        );
        assert_eq!(options("table", "table"), defaults());
        assert_eq!(
            options(
                "fanout",
                "fanout --transport ws --server baseline --publishers 8"
            ),
            Options {
                transport: Transport::Ws,
                server: "baseline".into(),
                publishers: 8,
                ..defaults()
            }
        );
        // `--url` loses its trailing `/`.
        assert_eq!(
            options(
                "fanout",
                "fanout --server external --url http://127.0.0.1:3000/ --pid 12"
            ),
            Options {
                server: "external".into(),
                url: Some("http://127.0.0.1:3000".into()),
                pid: Some(12),
                ..defaults()
            }
        );
    }

    /// As with the hand-written parser: a flag given twice keeps its last
    /// value, and `--publishers 0` and `--batch 0` count as 1.
    #[test]
    fn repeated_flags_and_zeros() {
        assert_eq!(
            options(
                "fanout",
                "fanout --events 5 --lockstep --events 6 --lockstep --server-core 1 --server-core none"
            ),
            Options {
                events: 6,
                lockstep: true,
                server_core: None,
                ..defaults()
            }
        );
        assert_eq!(
            options(
                "serve push",
                "serve push --history 8 --history 9 --hyper --hyper"
            ),
            Options {
                history: 9,
                hyper: true,
                ..defaults()
            }
        );
        assert_eq!(
            options("floor", "floor --publishers 0 --batch 0"),
            defaults()
        );
    }

    #[test]
    fn a_bad_value_is_refused_with_the_flag_named() {
        for (line, flag) in [
            ("fanout --transport foo", "--transport"),
            ("fanout --subscribers x", "--subscribers"),
            ("idle --connections -1", "--connections"),
            ("fanout --rate fast", "--rate"),
            ("poll304 --pid nine", "--pid"),
            ("fanout --server remote", "--server"),
            ("table --timeout 1.5", "--timeout"),
        ] {
            let error = parse(line).expect_err(line);
            assert!(
                matches!(
                    error.kind(),
                    ErrorKind::InvalidValue
                        | ErrorKind::ValueValidation
                        | ErrorKind::UnknownArgument
                ),
                "{line}: {error}"
            );
            assert!(error.to_string().contains(flag), "{line}: {error}");
        }
        let error = parse("serve nope").expect_err("serve nope");
        assert_eq!(error.kind(), ErrorKind::InvalidValue);
        assert!(
            error.to_string().contains("push, baseline, floor"),
            "{error}"
        );
        let error = parse("fanout --bogus 1").expect_err("--bogus");
        assert_eq!(error.kind(), ErrorKind::UnknownArgument);
        assert!(error.to_string().contains("--bogus"), "{error}");
        assert!(parse("").is_err());
        assert!(parse("stress").is_err());
    }
}
