//! The routes of the management API, on RabbitMQ's paths, with its JSON
//! shapes and status codes: 200 with a body, 201 for a PUT that created,
//! 204 for one that changed or a DELETE, 400 `bad_request`, 401
//! `not_authorised`, 404 `Object Not Found`.
//!
//! Every request is authenticated with HTTP basic authentication against
//! the broker's users, as AMQP logins are (`guest` only from the loopback
//! unless allowed). As in RabbitMQ (probed on 3.10.8): users (with their
//! password hashes), permissions, definitions and vhosts themselves need
//! `administrator`; `/api/nodes` needs `monitoring`; everything else (the
//! overview, queues, exchanges, bindings, consumers, connections, channels,
//! and declaring, deleting, publishing, getting and purging) any
//! management tag (`management`, `policymaker`, `monitoring`,
//! `administrator`). A user who is not an administrator sees the objects of
//! the vhosts they have permissions in (401 for a path in another), and
//! unless a monitor only their own connections and channels ([`Scope`]);
//! what they do in a vhost is checked against their permissions there, as
//! over AMQP. A change must say it is JSON if it says anything, and a POST
//! must say so even without a body, so that another site's page cannot
//! make changes with a user's remembered credentials (a form always names
//! its type; a bodiless cross-site POST can be sent without one, while a
//! cross-site PUT or DELETE needs a CORS preflight, which fails).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::{info, warn};
use warren_server::admin::{ChannelInfo, GetMode};
use warren_server::broker::Broker;
use warren_store::{PermissionDef, TopicPermissionDef, UserDef};

use crate::answer::{body, created, exchange_name, no_content, ok, Answer, ApiError, Shared};
use crate::definitions::{self, Definitions, SHA256};
use crate::guard::Peer;
use crate::json::{json_to_properties, json_to_table, properties_to_json, table_to_json};
use crate::rates::Rates;

/// The authenticated user of a request, for the operations that act with
/// their permissions in a vhost (declare, bind, publish, get).
#[derive(Clone, Debug)]
struct ApiUser(String);

type Who = Extension<ApiUser>;

/// The API's routes.
pub fn router(broker: Arc<Broker>, rates: Arc<Rates>) -> Router {
    Router::new()
        .route("/api/overview", get(overview))
        .route("/api/whoami", get(whoami))
        .route("/api/vhosts", get(list_vhosts))
        .route(
            "/api/vhosts/{vhost}",
            get(get_vhost).put(put_vhost).delete(delete_vhost),
        )
        .route("/api/users", get(list_users))
        .route(
            "/api/users/{user}",
            get(get_user).put(put_user).delete(delete_user),
        )
        .route("/api/permissions", get(list_permissions))
        .route(
            "/api/permissions/{vhost}/{user}",
            get(get_permissions)
                .put(put_permissions)
                .delete(delete_permissions),
        )
        .route("/api/topic-permissions", get(list_topic_permissions))
        .route(
            "/api/topic-permissions/{vhost}/{user}",
            get(get_topic_permissions)
                .put(put_topic_permissions)
                .delete(delete_topic_permissions),
        )
        .route("/api/queues", get(list_queues))
        .route("/api/queues/{vhost}", get(list_queues_in))
        .route(
            "/api/queues/{vhost}/{name}",
            get(get_queue).put(put_queue).delete(delete_queue),
        )
        .route("/api/queues/{vhost}/{name}/contents", delete(purge_queue))
        .route("/api/queues/{vhost}/{name}/get", post(get_messages))
        .route("/api/queues/{vhost}/{name}/bindings", get(queue_bindings))
        .route("/api/consumers", get(list_consumers))
        .route("/api/consumers/{vhost}", get(list_consumers_in))
        .route("/api/exchanges", get(list_exchanges))
        .route("/api/exchanges/{vhost}", get(list_exchanges_in))
        .route(
            "/api/exchanges/{vhost}/{name}",
            get(get_exchange).put(put_exchange).delete(delete_exchange),
        )
        .route(
            "/api/exchanges/{vhost}/{name}/bindings/source",
            get(bindings_from),
        )
        .route(
            "/api/exchanges/{vhost}/{name}/bindings/destination",
            get(bindings_to),
        )
        .route("/api/exchanges/{vhost}/{name}/publish", post(publish))
        .route("/api/bindings", get(list_bindings))
        .route("/api/bindings/{vhost}", get(list_bindings_in))
        .route(
            "/api/bindings/{vhost}/e/{source}/{kind}/{destination}",
            get(list_binding_pair).post(add_binding),
        )
        .route(
            "/api/bindings/{vhost}/e/{source}/{kind}/{destination}/{props}",
            get(get_binding).delete(delete_binding),
        )
        .route("/api/explain/{vhost}/{exchange}", post(crate::explain::explain))
        .route("/api/flows/{vhost}", get(flows))
        .route("/api/nodes", get(nodes))
        .route("/api/aliveness-test/{vhost}", get(aliveness_test))
        .route("/api/health/checks/alarms", get(alarms_check))
        .route("/api/health/checks/local-alarms", get(alarms_check))
        .route("/api/channels", get(list_channels))
        .route("/api/channels/{name}", get(get_channel))
        .route("/api/vhosts/{vhost}/channels", get(list_channels_in))
        .route("/api/connections/{name}/channels", get(connection_channels))
        .route("/api/connections", get(list_connections))
        .route(
            "/api/connections/{name}",
            get(get_connection).delete(close_connection),
        )
        .route("/api/definitions", get(export).post(import))
        .layer(middleware::from_fn(scope_answers))
        .layer(middleware::from_fn(crate::listing::shape_lists))
        .layer(Extension(rates))
        .layer(middleware::from_fn_with_state(broker.clone(), authenticate))
        // RabbitMQ's `management.http.max_body_size`: definitions files
        // are large.
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(broker)
}

