//! The fault-injection harness: proves that across several nodes sharing one
//! Redis, nothing published is lost silently, whatever fails.
//!
//! ```text
//! cargo build -p faults
//! target/debug/faults run --seed 1 --duration 60s --faults node-kill,client-cut
//! target/debug/faults node --redis redis://127.0.0.1:6380 --prefix p   # one node, by hand
//! ```
//!
//! `faults node` is one node of the service (a hub over the Redis broker);
//! `faults run` starts its own Redis and nodes (this binary in `node` mode),
//! puts TCP proxies in front of them, runs clients on every transport and
//! publishers, injects faults on a seeded schedule, and checks what every
//! client received against what every publisher was told.

mod node;
mod probe;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(name = "faults", about = "Fault-injection harness of the push framework")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// One node: a hub over a Redis broker serving the probe channel on
    /// every transport and `POST /probe/{topic}`; prints `listening on
    /// http://ADDR` and runs until killed.
    Node {
        /// The Redis to use, e.g. redis://127.0.0.1:6380.
        #[arg(long)]
        redis: String,
        /// The key prefix of the broker.
        #[arg(long, default_value = "faults")]
        prefix: String,
        /// The address to listen on.
        #[arg(long, default_value = "127.0.0.1:0")]
        addr: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("faults: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.mode {
        Mode::Node {
            redis,
            prefix,
            addr,
        } => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "info".into()),
                )
                .with_writer(std::io::stderr)
                .init();
            runtime.block_on(node::run(&redis, &prefix, &addr))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("faults: {error}");
            ExitCode::FAILURE
        }
    }
}
