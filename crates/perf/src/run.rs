//! One run: declare, start producers and consumers, report every second,
//! summarise the measured window, clean up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use amq_protocol::uri::AMQPUri;
use serde::Serialize;
use tokio::task::JoinSet;
use warren_codec::amq_protocol;

use crate::client::{Result, Session};
use crate::consumer::{self, Acks};
use crate::options::{ExchangeType, Options};
use crate::publisher::Producer;
use crate::stats::{percentiles, thousands, Counts, Latency, Percentiles, Shared};
use crate::wire::PublishTemplate;
use crate::{procfs, topic};

/// The result of a run.
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    /// Measured seconds.
    pub seconds: f64,
    /// Messages published per second.
    pub publish_rate: f64,
    /// Publisher confirms per second.
    pub confirm_rate: f64,
    /// Deliveries received per second (all consumers together).
    pub consume_rate: f64,
    /// Publisher nacks in the window.
    pub nacked: u64,
    /// End-to-end latency of the window's deliveries.
    pub latency: Option<Percentiles>,
    /// Broker CPU over the window, in % of one core.
    pub broker_cpu_percent: Option<f64>,
    /// Broker RSS at the end, in bytes.
    pub broker_rss_bytes: Option<u64>,
    /// Largest broker RSS seen (sampled every second), in bytes.
    pub broker_rss_peak_bytes: Option<u64>,
    /// Octets the broker wrote to disk over the window, per message
    /// published in it (`/proc/PID/io`).
    pub broker_disk_bytes_per_message: Option<f64>,
    /// This generator's CPU over the window, in % of one core.
    pub generator_cpu_percent: f64,
    /// Idle connections, when asked for.
    pub idle: Option<IdleReport>,
    /// Fill-then-drain, when asked for.
    pub fill: Option<FillReport>,
    /// Flood-then-drain, when asked for.
    pub flood: Option<FloodReport>,
}

/// Flood-then-drain figures.
#[derive(Debug, Serialize)]
pub struct FloodReport {
    /// Seconds the producers published.
    pub flood_seconds: f64,
    /// Messages published, confirmed and nacked.
    pub published: u64,
    pub confirmed: u64,
    pub nacked: u64,
    /// connection.blocked and connection.unblocked the producers received.
    pub blocked: u64,
    pub unblocked: u64,
    /// Largest broker RSS seen (sampled every 50 ms) while flooding, and
    /// while draining, in bytes.
    pub rss_peak_flood: Option<u64>,
    pub rss_peak_drain: Option<u64>,
    /// Seconds for the consumers to receive every message published.
    pub drain_seconds: f64,
    /// Messages received.
    pub consumed: u64,
    /// Messages received that were not the next of their producer: lost,
    /// repeated or out of order. Must be 0.
    pub out_of_order: u64,
}

/// Memory taken by idle connections.
#[derive(Debug, Serialize)]
pub struct IdleReport {
    /// Connections opened.
    pub connections: u32,
    /// Seconds to open them all.
    pub open_seconds: f64,
    /// Broker RSS before opening them, in bytes.
    pub rss_before: Option<u64>,
    /// Broker RSS once they were open, in bytes.
    pub rss_after: Option<u64>,
    /// (after − before) / connections.
    pub bytes_per_connection: Option<f64>,
}

/// Fill-then-drain figures.
#[derive(Debug, Serialize)]
pub struct FillReport {
    /// Messages published.
    pub messages: u64,
    /// Seconds until the queues held them all (or all were confirmed).
    pub fill_seconds: f64,
    /// Broker RSS once full, in bytes.
    pub rss_full: Option<u64>,
    /// Seconds for the consumers to receive them all.
    pub drain_seconds: f64,
    /// Broker RSS once drained, in bytes.
    pub rss_drained: Option<u64>,
}

/// What happened at one instant: counts, broker and generator CPU.
#[derive(Clone, Copy)]
struct Mark {
    at: Instant,
    counts: Counts,
    broker_cpu: Option<f64>,
    broker_written: Option<u64>,
    own_cpu: f64,
}