/// The largest request body taken, as RabbitMQ's default (20 MB).
const MAX_BODY: usize = 20_000_000;

/// What a request needs of its user's tags.
enum Needs {
    /// Any management tag.
    Management,
    /// `monitoring` or `administrator`.
    Monitoring,
    /// `administrator`.
    Administrator,
}

/// The tags a request needs, as RabbitMQ 3.10.8 asks for them (probed):
/// users, permissions and definitions, and a vhost itself, are for
/// administrators; nodes for monitors; the rest (queues, exchanges,
/// bindings, consumers, connections, channels, and the operations on
/// queues and exchanges) for any management tag, within the vhosts the
/// user may use ([`Scope`]).
fn needs(method: &Method, path: &str) -> Needs {
    let secret = [
        "/api/users",
        "/api/permissions",
        "/api/topic-permissions",
        "/api/definitions",
    ]
    .iter()
    .any(|p| path == *p || path.starts_with(&format!("{p}/")));
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    match segments.as_slice() {
        _ if secret => Needs::Administrator,
        ["api", "vhosts", _] => Needs::Administrator,
        ["api", "vhosts"] if !matches!(*method, Method::GET | Method::HEAD) => Needs::Administrator,
        ["api", "connections", _] if *method == Method::DELETE => Needs::Administrator,
        ["api", "nodes", ..] => Needs::Monitoring,
        _ => Needs::Management,
    }
}

/// The vhost a path acts in, for the paths that answer 401 when the user
/// may not use it (consumer lists are filtered instead, as RabbitMQ's).
fn path_vhost(path: &str) -> Option<String> {
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    match segments.as_slice() {
        ["api", "queues" | "exchanges" | "bindings" | "aliveness-test" | "explain" | "flows", vhost, ..]
        | ["api", "vhosts", vhost, "channels"] => Some(
            percent_encoding::percent_decode_str(vhost)
                .decode_utf8_lossy()
                .into_owned(),
        ),
        _ => None,
    }
}

/// What a user who is not an administrator may see: the vhosts they have
/// permissions in, and (unless a monitor) only their own connections and
/// channels, and only those vhosts in the vhost list. RabbitMQ's
/// `rabbit_mgmt_util` filters the same way.
#[derive(Clone, Debug)]
struct Scope {
    user: String,
    monitor: bool,
    vhosts: std::collections::HashSet<String>,
}

impl Scope {
    fn sees(&self, path: &str, item: &Value) -> bool {
        let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
        let own = || self.monitor || item["user"].as_str() == Some(self.user.as_str());
        let permitted = |vhost: &Value| vhost.as_str().is_some_and(|v| self.vhosts.contains(v));
        match segments.as_slice() {
            ["api", "vhosts"] => self.monitor || permitted(&item["name"]),
            ["api", "connections" | "channels", ..] | ["api", "vhosts", _, "channels"] => own(),
            ["api", "consumers", ..] => permitted(&item["queue"]["vhost"]),
            _ => item.get("vhost").is_none_or(permitted),
        }
    }
}

/// Keeps what a [`Scope`] sees of an answer: the items of a list, or a
/// single object (401 if hidden).
async fn scope_answers(request: Request, next: Next) -> Response {
    let scope = request.extensions().get::<Scope>().cloned();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let Some(scope) = scope else {
        return response;
    };
    if response.status() != StatusCode::OK {
        return response;
    }
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let Ok(value) = serde_json::from_slice::<Value>(&bytes) else {
        return Response::from_parts(parts, axum::body::Body::from(bytes));
    };
    match value {
        Value::Array(items) => {
            let kept: Vec<Value> = items.into_iter().filter(|i| scope.sees(&path, i)).collect();
            Json(kept).into_response()
        }
        object if scope.sees(&path, &object) => Json(object).into_response(),
        _ => ApiError(
            StatusCode::UNAUTHORIZED,
            "User not authorised to access virtual host".to_owned(),
        )
        .into_response(),
    }
}

