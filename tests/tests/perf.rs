//! `warren-perf` against a real broker: what it reports must be what moved.
//! (Its figures are measured in docs/performance.md, never asserted here.)

use clap::Parser;
use warren_perf::options::Options;
use warren_perf::run::{run, Summary};
use warren_tests::*;

async fn perf(broker: &TestBroker, args: &[&str]) -> Summary {
    let prefix = unique("perf");
    let mut argv = vec!["warren-perf", "--uri", &broker.url, "--queue-prefix", &prefix];
    argv.extend_from_slice(args);
    let summary = run(Options::parse_from(argv)).await;
    summary.unwrap_or_else(|e| panic!("warren-perf {args:?}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_exchange_type_moves_messages_with_latency() {
    within(async {
        let broker = start_broker().await;
        let light = ["-z", "1", "--warmup", "0", "-r", "2000"];
        for args in [
            vec!["-s", "1024", "-q", "100"],
            vec!["-t", "fanout", "-u", "3", "-y", "3", "-a", "-s", "64"],
            vec![
                "-t",
                "topic",
                "--topic-bindings",
                "200",
                "-u",
                "2",
                "-y",
                "2",
                "-a",
            ],
            vec!["-c", "50", "-s", "256", "-q", "20", "-A", "5"],
        ] {
            let args: Vec<&str> = args.into_iter().chain(light).collect();
            let s = perf(&broker, &args).await;
            assert!(s.publish_rate > 0.0 && s.consume_rate > 0.0, "{args:?}: {s:?}");
            assert!(s.latency.as_ref().is_some_and(|l| l.count > 0), "{args:?}: {s:?}");
            assert_eq!(s.nacked, 0, "{args:?}");
            if args.contains(&"-c") {
                assert!(s.confirm_rate > 0.0, "{args:?}: {s:?}");
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fill_then_drain_gets_every_message_back() {
    within(async {
        let broker = start_broker().await;
        // Returns only once the queues held all 3,000 (each of 2) and the
        // consumers received every copy.
        let s = perf(
            &broker,
            &[
                "--fill", "3000", "-t", "fanout", "-u", "2", "-y", "2", "-s", "128", "-q", "50", "-c", "100",
            ],
        )
        .await;
        let fill = s.fill.expect("a fill report");
        assert_eq!(fill.messages, 3000);
        assert!(fill.fill_seconds > 0.0 && fill.drain_seconds > 0.0);
        assert_eq!(s.latency.map(|l| l.count), Some(6000));
    })
    .await;
}
