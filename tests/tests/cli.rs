//! The `warren` binary's command line and logs (Warren-only: they are
//! Warren's own).

use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use warren_tests::*;

/// Runs warren with `args` until it logs that it listens; its log lines.
async fn log_until_listening(args: &[&str]) -> Vec<String> {
    log_until_listening_with(args, &[]).await
}

/// [`log_until_listening`] with environment variables `env`.
async fn log_until_listening_with(args: &[&str], env: &[(&str, &str)]) -> Vec<String> {
    let data_dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(warren_binary())
        .env("WARREN_MANAGEMENT_BIND", "127.0.0.1:0")
        .env("WARREN_PROMETHEUS_BIND", "127.0.0.1:0")
        .args(["--bind", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir.path())
        .args(args)
        .envs(env.iter().copied())
        .env("WARREN_LOG", "info")
        .env_remove("NO_COLOR")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut log = Vec::new();
    while let Some(line) = lines.next_line().await.unwrap() {
        let listening = line.contains("listening for AMQP");
        log.push(line);
        if listening {
            return log;
        }
    }
    panic!("warren exited before listening: {log:#?}");
}

#[tokio::test]
async fn logs_written_to_a_pipe_carry_no_colour_codes() {
    if !is_warren() {
        return;
    }
    within(async {
        let log = log_until_listening(&[]).await;
        for line in &log {
            assert!(!line.contains('\u{1b}'), "escape sequence in {line:?}");
        }
    })
    .await;
}

#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    if !is_warren() {
        return;
    }
    within(async {
        let log = log_until_listening(&["--log-format", "json"]).await;
        for line in &log {
            assert!(
                line.starts_with('{') && line.ends_with('}'),
                "not a JSON object: {line:?}"
            );
            assert!(line.contains("\"level\":\"INFO\""), "{line:?}");
        }
        assert!(log
            .last()
            .unwrap()
            .contains("\"message\":\"listening for AMQP 0-9-1 connections\""));
    })
    .await;
}

