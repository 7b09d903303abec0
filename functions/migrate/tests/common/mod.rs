//! What the custom resource's tests share: a local stand-in for CloudFormation's presigned
//! S3 response URL, events as CloudFormation sends them, and a port nothing listens on.

// Each test binary uses a part of it.
#![allow(dead_code)]

use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::routing::put;
use axum::Router;
use migrate::PHYSICAL_RESOURCE_ID;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use uuid::Uuid;

/// What CloudFormation would have received: the Content-Type header and the JSON body.
pub struct Answer {
    pub content_type: Option<String>,
    pub body: Value,
}

/// A local stand-in for the presigned response URL: records every PUT.
pub struct ResponseUrl {
    pub url: String,
    answers: mpsc::UnboundedReceiver<Answer>,
}

impl ResponseUrl {
    /// Serves on the current runtime.
    pub async fn start() -> ResponseUrl {
        let (tx, answers) = mpsc::unbounded_channel();
        let app = Router::new().route(
            "/cloudformation-response",
            put(move |headers: HeaderMap, body: Bytes| {
                let tx = tx.clone();
                async move {
                    let content_type = headers
                        .get("content-type")
                        .map(|v| v.to_str().unwrap_or("<not text>").to_string());
                    let body = serde_json::from_slice(&body).expect("the answer is JSON");
                    tx.send(Answer { content_type, body })
                        .expect("test listens");
                    ""
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        ResponseUrl {
            url: format!(
                "http://{addr}/cloudformation-response?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=abc"
            ),
            answers,
        }
    }

    /// The one answer of the last invocation.
    pub fn answer(&mut self) -> Answer {
        self.try_answer().expect("an answer was PUT")
    }

    /// The answer of the last invocation, if one was PUT (never two).
    pub fn try_answer(&mut self) -> Option<Answer> {
        let answer = self.answers.try_recv().ok()?;
        assert!(self.answers.try_recv().is_err(), "exactly one answer");
        assert_eq!(
            answer.content_type.as_deref(),
            Some(""),
            "the presigned URL is signed for an empty Content-Type"
        );
        Some(answer)
    }
}

/// A request of `request_type` as CloudFormation sends it, answered at `response_url`.
pub fn event(request_type: &str, response_url: &str) -> Value {
    let mut event = json!({
        "RequestType": request_type,
        "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:trading-migrate",
        "ResponseURL": response_url,
        "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/trading/6f7c3a40-0000-11ef-8000-0a1b2c3d4e5f",
        "RequestId": Uuid::new_v4().to_string(),
        "LogicalResourceId": "LedgerSchema",
        "ResourceType": "Custom::LedgerSchema",
        "ResourceProperties": {
            "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:trading-migrate",
            "MigrationsVersion": "3"
        }
    });
    if request_type != "Create" {
        event["PhysicalResourceId"] = json!(PHYSICAL_RESOURCE_ID);
    }
    if request_type == "Update" {
        event["OldResourceProperties"] = json!({ "MigrationsVersion": "2" });
    }
    event
}

/// A local port nothing listens on: a connection to it is refused at once.
pub fn closed_port() -> u16 {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    closed.local_addr().unwrap().port()
}
