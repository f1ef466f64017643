//! Routing cost per publish: direct, fanout, and topic with 10,000 bindings.
//!
//! `cargo bench -p warren-router`

use amq_protocol::types::FieldTable;
use criterion::{criterion_group, criterion_main, Criterion};
use warren_router::{Destination, Exchange, ExchangeKind, Router};

fn exchange(name: &str, kind: ExchangeKind) -> Exchange {
    Exchange::new(name.into(), kind, false, false, false, FieldTable::default())
}

/// A four-word key (or, with `wild`, pattern) drawn from 32 words per level;
/// a pattern word is `*` 20 % and `#` 5 % of the time, as in the tables
/// `warren-perf -t topic` binds (the router cannot depend on that tool).
fn words(rng: &mut fastrand::Rng, wild: bool) -> String {
    let mut words = Vec::new();
    for level in 0..4 {
        match rng.u32(..100) {
            75..=94 if wild => words.push("*".to_owned()),
            95.. if wild => {
                words.push("#".to_owned());
                break;
            }
            _ => words.push(format!("w{level}{}", rng.u32(..32))),
        }
    }
    words.join(".")
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
    let mut rng = fastrand::Rng::with_seed(42);
    for n in 0..10_000 {
        r.bind(
            "topic",
            queue(n % 4),
            &words(&mut rng, true),
            FieldTable::default(),
        )
        .unwrap();
    }
    let keys: Vec<String> = (0..1000).map(|_| words(&mut rng, false)).collect();

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
