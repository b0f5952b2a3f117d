//! The run's report: a markdown table and one JSON line.

use crate::check::Verdict;
use crate::faults::Kind;
use crate::run::Options;
use crate::traffic::{Subscriber, transport_name};
use push_runtime::Cursor;
use std::collections::BTreeMap;
use std::fmt::Write;

/// What happened to one topic: publishes acknowledged and failed, gaps its
/// clients got (a fault on one shard shows on its topics only).
pub struct TopicCounts {
    pub acked: usize,
    pub failed: usize,
    pub gaps: usize,
}

pub struct Report<'a> {
    pub options: &'a Options,
    pub published: usize,
    pub acked: usize,
    pub failed: usize,
    /// Failed publishes by kind of failure (an HTTP status and the route's
    /// answer, or the transport's error), with how many.
    pub failures: BTreeMap<String, usize>,
    pub injected: BTreeMap<Kind, usize>,
    pub verdict: &'a Verdict,
    pub subscribers: &'a [Subscriber],
    pub topics: &'a [String],
    /// In the order of `topics`.
    pub per_topic: Vec<TopicCounts>,
    /// Each topic's newest acknowledged cursor.
    pub newest: &'a [Option<Cursor>],
    pub all_caught_up: bool,
    pub elapsed_ms: u64,
}