/// HTTP basic authentication against the broker's users, the tags the
/// request needs, and a JSON body.
async fn authenticate(
    State(broker): Shared,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    request: Request,
    next: Next,
) -> Response {
    let unauthorised = |reason: &str| ApiError(StatusCode::UNAUTHORIZED, reason.to_owned()).into_response();
    // A failed login asks for credentials, unless the web UI made the
    // request: a browser would answer the challenge with its own login
    // prompt, and then send what was typed there with every request to
    // this origin, forms from other sites' pages included.
    let from_page = request.headers().contains_key("x-requested-with");
    let login_failed = || {
        let mut response = unauthorised("Login failed");
        if !from_page {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Basic realm=\"Warren Management\""),
            );
        }
        response
    };
    let Some((user, password)) = basic_credentials(request.headers()) else {
        return login_failed();
    };
    let loopback_only =
        user == "guest" && !broker.config.allow_remote_guest && !peer.ip().to_canonical().is_loopback();
    if !broker.users.authenticate(&user, &password) || loopback_only {
        warn!(%peer, %user, "management login failed");
        return login_failed();
    }
    let has = |tags: &[&str]| tags.iter().any(|t| broker.users.has_tag(&user, t));
    let admin = has(&["administrator"]);
    let monitor = admin || has(&["monitoring"]);
    let refused = match needs(request.method(), request.uri().path()) {
        Needs::Management if !monitor && !has(&["management", "policymaker"]) => Some("Not management user"),
        Needs::Monitoring if !monitor => Some("Not monitor user"),
        Needs::Administrator if !admin => Some("Not administrator user"),
        _ => None,
    };
    if let Some(why) = refused {
        return unauthorised(why);
    }
    let mut request = request;
    if !admin {
        let vhosts = broker
            .users
            .permissions()
            .into_iter()
            .filter(|p| p.user == user)
            .map(|p| p.vhost)
            .collect();
        let scope = Scope {
            user: user.clone(),
            monitor,
            vhosts,
        };
        if let Some(vhost) = path_vhost(request.uri().path()) {
            if !scope.vhosts.contains(&vhost) {
                return ApiError(
                    StatusCode::UNAUTHORIZED,
                    "User not authorised to access virtual host".to_owned(),
                )
                .into_response();
            }
        }
        request.extensions_mut().insert(scope);
    }
    let has_body = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|n| n != "0")
        || request.headers().contains_key(header::TRANSFER_ENCODING);
    let content_type = request.headers().get(header::CONTENT_TYPE);
    let json = content_type
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json"));
    // A form always says what it is, even empty: a change with any type but
    // JSON is refused, whether or not it has a body. A POST must say JSON
    // even without a body: another site's page can send a bodiless POST
    // with no type at all (a bodiless PUT or DELETE from another site needs
    // a CORS preflight, which fails, so `curl -X PUT` still works).
    let changes = !matches!(*request.method(), Method::GET | Method::HEAD);
    let post = *request.method() == Method::POST;
    if (has_body || post || (changes && content_type.is_some())) && !json {
        return ApiError(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "a request body must be application/json".to_owned(),
        )
        .into_response();
    }
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        info!(%peer, %user, method = %request.method(), path = %request.uri().path(), "management request");
    }
    request.extensions_mut().insert(ApiUser(user));
    next.run(request).await
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

async fn overview(State(broker): Shared, Extension(rates): Extension<Arc<Rates>>) -> Answer {
    let queues = broker.queues(None).await?;
    let ready: u64 = queues.iter().map(|q| u64::from(q.ready)).sum();
    let unacked: u64 = queues.iter().map(|q| u64::from(q.unacked)).sum();
    let activity = broker.channels().await;
    let (channels, totals) = (activity.channels, activity.totals);
    ok(json!({
        "product_name": "Warren",
        "product_version": env!("CARGO_PKG_VERSION"),
        "management_version": env!("CARGO_PKG_VERSION"),
        "node": format!("warren@{}", hostname()),
        "message_stats": rates.overview(&totals),
        "queue_totals": rates.queue_totals(ready, unacked),
        "object_totals": {
            "channels": channels.len(),
            "connections": broker.connections().len(),
            "exchanges": broker.exchanges(None)?.len(),
            "queues": queues.len(),
            "consumers": queues.iter().map(|q| u64::from(q.consumers)).sum::<u64>(),
        },
    }))
}

async fn whoami(State(broker): Shared, headers: HeaderMap) -> Answer {
    let (name, _) = basic_credentials(&headers).unwrap_or_default();
    let tags = broker
        .users
        .list()
        .into_iter()
        .find(|u| u.name == name)
        .map(|u| u.tags);
    ok(json!({"name": name, "tags": tags.unwrap_or_default()}))
}

fn vhost_json(name: &str) -> Value {
    json!({"name": name})
}

async fn list_vhosts(State(broker): Shared) -> Answer {
    let mut names: Vec<String> = broker.vhosts().iter().map(|v| v.name.clone()).collect();
    names.sort();
    ok(names.iter().map(|n| vhost_json(n)).collect())
}

async fn get_vhost(State(broker): Shared, Path(vhost): Path<String>) -> Answer {
    match broker.vhost(&vhost) {
        Some(_) => ok(vhost_json(&vhost)),
        None => Err(ApiError::not_found()),
    }
}

/// PUT of a vhost. One it creates gives its creator every permission
/// there, as RabbitMQ's API does (probed on 3.10.8).
async fn put_vhost(
    State(broker): Shared,
    Extension(ApiUser(user)): Who,
    Path(vhost): Path<String>,
) -> Answer {
    let new = broker.add_vhost(&vhost);
    if new {
        let all = ".*".to_owned();
        broker.set_permissions(PermissionDef {
            user,
            vhost,
            configure: all.clone(),
            write: all.clone(),
            read: all,
        })?;
    }
    created(new)
}

async fn delete_vhost(State(broker): Shared, Path(vhost): Path<String>) -> Answer {
    no_content(broker.delete_vhost(&vhost).await)
}

fn user_json(user: &UserDef) -> Value {
    json!({
        "name": user.name,
        "password_hash": user.password_hash,
        "hashing_algorithm": SHA256,
        "tags": user.tags,
        "limits": {},
    })
}

async fn list_users(State(broker): Shared) -> Answer {
    ok(broker.users.list().iter().map(user_json).collect())
}

async fn get_user(State(broker): Shared, Path(user): Path<String>) -> Answer {
    let users = broker.users.list();
    let user = users
        .iter()
        .find(|u| u.name == user)
        .ok_or_else(ApiError::not_found)?;
    ok(user_json(user))
}

/// PUT /api/users/{user}: `password` or `password_hash`, and `tags`.
#[derive(Deserialize)]
struct PutUser {
    password: Option<String>,
    password_hash: Option<String>,
    hashing_algorithm: Option<String>,
    #[serde(default, deserialize_with = "definitions::tags")]
    tags: Vec<String>,
}

