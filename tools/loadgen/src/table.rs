//! `loadgen table`: every row of the performance issue's table in one run
//! (the floor, the no-framework baseline and this framework measured one
//! after the other, so their ratios come from the same minutes of the same
//! machine), then the table with each target and whether it is met.
//!
//! Run it as `taskset -c 1 loadgen table` (servers are pinned to core 0).
//! `--subscribers`, `--connections` and `--events` are ignored: each row sets
//! its own. The sparse rows (10,000 subscribers at 8 events/s) serve the
//! framework with `push_runtime::serve::Server`; the others as `serve push`
//! does by default.

use crate::Options;
use crate::clients::Transport;
use crate::measure::Report;
use crate::run;

/// One measured figure, or why there is none.
type Figure = Option<f64>;

struct Row {
    workload: String,
    floor: Figure,
    baseline: Figure,
    push: Figure,
    unit: &'static str,
    /// The target, as an upper bound (absolute, or a multiple of the floor).
    target: Target,
}

enum Target {
    /// A reference row: no target of its own.
    None,
    AtMost(f64),
    TimesFloor(f64),
    /// At most this multiple of the baseline's figure in the same run.
    TimesBaseline(f64),
}

impl Row {
    fn bound(&self) -> Option<f64> {
        match self.target {
            Target::None => None,
            Target::AtMost(bound) => Some(bound),
            Target::TimesFloor(ratio) => self.floor.map(|floor| floor * ratio),
            Target::TimesBaseline(ratio) => self.baseline.map(|baseline| baseline * ratio),
        }
    }

    fn met(&self) -> &'static str {
        match (self.push, self.bound()) {
            (Some(push), Some(bound)) if push <= bound => "yes",
            (Some(_), Some(_)) => "no",
            _ => "–",
        }
    }

    fn cells(&self) -> [String; 6] {
        let show =
            |figure: Figure| figure.map_or("–".to_owned(), |v| format!("{v} {}", self.unit));
        let target = match self.target {
            Target::None => "–".to_owned(),
            Target::AtMost(bound) => format!("≤ {bound} {}", self.unit),
            Target::TimesFloor(ratio) => format!("≤ {ratio}× floor"),
            Target::TimesBaseline(ratio) => format!("≤ {ratio}× baseline"),
        };
        let push = match (self.push, self.floor, self.baseline, &self.target) {
            (Some(push), Some(floor), _, _) if floor > 0.0 => {
                format!("{} ({:.2}× floor)", show(Some(push)), push / floor)
            }
            (Some(push), _, Some(baseline), Target::TimesBaseline(_)) if baseline > 0.0 => {
                format!("{} ({:.2}× baseline)", show(Some(push)), push / baseline)
            }
            _ => show(self.push),
        };
        [
            self.workload.clone(),
            show(self.floor),
            show(self.baseline),
            push,
            target,
            self.met().to_owned(),
        ]
    }
}

fn with(o: &Options, server: &str, transport: Transport) -> Options {
    let mut o = o.clone();
    o.server = server.to_owned();
    o.transport = transport;
    o.lockstep = false;
    o.rate = None;
    o.publishers = 1;
    o
}

async fn fanout(o: Options, column: &str) -> Result<Report, String> {
    eprintln!("loadgen table: {column}");
    run::fanout(&o).await
}

/// Server CPU per delivery of a fan-out.
async fn cpu(o: Options) -> Result<Figure, String> {
    let label = format!("{} {} fanout", o.server, o.transport.name());
    Ok(fanout(o, &label)
        .await?
        .number("server_cpu_us_per_delivery"))
}

async fn p99(o: Options) -> Result<Figure, String> {
    let label = format!("{} {} latency", o.server, o.transport.name());
    Ok(fanout(o, &label).await?.number("p99_ms"))
}