#[tokio::test]
async fn a_failed_login_is_logged_with_the_peer_and_never_the_password() {
    if !is_warren() {
        return;
    }
    within(async {
        let data_dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut child = Command::new(warren_binary())
            .env("WARREN_MANAGEMENT_BIND", "127.0.0.1:0")
            .env("WARREN_PROMETHEUS_BIND", "127.0.0.1:0")
            .args(["--bind", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(data_dir.path())
            .env("WARREN_DEFAULT_USER", "ops")
            .env("WARREN_DEFAULT_PASS", "right-password")
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("listening for AMQP") {
                break;
            }
        }
        let url = format!("amqp://ops:hunter2-wrong@127.0.0.1:{port}/%2f");
        let refused = lapin::Connection::connect(&url, lapin::ConnectionProperties::default()).await;
        assert_eq!(refused.err().map(|e| reply_code(&e)), Some(403));
        let ok = format!("amqp://ops:right-password@127.0.0.1:{port}/%2f");
        lapin::Connection::connect(&ok, lapin::ConnectionProperties::default())
            .await
            .unwrap();
        loop {
            let line = lines
                .next_line()
                .await
                .unwrap()
                .expect("a log line about the failure");
            assert!(
                !line.contains("hunter2") && !line.contains("right-password"),
                "{line}"
            );
            if line.contains("authentication failed") {
                assert!(line.contains("127.0.0.1") && line.contains("'ops'"), "{line}");
                break;
            }
        }
    })
    .await;
}

#[tokio::test]
async fn ping_says_whether_a_broker_answers() {
    if !is_warren() {
        return;
    }
    within(async {
        let broker = start_broker().await;
        let ping = |addr: String| async move {
            Command::new(warren_binary())
                .env("WARREN_MANAGEMENT_BIND", "127.0.0.1:0")
                .env("WARREN_PROMETHEUS_BIND", "127.0.0.1:0")
                .args(["ping", "--addr", &addr, "--timeout", "2000"])
                .output()
                .await
                .unwrap()
        };
        let answered = ping(broker.addr.to_string()).await;
        assert!(answered.status.success(), "{answered:?}");
        assert!(
            String::from_utf8_lossy(&answered.stdout).contains("Warren"),
            "{answered:?}"
        );
        let port = free_port();
        let nobody = ping(format!("127.0.0.1:{port}")).await;
        assert_eq!(nobody.status.code(), Some(1), "{nobody:?}");
    })
    .await;
}

/// The `ENV` settings of `docker/Dockerfile`, as the image runs the broker.
fn dockerfile_env() -> Vec<(String, String)> {
    let dockerfile = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docker/Dockerfile");
    let text = std::fs::read_to_string(dockerfile).unwrap();
    let start = text.find("\nENV ").expect("an ENV instruction") + 5;
    let mut env = Vec::new();
    for line in text[start..].lines() {
        let pair = line.trim().trim_end_matches('\\').trim();
        let (key, value) = pair.split_once('=').expect("KEY=value");
        env.push((key.to_owned(), value.to_owned()));
        if !line.trim_end().ends_with('\\') {
            break;
        }
    }
    env
}

#[tokio::test]
async fn the_image_environment_runs_a_broker_its_healthcheck_and_default_user_see() {
    if !is_warren() {
        return;
    }
    within(async {
        let data_dir = tempfile::tempdir().unwrap();
        let (port, tls_port) = (free_port(), free_port());
        // compose.yaml's TLS settings, with certificates of the test's own.
        let certs = warren_tests::tls::TestCerts::generate();
        let file = |path: &std::path::Path| path.display().to_string();
        let env: Vec<(String, String)> = dockerfile_env()
            .into_iter()
            .map(|(key, value)| match key.as_str() {
                // The image's port and volume, moved to this test's own.
                "WARREN_BIND" => (key, value.replace(":5672", &format!(":{port}"))),
                "WARREN_DATA_DIR" => (key, data_dir.path().display().to_string()),
                "WARREN_MANAGEMENT_BIND" => (key, value.replace(":15672", ":0")),
                "WARREN_PROMETHEUS_BIND" => (key, value.replace(":15692", ":0")),
                "WARREN_TLS_BIND" => (key, value.replace(":5671", &format!(":{tls_port}"))),
                _ => (key, value),
            })
            .chain([
                ("WARREN_DEFAULT_USER".to_owned(), "app".to_owned()),
                ("WARREN_DEFAULT_PASS".to_owned(), "app-secret".to_owned()),
                ("WARREN_TLS_CERT".to_owned(), file(&certs.server_cert)),
                ("WARREN_TLS_KEY".to_owned(), file(&certs.server_key)),
                ("WARREN_TLS_CA".to_owned(), file(&certs.ca)),
            ])
            .collect();
        assert!(
            env.iter()
                .any(|(k, v)| k == "WARREN_BIND" && v.starts_with("[::]")),
            "{env:?}"
        );
        let mut broker = Command::new(warren_binary())
            .env("WARREN_MANAGEMENT_BIND", "127.0.0.1:0")
            .env("WARREN_PROMETHEUS_BIND", "127.0.0.1:0")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(broker.stdout.take().unwrap()).lines();
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("listening for AMQP") {
                break;
            }
        }
        // The HEALTHCHECK's command, in the same environment.
        let health = Command::new(warren_binary())
            .env("WARREN_MANAGEMENT_BIND", "127.0.0.1:0")
            .env("WARREN_PROMETHEUS_BIND", "127.0.0.1:0")
            .args(["ping", "--timeout", "5000"])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .await
            .unwrap();
        assert!(health.status.success(), "{health:?}");
        let url = format!("amqp://app:app-secret@127.0.0.1:{port}/%2f");
        lapin::Connection::connect(&url, lapin::ConnectionProperties::default())
            .await
            .unwrap();
        // And over TLS, on the image's TLS port (moved).
        lapin::ConnectionBuilder::new()
            .unwrap()
            .with_uri_str(format!("amqps://app:app-secret@localhost:{tls_port}/%2f"))
            .with_tls_config(certs.lapin_config(None))
            .connect()
            .await
            .unwrap();
        let guest = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
        let refused = lapin::Connection::connect(&guest, lapin::ConnectionProperties::default()).await;
        assert_eq!(refused.err().map(|e| reply_code(&e)), Some(403));
    })
    .await;
}

#[tokio::test]
async fn the_configuration_file_is_under_the_environment_and_refused_when_wrong() {
    if !is_warren() {
        return;
    }
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("warren.toml");
        std::fs::write(&file, "log_format = \"json\"\n").unwrap();
        let config = file.to_str().unwrap();
        // The file alone: JSON logs.
        let log = log_until_listening(&["--config", config]).await;
        assert!(log.iter().all(|l| l.starts_with('{')), "{log:?}");
        // The environment over the file: text.
        let log = log_until_listening_with(&["--config", config], &[("WARREN_LOG_FORMAT", "text")]).await;
        assert!(log.iter().all(|l| !l.starts_with('{')), "{log:?}");
        // A bad value stops it at start, naming the file and the key.
        std::fs::write(&file, "log_format = \"json\"\nchannel_max = 0\n").unwrap();
        let refused = Command::new(warren_binary())
            .env("WARREN_MANAGEMENT_BIND", "127.0.0.1:0")
            .env("WARREN_PROMETHEUS_BIND", "127.0.0.1:0")
            .args(["--config", config])
            .output()
            .await
            .unwrap();
        assert_eq!(refused.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(
            stderr.contains("key 'channel_max'") && stderr.contains("warren.toml"),
            "{stderr}"
        );
    })
    .await;
}
