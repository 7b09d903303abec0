//! Fuzz test of the custom resource (`make fuzz` runs it with many more cases): any JSON as
//! the event, CloudFormation's fields with values of the wrong type, hostile `RequestType`s
//! and `ResponseURL`s that are no URL, point at a refused port or at a local stand-in for
//! S3, through `migrate::handle` with migration targets that fail before a database is
//! written (an error of the configuration, a URL that does not parse, a refused port).
//!
//! Nothing panics. Without a usable `ResponseURL` (a non-empty string) the answer is
//! `HandlerError::NoResponseUrl`; with one that cannot be reached it is
//! `HandlerError::Respond`; otherwise exactly one answer is PUT: the one returned, SUCCESS or
//! FAILED, with a reason of at most 1000 characters, echoing the ids the event gave.

mod common;

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use adapters::config::MigrationTarget;
use common::{closed_port, ResponseUrl};
use migrate::{handle, HandlerError, Limits};
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{json, Value};
use testkit::fuzz::{self, json_text, object_with, text};

/// Short: no target of this test needs long, and a case that hung would show.
const LIMITS: Limits = Limits {
    work_timeout: Duration::from_secs(5),
    connect_timeout: Duration::from_secs(2),
};

/// The password of the refused database URLs: it must never reach CloudFormation.
const PASSWORD: &str = "Fuzz-S3cret-pw";

/// The local response URL and its runtime, shared by the cases.
struct Fixture {
    runtime: tokio::runtime::Runtime,
    cloudformation: Mutex<ResponseUrl>,
    /// An address nothing listens on.
    refused: String,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Runtime::new().expect("a runtime");
        let cloudformation = runtime.block_on(ResponseUrl::start());
        Fixture {
            runtime,
            cloudformation: Mutex::new(cloudformation),
            refused: format!("127.0.0.1:{}", closed_port()),
        }
    })
}

/// Where the answer goes, as the event's `ResponseURL`: mostly the local stand-in (with a
/// hostile query, as a presigned URL has one), else no URL, a refused port, a value of
/// another type, or none.
#[derive(Debug, Clone)]
enum Url {
    Local(String),
    Refused,
    Text(String),
    Value(Value),
    Missing,
}

fn url() -> BoxedStrategy<Url> {
    prop_oneof![
        30 => prop_oneof![Just(String::new()), text()].prop_map(Url::Local),
        // Each of these two costs the answer's retries (a second): rare.
        1 => Just(Url::Refused),
        1 => prop_oneof![
            select(&["not a url", "http://", "ftp://example.com/x", "//s3", "http://[::1"][..]).prop_map(str::to_string),
            text(),
        ]
        .prop_map(Url::Text),
        2 => prop_oneof![
            Just(json!("")),
            Just(Value::Null),
            Just(json!(1)),
            Just(json!([])),
            Just(json!({})),
            Just(json!(true)),
        ]
        .prop_map(Url::Value),
        1 => Just(Url::Missing),
    ]
    .boxed()
}

impl Url {
    fn value(&self, f: &Fixture) -> Option<Value> {
        let local = || f.cloudformation.lock().expect("not poisoned").url.clone();
        match self {
            Url::Local(query) => Some(Value::String(format!("{}{query}", local()))),
            Url::Refused => Some(json!(format!(
                "http://{}/cloudformation-response?X-Amz-Signature=x",
                f.refused
            ))),
            Url::Text(t) => Some(Value::String(t.clone())),
            Url::Value(v) => Some(v.clone()),
            Url::Missing => None,
        }
    }
}

/// The fields of CloudFormation's custom resource requests.
const FIELDS: &[&str] = &[
    "RequestType",
    "ResponseURL",
    "StackId",
    "RequestId",
    "LogicalResourceId",
    "PhysicalResourceId",
    "ResourceType",
    "ResourceProperties",
    "OldResourceProperties",
    "ServiceToken",
];