async fn floor(o: &Options, batch: usize) -> Result<Figure, String> {
    let mut o = o.clone();
    (o.connections, o.events, o.batch) = (1000, 200 * batch, batch);
    eprintln!("loadgen table: floor, {batch} per write");
    Ok(run::floor(&o).await?.number("server_cpu_us_per_delivery"))
}

async fn idle(o: Options) -> Result<Figure, String> {
    eprintln!("loadgen table: {} {} idle", o.server, o.transport.name());
    Ok(run::idle(&o).await?.number("kib_per_connection"))
}

async fn empty_poll(o: Options) -> Result<Figure, String> {
    eprintln!("loadgen table: {} 304 polls", o.server);
    Ok(run::poll304(&o).await?.number("server_cpu_us_per_poll"))
}

/// The baseline, then the framework, on the workload `make` describes.
async fn both<M, F>(make: impl Fn(&str) -> Options, measure: M) -> Result<(Figure, Figure), String>
where
    M: Fn(Options) -> F,
    F: Future<Output = Result<Figure, String>>,
{
    Ok((
        measure(make("baseline")).await?,
        measure(make("push")).await?,
    ))
}

impl Row {
    fn new(
        workload: impl Into<String>,
        floor: Figure,
        (baseline, push): (Figure, Figure),
        unit: &'static str,
        target: Target,
    ) -> Self {
        Self {
            workload: workload.into(),
            floor,
            baseline,
            push,
            unit,
            target,
        }
    }
}