async fn put_user(State(broker): Shared, Path(name): Path<String>, bytes: Bytes) -> Answer {
    let put: PutUser = body(&bytes)?;
    if put.hashing_algorithm.as_deref().is_some_and(|a| a != SHA256) {
        return Err(ApiError::bad_request(format!("only {SHA256} is supported")));
    }
    // Neither: a user who cannot log in with a password (EXTERNAL only),
    // as RabbitMQ makes one.
    let password_hash = match (put.password, put.password_hash) {
        (Some(password), _) => warren_server::users::hash_password(&password),
        (None, Some(hash)) => hash,
        (None, None) => String::new(),
    };
    let new = !broker.users.exists(&name);
    broker.users.put(UserDef {
        name,
        password_hash,
        tags: put.tags,
    });
    created(new)
}

async fn delete_user(State(broker): Shared, Path(user): Path<String>) -> Answer {
    no_content(broker.users.delete(&user))
}

fn permission_json(p: &PermissionDef) -> Value {
    json!({"user": p.user, "vhost": p.vhost, "configure": p.configure, "write": p.write, "read": p.read})
}

async fn list_permissions(State(broker): Shared) -> Answer {
    ok(broker.users.permissions().iter().map(permission_json).collect())
}

async fn get_permissions(State(broker): Shared, Path((vhost, user)): Path<(String, String)>) -> Answer {
    let all = broker.users.permissions();
    let p = all
        .iter()
        .find(|p| p.vhost == vhost && p.user == user)
        .ok_or_else(ApiError::not_found)?;
    ok(permission_json(p))
}

#[derive(Deserialize)]
struct PutPermissions {
    configure: String,
    write: String,
    read: String,
}

async fn put_permissions(
    State(broker): Shared,
    Path((vhost, user)): Path<(String, String)>,
    bytes: Bytes,
) -> Answer {
    let put: PutPermissions = body(&bytes)?;
    let new = !broker
        .users
        .permissions()
        .iter()
        .any(|p| p.vhost == vhost && p.user == user);
    broker.set_permissions(PermissionDef {
        user,
        vhost,
        configure: put.configure,
        write: put.write,
        read: put.read,
    })?;
    created(new)
}

async fn delete_permissions(State(broker): Shared, Path((vhost, user)): Path<(String, String)>) -> Answer {
    no_content(broker.users.clear_permissions(&user, &vhost))
}

fn topic_json(t: &TopicPermissionDef) -> Value {
    json!({"user": t.user, "vhost": t.vhost, "exchange": t.exchange, "write": t.write, "read": t.read})
}

async fn list_topic_permissions(State(broker): Shared) -> Answer {
    ok(broker.users.topic_permissions().iter().map(topic_json).collect())
}

async fn get_topic_permissions(State(broker): Shared, Path((vhost, user)): Path<(String, String)>) -> Answer {
    let mine: Vec<Value> = broker
        .users
        .topic_permissions()
        .iter()
        .filter(|t| t.vhost == vhost && t.user == user)
        .map(topic_json)
        .collect();
    match mine.is_empty() {
        true => Err(ApiError::not_found()),
        false => ok(mine.into()),
    }
}

#[derive(Deserialize)]
struct PutTopicPermissions {
    exchange: String,
    write: String,
    read: String,
}

async fn put_topic_permissions(
    State(broker): Shared,
    Path((vhost, user)): Path<(String, String)>,
    bytes: Bytes,
) -> Answer {
    let put: PutTopicPermissions = body(&bytes)?;
    let new = !broker
        .users
        .topic_permissions()
        .iter()
        .any(|t| t.vhost == vhost && t.user == user && t.exchange == put.exchange);
    broker.set_topic_permissions(TopicPermissionDef {
        user,
        vhost,
        exchange: put.exchange,
        write: put.write,
        read: put.read,
    })?;
    created(new)
}

async fn delete_topic_permissions(
    State(broker): Shared,
    Path((vhost, user)): Path<(String, String)>,
) -> Answer {
    no_content(broker.users.clear_topic_permissions(&user, &vhost, None))
}

fn queue_json(q: &warren_server::admin::QueueInfo, rates: &Rates) -> Value {
    let kind = match q.arguments.inner().get("x-queue-type") {
        Some(amq_protocol::types::AMQPValue::LongString(t)) => t.to_string(),
        _ => "classic".to_owned(),
    };
    let mut queue = json!({
        "name": q.name,
        "vhost": q.vhost,
        "type": kind,
        "durable": q.durable,
        "auto_delete": q.auto_delete,
        "exclusive": q.exclusive,
        "arguments": table_to_json(&q.arguments),
        "messages": q.ready + q.unacked,
        "messages_ready": q.ready,
        "messages_unacknowledged": q.unacked,
        "consumers": q.consumers,
    });
    let (stats, details) = rates.queue(&q.vhost, &q.name, &q.counters);
    if let Value::Object(object) = &mut queue {
        object.insert("message_stats".to_owned(), stats);
        object.extend(details);
    }
    queue
}

type Rated = Extension<Arc<Rates>>;

async fn queues(broker: &Broker, rates: &Rates, vhost: Option<&str>) -> Answer {
    let all = broker.queues(vhost).await?;
    ok(all.iter().map(|q| queue_json(q, rates)).collect())
}

async fn list_queues(State(broker): Shared, Extension(rates): Rated) -> Answer {
    queues(&broker, &rates, None).await
}

async fn list_queues_in(State(broker): Shared, Extension(rates): Rated, Path(vhost): Path<String>) -> Answer {
    queues(&broker, &rates, Some(&vhost)).await
}

async fn get_queue(
    State(broker): Shared,
    Extension(rates): Rated,
    Path((vhost, name)): Path<(String, String)>,
) -> Answer {
    ok(queue_json(&broker.queue(&vhost, &name).await?, &rates))
}

