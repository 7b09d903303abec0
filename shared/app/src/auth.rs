//! Identities: sign-up, login sessions, API keys, and resolving the credentials of every
//! other request to a [`Principal`] (with the account's request budget taken).

use adapters::auth::{
    digest, digest_matches, dummy_password_hash, hash_password, key_reference, new_key_id,
    random_secret, session_reference, verify_password, Credentials,
};
use adapters::cache::{Cache, Session};
use adapters::ledger::{ApiKeyRecord, Ledger, SignupError};
use adapters::ratelimit::{BucketSpec, Decision};
use chrono::{DateTime, Utc};
use domain::RejectCode;
use uuid::Uuid;

use crate::realtime::Opened;
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

/// A route for login sessions only: `credentials` must be a live session. An API key
/// (which trades, as Alpaca's do) is refused 403 `session_required`, so a leaked key cannot
/// mint credentials that outlive it or lift the limits that bound it.
pub async fn require_session(
    deps: &Deps,
    credentials: &Credentials,
    action: &str,
) -> Result<Principal, ApiError> {
    let p = resolve(
        &deps.ledger,
        &deps.cache,
        deps.config.sessions.ttl_secs,
        credentials,
        "this route needs a login session: send Authorization: Bearer <token>",
    )
    .await?;
    session_only(&p, action)?;
    Ok(p)
}

