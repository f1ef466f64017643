//! Sorting, filtering, pagination and column selection of list answers, as
//! RabbitMQ's API offers them on every list: `?sort=field&sort_reverse=true`,
//! `?page=1&page_size=100&name=text&use_regex=true` (the name filter, as in
//! RabbitMQ, only with a page), `?columns=a,b.c`.
//! Applied to any GET answer that is a JSON list, after the handler.

use axum::body::{to_bytes, Body};
use axum::extract::Request;
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};
use warren_server::permissions::Pattern;

/// RabbitMQ's largest page.
const MAX_PAGE_SIZE: usize = 500;
/// Its default page size.
const PAGE_SIZE: usize = 100;

/// The query parameters that shape a list.
#[derive(Default)]
struct Shape {
    sort: Option<String>,
    reverse: bool,
    name: Option<String>,
    regex: bool,
    page: Option<String>,
    page_size: Option<String>,
    columns: Option<Vec<String>>,
}

fn parse(query: &str) -> Shape {
    let mut shape = Shape::default();
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_encoding::percent_decode_str(&value.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned();
        match key {
            "sort" if !value.is_empty() => shape.sort = Some(value),
            "sort_reverse" => shape.reverse = value == "true",
            "name" if !value.is_empty() => shape.name = Some(value),
            "use_regex" => shape.regex = value == "true",
            "page" => shape.page = Some(value),
            "page_size" => shape.page_size = Some(value),
            "columns" if !value.is_empty() => {
                // Each distinct, and no more than an answer has fields: a
                // query of endless columns must not multiply every item.
                let mut columns: Vec<String> = Vec::new();
                for column in value.split(',').take(MAX_COLUMNS) {
                    if !columns.iter().any(|c| c == column) {
                        columns.push(column.to_owned());
                    }
                }
                shape.columns = Some(columns)
            }
            _ => {}
        }
    }
    shape
}

/// The most columns a list keeps.
const MAX_COLUMNS: usize = 64;

/// A field by dotted path (`message_stats.publish`).
fn field<'a>(item: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(item, |v, key| &v[key])
}

fn compare(a: &Value, b: &Value) -> std::cmp::Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            x.as_f64().unwrap_or(0.0).total_cmp(&y.as_f64().unwrap_or(0.0))
        }
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        // Missing values first, as a null sorts first in RabbitMQ's.
        (Value::Null, Value::Null) => std::cmp::Ordering::Equal,
        (Value::Null, _) => std::cmp::Ordering::Less,
        (_, Value::Null) => std::cmp::Ordering::Greater,
        _ => a.to_string().cmp(&b.to_string()),
    }
}

