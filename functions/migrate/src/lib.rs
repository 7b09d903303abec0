//! The `migrate` Lambda: a CloudFormation custom resource that applies the ledger migrations
//! (`infra/migrations`, embedded at build time) on every deploy.
//!
//! Depends on `adapters` (schema, configuration); no crate depends on it.
//!
//! - Create and Update apply every migration the database lacks (idempotent), then answer
//!   SUCCESS with `Data.Applied` = the newest migration version of this build.
//! - Delete answers SUCCESS and leaves the schema alone: deleting the stack or replacing the
//!   resource must never drop the ledger.
//! - Whatever goes wrong (configuration, an unreachable database, a failing migration, a
//!   malformed event) is answered FAILED with the reason, before the Lambda's time runs out:
//!   CloudFormation waits up to an hour for an answer that never comes.
//!
//! The answer is a PUT of JSON to the event's presigned S3 `ResponseURL`.

use std::collections::HashMap;
use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, SystemTime};

use adapters::config::MigrationTarget;
use aws_lambda_events::cloudformation::{
    CloudFormationCustomResourceRequest, CloudFormationCustomResourceResponse,
    CloudFormationCustomResourceResponseStatus,
};
use serde_json::Value;

/// The one schema this resource stands for. Stable, so an Update never reads as a
/// replacement (which CloudFormation would follow with a Delete of the old id).
pub const PHYSICAL_RESOURCE_ID: &str = "ledger-schema";
/// The key of the migration version in the response's `Data` (`!GetAtt Resource.Applied`).
pub const APPLIED_KEY: &str = "Applied";

/// The Lambda's time kept back for answering CloudFormation when the migration runs long.
const RESPONSE_RESERVE: Duration = Duration::from_secs(15);
/// The longest wait for the database connection, when the Lambda's time allows it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Each PUT of the answer; three tries fit in [`RESPONSE_RESERVE`].
const RESPONSE_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(4);
const RESPONSE_ATTEMPTS: u32 = 3;
/// CloudFormation takes at most 4 KiB of response; the reason gets a part of it.
const MAX_REASON_CHARS: usize = 1000;

/// How long one invocation may work before it must answer.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Resolving the database URL plus applying the migrations.
    pub work_timeout: Duration,
    /// Opening the database connection.
    pub connect_timeout: Duration,
}