fn faults_text(injected: &BTreeMap<Kind, usize>) -> String {
    if injected.is_empty() {
        return "none".to_owned();
    }
    injected
        .iter()
        .map(|(kind, n)| format!("{kind}×{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn markdown(r: &Report) -> String {
    let v = r.verdict;
    let o = r.options;
    let mut out = String::new();
    let kinds: Vec<&str> = o.faults.iter().map(|k| k.name()).collect();
    let _ = writeln!(
        out,
        "\nfaults run{} --seed {} --duration {}s --nodes {} --clients-per-transport {} --publishers {} --rate {} --faults {}\n",
        if o.cluster { " --cluster" } else { "" },
        o.seed,
        o.duration.as_secs_f64(),
        o.nodes,
        o.clients_per_transport,
        o.publishers,
        o.rate,
        if kinds.is_empty() {
            "none".to_owned()
        } else {
            kinds.join(",")
        },
    );
    let _ = writeln!(out, "| metric | value |\n|---|---|");
    let mut rows: Vec<(&str, String)> = vec![
        ("events published", r.published.to_string()),
        ("acked", r.acked.to_string()),
        ("failed (may be stored)", r.failed.to_string()),
        ("faults", faults_text(&r.injected)),
        ("topics", r.topics.join(", ")),
        ("clients", v.clients.len().to_string()),
        ("deliveries", v.sum(|c| c.deliveries).to_string()),
        ("gaps", v.sum(|c| c.gaps).to_string()),
        (
            "owed events covered by gaps (of which: new epoch's start, skipped epochs)",
            format!(
                "{} ({}, {})",
                v.sum(|c| c.covered),
                v.sum(|c| c.covered_new_epoch),
                v.sum(|c| c.covered_skipped_epoch)
            ),
        ),
        ("reconnects", v.sum(|c| c.reconnects).to_string()),
        ("client errors", v.sum(|c| c.errors).to_string()),
        (
            "unacked deliveries",
            v.sum(|c| c.unacked_deliveries).to_string(),
        ),
        ("**silent losses**", v.sum(|c| c.silent_losses).to_string()),
        ("**duplicates**", v.sum(|c| c.duplicates).to_string()),
        ("**reorders**", v.sum(|c| c.reorders).to_string()),
        ("**cursor conflicts**", v.cursor_conflicts.to_string()),
        ("all caught up", r.all_caught_up.to_string()),
        ("elapsed", format!("{:.1} s", r.elapsed_ms as f64 / 1000.0)),
        (
            "result",
            if v.passed() { "PASS" } else { "FAIL" }.to_owned(),
        ),
    ];
    if r.topics.len() > 1 {
        let per_topic: Vec<String> = r
            .topics
            .iter()
            .zip(&r.per_topic)
            .map(|(t, c)| format!("{t} {} / {} / {}", c.acked, c.failed, c.gaps))
            .collect();
        rows.insert(
            5,
            ("per topic: acked / failed / gaps", per_topic.join(", ")),
        );
    }
    for (name, value) in rows {
        let _ = writeln!(out, "| {name} | {value} |");
    }
    let _ = writeln!(
        out,
        "\n| client | slow | readies | deliveries | gaps | reconnects | errors | losses | dups | reorders | last |\n|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for (s, c) in r.subscribers.iter().zip(&v.clients) {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            s.name,
            if s.slow_ms > 0 {
                format!("{} ms", s.slow_ms)
            } else {
                "-".to_owned()
            },
            c.readies,
            c.deliveries,
            c.gaps,
            c.reconnects,
            c.errors,
            c.silent_losses,
            c.duplicates,
            c.reorders,
            c.last.map_or("-".to_owned(), |c| c.to_string()),
        );
    }
    let newest: Vec<String> = r
        .topics
        .iter()
        .zip(r.newest)
        .map(|(topic, cursor)| {
            let cursor = cursor.map_or("-".to_owned(), |c| c.to_string());
            if r.topics.len() > 1 {
                format!("{topic} {cursor}")
            } else {
                cursor
            }
        })
        .collect();
    let _ = writeln!(out, "\nnewest acked cursor: {}", newest.join(", "));
    for (s, c) in r.subscribers.iter().zip(&v.clients) {
        if !c.lost_sample.is_empty() {
            let lost: Vec<String> = c.lost_sample.iter().map(Cursor::to_string).collect();
            let _ = writeln!(out, "{} lost, e.g.: {}", s.name, lost.join(" "));
        }
    }
    for (cursor, ids) in &v.conflict_sample {
        let _ = writeln!(out, "cursor {cursor} names ids {ids:?}");
    }
    for (kind, n) in &r.failures {
        let _ = writeln!(out, "publish failures: {n} × {kind}");
    }
    out
}

pub fn json(r: &Report) -> String {
    let v = r.verdict;
    let faults: serde_json::Map<String, serde_json::Value> = r
        .injected
        .iter()
        .map(|(kind, n)| (kind.name().to_owned(), (*n).into()))
        .collect();
    let clients: Vec<serde_json::Value> = r
        .subscribers
        .iter()
        .zip(&v.clients)
        .map(|(s, c)| {
            serde_json::json!({
                "client": s.name,
                "transport": transport_name(s.transport),
                "topic": r.topics.get(s.topic),
                "slow_ms": s.slow_ms,
                "deliveries": c.deliveries,
                "gaps": c.gaps,
                "silent_losses": c.silent_losses,
                "duplicates": c.duplicates,
                "reorders": c.reorders,
                "errors": c.errors,
            })
        })
        .collect();
    serde_json::json!({
        "seed": r.options.seed,
        "duration_s": r.options.duration.as_secs_f64(),
        "nodes": r.options.nodes,
        "cluster": r.options.cluster,
        "topics": r.topics,
        "per_topic": r.topics.iter().zip(&r.per_topic).map(|(t, c)| serde_json::json!({
            "topic": t,
            "acked": c.acked,
            "failed": c.failed,
            "gaps": c.gaps,
        })).collect::<Vec<_>>(),
        "published": r.published,
        "acked": r.acked,
        "failed": r.failed,
        "failures": r.failures,
        "faults": faults,
        "deliveries": v.sum(|c| c.deliveries),
        "gaps": v.sum(|c| c.gaps),
        "covered_by_gaps": v.sum(|c| c.covered),
        "covered_as_new_epoch_start": v.sum(|c| c.covered_new_epoch),
        "covered_in_skipped_epochs": v.sum(|c| c.covered_skipped_epoch),
        "silent_losses": v.sum(|c| c.silent_losses),
        "duplicates": v.sum(|c| c.duplicates),
        "reorders": v.sum(|c| c.reorders),
        "cursor_conflicts": v.cursor_conflicts,
        "all_caught_up": r.all_caught_up,
        "passed": v.passed(),
        "clients": clients,
    })
    .to_string()
}