/// Only the columns asked for, nested ones rebuilt as objects.
fn select(item: &Value, columns: &[String]) -> Value {
    let mut out = Map::new();
    for column in columns {
        let value = field(item, column).clone();
        let mut keys = column.split('.').peekable();
        let mut at = &mut out;
        while let Some(key) = keys.next() {
            if keys.peek().is_none() {
                at.insert(key.to_owned(), value.clone());
                break;
            }
            let slot = at
                .entry(key.to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
            // `columns=name,name.x`: a column asked for whole, then within.
            if !slot.is_object() {
                *slot = Value::Object(Map::new());
            }
            match slot {
                Value::Object(inner) => at = inner,
                _ => break,
            }
        }
    }
    Value::Object(out)
}

/// A refused query: RabbitMQ's error name and reason, answered with 400.
#[derive(Debug)]
struct Refusal(&'static str, String);

fn bad(error: &'static str, reason: String) -> Refusal {
    Refusal(error, reason)
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = json!({"error": self.0, "reason": self.1});
        (StatusCode::BAD_REQUEST, Json(body)).into_response()
    }
}

/// Shapes `items` as the query asks; an error answer for bad pagination.
fn shape(mut items: Vec<Value>, shape: &Shape) -> Result<Value, Refusal> {
    let total = items.len();
    // The name filter is part of pagination in RabbitMQ: without `page` it
    // is not applied.
    if let (Some(name), Some(_)) = (&shape.name, &shape.page) {
        let pattern = match shape.regex {
            true => Some(Pattern::new(name).map_err(|e| bad("bad_request", e))?),
            false => None,
        };
        items.retain(|item| {
            let item_name = item["name"].as_str().unwrap_or("");
            match &pattern {
                Some(pattern) => pattern.matches(item_name),
                None => item_name.contains(name.as_str()),
            }
        });
    }
    if let Some(sort) = &shape.sort {
        items.sort_by(|a, b| compare(field(a, sort), field(b, sort)));
    }
    if shape.reverse {
        items.reverse();
    }
    let select_all = |items: Vec<Value>| -> Vec<Value> {
        match &shape.columns {
            Some(columns) => items.iter().map(|i| select(i, columns)).collect(),
            None => items,
        }
    };
    let Some(page) = &shape.page else {
        return Ok(Value::Array(select_all(items)));
    };
    let page_size = shape.page_size.as_deref().unwrap_or("");
    let (page_number, size) = match (page.parse::<usize>(), page_size) {
        (Ok(p), "") if p >= 1 => (p, PAGE_SIZE),
        (Ok(p), size) => match size.parse::<usize>() {
            Ok(s) if p >= 1 && (1..=MAX_PAGE_SIZE).contains(&s) => (p, s),
            _ => {
                return Err(bad(
                    "invalid_pagination_parameters",
                    format!("Invalid pagination parameters: page number {page}, page size {page_size}"),
                ))
            }
        },
        _ => {
            return Err(bad(
                "invalid_pagination_parameters",
                format!("Invalid pagination parameters: page number {page}, page size undefined"),
            ))
        }
    };
    let filtered = items.len();
    let page_count = filtered.div_ceil(size);
    if page_number > page_count.max(1) {
        return Err(bad(
            "page_out_of_range",
            format!("Page out of range, page: {page_number} page size: {size}, len: {filtered}"),
        ));
    }
    let on_page: Vec<Value> = items
        .into_iter()
        .skip((page_number - 1) * size)
        .take(size)
        .collect();
    Ok(json!({
        "filtered_count": filtered,
        "item_count": on_page.len(),
        "items": select_all(on_page),
        "page": page_number,
        "page_count": page_count,
        "page_size": size,
        "total_count": total,
    }))
}

/// The middleware: reshapes a GET's JSON list when the query asks.
pub async fn shape_lists(request: Request, next: Next) -> Response {
    let query = request.uri().query().map(parse);
    let is_get = request.method() == Method::GET;
    let response = next.run(request).await;
    let Some(query) = query.filter(|_| is_get) else {
        return response;
    };
    if !response.status().is_success() {
        return response;
    }
    let (parts, body) = response.into_parts();
    let Ok(bytes) = to_bytes(body, usize::MAX).await else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "the answer could not be read").into_response();
    };
    let items = match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Array(items)) => items,
        _ => return Response::from_parts(parts, Body::from(bytes)),
    };
    match shape(items, &query) {
        Ok(value) => (parts.status, Json(value)).into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items() -> Vec<Value> {
        (1..=5)
            .map(|i| json!({"name": format!("q{i}"), "messages": 10 - i, "stats": {"rate": i}}))
            .collect()
    }

    #[test]
    fn columns_within_a_column_and_endless_columns_are_harmless() {
        let nested = shape(items(), &parse("columns=name,name.x,stats,stats.rate")).unwrap();
        assert_eq!(nested[0], json!({"name": {"x": null}, "stats": {"rate": 1}}));
        let endless: Vec<String> = (0..10_000).map(|i| format!("c{i}")).collect();
        let wide = shape(items(), &parse(&format!("columns={}", endless.join(",")))).unwrap();
        assert_eq!(wide[0].as_object().unwrap().len(), MAX_COLUMNS);
    }

    #[test]
    fn sorts_selects_filters_and_pages() {
        let sorted = shape(items(), &parse("sort=messages&columns=name,stats.rate")).unwrap();
        assert_eq!(sorted[0], json!({"name": "q5", "stats": {"rate": 5}}));
        let page = shape(items(), &parse("page=2&page_size=2&sort=name&sort_reverse=true")).unwrap();
        assert_eq!(page["items"][0]["name"], "q3");
        assert_eq!(
            (page["page_count"].as_u64(), page["total_count"].as_u64()),
            (Some(3), Some(5))
        );
        let filtered = shape(items(), &parse("page=1&name=q%5B12%5D&use_regex=true")).unwrap();
        assert_eq!(filtered["filtered_count"], 2);
        assert!(shape(items(), &parse("page=9&page_size=2")).is_err());
        assert!(shape(items(), &parse("page=1&page_size=600")).is_err());
        assert!(shape(items(), &parse("page=0")).is_err());
    }
}