/// Disk octets written between two marks, per message.
fn written_per_message(from: &Mark, to: &Mark, messages: u64) -> Option<f64> {
    let (a, b) = (from.broker_written?, to.broker_written?);
    (messages > 0).then(|| b.saturating_sub(a) as f64 / messages as f64)
}

fn mark(shared: &Shared, broker: Option<u32>) -> Mark {
    Mark {
        at: Instant::now(),
        counts: shared.counters.snapshot(),
        broker_cpu: broker.and_then(|pid| procfs::cpu_seconds(Some(pid))),
        broker_written: broker.and_then(procfs::disk_written),
        own_cpu: procfs::cpu_seconds(None).unwrap_or(0.0),
    }
}

/// Runs the load described by `opts`.
pub async fn run(opts: Options) -> Result<Summary> {
    let uri: AMQPUri = opts.uri.parse().map_err(|e| format!("--uri: {e}"))?;
    if opts.auto_ack && opts.multi_ack_every > 1 {
        return Err("--multi-ack-every needs manual acks (no --auto-ack)".into());
    }
    if opts.prefetch > 0 && opts.multi_ack_every > u64::from(opts.prefetch) {
        // The broker would stop delivering before the ack is due.
        return Err("--multi-ack-every must not exceed --prefetch".into());
    }
    if !(opts.rate >= 0.0 && opts.rate.is_finite()) {
        return Err("--rate must be a number of messages per second, 0 for unlimited".into());
    }
    if opts.fill.is_some() && opts.producers == 0 && opts.consumers == 0 {
        return Err("--fill needs producers, consumers, or both".into());
    }
    if opts.flood.is_some()
        && (opts.confirm_window == 0
            || opts.size < 16
            || opts.producers == 0
            || opts.consumers == 0
            || opts.exchange_type != ExchangeType::Direct)
    {
        return Err(
            "--flood needs --confirm, --size of at least 16, producers, consumers and a direct exchange"
                .into(),
        );
    }
    if opts.fill.is_some() && opts.exchange_type == ExchangeType::Topic {
        return Err(
            "--fill needs a direct or fanout exchange (a topic's fan-out is not known in advance)".into(),
        );
    }
    let mut admin = Session::connect(&uri).await?;
    admin.open_channel(1).await?;
    declare(&mut admin, &opts).await?;

    let shared = Arc::new(Shared::default());
    let mut summary = Summary::default();
    let mut idle = Vec::new();
    if opts.idle_connections > 0 {
        let (report, sessions) = open_idle(&uri, &opts).await?;
        idle = sessions;
        summary.idle = Some(report);
    }
    let mut tasks = JoinSet::new();
    // A fill-only run leaves its backlog for a later drain-only run.
    let keep = opts.keep || (opts.fill.is_some() && opts.consumers == 0);
    let result = match opts.fill {
        _ if opts.flood.is_some() => flood_then_drain(&uri, &opts, &shared, &mut tasks, &mut summary).await,
        Some(messages) => {
            fill_then_drain(
                &uri,
                &opts,
                &mut admin,
                &shared,
                &mut tasks,
                messages,
                &mut summary,
            )
            .await
        }
        None => timed(&uri, &opts, &shared, &mut tasks, &mut summary).await,
    };
    tasks.abort_all();
    drop(idle);
    if !keep {
        clean_up(&mut admin, &opts).await?;
    }
    result.map(|()| summary)
}

