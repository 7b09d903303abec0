//! An HTTP client for tests of the local servers (the devstack, the feed): one timeout, so a
//! hung server fails its test instead of blocking the run, and the GET-and-read-JSON that
//! most assertions start from.

use std::time::Duration;

use serde_json::Value;

/// A client with a 30 s timeout.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("an HTTP client builds")
}

/// `GET url`; panics on a transport error (the server under test is down or hung).
pub async fn get(url: impl reqwest::IntoUrl) -> reqwest::Response {
    client().get(url).send().await.expect("GET is answered")
}

/// `GET url` and its body as JSON, whatever the status; panics when it is not JSON.
pub async fn get_json(url: impl reqwest::IntoUrl) -> Value {
    get(url).await.json().await.expect("a JSON body")
}

/// `DELETE url`; panics on a transport error.
pub async fn delete(url: impl reqwest::IntoUrl) -> reqwest::Response {
    client()
        .delete(url)
        .send()
        .await
        .expect("DELETE is answered")
}

/// `POST url` with `body` as is (no content type); panics on a transport error.
pub async fn post(url: impl reqwest::IntoUrl, body: impl Into<reqwest::Body>) -> reqwest::Response {
    client()
        .post(url)
        .body(body)
        .send()
        .await
        .expect("POST is answered")
}

/// `POST url` with `body` as JSON; panics on a transport error.
pub async fn post_json(url: impl reqwest::IntoUrl, body: &Value) -> reqwest::Response {
    client()
        .post(url)
        .json(body)
        .send()
        .await
        .expect("POST is answered")
}
