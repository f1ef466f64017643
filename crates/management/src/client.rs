//! A blocking client of the management API: what `warren ctl` sends, and
//! what the tests use to set up users, vhosts and permissions the same way
//! on Warren and on RabbitMQ.

use std::time::Duration;

use base64::Engine;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::Value;

/// Characters escaped in a path segment: all but unreserved ones, so that
/// `/` (the default vhost) becomes `%2F`, as RabbitMQ's API expects.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// A path segment, escaped.
pub fn segment(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

/// What went wrong with a request.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The broker could not be reached.
    #[error("cannot reach {url}: {why}")]
    Unreachable {
        /// The API's address.
        url: String,
        /// Why.
        why: String,
    },
    /// The broker answered with an error.
    #[error("{status}: {reason}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The API's `reason`, or its body.
        reason: String,
    },
}

/// A management API client.
#[derive(Clone, Debug)]
pub struct Client {
    base: String,
    authorization: String,
    agent: ureq::Agent,
}

/// An answer: its status, and its body as JSON (`null` if empty).
pub type Answer = (u16, Value);

impl Client {
    /// A client of the API at `base` (`http://host:15672`), as `user`.
    pub fn new(base: &str, user: &str, password: &str) -> Self {
        let credentials = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Self {
            base: base.trim_end_matches('/').to_owned(),
            authorization: format!("Basic {credentials}"),
            agent,
        }
    }

    /// Sends a request; `path` starts with `/api/` and is already escaped.
    pub fn request(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Answer, ClientError> {
        self.request_with(method, path, body, &[])
    }

    /// [`Client::request`] with extra headers.
    pub fn request_with(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Result<Answer, ClientError> {
        let url = format!("{}{path}", self.base);
        let unreachable = |e: ureq::Error| ClientError::Unreachable {
            url: self.base.clone(),
            why: e.to_string(),
        };
        fn with<B>(
            mut request: ureq::RequestBuilder<B>,
            authorization: &str,
            headers: &[(&str, &str)],
        ) -> ureq::RequestBuilder<B> {
            request = request.header("Authorization", authorization);
            for (k, v) in headers {
                request = request.header(*k, *v);
            }
            request
        }
        let auth = self.authorization.as_str();
        let response = match (method, body) {
            ("GET", _) => with(self.agent.get(&url), auth, headers).call(),
            ("DELETE", _) => with(self.agent.delete(&url), auth, headers).call(),
            ("PUT", body) => {
                with(self.agent.put(&url), auth, headers).send_json(body.unwrap_or(&Value::Null))
            }
            ("POST", body) => {
                with(self.agent.post(&url), auth, headers).send_json(body.unwrap_or(&Value::Null))
            }
            (other, _) => {
                return Err(ClientError::Refused {
                    status: 0,
                    reason: format!("unknown method {other}"),
                })
            }
        };
        let mut response = response.map_err(unreachable)?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().map_err(unreachable)?;
        let json = match text.trim() {
            "" => Value::Null,
            text => serde_json::from_str(text).unwrap_or(Value::String(text.to_owned())),
        };
        Ok((status, json))
    }

    /// Like [`Client::request`], but an error status is an error.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, ClientError> {
        self.call_with(method, path, body, &[])
    }

    /// [`Client::call`] with extra headers.
    pub fn call_with(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Result<Value, ClientError> {
        match self.request_with(method, path, body, headers)? {
            (200..=299, json) => Ok(json),
            (status, json) => Err(ClientError::Refused {
                status,
                reason: json
                    .get("reason")
                    .and_then(Value::as_str)
                    .map_or_else(|| json.to_string(), str::to_owned),
            }),
        }
    }
}