async fn delete_queue(
    State(broker): Shared,
    Extension(ApiUser(user)): Who,
    Path((vhost, name)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Answer {
    broker
        .delete_queue(
            &user,
            &vhost,
            &name,
            flag(&query, "if-unused"),
            flag(&query, "if-empty"),
        )
        .await?;
    no_content(true)
}

async fn purge_queue(
    State(broker): Shared,
    Extension(ApiUser(user)): Who,
    Path((vhost, name)): Path<(String, String)>,
) -> Answer {
    broker.purge_queue(&user, &vhost, &name).await?;
    no_content(true)
}

/// As RabbitMQ's API shapes a consumer: its queue and channel as objects.
async fn consumers(broker: &Broker, vhost: Option<&str>) -> Answer {
    let all = broker.consumers(vhost).await?;
    ok(all
        .iter()
        .map(|c| {
            json!({
                "consumer_tag": c.tag,
                "queue": {"name": c.queue, "vhost": c.vhost},
                "channel_details": {"connection_name": c.connection, "number": c.channel},
                "ack_required": c.ack_required,
                "prefetch_count": c.prefetch_count,
                "active": c.active,
                "arguments": if c.priority == 0 { json!({}) } else { json!({"x-priority": c.priority}) },
            })
        })
        .collect())
}

async fn list_consumers(State(broker): Shared) -> Answer {
    consumers(&broker, None).await
}

async fn list_consumers_in(State(broker): Shared, Path(vhost): Path<String>) -> Answer {
    consumers(&broker, Some(&vhost)).await
}

fn exchange_json(x: &warren_server::vhost::ExchangeInfo) -> Value {
    json!({
        "name": x.name,
        "vhost": x.vhost,
        "type": x.kind,
        "durable": x.durable,
        "auto_delete": x.auto_delete,
        "internal": x.internal,
        "arguments": table_to_json(&x.arguments),
    })
}

fn exchanges(broker: &Broker, vhost: Option<&str>) -> Answer {
    ok(broker.exchanges(vhost)?.iter().map(exchange_json).collect())
}

async fn list_exchanges(State(broker): Shared) -> Answer {
    exchanges(&broker, None)
}

async fn list_exchanges_in(State(broker): Shared, Path(vhost): Path<String>) -> Answer {
    exchanges(&broker, Some(&vhost))
}

/// RabbitMQ's `properties_key`: the routing key, percent-encoded (`~` if
/// empty), and for a binding with arguments a digest of them after a `~`.
/// It names a binding in a DELETE, encoded or not (rabbitmqadmin sends
/// `orders.#`, the API lists `orders.%23`).
fn properties_key(b: &warren_server::vhost::BindingInfo) -> String {
    use std::hash::{Hash, Hasher};
    // The key percent-encoded, as RabbitMQ writes it (`orders.%23`).
    let key = match b.routing_key.as_str() {
        "" => "~".to_owned(),
        key => crate::client::segment(key),
    };
    if b.arguments.inner().is_empty() {
        return key;
    }
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    table_to_json(&b.arguments).to_string().hash(&mut hasher);
    format!("{key}~{:x}", hasher.finish())
}

fn binding_json(b: &warren_server::vhost::BindingInfo) -> Value {
    json!({
        "source": b.source,
        "vhost": b.vhost,
        "destination": b.destination,
        "destination_type": b.destination_type,
        "routing_key": b.routing_key,
        "arguments": table_to_json(&b.arguments),
        "properties_key": properties_key(b),
    })
}

fn bindings_where(
    broker: &Broker,
    vhost: Option<&str>,
    keep: impl Fn(&warren_server::vhost::BindingInfo) -> bool,
) -> Answer {
    let all = broker.bindings(vhost)?;
    ok(all.iter().filter(|b| keep(b)).map(binding_json).collect())
}

fn bindings(broker: &Broker, vhost: Option<&str>) -> Answer {
    bindings_where(broker, vhost, |_| true)
}

async fn list_bindings(State(broker): Shared) -> Answer {
    bindings(&broker, None)
}

async fn list_bindings_in(State(broker): Shared, Path(vhost): Path<String>) -> Answer {
    bindings(&broker, Some(&vhost))
}

fn connection_json(c: &warren_server::broker::ConnectionInfo) -> Value {
    json!({
        "name": c.name,
        "user": c.user,
        "vhost": c.vhost,
        "peer_host": c.peer.ip().to_canonical().to_string(),
        "peer_port": c.peer.port(),
        "connected_at": c.connected_at,
    })
}

/// GET /api/flows/{vhost} (Warren's own): the rate of every step messages
/// take in the vhost, for the topology graph ([`Rates::flows`]).
async fn flows(State(broker): Shared, Extension(rates): Rated, Path(vhost): Path<String>) -> Answer {
    broker.vhost(&vhost).ok_or_else(ApiError::not_found)?;
    ok(rates.flows(&vhost).into())
}

/// A channel as RabbitMQ's API lists it: named after its connection and
/// its number, `peer (1)`.
fn channel_json(c: &ChannelInfo, rates: &Rates) -> Value {
    let (connection, channel) = (&c.connection, &c.channel);
    json!({
        "name": format!("{} ({})", connection.name, channel.number),
        "number": channel.number,
        "node": format!("warren@{}", hostname()),
        "connection_details": {
            "name": connection.name,
            "peer_host": connection.peer.ip().to_canonical().to_string(),
            "peer_port": connection.peer.port(),
        },
        "user": connection.user,
        "user_who_performed_action": connection.user,
        "vhost": connection.vhost,
        "state": "running",
        "consumer_count": channel.consumers,
        "prefetch_count": channel.prefetch_count,
        "global_prefetch_count": channel.global_prefetch_count,
        "messages_unacknowledged": channel.unacked,
        "messages_unconfirmed": channel.unconfirmed,
        "messages_uncommitted": channel.uncommitted.0,
        "acks_uncommitted": channel.uncommitted.1,
        "confirm": channel.confirm,
        "transactional": channel.transactional,
        "message_stats": rates.channel(&connection.name, channel.number, &channel.counters),
    })
}

async fn channels_where(broker: &Broker, rates: &Rates, keep: impl Fn(&ChannelInfo) -> bool) -> Answer {
    let all = broker.channels().await.channels;
    ok(all
        .iter()
        .filter(|c| keep(c))
        .map(|c| channel_json(c, rates))
        .collect())
}

async fn list_channels(State(broker): Shared, Extension(rates): Rated) -> Answer {
    channels_where(&broker, &rates, |_| true).await
}

async fn list_channels_in(
    State(broker): Shared,
    Extension(rates): Rated,
    Path(vhost): Path<String>,
) -> Answer {
    broker.vhost(&vhost).ok_or_else(ApiError::not_found)?;
    channels_where(&broker, &rates, |c| c.connection.vhost == vhost).await
}

async fn connection_channels(
    State(broker): Shared,
    Extension(rates): Rated,
    Path(name): Path<String>,
) -> Answer {
    if !broker.connections().iter().any(|c| c.name == name) {
        return Err(ApiError::not_found());
    }
    channels_where(&broker, &rates, |c| c.connection.name == name).await
}

async fn get_channel(State(broker): Shared, Extension(rates): Rated, Path(name): Path<String>) -> Answer {
    let all = broker.channels().await.channels;
    let found = all
        .iter()
        .find(|c| format!("{} ({})", c.connection.name, c.channel.number) == name)
        .ok_or_else(ApiError::not_found)?;
    ok(channel_json(found, &rates))
}

async fn list_connections(State(broker): Shared) -> Answer {
    ok(broker.connections().iter().map(connection_json).collect())
}

async fn get_connection(State(broker): Shared, Path(name): Path<String>) -> Answer {
    let all = broker.connections();
    let c = all
        .iter()
        .find(|c| c.name == name)
        .ok_or_else(ApiError::not_found)?;
    ok(connection_json(c))
}

/// DELETE /api/connections/{name}, with the reason in `X-Reason` as in
/// RabbitMQ's API.
async fn close_connection(State(broker): Shared, Path(name): Path<String>, headers: HeaderMap) -> Answer {
    let reason = headers
        .get("x-reason")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("Closed via management plugin");
    no_content(broker.close_connection(&name, reason))
}

async fn export(State(broker): Shared) -> Answer {
    let defs = definitions::export(&broker).await?;
    ok(serde_json::to_value(defs).map_err(|e| ApiError::bad_request(e.to_string()))?)
}

async fn import(State(broker): Shared, bytes: Bytes) -> Answer {
    let defs: Definitions = body(&bytes)?;
    definitions::import(&broker, defs).await?;
    no_content(true)
}

async fn get_exchange(State(broker): Shared, Path((vhost, name)): Path<(String, String)>) -> Answer {
    let all = broker.exchanges(Some(&vhost))?;
    let name = exchange_name(&name);
    let x = all
        .iter()
        .find(|x| x.name == name)
        .ok_or_else(ApiError::not_found)?;
    ok(exchange_json(x))
}

/// PUT /api/exchanges/{vhost}/{name}: `type` (required), `durable`,
/// `auto_delete`, `internal` (false unless given, as in RabbitMQ's API),
/// `arguments`.
#[derive(Deserialize)]
struct PutExchange {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default, deserialize_with = "boolean")]
    durable: bool,
    #[serde(default, deserialize_with = "boolean")]
    auto_delete: bool,
    #[serde(default, deserialize_with = "boolean")]
    internal: bool,
    #[serde(default)]
    arguments: Value,
}

