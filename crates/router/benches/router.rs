//! Routing cost per publish: direct, fanout, and topic with 10,000 bindings.
//!
//! `cargo bench -p warren-router`

use amq_protocol::types::FieldTable;
use criterion::{criterion_group, criterion_main, Criterion};
use warren_router::{Destination, Exchange, ExchangeKind, Router};

fn exchange(name: &str, kind: ExchangeKind) -> Exchange {
    Exchange::new(name.into(), kind, false, false, false, FieldTable::default())
}

fn queue(n: usize) -> Destination {
    Destination::Queue(format!("q{n}").as_str().into())
}

fn route(c: &mut Criterion) {
    let mut r = Router::new();
    r.declare(exchange("direct", ExchangeKind::Direct)).unwrap();
    r.declare(exchange("fanout", ExchangeKind::Fanout)).unwrap();
    r.declare(exchange("topic", ExchangeKind::Topic)).unwrap();
    for n in 0..1000 {
        r.bind("direct", queue(n), &format!("q{n}"), FieldTable::default())
            .unwrap();
    }
    for n in 0..8 {
        r.bind("fanout", queue(n), "", FieldTable::default()).unwrap();
    }
    // The same seeded table as `warren-perf -t topic --topic-bindings 10000`.
    for (n, pattern) in warren_perf::topic::patterns(42, 10_000).iter().enumerate() {
        r.bind("topic", queue(n % 4), pattern, FieldTable::default())
            .unwrap();
    }
    let keys = warren_perf::topic::keys(42, 1000);

    let mut group = c.benchmark_group("route");
    group.bench_function("default exchange", |b| b.iter(|| r.route("", "q1", None).len()));
    group.bench_function("direct, 1,000 bindings", |b| {
        b.iter(|| r.route("direct", "q500", None).len())
    });
    group.bench_function("fanout to 8 queues", |b| {
        b.iter(|| r.route("fanout", "", None).len())
    });
    let mut next = 0;
    group.bench_function("topic, 10,000 bindings", |b| {
        b.iter(|| {
            next = (next + 1) % keys.len();
            r.route("topic", &keys[next], None).len()
        })
    });
    group.finish();
}

criterion_group!(benches, route);
criterion_main!(benches);
