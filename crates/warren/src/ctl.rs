//! `warren ctl`: rabbitmqctl's verbs, against a running broker's management
//! API ([`warren_management::client`]). Lists print a header row and
//! tab-separated rows, as rabbitmqctl does (or the API's JSON with
//! `--json`); a refusal prints the broker's reason and exits 1.

use std::io::Read;

use serde_json::{json, Value};
use warren_management::client::{segment, Client, ClientError};

/// Where the broker is and who asks.
#[derive(Debug, clap::Args)]
pub struct Ctl {
    /// The management API's address.
    #[arg(long, env = "WARREN_MANAGEMENT_URL", default_value = "http://localhost:15672")]
    url: String,
    /// An administrator's name.
    #[arg(long, env = "WARREN_CTL_USER", default_value = "guest")]
    user: String,
    /// Their password.
    #[arg(
        long,
        env = "WARREN_CTL_PASSWORD",
        default_value = "guest",
        hide_env_values = true
    )]
    password: String,
    /// Print lists as the API's JSON.
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    command: Verb,
}

/// The virtual host a command acts in (rabbitmqctl's `-p`).
#[derive(Debug, clap::Args)]
struct In {
    #[arg(short = 'p', long = "vhost", default_value = "/")]
    vhost: String,
}

/// rabbitmqctl's commands, by rabbitmqctl's names.
#[derive(Debug, clap::Subcommand)]
#[command(rename_all = "snake_case")]
enum Verb {
    /// Add a user.
    AddUser {
        name: String,
        password: String,
        /// Comma-separated tags, e.g. `administrator`.
        #[arg(long, default_value = "")]
        tags: String,
    },
    /// Delete a user and their permissions.
    DeleteUser { name: String },
    /// Change a user's password.
    ChangePassword { name: String, password: String },
    /// Set a user's tags (none clears them).
    SetUserTags { name: String, tags: Vec<String> },
    /// List users and their tags.
    ListUsers,
    /// Add a virtual host.
    AddVhost { name: String },
    /// Delete a virtual host, with its queues, messages and permissions.
    DeleteVhost { name: String },
    /// List virtual hosts.
    ListVhosts,
    /// Set a user's configure, write and read patterns in a vhost.
    SetPermissions {
        #[command(flatten)]
        vhost: In,
        user: String,
        configure: String,
        write: String,
        read: String,
    },
    /// Clear a user's permissions in a vhost.
    ClearPermissions {
        #[command(flatten)]
        vhost: In,
        user: String,
    },
    /// List permissions in a vhost.
    ListPermissions {
        #[command(flatten)]
        vhost: In,
    },
    /// Set a user's topic permissions on an exchange.
    SetTopicPermissions {
        #[command(flatten)]
        vhost: In,
        user: String,
        exchange: String,
        write: String,
        read: String,
    },
    /// Clear a user's topic permissions in a vhost.
    ClearTopicPermissions {
        #[command(flatten)]
        vhost: In,
        user: String,
    },
    /// List topic permissions in a vhost.
    ListTopicPermissions {
        #[command(flatten)]
        vhost: In,
    },
    /// List queues with their message and consumer counts.
    ListQueues {
        #[command(flatten)]
        vhost: In,
    },
    /// List exchanges.
    ListExchanges {
        #[command(flatten)]
        vhost: In,
    },
    /// List bindings.
    ListBindings {
        #[command(flatten)]
        vhost: In,
    },
    /// List connections.
    ListConnections,
    /// List consumers: queue, tag, connection, channel, whether acks are
    /// required, prefetch, whether active.
    ListConsumers {
        #[command(flatten)]
        vhost: In,
    },
    /// Close a connection (320 CONNECTION_FORCED with the reason).
    CloseConnection { name: String, reason: String },
    /// Drop a queue's ready messages.
    PurgeQueue {
        #[command(flatten)]
        vhost: In,
        name: String,
    },
    /// Delete a queue and its messages.
    DeleteQueue {
        #[command(flatten)]
        vhost: In,
        name: String,
    },
    /// Where a message published to EXCHANGE with ROUTING_KEY (and
    /// headers) would go, and why: the queues it reaches, through which
    /// bindings, exchange-to-exchange hops and alternate exchanges, and
    /// where each would dead-letter it. Nothing is published. Warren's own.
    ExplainRoute {
        #[command(flatten)]
        vhost: In,
        /// The exchange (`amq.default` or "" for the default one).
        exchange: String,
        routing_key: String,
        /// A header of the message, `name=value` (a string), repeatable.
        #[arg(long = "header", value_parser = parse_header)]
        headers: Vec<(String, String)>,
    },
    /// Write every definition (users, vhosts, permissions, durable
    /// exchanges, queues, bindings) as RabbitMQ's JSON, to a file or `-`.
    ExportDefinitions { file: String },
    /// Import a definitions file (e.g. from `rabbitmqctl export_definitions`), or `-`.
    ImportDefinitions { file: String },
}

