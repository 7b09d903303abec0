//! Identities: sign-up, login sessions, API keys, and resolving the credentials of every
//! other request to a [`Principal`] (with the account's request budget taken).

use adapters::auth::{
    digest, digest_matches, dummy_password_hash, hash_password, new_key_id, random_secret,
    verify_password, Credentials,
};
use adapters::cache::{Cache, Session};
use adapters::ledger::{ApiKeyRecord, Ledger, SignupError};
use adapters::ratelimit::{BucketSpec, Decision};
use chrono::{DateTime, Utc};
use domain::RejectCode;
use uuid::Uuid;

use crate::{ApiError, Deps};

pub use adapters::auth::Principal;

/// Resolves credentials to a principal: a session by its digest in the cache (sliding
/// expiry of `session_ttl_secs`), an API key by its id in the ledger and its secret's digest
/// compared in constant time. `missing` is the message when nothing was presented.
pub async fn resolve(
    ledger: &Ledger,
    cache: &Cache,
    session_ttl_secs: u64,
    credentials: &Credentials,
    missing: &str,
) -> Result<Principal, ApiError> {
    match credentials {
        Credentials::Session(token) => match cache
            .touch_session(&digest(token), session_ttl_secs)
            .await?
        {
            Some(s) => Ok(Principal {
                user_id: s.user_id,
                account_id: s.account_id,
                via_session: true,
            }),
            None => Err(ApiError::unauthenticated(
                "invalid or expired session token",
            )),
        },
        Credentials::ApiKey { key_id, secret } => match ledger.api_key(key_id).await? {
            Some(k) if !k.revoked && digest_matches(secret, &k.secret_hash) => Ok(Principal {
                user_id: k.user_id,
                account_id: k.account_id,
                via_session: false,
            }),
            _ => Err(ApiError::unauthenticated("invalid API key or secret")),
        },
        Credentials::IncompleteKey => Err(ApiError::unauthenticated(
            "send both the API key id and its secret",
        )),
        Credentials::None => Err(ApiError::unauthenticated(missing)),
    }
}

const MISSING: &str = "missing credentials: send Authorization: Bearer <token>, or APCA-API-KEY-ID and APCA-API-SECRET-KEY";