async fn put_exchange(
    State(broker): Shared,
    Extension(ApiUser(user)): Who,
    Path((vhost, name)): Path<(String, String)>,
    bytes: Bytes,
) -> Answer {
    let put: PutExchange = body(&bytes)?;
    let arguments = json_to_table(&put.arguments).map_err(ApiError::bad_request)?;
    let name = exchange_name(&name);
    let new = broker.exchanges(Some(&vhost))?.iter().all(|x| x.name != name);
    broker.declare_exchange(
        &user,
        &vhost,
        name,
        &put.kind,
        put.durable,
        put.auto_delete,
        put.internal,
        &arguments,
    )?;
    created(new)
}

/// The query's `if-unused=true` (RabbitMQ's API spelling).
fn flag(query: &Option<String>, name: &str) -> bool {
    query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .any(|pair| pair == format!("{name}=true"))
}

async fn delete_exchange(
    State(broker): Shared,
    Extension(ApiUser(user)): Who,
    Path((vhost, name)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Answer {
    broker.delete_exchange(&user, &vhost, exchange_name(&name), flag(&query, "if-unused"))?;
    no_content(true)
}

async fn bindings_from(State(broker): Shared, Path((vhost, name)): Path<(String, String)>) -> Answer {
    let name = exchange_name(&name).to_owned();
    bindings_where(&broker, Some(&vhost), |b| b.source == name)
}

async fn bindings_to(State(broker): Shared, Path((vhost, name)): Path<(String, String)>) -> Answer {
    bindings_where(&broker, Some(&vhost), |b| {
        b.destination_type == "exchange" && b.destination == name
    })
}

async fn queue_bindings(State(broker): Shared, Path((vhost, name)): Path<(String, String)>) -> Answer {
    bindings_where(&broker, Some(&vhost), |b| {
        b.destination_type == "queue" && b.destination == name
    })
}

/// POST /api/exchanges/{vhost}/{name}/publish.
#[derive(Deserialize)]
struct Publish {
    routing_key: String,
    #[serde(default)]
    properties: Value,
    payload: String,
    #[serde(default = "string_encoding")]
    payload_encoding: String,
}

fn string_encoding() -> String {
    "string".to_owned()
}

async fn publish(
    State(broker): Shared,
    Extension(ApiUser(user)): Who,
    Path((vhost, name)): Path<(String, String)>,
    bytes: Bytes,
) -> Answer {
    let publish: Publish = body(&bytes)?;
    let payload = match publish.payload_encoding.as_str() {
        "string" => publish.payload.into_bytes(),
        "base64" => base64::engine::general_purpose::STANDARD
            .decode(publish.payload.as_bytes())
            .map_err(|e| ApiError::bad_request(format!("payload is not base64: {e}")))?,
        other => {
            return Err(ApiError::bad_request(format!(
                "unknown payload_encoding '{other}'"
            )))
        }
    };
    let properties = json_to_properties(&publish.properties).map_err(ApiError::bad_request)?;
    let message = warren_codec::Message {
        exchange: exchange_name(&name).to_owned().into(),
        routing_key: publish.routing_key.into(),
        properties: Arc::new(properties),
        body: payload.into(),
    };
    let routed = broker.publish(&user, &vhost, message)?;
    ok(json!({ "routed": routed }))
}

/// PUT /api/queues/{vhost}/{name}: `durable`, `auto_delete` (false unless
/// given, as in RabbitMQ's API), `arguments`.
#[derive(Deserialize)]
struct PutQueue {
    #[serde(default, deserialize_with = "boolean")]
    durable: bool,
    #[serde(default, deserialize_with = "boolean")]
    auto_delete: bool,
    #[serde(default)]
    arguments: Value,
}

async fn put_queue(
    State(broker): Shared,
    Extension(ApiUser(user)): Who,
    Path((vhost, name)): Path<(String, String)>,
    bytes: Bytes,
) -> Answer {
    let put: PutQueue = body(&bytes)?;
    let arguments = json_to_table(&put.arguments).map_err(ApiError::bad_request)?;
    let new = broker.queue(&vhost, &name).await.is_err();
    broker.declare_queue(&user, &vhost, &name, put.durable, put.auto_delete, &arguments)?;
    created(new)
}

/// POST /api/queues/{vhost}/{name}/get.
#[derive(Deserialize)]
struct GetMessages {
    #[serde(deserialize_with = "number")]
    count: u32,
    ackmode: String,
    #[serde(default = "auto_encoding")]
    encoding: String,
    #[serde(default, deserialize_with = "optional_number")]
    truncate: Option<u32>,
}

/// A boolean as RabbitMQ's API takes one: `true`, or `"true"` (as
/// rabbitmqadmin sends it).
fn boolean<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    match Value::deserialize(d)? {
        Value::Bool(b) => Ok(b),
        Value::String(s) if s == "true" => Ok(true),
        Value::String(s) if s == "false" => Ok(false),
        other => Err(serde::de::Error::custom(format!(
            "expected a boolean, not {other}"
        ))),
    }
}

/// A count as RabbitMQ's API takes one: `1`, or `"1"`.
fn number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let value = Value::deserialize(d)?;
    let n = match &value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    };
    n.and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| serde::de::Error::custom(format!("expected a count, not {value}")))
}