/// Runs one command; the process's exit code.
pub fn run(ctl: Ctl) -> std::process::ExitCode {
    let client = Client::new(&ctl.url, &ctl.user, &ctl.password);
    match execute(&client, ctl.command, ctl.json) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn execute(client: &Client, verb: Verb, as_json: bool) -> Result<(), ClientError> {
    let put = |path: String, body: Value| client.call("PUT", &path, Some(&body)).map(drop);
    let delete = |path: String| client.call("DELETE", &path, None).map(drop);
    let list = |path: String, columns: &[&str]| -> Result<(), ClientError> {
        let rows = client.call("GET", &path, None)?;
        if as_json {
            println!("{}", serde_json::to_string_pretty(&rows).unwrap_or_default());
            return Ok(());
        }
        println!("{}", columns.join("\t"));
        for row in rows.as_array().into_iter().flatten() {
            let cells: Vec<String> = columns.iter().map(|c| cell(&row[*c])).collect();
            println!("{}", cells.join("\t"));
        }
        Ok(())
    };
    let user_path = |name: &str| format!("/api/users/{}", segment(name));
    match verb {
        Verb::AddUser { name, password, tags } => {
            if client.request("GET", &user_path(&name), None)?.0 == 200 {
                return Err(ClientError::Refused {
                    status: 409,
                    reason: format!("user '{name}' already exists"),
                });
            }
            put(user_path(&name), json!({"password": password, "tags": tags}))
        }
        Verb::DeleteUser { name } => delete(user_path(&name)),
        Verb::ChangePassword { name, password } => {
            let user = client.call("GET", &user_path(&name), None)?;
            put(
                user_path(&name),
                json!({"password": password, "tags": user["tags"]}),
            )
        }
        Verb::SetUserTags { name, tags } => {
            let user = client.call("GET", &user_path(&name), None)?;
            let body = json!({"password_hash": user["password_hash"], "tags": tags});
            put(user_path(&name), body)
        }
        Verb::ListUsers => list("/api/users".into(), &["name", "tags"]),
        Verb::AddVhost { name } => put(format!("/api/vhosts/{}", segment(&name)), json!({})),
        Verb::DeleteVhost { name } => delete(format!("/api/vhosts/{}", segment(&name))),
        Verb::ListVhosts => list("/api/vhosts".into(), &["name"]),
        Verb::SetPermissions {
            vhost,
            user,
            configure,
            write,
            read,
        } => put(
            format!("/api/permissions/{}/{}", segment(&vhost.vhost), segment(&user)),
            json!({"configure": configure, "write": write, "read": read}),
        ),
        Verb::ClearPermissions { vhost, user } => delete(format!(
            "/api/permissions/{}/{}",
            segment(&vhost.vhost),
            segment(&user)
        )),
        Verb::ListPermissions { vhost } => {
            let rows = client.call("GET", "/api/permissions", None)?;
            print_filtered(
                rows,
                &vhost.vhost,
                &["user", "configure", "write", "read"],
                as_json,
            );
            Ok(())
        }
        Verb::SetTopicPermissions {
            vhost,
            user,
            exchange,
            write,
            read,
        } => put(
            format!(
                "/api/topic-permissions/{}/{}",
                segment(&vhost.vhost),
                segment(&user)
            ),
            json!({"exchange": exchange, "write": write, "read": read}),
        ),
        Verb::ClearTopicPermissions { vhost, user } => delete(format!(
            "/api/topic-permissions/{}/{}",
            segment(&vhost.vhost),
            segment(&user)
        )),
        Verb::ListTopicPermissions { vhost } => {
            let rows = client.call("GET", "/api/topic-permissions", None)?;
            print_filtered(
                rows,
                &vhost.vhost,
                &["user", "exchange", "write", "read"],
                as_json,
            );
            Ok(())
        }
        Verb::ListQueues { vhost } => list(
            format!("/api/queues/{}", segment(&vhost.vhost)),
            &["name", "messages", "consumers"],
        ),
        Verb::ListExchanges { vhost } => list(
            format!("/api/exchanges/{}", segment(&vhost.vhost)),
            &["name", "type"],
        ),
        Verb::ListBindings { vhost } => list(
            format!("/api/bindings/{}", segment(&vhost.vhost)),
            &["source", "destination", "destination_type", "routing_key"],
        ),
        Verb::ListConnections => list("/api/connections".into(), &["name", "user", "vhost"]),
        Verb::ListConsumers { vhost } => {
            let rows = client.call("GET", &format!("/api/consumers/{}", segment(&vhost.vhost)), None)?;
            if as_json {
                println!("{}", serde_json::to_string_pretty(&rows).unwrap_or_default());
                return Ok(());
            }
            println!("queue_name\tconsumer_tag\tconnection\tchannel\tack_required\tprefetch_count\tactive");
            for c in rows.as_array().into_iter().flatten() {
                let cells = [
                    &c["queue"]["name"],
                    &c["consumer_tag"],
                    &c["channel_details"]["connection_name"],
                    &c["channel_details"]["number"],
                    &c["ack_required"],
                    &c["prefetch_count"],
                    &c["active"],
                ];
                let cells: Vec<String> = cells.iter().map(|v| cell(v)).collect();
                println!("{}", cells.join("\t"));
            }
            Ok(())
        }
        Verb::CloseConnection { name, reason } => client
            .call_with(
                "DELETE",
                &format!("/api/connections/{}", segment(&name)),
                None,
                &[("X-Reason", &reason)],
            )
            .map(drop),
        Verb::PurgeQueue { vhost, name } => delete(format!(
            "/api/queues/{}/{}/contents",
            segment(&vhost.vhost),
            segment(&name)
        )),
        Verb::DeleteQueue { vhost, name } => delete(format!(
            "/api/queues/{}/{}",
            segment(&vhost.vhost),
            segment(&name)
        )),
        Verb::ExplainRoute {
            vhost,
            exchange,
            routing_key,
            headers,
        } => {
            let exchange = if exchange.is_empty() {
                "amq.default".to_owned()
            } else {
                exchange
            };
            let headers: serde_json::Map<String, Value> =
                headers.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
            let path = format!("/api/explain/{}/{}", segment(&vhost.vhost), segment(&exchange));
            let body = json!({"routing_key": routing_key, "headers": headers});
            let explained = client.call("POST", &path, Some(&body))?;
            match as_json {
                true => println!("{}", serde_json::to_string_pretty(&explained).unwrap_or_default()),
                false => print!("{}", describe_route(&explained)),
            }
            Ok(())
        }
        Verb::ExportDefinitions { file } => {
            let defs = client.call("GET", "/api/definitions", None)?;
            let text = serde_json::to_string_pretty(&defs).unwrap_or_default();
            match file.as_str() {
                "-" => println!("{text}"),
                path => std::fs::write(path, text + "\n").map_err(|e| local(path, e))?,
            }
            Ok(())
        }
        Verb::ImportDefinitions { file } => {
            let mut text = String::new();
            match file.as_str() {
                "-" => std::io::stdin().read_to_string(&mut text).map(drop),
                path => std::fs::read_to_string(path).map(|t| text = t),
            }
            .map_err(|e| local(&file, e))?;
            let defs: Value = serde_json::from_str(&text).map_err(|e| ClientError::Refused {
                status: 0,
                reason: format!("{file} is not JSON: {e}"),
            })?;
            client.call("POST", "/api/definitions", Some(&defs)).map(drop)
        }
    }
}

fn parse_header(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("a header is name=value, not '{text}'"))
}

