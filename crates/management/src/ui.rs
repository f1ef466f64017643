//! The web UI, served by the management API's server: `/` is the page,
//! `/ui/…` its script, style and the vendored front-end parts
//! (`crates/management/ui/vendor`). The files are compiled into the
//! binary, so the UI needs nothing at run time but the broker. They are
//! served without authentication, as RabbitMQ serves its UI's; the page
//! logs in to the API with HTTP basic authentication, as RabbitMQ's does.

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// Each file: its name under `/ui/`, its content type, its bytes.
const FILES: [(&str, &str, &[u8]); 6] = [
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("../ui/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../ui/app.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_bytes!("../ui/style.css"),
    ),
    (
        "vendor/preact-htm.mjs",
        "text/javascript; charset=utf-8",
        include_bytes!("../ui/vendor/preact-htm.mjs"),
    ),
    (
        "vendor/uplot.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../ui/vendor/uplot.min.js"),
    ),
    (
        "vendor/uplot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../ui/vendor/uplot.min.css"),
    ),
];

fn file(name: &str) -> Response {
    match FILES.iter().find(|(n, _, _)| *n == name) {
        Some((_, kind, bytes)) => (
            [
                (header::CONTENT_TYPE, *kind),
                // The page must not be framed by another site (clickjacking).
                (header::X_FRAME_OPTIONS, "DENY"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            *bytes,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The UI's routes.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { file("index.html") }))
        .route(
            "/ui/{*path}",
            get(|Path(path): Path<String>| async move { file(&path) }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_the_page_names_is_served() {
        let page = std::str::from_utf8(FILES[0].2).unwrap();
        let script = std::str::from_utf8(FILES[1].2).unwrap();
        for (name, _, _) in &FILES[1..] {
            let named = page.contains(&format!("/ui/{name}")) || script.contains(&format!("./{name}"));
            assert!(named, "{name} is served but not used");
        }
        assert_eq!(file("nope.js").status(), StatusCode::NOT_FOUND);
    }
}