fn optional_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    number(d).map(Some)
}

fn auto_encoding() -> String {
    "auto".to_owned()
}

async fn get_messages(
    State(broker): Shared,
    Extension(ApiUser(user)): Who,
    Path((vhost, name)): Path<(String, String)>,
    bytes: Bytes,
) -> Answer {
    let get: GetMessages = body(&bytes)?;
    let mode = match get.ackmode.as_str() {
        "ack_requeue_true" => GetMode::AckRequeueTrue,
        "ack_requeue_false" => GetMode::AckRequeueFalse,
        "reject_requeue_true" => GetMode::RejectRequeueTrue,
        "reject_requeue_false" => GetMode::RejectRequeueFalse,
        other => return Err(ApiError::bad_request(format!("unknown ackmode '{other}'"))),
    };
    if !matches!(get.encoding.as_str(), "auto" | "base64") {
        return Err(ApiError::bad_request(format!(
            "unknown encoding '{}'",
            get.encoding
        )));
    }
    let got = broker.get(&user, &vhost, &name, get.count, mode).await?;
    let messages = got.iter().map(|g| {
        let limit = get.truncate.map_or(usize::MAX, |t| t as usize);
        let body = &g.message.body[..g.message.body.len().min(limit)];
        let (payload, encoding) = match (get.encoding.as_str(), std::str::from_utf8(body)) {
            ("auto", Ok(text)) => (text.to_owned(), "string"),
            _ => (base64::engine::general_purpose::STANDARD.encode(body), "base64"),
        };
        json!({
            "payload_bytes": g.message.body.len(),
            "redelivered": g.redelivered,
            "exchange": g.message.exchange.as_str(),
            "routing_key": g.message.routing_key.as_str(),
            "message_count": g.remaining,
            "properties": properties_to_json(&g.message.properties),
            "payload": payload,
            "payload_encoding": encoding,
        })
    });
    ok(messages.collect())
}

/// `q` or `e` in a binding path.
fn to_queue(kind: &str) -> Result<bool, ApiError> {
    match kind {
        "q" => Ok(true),
        "e" => Ok(false),
        _ => Err(ApiError::not_found()),
    }
}