/// The route explainer's answer, as lines: each exchange visited, how, and
/// what matched; then the queues reached.
fn describe_route(e: &Value) -> String {
    let name = |x: &Value| match x.as_str() {
        Some("") => "(default exchange)".to_owned(),
        Some(x) => x.to_owned(),
        None => String::new(),
    };
    let mut out = String::new();
    for hop in e["hops"].as_array().into_iter().flatten() {
        let reached = &hop["reached"];
        let how = match reached["how"].as_str() {
            Some("binding") => format!(
                "bound from {} with key '{}'",
                name(&reached["from"]),
                cell(&reached["routing_key"])
            ),
            Some("alternate-exchange") => format!("alternate exchange of {}", name(&reached["from"])),
            _ => "published to".to_owned(),
        };
        out += &format!(
            "exchange {} ({}): {how}\n",
            name(&hop["exchange"]),
            cell(&hop["type"])
        );
        if hop["visited_before"] == true {
            out += "  visited before on this route: a loop, nothing more\n";
            continue;
        }
        if hop["held_for_delay"] == true {
            out += "  held for its x-delay, then routed by the bindings it has then\n";
        }
        for b in hop["matched"].as_array().into_iter().flatten() {
            out += &format!(
                "  matched '{}' -> {} {}\n",
                cell(&b["routing_key"]),
                cell(&b["destination_type"]),
                cell(&b["destination"])
            );
        }
        out += &format!("  missed {} binding(s)\n", hop["missed"]);
    }
    let queues = e["queues"].as_array().cloned().unwrap_or_default();
    if queues.is_empty() {
        out += "unroutable: no queue\n";
    }
    for q in queues {
        out += &format!("queue {} (via {})", cell(&q["queue"]), name(&q["exchange"]));
        if let Some(dlx) = q["dead_letter_exchange"].as_str() {
            out += &format!("; dead-letters to {}", name(&Value::String(dlx.to_owned())));
        }
        out += "\n";
    }
    out
}

fn local(path: &str, e: std::io::Error) -> ClientError {
    ClientError::Refused {
        status: 0,
        reason: format!("{path}: {e}"),
    }
}

fn print_filtered(rows: Value, vhost: &str, columns: &[&str], as_json: bool) {
    let rows: Vec<&Value> = rows
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["vhost"] == vhost)
        .collect();
    if as_json {
        println!("{}", serde_json::to_string_pretty(&rows).unwrap_or_default());
        return;
    }
    println!("{}", columns.join("\t"));
    for row in rows {
        let cells: Vec<String> = columns.iter().map(|c| cell(&row[*c])).collect();
        println!("{}", cells.join("\t"));
    }
}

/// A JSON value as a table cell: strings bare, lists as `[a, b]`.
fn cell(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Array(items) => format!("[{}]", items.iter().map(cell).collect::<Vec<_>>().join(", ")),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}