async fn declare(admin: &mut Session, opts: &Options) -> Result<()> {
    let exchange = opts.exchange_name();
    if !exchange.is_empty() {
        admin
            .declare_exchange(1, &exchange, opts.exchange_type.as_str(), opts.persistent)
            .await?;
    }
    for q in 0..opts.queues {
        let name = opts.queue(q);
        admin.declare_queue(1, &name, opts.persistent, false).await?;
        // A drain-only run consumes what an earlier fill left.
        if !(opts.fill.is_some() && opts.producers == 0) {
            admin.purge(1, &name).await?;
        }
        match opts.exchange_type {
            _ if exchange.is_empty() => {}
            ExchangeType::Direct => admin.bind(1, &name, &exchange, &name).await?,
            ExchangeType::Fanout => admin.bind(1, &name, &exchange, "").await?,
            ExchangeType::Topic => {}
        }
    }
    if opts.exchange_type == ExchangeType::Topic {
        for (i, pattern) in topic::patterns(opts.seed, opts.topic_bindings).iter().enumerate() {
            admin
                .bind_nowait(1, &opts.queue(i as u32 % opts.queues), &exchange, pattern)
                .await?;
        }
        admin.sync(1).await?;
    }
    Ok(())
}

async fn clean_up(admin: &mut Session, opts: &Options) -> Result<()> {
    for q in 0..opts.queues {
        admin.delete_queue(1, &opts.queue(q)).await?;
    }
    let exchange = opts.exchange_name();
    if !exchange.is_empty() {
        admin.delete_exchange(1, &exchange).await?;
    }
    Ok(())
}

async fn open_idle(uri: &AMQPUri, opts: &Options) -> Result<(IdleReport, Vec<Session>)> {
    procfs::raise_fd_limit();
    let rss_before = opts.broker_pid.and_then(procfs::rss_bytes);
    let started = Instant::now();
    let mut sessions = Vec::with_capacity(opts.idle_connections as usize);
    let mut opening = JoinSet::new();
    for _ in 0..opts.idle_connections {
        // At most 64 handshakes in flight.
        if opening.len() >= 64 {
            if let Some(done) = opening.join_next().await {
                sessions.push(done??);
            }
        }
        let uri = uri.clone();
        opening.spawn(async move { Session::connect(&uri).await });
    }
    while let Some(done) = opening.join_next().await {
        sessions.push(done??);
    }
    let open_seconds = started.elapsed().as_secs_f64();
    let rss_after = opts.broker_pid.and_then(procfs::rss_bytes);
    let bytes_per_connection = match (rss_before, rss_after) {
        (Some(before), Some(after)) => {
            Some((after as f64 - before as f64) / f64::from(opts.idle_connections))
        }
        _ => None,
    };
    eprintln!(
        "{} idle connections open in {open_seconds:.1} s{}",
        opts.idle_connections,
        bytes_per_connection.map_or(String::new(), |b| format!(", broker +{:.1} KB each", b / 1000.0))
    );
    Ok((
        IdleReport {
            connections: opts.idle_connections,
            open_seconds,
            rss_before,
            rss_after,
            bytes_per_connection,
        },
        sessions,
    ))
}

async fn start_consumers(
    uri: &AMQPUri,
    opts: &Options,
    shared: &Arc<Shared>,
    tasks: &mut JoinSet<()>,
) -> Result<()> {
    let acks = match opts.auto_ack {
        true => Acks::Auto,
        false => Acks::Every(opts.multi_ack_every),
    };
    let check_order = opts.flood.is_some();
    for c in 0..opts.consumers {
        let mut session = Session::connect(uri).await?;
        session.open_channel(1).await?;
        if opts.prefetch > 0 {
            session.qos(1, opts.prefetch).await?;
        }
        for (i, queue) in opts.consumer_queues(c).into_iter().enumerate() {
            let tag = format!("warren-perf-{c}-{queue}");
            match i {
                0 => session.consume(1, &queue, &tag, opts.auto_ack).await?,
                _ => session.consume_nowait(1, &queue, &tag, opts.auto_ack).await?,
            }
        }
        let shared = shared.clone();
        tasks.spawn(async move {
            if let Err(e) = consumer::run(session, acks, check_order, shared.clone()).await {
                shared.fail(&e.to_string());
            }
        });
    }
    Ok(())
}

