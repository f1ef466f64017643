//! What every route answers with: [`ApiError`] (RabbitMQ's error shape
//! and status codes), the success answers, and reading a JSON body.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use warren_server::admin::AdminError;
use warren_server::broker::Broker;

/// The broker, as every route's state.
pub type Shared = State<Arc<Broker>>;

/// An error as RabbitMQ's API writes one.
#[derive(Debug)]
pub struct ApiError(pub(crate) StatusCode, pub(crate) String);

impl ApiError {
    /// 400 `bad_request`, with the reason.
    pub fn bad_request(reason: impl Into<String>) -> Self {
        Self(StatusCode::BAD_REQUEST, reason.into())
    }

    /// 404 `Object Not Found`.
    pub fn not_found() -> Self {
        Self(StatusCode::NOT_FOUND, "Not Found".to_owned())
    }
}

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> Self {
        match e {
            AdminError::NotFound(_) => Self::not_found(),
            AdminError::Invalid(why) => Self::bad_request(why),
            AdminError::Refused(why) => Self(StatusCode::UNAUTHORIZED, why),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let error = match self.0 {
            StatusCode::NOT_FOUND => "Object Not Found",
            StatusCode::UNAUTHORIZED => "not_authorised",
            _ => "bad_request",
        };
        (self.0, Json(json!({"error": error, "reason": self.1}))).into_response()
    }
}

/// A route's answer.
pub type Answer = Result<Response, ApiError>;

/// 200 with a JSON body.
pub fn ok(value: Value) -> Answer {
    Ok(Json(value).into_response())
}

/// 201 for a PUT that created, 204 for one that changed.
pub fn created(new: bool) -> Answer {
    Ok(match new {
        true => StatusCode::CREATED,
        false => StatusCode::NO_CONTENT,
    }
    .into_response())
}

/// 204 for a DELETE that found what it deletes, 404 otherwise.
pub fn no_content(found: bool) -> Answer {
    match found {
        true => Ok(StatusCode::NO_CONTENT.into_response()),
        false => Err(ApiError::not_found()),
    }
}

/// A JSON body, or `{}` for an empty one (RabbitMQ takes a bare PUT of a
/// vhost).
pub fn body<T: for<'de> Deserialize<'de>>(bytes: &Bytes) -> Result<T, ApiError> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    serde_json::from_slice(bytes).map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))
}

/// RabbitMQ's API calls the default exchange `amq.default` in paths.
pub fn exchange_name(name: &str) -> &str {
    match name {
        "amq.default" => "",
        name => name,
    }
}
