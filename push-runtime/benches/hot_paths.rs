//! Micro-benchmarks of the delivery hot paths: framing per transport, a
//! publish fanned out to N waiting subscribers, and a history lookup by cursor.
//!
//! `cargo bench -p push-runtime --bench hot_paths` (add `-- --quick` for a short run).

use bytes::Bytes;
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use push_runtime::__bench;
use push_runtime::history::{Delivery, Outgoing, Start, TopicLog};
use push_runtime::{Cursor, Hub};
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

#[push_runtime::push_channel(path = "/bench")]
#[derive(Clone, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BenchEvent {
    Message { from: String, text: String },
}

/// A 100-byte event JSON, as in the load generator.
fn payload() -> Bytes {
    let json = format!(
        r#"{{"type":"message","from":"lg","text":"{}"}}"#,
        "x".repeat(60)
    );
    Bytes::from(json)
}

/// `n` fresh events (frames not yet cached), as deliveries.
fn fresh(n: usize) -> Vec<Delivery> {
    let log = Arc::new(TopicLog::new(1_764_000_000_000, 1024));
    let mut subscription = log.subscribe(Start::Now).expect("a new log accepts Now");
    for _ in 0..n {
        log.append(Outgoing {
            name: "message",
            kind_index: 0,
            data: payload(),
        });
    }
    let mut out = Vec::new();
    subscription.fill(&mut out, n);
    out
}

fn framing(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame");
    // First framing of an event (once per publish and transport).
    group.bench_function("sse/first", |b| {
        b.iter_batched(
            || fresh(1),
            |batch| __bench::sse_chunk(black_box(&batch)),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("ws/first", |b| {
        b.iter_batched(
            || fresh(1),
            |batch| __bench::ws_message(black_box(&batch[0])),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("iframe/first", |b| {
        b.iter_batched(
            || fresh(1),
            |batch| __bench::iframe_item(black_box(&batch[0])),
            BatchSize::SmallInput,
        )
    });
    // What every further subscriber pays: the cached frame, or a joined chunk.
    let one = fresh(1);
    __bench::sse_chunk(&one);
    __bench::ws_message(&one[0]);
    group.bench_function("sse/cached", |b| {
        b.iter(|| __bench::sse_chunk(black_box(&one)))
    });
    group.bench_function("ws/cached", |b| {
        b.iter(|| __bench::ws_message(black_box(&one[0])))
    });
    let eight = fresh(8);
    __bench::sse_chunk(&eight);
    group.throughput(Throughput::Elements(8));
    group.bench_function("sse/8-pending-joined", |b| {
        b.iter(|| __bench::sse_chunk(black_box(&eight)))
    });
    let cursor = Cursor::new(1, 8);
    group.bench_function("poll/8-items", |b| {
        b.iter(|| __bench::poll_answer(cursor, black_box(&eight)))
    });
    group.finish();
}

/// One publish through the hub, then every one of N subscriber tasks
/// (waiting in `next_batch`, as a transport does) woken and handed the event.
fn publish_fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("publish");
    for subscribers in [0usize, 100, 1000] {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        let hub = Hub::<BenchEvent>::new();
        let delivered = Arc::new(AtomicUsize::new(0));
        runtime.block_on(async {
            for _ in 0..subscribers {
                let mut subscription = hub
                    .subscribe("topic", Start::Now, None)
                    .await
                    .expect("a valid topic");
                let delivered = Arc::clone(&delivered);
                tokio::spawn(async move {
                    let mut batch = Vec::new();
                    loop {
                        batch.clear();
                        let n = subscription.next_batch(&mut batch, 256).await;
                        delivered.fetch_add(n, Ordering::Relaxed);
                    }
                });
            }
            tokio::task::yield_now().await;
        });
        let event = BenchEvent::Message {
            from: "lg".into(),
            text: "x".repeat(60),
        };
        group.throughput(Throughput::Elements(subscribers.max(1) as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(subscribers),
            &subscribers,
            |b, &n| {
                b.iter(|| {
                    runtime.block_on(async {
                        let target = delivered.load(Ordering::Relaxed) + n;
                        hub.publish("topic", &event).await.expect("publish");
                        while delivered.load(Ordering::Relaxed) < target {
                            tokio::task::yield_now().await;
                        }
                    })
                })
            },
        );
    }
    group.finish();
}

/// A subscription resuming from a cursor in the middle of a full history.
fn lookup(c: &mut Criterion) {
    let log = Arc::new(TopicLog::new(7, 1024));
    for _ in 0..1024 {
        log.append(Outgoing {
            name: "message",
            kind_index: 0,
            data: payload(),
        });
    }
    let mut out = Vec::with_capacity(1);
    c.bench_function("history/resume-from-cursor", |b| {
        b.iter(|| {
            out.clear();
            let mut subscription = log
                .subscribe(Start::After(Cursor::new(7, black_box(512))))
                .expect("the cursor is retained");
            subscription.fill(&mut out, 1);
            black_box(&out);
        })
    });
}

criterion_group!(benches, framing, publish_fanout, lookup);
criterion_main!(benches);