async fn start_producers(
    uri: &AMQPUri,
    opts: &Options,
    shared: &Arc<Shared>,
    tasks: &mut JoinSet<()>,
    total: Option<u64>,
) -> Result<()> {
    let exchange = opts.exchange_name();
    let keys = match opts.exchange_type {
        ExchangeType::Topic => topic::keys(opts.seed, opts.topic_keys.max(1)),
        _ => Vec::new(),
    };
    for p in 0..opts.producers {
        let mut session = Session::connect(uri).await?;
        session.open_channel(1).await?;
        if opts.confirm_window > 0 {
            session.confirm_select(1).await?;
        }
        let template = |key: &str| {
            PublishTemplate::new(1, &exchange, key, opts.size, opts.persistent, session.frame_max)
        };
        let templates = match opts.exchange_type {
            ExchangeType::Direct => vec![template(&opts.queue(p % opts.queues))],
            ExchangeType::Fanout => vec![template("")],
            // Each producer starts at its own place in the key pool.
            ExchangeType::Topic => (0..keys.len())
                .map(|i| template(&keys[(i + p as usize * 7919) % keys.len()]))
                .collect(),
        };
        let limit = total
            .map(|n| n / u64::from(opts.producers) + u64::from(u64::from(p) < n % u64::from(opts.producers)));
        let producer = Producer {
            id: p as u16,
            templates,
            confirm_window: opts.confirm_window,
            rate: opts.rate,
            limit,
        };
        let shared = shared.clone();
        tasks.spawn(async move {
            if let Err(e) = producer.run(session, shared.clone()).await {
                shared.fail(&e.to_string());
            }
        });
    }
    Ok(())
}

/// Prints one progress line: rates since `last`, latency of the interval.
fn progress(opts: &Options, started: Instant, last: &Mark, now: &Mark, interval: Option<Percentiles>) {
    let secs = now.at.duration_since(last.at).as_secs_f64().max(1e-9);
    let rate = |a: u64, b: u64| thousands((b - a) as f64 / secs);
    let mut line = format!(
        "{:>4} s  published {}/s",
        started.elapsed().as_secs(),
        rate(last.counts.published, now.counts.published)
    );
    if opts.confirm_window > 0 {
        line += &format!(
            "  confirmed {}/s",
            rate(last.counts.confirmed, now.counts.confirmed)
        );
    }
    line += &format!("  consumed {}/s", rate(last.counts.consumed, now.counts.consumed));
    if let Some(p) = interval {
        line += &format!("  latency p50 {:.3} ms p99 {:.3} ms", p.p50, p.p99);
    }
    if let (Some(a), Some(b), Some(pid)) = (last.broker_cpu, now.broker_cpu, opts.broker_pid) {
        let rss = procfs::rss_bytes(pid).unwrap_or(0);
        line += &format!(
            "  broker {:.0} % CPU {} MB",
            (b - a) / secs * 100.0,
            rss / 1_000_000
        );
    }
    line += &format!(
        "  generator {:.0} % CPU",
        (now.own_cpu - last.own_cpu) / secs * 100.0
    );
    eprintln!("{line}");
}