fn request_type() -> BoxedStrategy<Value> {
    prop_oneof![
        6 => select(&["Create", "Update", "Delete"][..]).prop_map(Value::from),
        2 => select(&["create", "DELETE", "Replace", "", " Create", "Create\0", "Délete"][..]).prop_map(Value::from),
        1 => text().prop_map(Value::from),
        1 => json_text().prop_map(|t| serde_json::from_str(&t).unwrap_or(Value::Null)),
    ]
    .boxed()
}

/// A JSON value of hostile text, or any JSON (`null` where the text is no JSON).
fn hostile_value() -> BoxedStrategy<Value> {
    prop_oneof![
        2 => text().prop_map(Value::from),
        1 => json_text().prop_map(|t| serde_json::from_str(&t).unwrap_or(Value::Null)),
    ]
    .boxed()
}

/// The event, but its `ResponseURL`: a request as CloudFormation sends it with some fields
/// removed or of hostile values, an object of CloudFormation's field names, or any JSON.
fn event() -> BoxedStrategy<Value> {
    let request = (
        request_type(),
        proptest::collection::vec(
            (
                select(FIELDS),
                prop_oneof![Just(None), hostile_value().prop_map(Some)],
            ),
            0..4,
        ),
    )
        .prop_map(|(request_type, changes)| {
            let mut event = common::event("Create", "");
            event["RequestType"] = request_type;
            event["PhysicalResourceId"] = json!(migrate::PHYSICAL_RESOURCE_ID);
            for (field, value) in changes {
                match value {
                    Some(v) => event[field] = v,
                    None => {
                        event.as_object_mut().map(|o| o.remove(field));
                    }
                }
            }
            event
        });
    prop_oneof![
        6 => request,
        2 => object_with(FIELDS).prop_map(|t| serde_json::from_str(&t).unwrap_or(Value::Null)),
        1 => json_text().prop_map(|t| serde_json::from_str(&t).unwrap_or(Value::Null)),
    ]
    .boxed()
}

/// What `handle` is given as the migration target: all fail before a database is written.
#[derive(Debug, Clone)]
enum Target {
    /// The configuration could not be read: the error's text.
    Broken(String),
    /// A database URL that does not parse.
    NoUrl(String),
    /// A database on a port nothing listens on.
    Refused,
}

fn target() -> BoxedStrategy<Target> {
    let huge = (
        prop_oneof![Just("€".to_string()), Just("a".to_string()), text()],
        1usize..3_000,
    )
        .prop_map(|(piece, n)| piece.repeat(n));
    prop_oneof![
        4 => prop_oneof![text(), huge].prop_map(Target::Broken),
        2 => text().prop_map(Target::NoUrl),
        1 => Just(Target::Refused),
    ]
    .boxed()
}

async fn resolve(target: Target, refused: String) -> Result<MigrationTarget, String> {
    let database_url = match target {
        Target::Broken(e) => return Err(e),
        // Never one that points at a server: the text of a URL that parses is skipped.
        Target::NoUrl(url) if url.contains("://") => return Err(url),
        Target::NoUrl(url) => url,
        Target::Refused => format!("postgres://ledger:{PASSWORD}@{refused}/trading"),
    };
    Ok(MigrationTarget {
        database_url,
        logins: Vec::new(),
    })
}