/// Authenticates a REST request by session token or API key and takes a token from the
/// account's request budget.
pub async fn authenticate(deps: &Deps, credentials: &Credentials) -> Result<Principal, ApiError> {
    if *credentials == Credentials::IncompleteKey {
        return Err(ApiError::unauthenticated(
            "send both APCA-API-KEY-ID and APCA-API-SECRET-KEY",
        ));
    }
    let p = resolve(
        &deps.ledger,
        &deps.cache,
        deps.config.sessions.ttl_secs,
        credentials,
        MISSING,
    )
    .await?;
    take(deps, "requests", &p, deps.config.rates.requests).await?;
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
pub async fn require_session(deps: &Deps, bearer: Option<String>) -> Result<Principal, ApiError> {
    match bearer {
        Some(token) => {
            resolve(
                &deps.ledger,
                &deps.cache,
                deps.config.sessions.ttl_secs,
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

/// A new user and its account.
#[derive(Debug, Clone)]
pub struct SignedUp {
    pub user_id: Uuid,
    pub account_id: Uuid,
    pub email: String,
}

/// Creates a user with the configured starting cash.
pub async fn signup(
    deps: &Deps,
    email: Option<&str>,
    password: Option<String>,
) -> Result<SignedUp, ApiError> {
    let email = normalized_email(email)?;
    let password = password.unwrap_or_default();
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
        .create_user(&email, &hash, deps.config.trading.initial_cash)
        .await
    {
        Ok((user_id, account_id)) => Ok(SignedUp {
            user_id,
            account_id,
            email,
        }),
        Err(SignupError::EmailTaken) => Err(ApiError::conflict(
            RejectCode::EmailTaken,
            "an account with this email already exists",
        )),
        Err(SignupError::Dependency(e)) => Err(e.into()),
    }
}

/// A login session; the token is shown this once.
#[derive(Debug, Clone)]
pub struct LoggedIn {
    pub token: String,
    pub expires_at: DateTime<Utc>,
    pub user_id: Uuid,
    pub account_id: Uuid,
}

/// Checks the password (with backoff per email and per `source_ip`) and opens a session.
pub async fn login(
    deps: &Deps,
    email: Option<&str>,
    password: Option<String>,
    source_ip: &str,
) -> Result<LoggedIn, ApiError> {
    let password = password.unwrap_or_default();
    let normalized = normalized_email(email).unwrap_or_default();
    // Backoff per email and per address, the same for emails with and without an account.
    let subject = email.unwrap_or_default();
    if let Some(secs) = deps.login_guard.check(subject, source_ip).await? {
        return Err(ApiError::rate_limited(
            RejectCode::TooManyLoginAttempts,
            format!(
                "too many failed logins for this email or from this address; retry in {secs} s"
            ),
            secs,
        ));
    }
    let creds = if normalized.is_empty() {
        None
    } else {
        deps.ledger.credentials_by_email(&normalized).await?
    };
    // Verify against a dummy hash for unknown emails, so the answer takes as long either way.
    let hash = creds
        .as_ref()
        .map(|c| c.password_hash.clone())
        .unwrap_or_else(|| dummy_password_hash().to_string());
    let ok = verify_blocking(password, hash).await;
    let Some(creds) = creds.filter(|_| ok) else {
        deps.login_guard.record_failure(subject, source_ip).await?;
        return Err(ApiError::unauthenticated("invalid email or password"));
    };
    deps.login_guard.record_success(subject, source_ip).await?;
    let token = random_secret();
    let ttl = deps.config.sessions.ttl_secs;
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
    Ok(LoggedIn {
        token,
        expires_at,
        user_id: creds.user_id,
        account_id: creds.account_id,
    })
}

/// Revokes the session `bearer` names.
pub async fn logout(deps: &Deps, bearer: Option<String>) -> Result<(), ApiError> {
    let token = bearer.ok_or_else(|| {
        ApiError::unauthenticated("send Authorization: Bearer <token> to log out")
    })?;
    if deps.cache.delete_session(&digest(&token)).await? {
        Ok(())
    } else {
        Err(ApiError::unauthenticated(
            "invalid or expired session token",
        ))
    }
}

/// A new API key; the secret is shown this once.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub key_id: String,
    pub secret_key: String,
    pub account_id: Uuid,
    pub created_at: DateTime<Utc>,
}

/// Creates an API key for the session's user and account.
pub async fn create_api_key(deps: &Deps, bearer: Option<String>) -> Result<NewApiKey, ApiError> {
    let p = require_session(deps, bearer).await?;
    let key_id = new_key_id();
    let secret = random_secret();
    let created_at = deps
        .ledger
        .insert_api_key(&key_id, p.user_id, p.account_id, &digest(&secret))
        .await?;
    Ok(NewApiKey {
        key_id,
        secret_key: secret,
        account_id: p.account_id,
        created_at,
    })
}

/// The session user's live keys.
pub async fn list_api_keys(
    deps: &Deps,
    bearer: Option<String>,
) -> Result<Vec<ApiKeyRecord>, ApiError> {
    let p = require_session(deps, bearer).await?;
    Ok(deps.ledger.api_keys(p.user_id).await?)
}

/// Revokes one of the session user's keys; 404 when it has no such key.
pub async fn delete_api_key(
    deps: &Deps,
    bearer: Option<String>,
    key_id: &str,
) -> Result<(), ApiError> {
    let p = require_session(deps, bearer).await?;
    if deps.ledger.revoke_api_key(p.user_id, key_id).await? {
        Ok(())
    } else {
        Err(ApiError::not_found(format!("no API key {key_id}")))
    }
}