async fn timed(
    uri: &AMQPUri,
    opts: &Options,
    shared: &Arc<Shared>,
    tasks: &mut JoinSet<()>,
    summary: &mut Summary,
) -> Result<()> {
    start_consumers(uri, opts, shared, tasks).await?;
    start_producers(uri, opts, shared, tasks, None).await?;
    let started = Instant::now();
    let mut ticker =
        tokio::time::interval_at((started + Duration::from_secs(1)).into(), Duration::from_secs(1));
    let mut last = mark(shared, opts.broker_pid);
    // Measured from the start when there is no warm-up.
    let mut from = (opts.warmup == 0).then_some(last);
    let mut total = Latency::default();
    let mut peak = None;
    for second in 1..=opts.warmup + opts.duration {
        ticker.tick().await;
        shared.check()?;
        let now = mark(shared, opts.broker_pid);
        let interval = shared.counters.take_interval();
        progress(opts, started, &last, &now, percentiles(&interval));
        if second > opts.warmup {
            total.add(&interval);
            peak = peak.max(opts.broker_pid.and_then(procfs::rss_bytes));
        }
        if second == opts.warmup {
            from = Some(now);
        }
        last = now;
    }
    let from = from.unwrap_or(last);
    let to = mark(shared, opts.broker_pid);
    let secs = to.at.duration_since(from.at).as_secs_f64().max(1e-9);
    let per_second = |a: u64, b: u64| (b - a) as f64 / secs;
    summary.seconds = secs;
    summary.publish_rate = per_second(from.counts.published, to.counts.published);
    summary.confirm_rate = per_second(from.counts.confirmed, to.counts.confirmed);
    summary.consume_rate = per_second(from.counts.consumed, to.counts.consumed);
    summary.nacked = to.counts.nacked - from.counts.nacked;
    summary.latency = total.summary();
    summary.broker_cpu_percent = match (from.broker_cpu, to.broker_cpu) {
        (Some(a), Some(b)) => Some((b - a) / secs * 100.0),
        _ => None,
    };
    summary.broker_rss_bytes = opts.broker_pid.and_then(procfs::rss_bytes);
    summary.broker_rss_peak_bytes = peak.max(summary.broker_rss_bytes);
    summary.broker_disk_bytes_per_message =
        written_per_message(&from, &to, to.counts.published - from.counts.published);
    summary.generator_cpu_percent = (to.own_cpu - from.own_cpu) / secs * 100.0;
    Ok(())
}

/// Polls until `done` holds, printing progress every second; the latencies
/// of the wait go into `total`.
async fn wait_until(
    opts: &Options,
    shared: &Arc<Shared>,
    started: Instant,
    total: &mut Latency,
    mut done: impl FnMut(&Counts) -> bool,
) -> Result<()> {
    let mut last = mark(shared, opts.broker_pid);
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    loop {
        ticker.tick().await;
        shared.check()?;
        let now = mark(shared, opts.broker_pid);
        if done(&now.counts) {
            total.add(&shared.counters.take_interval());
            return Ok(());
        }
        if now.at.duration_since(last.at) >= Duration::from_secs(1) {
            let interval = shared.counters.take_interval();
            progress(opts, started, &last, &now, percentiles(&interval));
            total.add(&interval);
            last = now;
        }
    }
}