/// Why the outcome of `event` is not what the custom resource promises, if it is not.
fn wrong_outcome(
    event: &Value,
    outcome: &Result<
        aws_lambda_events::cloudformation::CloudFormationCustomResourceResponse,
        HandlerError,
    >,
    put: Option<Value>,
    to_local: bool,
) -> Option<String> {
    let usable = event
        .get("ResponseURL")
        .and_then(Value::as_str)
        .is_some_and(|u| !u.is_empty());
    match (outcome, put) {
        (Err(HandlerError::NoResponseUrl(_)), None) if !usable => None,
        (Err(HandlerError::Respond(_)), None) if usable && !to_local => None,
        (Ok(response), Some(answer)) if to_local => {
            let sent = serde_json::to_value(response).expect("serializable");
            if sent != answer {
                return Some(format!("returned {sent} but PUT {answer}"));
            }
            if !matches!(answer["Status"].as_str(), Some("SUCCESS" | "FAILED")) {
                return Some(format!("no status: {answer}"));
            }
            let reason = answer["Reason"].as_str().unwrap_or_default();
            if reason.chars().count() > 1000 {
                return Some(format!("a reason of {} chars", reason.chars().count()));
            }
            if reason.contains(PASSWORD) {
                return Some(format!("the password in the reason: {reason}"));
            }
            for key in ["StackId", "RequestId", "LogicalResourceId"] {
                if let Some(given) = event.get(key).and_then(Value::as_str) {
                    if answer[key] != given {
                        return Some(format!("{key} not echoed: {answer}"));
                    }
                }
            }
            None
        }
        (outcome, put) => Some(format!(
            "usable URL {usable}, local {to_local}: {:?} with {put:?} PUT",
            outcome.as_ref().map(|_| "an answer")
        )),
    }
}

proptest! {
    #![proptest_config(fuzz::config_divided(8))]

    #[test]
    fn fuzz_custom_resource_events_are_answered_or_refused(
        event in event(),
        url in url(),
        target in target(),
    ) {
        let f = fixture();
        let mut event = event;
        if let (Some(o), Some(v)) = (event.as_object_mut(), url.value(f)) {
            o.insert("ResponseURL".into(), v);
        }
        let outcome = f.runtime.block_on(handle(
            event.clone(),
            resolve(target.clone(), f.refused.clone()),
            LIMITS,
        ));
        let mut cloudformation = f.cloudformation.lock().expect("not poisoned");
        let put = cloudformation.try_answer().map(|a| a.body);
        let to_local = event.is_object() && matches!(url, Url::Local(_));
        let wrong = wrong_outcome(&event, &outcome, put, to_local);
        prop_assert!(wrong.is_none(), "{event} {target:?} → {wrong:?}");
    }
}

#[test]
fn a_field_of_the_wrong_type_does_not_hide_where_to_answer() {
    // Found by fuzz_custom_resource_events_are_answered_or_refused: with "StackId": [] (any
    // id field not a string) the ids were read as all or nothing, the ResponseURL was lost
    // with the rest, and the event was left unanswered (CloudFormation waits an hour).
    let f = fixture();
    let mut cloudformation = f.cloudformation.lock().expect("not poisoned");
    let mut event = common::event("Create", &cloudformation.url);
    event["StackId"] = json!([]);
    let outcome = f.runtime.block_on(handle(
        event.clone(),
        resolve(Target::Broken("unused".into()), f.refused.clone()),
        LIMITS,
    ));
    let answer = cloudformation.try_answer().map(|a| a.body);
    assert!(outcome.is_ok(), "{outcome:?}");
    let answer = answer.expect("an answer was PUT");
    assert_eq!(answer["Status"], "FAILED");
    assert_eq!(answer["RequestId"], event["RequestId"]);
    assert_eq!(wrong_outcome(&event, &outcome, Some(answer), true), None);
}

#[test]
fn a_request_with_an_empty_response_url_is_refused_before_any_work() {
    // Found by fuzz_custom_resource_events_are_answered_or_refused: a well-formed Create
    // with "ResponseURL": "" resolved the target and applied the migrations, then failed to
    // PUT the answer ("builder error"), an error that has Lambda run it all again.
    let f = fixture();
    let event = common::event("Create", "");
    let outcome = f.runtime.block_on(handle::<_, String>(
        event,
        async { panic!("no target is resolved without a place to answer") },
        LIMITS,
    ));
    assert!(
        matches!(outcome, Err(HandlerError::NoResponseUrl(_))),
        "{outcome:?}"
    );
}