impl Limits {
    /// For an invocation that must be over at `deadline`: work until [`RESPONSE_RESERVE`]
    /// before it (at least one second).
    pub fn until(deadline: SystemTime) -> Limits {
        let remaining = deadline
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        let work_timeout = remaining
            .saturating_sub(RESPONSE_RESERVE)
            .max(Duration::from_secs(1));
        Limits {
            work_timeout,
            connect_timeout: CONNECT_TIMEOUT.min(work_timeout),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Without a `ResponseURL` there is no one to answer.
    #[error("the event is not a CloudFormation custom resource request (no ResponseURL): {0}")]
    NoResponseUrl(String),
    /// Returned to Lambda, so the asynchronous invocation is retried (applying the
    /// migrations again is harmless).
    #[error("answering CloudFormation failed: {0}")]
    Respond(String),
}

/// The ids every answer repeats. Create, Update and Delete requests are distinct types in
/// aws_lambda_events with the same fields, hence a macro rather than a function.
macro_rules! request_ids {
    ($request:expr) => {
        RequestIds {
            response_url: $request.response_url,
            stack_id: $request.stack_id,
            request_id: $request.request_id,
            logical_resource_id: $request.logical_resource_id,
        }
    };
}

/// Handles one custom resource event and PUTs the answer to its `ResponseURL`; returns the
/// answer sent. `target` (the database and the function roles' logins) is awaited only for
/// Create and Update, so a Delete succeeds even where the database configuration is broken.
pub async fn handle<U, E>(
    event: Value,
    target: U,
    limits: Limits,
) -> Result<CloudFormationCustomResourceResponse, HandlerError>
where
    U: Future<Output = Result<MigrationTarget, E>>,
    E: Display,
{
    let request = match serde_json::from_value::<CloudFormationCustomResourceRequest>(event.clone())
    {
        Ok(request) => request,
        Err(e) => {
            return answer_unhandled(&event, &format!("malformed request: {e}")).await;
        }
    };
    // Nowhere to answer: no work either (nobody would hear of it, and the error has Lambda
    // retry the invocation).
    if RequestIds::read(&event).response_url.is_empty() {
        return Err(HandlerError::NoResponseUrl(
            "the ResponseURL is empty".into(),
        ));
    }
    let (ids, physical_resource_id, outcome) = match request {
        CloudFormationCustomResourceRequest::Create(r) => {
            let outcome = apply(target, limits).await;
            (request_ids!(r), PHYSICAL_RESOURCE_ID.to_string(), outcome)
        }
        CloudFormationCustomResourceRequest::Update(r) => {
            let outcome = apply(target, limits).await;
            (request_ids!(r), PHYSICAL_RESOURCE_ID.to_string(), outcome)
        }
        CloudFormationCustomResourceRequest::Delete(r) => {
            let ids = request_ids!(r);
            tracing::info!("delete: the schema stays");
            // The id CloudFormation asks about, whatever an older version of this function
            // answered at Create.
            (ids, r.physical_resource_id, Ok(Outcome::Kept))
        }
        _ => return answer_unhandled(&event, "unknown RequestType").await,
    };
    let response = response(&ids, physical_resource_id, outcome);
    send(&ids.response_url, &response).await?;
    Ok(response)
}

/// What a request did to the schema.
enum Outcome {
    Applied(i64),
    Kept,
}

/// The fields every request carries and every answer repeats.
#[derive(Debug)]
struct RequestIds {
    response_url: String,
    stack_id: String,
    request_id: String,
    logical_resource_id: String,
}

impl RequestIds {
    /// The ids of an event, each one that is a string (also of an event that is no request:
    /// a field of the wrong type must not hide where to answer).
    fn read(event: &Value) -> RequestIds {
        let field = |name: &str| {
            event
                .get(name)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        RequestIds {
            response_url: field("ResponseURL"),
            stack_id: field("StackId"),
            request_id: field("RequestId"),
            logical_resource_id: field("LogicalResourceId"),
        }
    }
}

/// Resolves the target and applies the migrations and logins within the limits; the error is
/// the reason for CloudFormation, without the password.
async fn apply<U, E>(target: U, limits: Limits) -> Result<Outcome, String>
where
    U: Future<Output = Result<MigrationTarget, E>>,
    E: Display,
{
    let work = async {
        let target = target.await.map_err(|e| e.to_string())?;
        let url = &target.database_url;
        adapters::schema::apply_migrations(url, limits.connect_timeout, &target.logins)
            .await
            .map(Outcome::Applied)
            // sqlx's errors do not quote the URL; this is for the day one does.
            .map_err(|e| adapters::config::scrub_password(&e.to_string(), url))
    };
    let outcome = match tokio::time::timeout(limits.work_timeout, work).await {
        Ok(outcome) => outcome,
        Err(_) => Err(format!(
            "the migrations did not finish within {:?}",
            limits.work_timeout
        )),
    };
    match &outcome {
        Ok(Outcome::Applied(version)) => tracing::info!(version, "migrations applied"),
        Ok(Outcome::Kept) => {}
        Err(reason) => tracing::error!(%reason, "migrations failed"),
    }
    outcome
}

fn response(
    ids: &RequestIds,
    physical_resource_id: String,
    outcome: Result<Outcome, String>,
) -> CloudFormationCustomResourceResponse {
    // The type is non-exhaustive: built from its default.
    let mut response = CloudFormationCustomResourceResponse::default();
    response.physical_resource_id = physical_resource_id;
    response.stack_id = ids.stack_id.clone();
    response.request_id = ids.request_id.clone();
    response.logical_resource_id = ids.logical_resource_id.clone();
    match outcome {
        Ok(Outcome::Applied(version)) => {
            response.status = CloudFormationCustomResourceResponseStatus::Success;
            response.reason = Some(format!("migrations applied up to version {version}"));
            response.data = HashMap::from([(APPLIED_KEY.to_string(), version.to_string())]);
        }
        Ok(Outcome::Kept) => {
            response.status = CloudFormationCustomResourceResponseStatus::Success;
            response.reason = Some("the ledger schema is kept".into());
        }
        Err(reason) => {
            response.status = CloudFormationCustomResourceResponseStatus::Failed;
            response.reason = Some(reason.chars().take(MAX_REASON_CHARS).collect());
        }
    }
    response
}

/// Answers FAILED to an event this function cannot handle, if it says where to answer.
async fn answer_unhandled(
    event: &Value,
    reason: &str,
) -> Result<CloudFormationCustomResourceResponse, HandlerError> {
    let ids = RequestIds::read(event);
    if ids.response_url.is_empty() {
        return Err(HandlerError::NoResponseUrl(reason.to_string()));
    }
    tracing::error!(%reason, "unhandled event");
    let physical_resource_id = event
        .get("PhysicalResourceId")
        .and_then(Value::as_str)
        .unwrap_or(PHYSICAL_RESOURCE_ID)
        .to_string();
    let response = response(&ids, physical_resource_id, Err(reason.to_string()));
    send(&ids.response_url, &response).await?;
    Ok(response)
}

/// PUTs the answer to the presigned S3 URL, retrying transient failures. The signature
/// covers an empty Content-Type, so the header is sent empty rather than left out (reqwest
/// would add none, but a proxy or a later change might) and no other auth is added.
async fn send(
    response_url: &str,
    response: &CloudFormationCustomResourceResponse,
) -> Result<(), HandlerError> {
    let body = serde_json::to_string(response).map_err(|e| HandlerError::Respond(e.to_string()))?;
    let client = reqwest::Client::builder()
        .timeout(RESPONSE_ATTEMPT_TIMEOUT)
        .build()
        .map_err(|e| HandlerError::Respond(e.to_string()))?;
    let mut last_error = String::new();
    for attempt in 1..=RESPONSE_ATTEMPTS {
        let sent = client
            .put(response_url)
            .header(reqwest::header::CONTENT_TYPE, "")
            .body(body.clone())
            .send()
            .await;
        match sent {
            Ok(answer) if answer.status().is_success() => return Ok(()),
            Ok(answer) => last_error = format!("the response URL answered {}", answer.status()),
            // Without the URL: its query is the presigned signature.
            Err(e) => last_error = e.without_url().to_string(),
        }
        tracing::warn!(attempt, error = %last_error, "answering CloudFormation");
        if attempt < RESPONSE_ATTEMPTS {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    Err(HandlerError::Respond(last_error))
}