async fn fill_then_drain(
    uri: &AMQPUri,
    opts: &Options,
    admin: &mut Session,
    shared: &Arc<Shared>,
    tasks: &mut JoinSet<()>,
    messages: u64,
    summary: &mut Summary,
) -> Result<()> {
    let copies = match opts.exchange_type {
        ExchangeType::Fanout => u64::from(opts.queues),
        _ => 1,
    };
    let started = Instant::now();
    let filling = mark(shared, opts.broker_pid);
    // Latencies of the drain only: the fill has no consumer.
    let mut total = Latency::default();
    if opts.producers > 0 {
        start_producers(uri, opts, shared, tasks, Some(messages)).await?;
    }
    if opts.producers == 0 {
        // Drain only: the backlog is there already.
    } else if opts.confirm_window > 0 {
        wait_until(opts, shared, started, &mut total, |c| {
            c.confirmed + c.nacked >= messages
        })
        .await?;
    } else {
        wait_until(opts, shared, started, &mut total, |c| c.published >= messages).await?;
    }
    // Then until the queues hold them all (without confirms, a publish
    // written to the socket may not have reached its queue yet).
    loop {
        shared.check()?;
        let mut held = 0u64;
        for q in 0..opts.queues {
            held += u64::from(
                admin
                    .declare_queue(1, &opts.queue(q), opts.persistent, true)
                    .await?,
            );
        }
        if held >= messages * copies {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let fill_seconds = started.elapsed().as_secs_f64();
    let filled = mark(shared, opts.broker_pid);
    if opts.producers > 0 {
        summary.broker_disk_bytes_per_message = written_per_message(&filling, &filled, messages);
    }
    let rss_full = opts.broker_pid.and_then(procfs::rss_bytes);
    eprintln!(
        "filled {} messages in {fill_seconds:.2} s ({}/s)",
        thousands(messages as f64),
        thousands(messages as f64 / fill_seconds)
    );
    if opts.consumers == 0 {
        summary.seconds = fill_seconds;
        summary.publish_rate = messages as f64 / fill_seconds;
        let counts = shared.counters.snapshot();
        summary.confirm_rate = counts.confirmed as f64 / fill_seconds;
        summary.nacked = counts.nacked;
        summary.broker_rss_bytes = rss_full;
        summary.fill = Some(FillReport {
            messages,
            fill_seconds,
            rss_full,
            drain_seconds: 0.0,
            rss_drained: None,
        });
        return Ok(());
    }
    let draining = Instant::now();
    let before = mark(shared, opts.broker_pid);
    start_consumers(uri, opts, shared, tasks).await?;
    wait_until(opts, shared, started, &mut total, |c| {
        c.consumed >= messages * copies
    })
    .await?;
    let drain_seconds = draining.elapsed().as_secs_f64();
    let after = mark(shared, opts.broker_pid);
    summary.latency = total.summary();
    summary.seconds = fill_seconds + drain_seconds;
    summary.publish_rate = messages as f64 / fill_seconds;
    summary.confirm_rate = after.counts.confirmed as f64 / fill_seconds;
    summary.consume_rate = (messages * copies) as f64 / drain_seconds;
    summary.nacked = after.counts.nacked;
    summary.broker_cpu_percent = match (before.broker_cpu, after.broker_cpu) {
        (Some(a), Some(b)) => Some((b - a) / drain_seconds * 100.0),
        _ => None,
    };
    summary.broker_rss_bytes = opts.broker_pid.and_then(procfs::rss_bytes);
    summary.generator_cpu_percent = (after.own_cpu - before.own_cpu) / drain_seconds * 100.0;
    summary.fill = Some(FillReport {
        messages,
        fill_seconds,
        rss_full,
        drain_seconds,
        rss_drained: summary.broker_rss_bytes,
    });
    Ok(())
}

/// Samples the broker's RSS every 50 ms until `stop` is set; returns the
/// largest.
fn sample_rss(
    pid: Option<u32>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<Option<u64>> {
    tokio::spawn(async move {
        let pid = pid?;
        let mut peak = 0;
        let mut ticker = tokio::time::interval(Duration::from_millis(50));
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            ticker.tick().await;
            peak = peak.max(procfs::rss_bytes(pid).unwrap_or(0));
        }
        Some(peak)
    })
}

async fn flood_then_drain(
    uri: &AMQPUri,
    opts: &Options,
    shared: &Arc<Shared>,
    tasks: &mut JoinSet<()>,
    summary: &mut Summary,
) -> Result<()> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let seconds = opts.flood.unwrap_or(0);
    let started = Instant::now();
    let mut total = Latency::default();
    let sampling = Arc::new(AtomicBool::new(false));
    let sampler = sample_rss(opts.broker_pid, sampling.clone());
    start_producers(uri, opts, shared, tasks, None).await?;
    let until = started + Duration::from_secs(seconds);
    wait_until(opts, shared, started, &mut total, |_| Instant::now() >= until).await?;
    shared.stop.store(true, Ordering::Relaxed);
    let flood_seconds = started.elapsed().as_secs_f64();
    sampling.store(true, Ordering::Relaxed);
    let rss_peak_flood = sampler.await.ok().flatten();
    let flooded = shared.counters.snapshot();
    // Publishes a blocked connection has not had read yet are confirmed
    // during the drain, once the alarm clears.
    eprintln!(
        "flooded {} s: {} published, {} confirmed so far, {} nacked; broker RSS peak {} MB",
        seconds,
        thousands(flooded.published as f64),
        thousands(flooded.confirmed as f64),
        thousands(flooded.nacked as f64),
        rss_peak_flood.unwrap_or(0) / 1_000_000
    );
    let draining = Instant::now();
    let sampling = Arc::new(AtomicBool::new(false));
    let sampler = sample_rss(opts.broker_pid, sampling.clone());
    start_consumers(uri, opts, shared, tasks).await?;
    wait_until(opts, shared, started, &mut total, |c| {
        c.consumed >= c.published && c.confirmed + c.nacked >= c.published
    })
    .await?;
    let drain_seconds = draining.elapsed().as_secs_f64();
    sampling.store(true, Ordering::Relaxed);
    let rss_peak_drain = sampler.await.ok().flatten();
    let counters = &shared.counters;
    let flooded = counters.snapshot();
    summary.seconds = flood_seconds + drain_seconds;
    summary.publish_rate = flooded.published as f64 / flood_seconds;
    summary.confirm_rate = flooded.confirmed as f64 / flood_seconds;
    summary.consume_rate = flooded.published as f64 / drain_seconds;
    summary.nacked = flooded.nacked;
    summary.latency = total.summary();
    summary.broker_rss_bytes = opts.broker_pid.and_then(procfs::rss_bytes);
    summary.broker_rss_peak_bytes = rss_peak_flood.max(rss_peak_drain);
    summary.flood = Some(FloodReport {
        flood_seconds,
        published: flooded.published,
        confirmed: flooded.confirmed,
        nacked: flooded.nacked,
        blocked: counters.blocked.load(Ordering::Relaxed),
        unblocked: counters.unblocked.load(Ordering::Relaxed),
        rss_peak_flood,
        rss_peak_drain,
        drain_seconds,
        consumed: counters.consumed.load(Ordering::Relaxed),
        out_of_order: counters.out_of_order.load(Ordering::Relaxed),
    });
    Ok(())
}

/// The summary for people.
pub fn print_summary(opts: &Options, s: &Summary) {
    println!("measured {:.1} s", s.seconds);
    println!("published  {:>12} msg/s", thousands(s.publish_rate));
    if opts.confirm_window > 0 {
        println!(
            "confirmed  {:>12} msg/s  ({} nacked)",
            thousands(s.confirm_rate),
            s.nacked
        );
    }
    println!("consumed   {:>12} msg/s", thousands(s.consume_rate));
    if let Some(p) = &s.latency {
        println!(
            "latency ms p50 {:.3}  p75 {:.3}  p95 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  ({} messages)",
            p.p50, p.p75, p.p95, p.p99, p.p999, p.max, p.count
        );
    }
    if let Some(cpu) = s.broker_cpu_percent {
        println!("broker CPU {cpu:.0} % of a core");
    }
    if let Some(b) = s.broker_disk_bytes_per_message {
        println!("broker disk writes {b:.0} B per message published");
    }
    if let Some(rss) = s.broker_rss_bytes {
        println!(
            "broker RSS {} MB (peak {} MB)",
            rss / 1_000_000,
            s.broker_rss_peak_bytes.unwrap_or(rss) / 1_000_000
        );
    }
    println!("generator CPU {:.0} % of a core", s.generator_cpu_percent);
    if let Some(idle) = &s.idle {
        if let Some(b) = idle.bytes_per_connection {
            println!("idle connections {}: {:.1} KB each", idle.connections, b / 1000.0);
        }
    }
    if let Some(f) = &s.fill {
        println!(
            "fill {} in {:.2} s, drain in {:.2} s; RSS full {} MB, drained {} MB",
            f.messages,
            f.fill_seconds,
            f.drain_seconds,
            f.rss_full.unwrap_or(0) / 1_000_000,
            f.rss_drained.unwrap_or(0) / 1_000_000
        );
    }
    if let Some(f) = &s.flood {
        println!(
            "flood {:.1} s: {} published, {} confirmed, {} nacked; blocked {} / unblocked {}; \
             RSS peak {} MB flooding, {} MB draining; drained in {:.2} s, {} received, {} out of order",
            f.flood_seconds,
            f.published,
            f.confirmed,
            f.nacked,
            f.blocked,
            f.unblocked,
            f.rss_peak_flood.unwrap_or(0) / 1_000_000,
            f.rss_peak_drain.unwrap_or(0) / 1_000_000,
            f.drain_seconds,
            f.consumed,
            f.out_of_order
        );
    }
}