pub async fn run(base: &Options) -> Result<(), String> {
    let mut rows = Vec::new();
    for transport in [Transport::Sse, Transport::Ws] {
        let name = transport.name().to_uppercase();
        let one = |server: &str| {
            let mut o = with(base, server, transport);
            (o.subscribers, o.events) = (1000, 200);
            o
        };
        rows.push(Row::new(
            format!("1,000 subscribers, events as fast as possible, {name}: CPU per delivery"),
            None,
            both(one, cpu).await?,
            "µs",
            Target::None,
        ));
        let lockstep = |server: &str| {
            let mut o = one(server);
            o.lockstep = true;
            o
        };
        rows.push(Row::new(
            format!("1,000 subscribers, one event per wakeup (lockstep), {name}: CPU per delivery"),
            floor(base, 1).await?,
            both(lockstep, cpu).await?,
            "µs",
            Target::TimesFloor(1.1),
        ));
        let bursts = |server: &str| {
            let mut o = one(server);
            (o.events, o.publishers) = (1000, 8);
            o
        };
        rows.push(Row::new(
            format!("1,000 subscribers, 8 concurrent publishers, {name}: CPU per delivery"),
            floor(base, 8).await?,
            both(bursts, cpu).await?,
            "µs",
            Target::AtMost(0.8),
        ));
        let wide = |server: &str| {
            let mut o = with(base, server, transport);
            (o.subscribers, o.events, o.timeout_s) = (10_000, 20, 120);
            o
        };
        rows.push(Row::new(
            format!("10,000 subscribers, 20 events as fast as possible, {name}: p99 latency"),
            None,
            both(wide, p99).await?,
            "ms",
            Target::AtMost(50.0),
        ));
        let paced = |server: &str| {
            let mut o = one(server);
            (o.events, o.rate) = (250, Some(50.0));
            o
        };
        let (baseline, push) = both(paced, p99).await?;
        rows.push(Row::new(
            format!("1,000 subscribers at 50 events/s, {name}: p99 latency"),
            None,
            (baseline, push),
            "ms",
            Target::AtMost(6.0),
        ));
        if transport == Transport::Ws {
            rows.push(Row::new(
                "1,000 subscribers at 50 events/s, WS: p99 latency against the baseline",
                None,
                (baseline, push),
                "ms",
                Target::TimesBaseline(0.8),
            ));
        }
        // Sparse events to many (each written alone): one run per server
        // gives the p99 and CPU rows. The framework served by
        // `push_runtime::serve::Server`.
        let sparse = |server: &str| {
            let mut o = with(base, server, transport);
            (o.subscribers, o.events, o.rate, o.timeout_s) = (10_000, 80, Some(8.0), 120);
            o.serve = true;
            o
        };
        let label = format!("{} sparse", transport.name());
        let baseline = fanout(sparse("baseline"), &format!("baseline {label}")).await?;
        let push = fanout(sparse("push"), &format!("push {label}")).await?;
        let figures = |key: &str| (baseline.number(key), push.number(key));
        rows.push(Row::new(
            format!("10,000 subscribers at 8 events/s, {name}: p99 latency"),
            None,
            figures("p99_ms"),
            "ms",
            Target::TimesBaseline(if transport == Transport::Ws { 0.5 } else { 0.6 }),
        ));
        rows.push(Row::new(
            format!("10,000 subscribers at 8 events/s, {name}: CPU per delivery"),
            None,
            figures("server_cpu_us_per_delivery"),
            "µs",
            Target::TimesBaseline(0.9),
        ));
        let quiet = |server: &str| {
            let mut o = with(base, server, transport);
            o.connections = 10_000;
            o
        };
        rows.push(Row::new(
            format!("10,000 idle connections, {name}: memory per connection"),
            None,
            both(quiet, idle).await?,
            "KiB",
            Target::AtMost(4.0),
        ));
    }
    let held = |server: &str| {
        let mut o = with(base, server, Transport::LongPoll);
        o.connections = 10_000;
        o
    };
    rows.push(Row::new(
        "10,000 held long polls: memory per connection",
        None,
        both(held, idle).await?,
        "KiB",
        Target::AtMost(8.0),
    ));
    let pollers = |server: &str| {
        let mut o = with(base, server, Transport::LongPoll);
        (o.subscribers, o.events) = (1000, 200);
        o
    };
    // One run per server gives two rows: CPU per delivery and p99.
    let baseline = fanout(pollers("baseline"), "baseline long-poll fanout").await?;
    let push = fanout(pollers("push"), "push long-poll fanout").await?;
    let figures = |key: &str| (baseline.number(key), push.number(key));
    rows.push(Row::new(
        "1,000 long-pollers, events as fast as possible: CPU per delivery",
        None,
        figures("server_cpu_us_per_delivery"),
        "µs",
        Target::AtMost(6.0),
    ));
    rows.push(Row::new(
        "1,000 long-pollers, events as fast as possible: p99 latency",
        None,
        figures("p99_ms"),
        "ms",
        Target::AtMost(30.0),
    ));
    let paced = |server: &str| {
        let mut o = pollers(server);
        (o.events, o.rate) = (250, Some(50.0));
        o
    };
    rows.push(Row::new(
        "1,000 long-pollers at 50 events/s: p99 latency",
        None,
        both(paced, p99).await?,
        "ms",
        Target::AtMost(30.0),
    ));
    let empty = |server: &str| {
        let mut o = with(base, server, Transport::Poll);
        o.polls = 20_000;
        o
    };
    rows.push(Row::new(
        "an empty short poll answered 304: CPU per poll",
        None,
        both(empty, empty_poll).await?,
        "µs",
        Target::AtMost(10.0),
    ));

    println!();
    println!("| workload | floor | baseline (axum, no framework) | push | target | met |");
    println!("|---|---|---|---|---|---|");
    for row in &rows {
        let cells = row.cells();
        println!("| {} |", cells.join(" | "));
    }
    let json: Vec<serde_json::Value> = rows
        .iter()
        .map(|row| {
            serde_json::json!({
                "workload": row.workload,
                "floor": row.floor,
                "baseline": row.baseline,
                "push": row.push,
                "unit": row.unit,
                "bound": row.bound(),
                "met": row.met(),
            })
        })
        .collect();
    println!("{}", serde_json::Value::Array(json));
    Ok(())
}