/// Refuses `p` unless it came with a login session: 403 `session_required` naming `action`.
pub fn session_only(p: &Principal, action: &str) -> Result<(), ApiError> {
    if p.via_session {
        Ok(())
    } else {
        Err(ApiError::new(
            403,
            RejectCode::SessionRequired,
            format!("an API key cannot {action}: log in and send Authorization: Bearer <token>"),
        ))
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

fn valid_password(password: Option<String>) -> Result<String, ApiError> {
    let password = password.unwrap_or_default();
    let chars = password.chars().count();
    if (MIN_PASSWORD..=MAX_PASSWORD).contains(&chars) {
        Ok(password)
    } else {
        Err(ApiError::new(
            422,
            RejectCode::InvalidPassword,
            format!("password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters"),
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

/// What a sign-up answers, the same whether the address was free or taken: nothing tells
/// an outsider which addresses have accounts.
#[derive(Debug, Clone)]
pub struct SignupAccepted {
    pub email: String,
}

/// Creates a user with the configured starting cash, unless the email has an account
/// already (then nothing changes: its owner keeps their password). Both answer alike and
/// take the same work (the password is hashed either way). Limited per source address.
pub async fn signup(
    deps: &Deps,
    email: Option<&str>,
    password: Option<String>,
    source_ip: &str,
) -> Result<SignupAccepted, ApiError> {
    let spec = deps.config.rates.signups;
    if let Decision::Limited { retry_after_secs } =
        deps.limiter.take("signups", source_ip, spec).await?
    {
        return Err(ApiError::rate_limited(
            RejectCode::RateLimited,
            format!(
                "too many sign-ups from this address: at most {} per minute (bursts of {}); retry in {retry_after_secs} s",
                spec.per_minute, spec.burst
            ),
            retry_after_secs,
        ));
    }
    let email = normalized_email(email)?;
    let password = valid_password(password)?;
    let hash = hash_blocking(password).await?;
    match deps
        .ledger
        .create_user(&email, &hash, deps.config.trading.initial_cash)
        .await
    {
        Ok(_) | Err(SignupError::EmailTaken) => Ok(SignupAccepted { email }),
        Err(SignupError::Dependency(e)) => Err(e.into()),
    }
}

/// A login session; the token is shown this once.
#[derive(Debug, Clone)]
pub struct LoggedIn {
    pub token: String,
    /// When the session ends unless used (each use slides it forward).
    pub expires_at: DateTime<Utc>,
    /// When the session ends however often it is used.
    pub ends_at: DateTime<Utc>,
    pub user_id: Uuid,
    pub account_id: Uuid,
}

fn too_many_attempts(secs: u64) -> ApiError {
    ApiError::rate_limited(
        RejectCode::TooManyLoginAttempts,
        format!("too many failed logins for this email or from this address; retry in {secs} s"),
        secs,
    )
}

/// Checks the password (the attempt counted first, per email from `source_ip` and per
/// `source_ip`) and opens a session.
pub async fn login(
    deps: &Deps,
    email: Option<&str>,
    password: Option<String>,
    source_ip: &str,
) -> Result<LoggedIn, ApiError> {
    let password = password.unwrap_or_default();
    let normalized = normalized_email(email).unwrap_or_default();
    // Counted before the password is verified, the same for emails with and without an
    // account, so parallel guesses get no more tries than sequential ones.
    let subject = email.unwrap_or_default();
    if let Some(secs) = deps.login_guard.attempt(subject, source_ip).await? {
        return Err(too_many_attempts(secs));
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
        return Err(ApiError::unauthenticated("invalid email or password"));
    };
    deps.login_guard.succeeded(subject, source_ip).await?;
    open_session(deps, creds.user_id, creds.account_id).await
}

async fn open_session(deps: &Deps, user_id: Uuid, account_id: Uuid) -> Result<LoggedIn, ApiError> {
    let token = random_secret();
    let times = &deps.config.sessions;
    deps.cache
        .put_session(
            &digest(&token),
            &Session {
                user_id,
                account_id,
            },
            times,
        )
        .await?;
    let now = Utc::now();
    let seconds = |s: u64| chrono::Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX));
    let at = |s: u64| {
        now.checked_add_signed(seconds(s))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    };
    Ok(LoggedIn {
        token,
        expires_at: at(times.ttl_secs.min(times.max_lifetime_secs)),
        ends_at: at(times.max_lifetime_secs),
        user_id,
        account_id,
    })
}

/// Ends every login session of the caller's user (the one it is called with too).
pub async fn logout_all(deps: &Deps, credentials: &Credentials) -> Result<u64, ApiError> {
    let p = require_session(deps, credentials, "end login sessions").await?;
    let revoked = deps.cache.revoke_user_sessions(p.user_id).await?;
    crate::realtime::close(deps, p.account_id, Opened::BySessions).await;
    Ok(revoked)
}

/// What a password change revoked, and the new session that replaces the caller's.
#[derive(Debug, Clone)]
pub struct PasswordChanged {
    pub sessions_revoked: u64,
    pub api_keys_revoked: Vec<String>,
    pub session: LoggedIn,
}

/// Changes the password: the current one is checked (attempts counted as logins are, so a
/// stolen session cannot guess it), then every session of the user ends and, with
/// `revoke_api_keys`, every API key. The caller gets a new session.
pub async fn change_password(
    deps: &Deps,
    credentials: &Credentials,
    current: Option<String>,
    new: Option<String>,
    revoke_api_keys: bool,
    source_ip: &str,
) -> Result<PasswordChanged, ApiError> {
    let p = require_session(deps, credentials, "change the password").await?;
    let new = valid_password(new)?;
    let subject = format!("user:{}", p.user_id);
    if let Some(secs) = deps.login_guard.attempt(&subject, source_ip).await? {
        return Err(too_many_attempts(secs));
    }
    let creds = deps
        .ledger
        .credentials_by_user(p.user_id)
        .await?
        .ok_or_else(|| ApiError::unauthenticated("invalid or expired session token"))?;
    if !verify_blocking(current.unwrap_or_default(), creds.password_hash).await {
        return Err(ApiError::new(
            403,
            RejectCode::WrongPassword,
            "current_password is not the account's password",
        ));
    }
    deps.login_guard.succeeded(&subject, source_ip).await?;
    let hash = hash_blocking(new).await?;
    deps.ledger.set_password_hash(p.user_id, &hash).await?;
    let sessions_revoked = deps.cache.revoke_user_sessions(p.user_id).await?;
    let api_keys_revoked = if revoke_api_keys {
        deps.ledger.revoke_api_keys(p.user_id).await?
    } else {
        Vec::new()
    };
    let opened = if revoke_api_keys {
        Opened::All
    } else {
        Opened::BySessions
    };
    crate::realtime::close(deps, p.account_id, opened).await;
    Ok(PasswordChanged {
        sessions_revoked,
        api_keys_revoked,
        session: open_session(deps, p.user_id, p.account_id).await?,
    })
}

/// Revokes the session `bearer` names and closes the WebSocket connections it opened.
pub async fn logout(deps: &Deps, bearer: Option<String>) -> Result<(), ApiError> {
    let token = bearer.ok_or_else(|| {
        ApiError::unauthenticated("send Authorization: Bearer <token> to log out")
    })?;
    let token_digest = digest(&token);
    let session = deps
        .cache
        .touch_session(&token_digest, deps.config.sessions.ttl_secs)
        .await?;
    match session {
        Some(s) if deps.cache.delete_session(&token_digest).await? => {
            let opened_by = session_reference(&token_digest);
            crate::realtime::close(deps, s.account_id, Opened::By(&opened_by)).await;
            Ok(())
        }
        _ => Err(ApiError::unauthenticated(
            "invalid or expired session token",
        )),
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

/// Live API keys a user may hold at once.
pub const MAX_API_KEYS: i64 = 10;

/// Creates an API key for the session's user and account.
pub async fn create_api_key(deps: &Deps, credentials: &Credentials) -> Result<NewApiKey, ApiError> {
    let p = require_session(deps, credentials, "create API keys").await?;
    let key_id = new_key_id();
    let secret = random_secret();
    let created_at = deps
        .ledger
        .insert_api_key_capped(
            &key_id,
            p.user_id,
            p.account_id,
            &digest(&secret),
            MAX_API_KEYS,
        )
        .await?
        .ok_or_else(|| {
            ApiError::new(
                422,
                RejectCode::MaxApiKeys,
                format!("a user may have at most {MAX_API_KEYS} live API keys; delete one first"),
            )
        })?;
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
    credentials: &Credentials,
) -> Result<Vec<ApiKeyRecord>, ApiError> {
    let p = require_session(deps, credentials, "list API keys").await?;
    Ok(deps.ledger.api_keys(p.user_id).await?)
}

/// Revokes one of the session user's keys; 404 when it has no such key.
pub async fn delete_api_key(
    deps: &Deps,
    credentials: &Credentials,
    key_id: &str,
) -> Result<(), ApiError> {
    let p = require_session(deps, credentials, "delete API keys").await?;
    if deps.ledger.revoke_api_key(p.user_id, key_id).await? {
        crate::realtime::close(deps, p.account_id, Opened::By(&key_reference(key_id))).await;
        Ok(())
    } else {
        Err(ApiError::not_found(format!("no API key {key_id}")))
    }
}