async fn list_binding_pair(
    State(broker): Shared,
    Path((vhost, source, kind, destination)): Path<(String, String, String, String)>,
) -> Answer {
    let kind = if to_queue(&kind)? { "queue" } else { "exchange" };
    let source = exchange_name(&source).to_owned();
    bindings_where(&broker, Some(&vhost), |b| {
        b.source == source && b.destination_type == kind && b.destination == destination
    })
}

#[derive(Deserialize)]
struct AddBinding {
    #[serde(default)]
    routing_key: String,
    #[serde(default)]
    arguments: Value,
}

async fn add_binding(
    State(broker): Shared,
    Extension(ApiUser(user)): Who,
    Path((vhost, source, kind, destination)): Path<(String, String, String, String)>,
    bytes: Bytes,
) -> Answer {
    let add: AddBinding = body(&bytes)?;
    let arguments = json_to_table(&add.arguments).map_err(ApiError::bad_request)?;
    let queue = to_queue(&kind)?;
    let source = exchange_name(&source);
    broker.binding(
        &user,
        &vhost,
        true,
        source,
        queue,
        &destination,
        &add.routing_key,
        &arguments,
    )?;
    let info = warren_server::vhost::BindingInfo {
        vhost: vhost.clone(),
        source: source.to_owned(),
        destination: destination.clone(),
        destination_type: if queue { "queue" } else { "exchange" },
        routing_key: add.routing_key,
        arguments,
    };
    // RabbitMQ's Location: the binding's path, relative to the request's.
    let location = format!(
        "{}/{}",
        crate::client::segment(&destination),
        crate::client::segment(&properties_key(&info))
    );
    let mut response = StatusCode::CREATED.into_response();
    if let Ok(value) = header::HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

/// Two `properties_key`s, compared decoded.
fn same_key(ours: &str, theirs: &str) -> bool {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    decode(ours) == decode(theirs)
}

/// The binding a `properties_key` names.
fn find_binding(
    broker: &Broker,
    (vhost, source, kind, destination, props): &(String, String, String, String, String),
) -> Result<warren_server::vhost::BindingInfo, ApiError> {
    let kind = if to_queue(kind)? { "queue" } else { "exchange" };
    let source = exchange_name(source);
    broker
        .bindings(Some(vhost))?
        .into_iter()
        .find(|b| {
            b.source == source
                && b.destination_type == kind
                && b.destination == *destination
                && same_key(&properties_key(b), props)
        })
        .ok_or_else(ApiError::not_found)
}

async fn get_binding(
    State(broker): Shared,
    Path(path): Path<(String, String, String, String, String)>,
) -> Answer {
    ok(binding_json(&find_binding(&broker, &path)?))
}

async fn delete_binding(
    State(broker): Shared,
    Extension(ApiUser(user)): Who,
    Path(path): Path<(String, String, String, String, String)>,
) -> Answer {
    let b = find_binding(&broker, &path)?;
    let queue = b.destination_type == "queue";
    broker.binding(
        &user,
        &b.vhost,
        false,
        &b.source,
        queue,
        &b.destination,
        &b.routing_key,
        &b.arguments,
    )?;
    no_content(true)
}

/// The one node, with what RabbitMQ's `/api/nodes` says of memory and disk.
async fn nodes(State(broker): Shared) -> Answer {
    let status = broker.status();
    ok(json!([{
        "name": format!("warren@{}", hostname()),
        "type": "disc",
        "running": true,
        "mem_used": status.memory_used,
        "mem_limit": status.memory_limit,
        "mem_alarm": status.memory_alarm,
        "disk_free": status.disk_free,
        "disk_free_limit": status.disk_free_limit,
        "disk_free_alarm": status.disk_alarm,
    }]))
}

/// The machine's name, read once (not a file read per request).
fn hostname() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "localhost".to_owned())
    })
}

/// RabbitMQ's aliveness test: declare `aliveness-test`, publish to it, get
/// the message back.
async fn aliveness_test(
    State(broker): Shared,
    Extension(ApiUser(user)): Who,
    Path(vhost): Path<String>,
) -> Answer {
    const QUEUE: &str = "aliveness-test";
    broker.declare_queue(&user, &vhost, QUEUE, false, false, &Default::default())?;
    let message = warren_codec::Message {
        exchange: "".into(),
        routing_key: QUEUE.into(),
        properties: Arc::new(Default::default()),
        body: "test_message".into(),
    };
    broker.publish(&user, &vhost, message)?;
    let got = broker
        .get(&user, &vhost, QUEUE, 1, GetMode::AckRequeueFalse)
        .await?;
    match got
        .first()
        .is_some_and(|g| &g.message.body[..] == b"test_message")
    {
        true => ok(json!({"status": "ok"})),
        false => Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "the test message did not come back".to_owned(),
        )),
    }
}

/// `/api/health/checks/alarms`: 200 `ok`, or 503 with the alarms in effect.
async fn alarms_check(State(broker): Shared) -> Answer {
    let status = broker.status();
    let mut alarms = Vec::new();
    if status.memory_alarm {
        alarms.push(json!({"node": format!("warren@{}", hostname()), "resource": "memory"}));
    }
    if status.disk_alarm {
        alarms.push(json!({"node": format!("warren@{}", hostname()), "resource": "disk"}));
    }
    if alarms.is_empty() {
        return ok(json!({"status": "ok"}));
    }
    let answer = json!({"status": "failed", "reason": "resource alarm(s) in effect", "alarms": alarms});
    Ok((StatusCode::SERVICE_UNAVAILABLE, Json(answer)).into_response())
}
