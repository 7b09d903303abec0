//! Test Lambda (lambda_http, API Gateway REST events) for the devstack's own tests.
//!
//! - any path: echoes method, uri, path, raw path, query, headers, body and the
//!   request context as JSON (status 200);
//! - `/__echo/exit`: the process exits mid-invocation (a crashed Lambda);
//! - `/__echo/panic`: the handler panics (reported as a function error);
//! - `/__echo/error`: the handler returns `Err`;
//! - `/__echo/sleep?ms=N`: sleeps N ms, then echoes;
//! - `/__echo/binary`: answers bytes that are not UTF-8;
//! - `/__echo/status?code=N`: answers status N with a custom header.

use lambda_http::{run, service_fn, Body, Error, Request, RequestExt, Response};
use serde_json::{json, Map, Value};

async fn handler(req: Request) -> Result<Response<Body>, Error> {
    let raw_path = req.raw_http_path().to_string();
    let query = req.query_string_parameters();
    match raw_path.as_str() {
        "/__echo/exit" => std::process::exit(3),
        "/__echo/panic" => panic!("echo asked to panic"),
        "/__echo/error" => return Err("echo asked to fail".into()),
        "/__echo/sleep" => {
            let ms = query.first("ms").and_then(|v| v.parse().ok()).unwrap_or(0);
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
        "/__echo/binary" => {
            return Ok(Response::builder()
                .status(200)
                .header("content-type", "application/octet-stream")
                .body(Body::Binary(vec![0, 159, 146, 150, 255]))?)
        }
        "/__echo/status" => {
            let code: u16 = query
                .first("code")
                .and_then(|v| v.parse().ok())
                .unwrap_or(200);
            return Ok(Response::builder()
                .status(code)
                .header("x-echo", "yes")
                .header("set-cookie", "a=1")
                .header("set-cookie", "b=2")
                .body(Body::Empty)?);
        }
        _ => {}
    }
    let mut headers = Map::new();
    for name in req.headers().keys() {
        let values: Vec<Value> = req
            .headers()
            .get_all(name)
            .iter()
            .map(|v| Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        headers.insert(name.as_str().to_string(), Value::Array(values));
    }
    let mut query_json = Map::new();
    for (k, _) in query.iter() {
        let all: Vec<Value> = query
            .all(k)
            .unwrap_or_default()
            .into_iter()
            .map(|v| Value::String(v.to_string()))
            .collect();
        query_json.insert(k.to_string(), Value::Array(all));
    }
    let body = req.body();
    // Large bodies are not echoed (a Lambda response is limited to 6 MB).
    let body_text = std::str::from_utf8(body.as_ref())
        .ok()
        .filter(|b| b.len() <= 1024 * 1024)
        .map(str::to_string);
    let out = json!({
        "method": req.method().as_str(),
        "uri": req.uri().to_string(),
        "path": req.uri().path(),
        "raw_path": raw_path,
        "raw_query": req.uri().query(),
        "query": query_json,
        "headers": headers,
        "body": body_text,
        "body_len": body.as_ref().len(),
        "request_context": serde_json::to_value(req.request_context()).unwrap_or(Value::Null),
        "pid": std::process::id(),
        "function_name": std::env::var("AWS_LAMBDA_FUNCTION_NAME").ok(),
        "runtime_api": std::env::var("AWS_LAMBDA_RUNTIME_API").ok(),
        "region": std::env::var("AWS_REGION").ok(),
        "trace_id": std::env::var("_X_AMZN_TRACE_ID").ok(),
    });
    Ok(Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(Body::Text(out.to_string()))?)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    run(service_fn(handler)).await
}
