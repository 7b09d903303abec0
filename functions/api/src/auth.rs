//! Identities: sign-up, login sessions, API keys, and authenticating every other request by
//! `Authorization: Bearer <token>` or Alpaca's `APCA-API-KEY-ID` + `APCA-API-SECRET-KEY`.

use adapters::auth::{
    digest, dummy_password_hash, hash_password, new_key_id, random_secret, resolve,
    verify_password, Credentials,
};
use adapters::cache::Session;
use adapters::ledger::SignupError;
use adapters::ratelimit::{BucketSpec, Decision};
use adapters::ApiError;
use chrono::Utc;
use domain::RejectCode;
use lambda_http::{Body, Request, Response};
use serde::Deserialize;
use serde_json::json;

use crate::http::{header, json, json_body, no_content, source_ip};
use crate::Deps;

pub use adapters::auth::Principal;

const MISSING: &str = "missing credentials: send Authorization: Bearer <token>, or APCA-API-KEY-ID and APCA-API-SECRET-KEY";

fn bearer(req: &Request) -> Option<String> {
    let h = header(req, "authorization")?;
    let (scheme, token) = h.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
        .filter(|t| !t.is_empty())
}

/// Authenticates the request by session token or API key.
pub async fn authenticate(deps: &Deps, req: &Request) -> Result<Principal, ApiError> {
    let credentials = Credentials::from_parts(
        bearer(req),
        header(req, "apca-api-key-id"),
        header(req, "apca-api-secret-key"),
    );
    if credentials == Credentials::IncompleteKey {
        return Err(ApiError::unauthenticated(
            "send both APCA-API-KEY-ID and APCA-API-SECRET-KEY",
        ));
    }
    let p = resolve(
        &deps.ledger,
        &deps.cache,
        deps.config.session_ttl_secs,
        &credentials,
        MISSING,
    )
    .await?;
    take(deps, "requests", &p, deps.config.rate_requests).await?;
    Ok(p)
}

/// Takes a token from the account's bucket `name`; an empty bucket is a 429 with the
/// seconds until the next token.
pub async fn take(
    deps: &Deps,
    name: &str,
    p: &Principal,
    spec: BucketSpec,
) -> Result<(), ApiError> {
    match deps
        .limiter
        .take(name, &p.account_id.to_string(), spec)
        .await?
    {
        Decision::Allowed { .. } => Ok(()),
        Decision::Limited { retry_after_secs } => Err(ApiError::rate_limited(
            RejectCode::RateLimited,
            format!(
                "too many {name}: at most {} per minute (bursts of {}) per account; retry in {retry_after_secs} s",
                spec.per_minute, spec.burst
            ),
            retry_after_secs,
        )),
    }
}

/// Key management needs a login session: a leaked API key cannot mint more keys.
async fn require_session(deps: &Deps, req: &Request) -> Result<Principal, ApiError> {
    match bearer(req) {
        Some(token) => {
            resolve(
                &deps.ledger,
                &deps.cache,
                deps.config.session_ttl_secs,
                &Credentials::Session(token),
                MISSING,
            )
            .await
        }
        None => Err(ApiError::unauthenticated(
            "this route needs a login session: send Authorization: Bearer <token>",
        )),
    }
}

#[derive(Deserialize)]
struct Login {
    email: Option<String>,
    password: Option<String>,
}

const MIN_PASSWORD: usize = 8;
const MAX_PASSWORD: usize = 256;

fn normalized_email(email: Option<&str>) -> Result<String, ApiError> {
    let e = email.map(|e| e.trim().to_lowercase()).unwrap_or_default();
    let valid = e.len() <= 254
        && e.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        })
        && !e.chars().any(|c| c.is_whitespace() || c.is_control());
    if valid {
        Ok(e)
    } else {
        Err(ApiError::new(
            422,
            RejectCode::InvalidEmail,
            "email must be an address like name@example.com",
        ))
    }
}

async fn hash_blocking(password: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| ApiError::new(500, RejectCode::Internal, format!("hashing failed: {e}")))?
        .map_err(|e| ApiError::new(500, RejectCode::Internal, format!("hashing failed: {e}")))
}

async fn verify_blocking(password: String, hash: String) -> bool {
    tokio::task::spawn_blocking(move || verify_password(&password, &hash))
        .await
        .unwrap_or(false)
}

/// `POST /v2/auth/signup {email, password}` → 201 `{user_id, account_id}`.
pub async fn signup(deps: &Deps, req: &Request) -> Result<Response<Body>, ApiError> {
    let c: Login = json_body(req)?;
    let email = normalized_email(c.email.as_deref())?;
    let password = c.password.unwrap_or_default();
    let chars = password.chars().count();
    if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&chars) {
        return Err(ApiError::new(
            422,
            RejectCode::InvalidPassword,
            format!("password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters"),
        ));
    }
    let hash = hash_blocking(password).await?;
    match deps
        .ledger
        .create_user(&email, &hash, deps.config.initial_cash)
        .await
    {
        Ok((user_id, account_id)) => Ok(json(
            201,
            &json!({ "user_id": user_id, "account_id": account_id, "email": email }),
        )),
        Err(SignupError::EmailTaken) => Err(ApiError::conflict(
            RejectCode::EmailTaken,
            "an account with this email already exists",
        )),
        Err(SignupError::Dependency(e)) => Err(e.into()),
    }
}

/// `POST /v2/auth/login {email, password}` → `{token, expires_at}`.
pub async fn login(deps: &Deps, req: &Request) -> Result<Response<Body>, ApiError> {
    let c: Login = json_body(req)?;
    let password = c.password.unwrap_or_default();
    let email = normalized_email(c.email.as_deref()).unwrap_or_default();
    // Backoff per email and per address, the same for emails with and without an account.
    let ip = source_ip(req);
    let subject = c.email.as_deref().unwrap_or_default();
    if let Some(secs) = deps.login_guard.check(subject, &ip).await? {
        return Err(ApiError::rate_limited(
            RejectCode::TooManyLoginAttempts,
            format!(
                "too many failed logins for this email or from this address; retry in {secs} s"
            ),
            secs,
        ));
    }
    let creds = if email.is_empty() {
        None
    } else {
        deps.ledger.credentials_by_email(&email).await?
    };
    // Verify against a dummy hash for unknown emails, so the answer takes as long either way.
    let hash = creds
        .as_ref()
        .map(|c| c.password_hash.clone())
        .unwrap_or_else(|| dummy_password_hash().to_string());
    let ok = verify_blocking(password, hash).await;
    let Some(creds) = creds.filter(|_| ok) else {
        deps.login_guard.record_failure(subject, &ip).await?;
        return Err(ApiError::unauthenticated("invalid email or password"));
    };
    deps.login_guard.record_success(subject, &ip).await?;
    let token = random_secret();
    let ttl = deps.config.session_ttl_secs;
    deps.cache
        .put_session(
            &digest(&token),
            &Session {
                user_id: creds.user_id,
                account_id: creds.account_id,
            },
            ttl,
        )
        .await?;
    let expires_at = Utc::now() + chrono::Duration::seconds(ttl as i64);
    Ok(json(
        200,
        &json!({ "token": token, "expires_at": expires_at, "user_id": creds.user_id, "account_id": creds.account_id }),
    ))
}

/// `POST /v2/auth/logout` revokes the session token it is called with.
pub async fn logout(deps: &Deps, req: &Request) -> Result<Response<Body>, ApiError> {
    let token = bearer(req).ok_or_else(|| {
        ApiError::unauthenticated("send Authorization: Bearer <token> to log out")
    })?;
    if deps.cache.delete_session(&digest(&token)).await? {
        Ok(no_content())
    } else {
        Err(ApiError::unauthenticated(
            "invalid or expired session token",
        ))
    }
}

/// `POST /v2/api_keys` → 201 `{key_id, secret_key}`; the secret is shown this once.
pub async fn create_api_key(deps: &Deps, req: &Request) -> Result<Response<Body>, ApiError> {
    let p = require_session(deps, req).await?;
    let key_id = new_key_id();
    let secret = random_secret();
    let created_at = deps
        .ledger
        .insert_api_key(&key_id, p.user_id, p.account_id, &digest(&secret))
        .await?;
    Ok(json(
        201,
        &json!({ "key_id": key_id, "secret_key": secret, "account_id": p.account_id, "created_at": created_at }),
    ))
}

/// `GET /v2/api_keys`: the caller's live keys, without secrets.
pub async fn list_api_keys(deps: &Deps, req: &Request) -> Result<Response<Body>, ApiError> {
    let p = require_session(deps, req).await?;
    let keys = deps.ledger.api_keys(p.user_id).await?;
    let list: Vec<_> = keys.iter().map(|k| json!({ "key_id": k.key_id, "account_id": k.account_id, "created_at": k.created_at })).collect();
    Ok(json(200, &serde_json::Value::Array(list)))
}

/// `DELETE /v2/api_keys/{key_id}` → 204, or 404 when the caller has no such key.
pub async fn delete_api_key(
    deps: &Deps,
    req: &Request,
    key_id: &str,
) -> Result<Response<Body>, ApiError> {
    let p = require_session(deps, req).await?;
    if deps.ledger.revoke_api_key(p.user_id, key_id).await? {
        Ok(no_content())
    } else {
        Err(ApiError::not_found(format!("no API key {key_id}")))
    }
}
