//! Identities: `POST /v2/auth/{signup,login,logout}`, `/v2/api_keys`, and authenticating
//! every other request by `Authorization: Bearer <token>` or Alpaca's `APCA-API-KEY-ID` +
//! `APCA-API-SECRET-KEY` (the use cases are `app::auth`).

use app::ApiError;
use lambda_http::{Body, Request, Response};
use rest::{bearer, credentials, json, json_body, no_content, source_ip};
use serde::Deserialize;
use serde_json::json;

use crate::Deps;

pub use app::Principal;

/// Authenticates the request by session token or API key.
pub async fn authenticate(deps: &Deps, req: &Request) -> Result<Principal, ApiError> {
    app::auth::authenticate(deps, &credentials(req)).await
}

#[derive(Deserialize)]
struct Login {
    email: Option<String>,
    password: Option<String>,
}

/// `POST /v2/auth/signup {email, password}` → 202 `{email, message}`, whether the address
/// was free (an account now exists) or taken (nothing changed): the answer does not tell.
/// The user's ids come with the login.
pub async fn signup(deps: &Deps, req: &Request) -> Result<Response<Body>, ApiError> {
    let c: Login = json_body(req)?;
    let s = app::auth::signup(deps, c.email.as_deref(), c.password, &source_ip(req)).await?;
    Ok(json(
        202,
        &json!({
            "email": s.email,
            "message": "log in with this email and password; an address that had an account already keeps it unchanged",
        }),
    ))
}

fn session_json(s: &app::auth::LoggedIn) -> serde_json::Value {
    json!({ "token": s.token, "expires_at": s.expires_at, "ends_at": s.ends_at, "user_id": s.user_id, "account_id": s.account_id })
}

/// `POST /v2/auth/login {email, password}` → `{token, expires_at, ends_at}`: the session
/// slides to `expires_at` on each use and ends at `ends_at` whatever its use.
pub async fn login(deps: &Deps, req: &Request) -> Result<Response<Body>, ApiError> {
    let c: Login = json_body(req)?;
    let s = app::auth::login(deps, c.email.as_deref(), c.password, &source_ip(req)).await?;
    Ok(json(200, &session_json(&s)))
}

/// `POST /v2/auth/logout_all` → `{sessions_revoked}`: every session of the user ends.
pub async fn logout_all(deps: &Deps, req: &Request) -> Result<Response<Body>, ApiError> {
    let n = app::auth::logout_all(deps, &credentials(req)).await?;
    Ok(json(200, &json!({ "sessions_revoked": n })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordChange {
    current_password: Option<String>,
    new_password: Option<String>,
    #[serde(default)]
    revoke_api_keys: bool,
}

/// `POST /v2/auth/password {current_password, new_password, revoke_api_keys?}` → 200 with
/// what was revoked and a new session (every other session, the caller's too, has ended).
pub async fn change_password(deps: &Deps, req: &Request) -> Result<Response<Body>, ApiError> {
    let creds = credentials(req);
    let c: PasswordChange = json_body(req)?;
    let changed = app::auth::change_password(
        deps,
        &creds,
        c.current_password,
        c.new_password,
        c.revoke_api_keys,
        &source_ip(req),
    )
    .await?;
    let mut out = json!({
        "sessions_revoked": changed.sessions_revoked,
        "api_keys_revoked": changed.api_keys_revoked,
    });
    out["session"] = session_json(&changed.session);
    Ok(json(200, &out))
}

/// `POST /v2/auth/logout` revokes the session token it is called with.
pub async fn logout(deps: &Deps, req: &Request) -> Result<Response<Body>, ApiError> {
    app::auth::logout(deps, bearer(req)).await?;
    Ok(no_content())
}

/// `POST /v2/api_keys` → 201 `{key_id, secret_key}`; the secret is shown this once.
pub async fn create_api_key(deps: &Deps, req: &Request) -> Result<Response<Body>, ApiError> {
    let k = app::auth::create_api_key(deps, &credentials(req)).await?;
    Ok(json(
        201,
        &json!({ "key_id": k.key_id, "secret_key": k.secret_key, "account_id": k.account_id, "created_at": k.created_at }),
    ))
}

/// `GET /v2/api_keys`: the caller's live keys, without secrets.
pub async fn list_api_keys(deps: &Deps, req: &Request) -> Result<Response<Body>, ApiError> {
    let keys = app::auth::list_api_keys(deps, &credentials(req)).await?;
    let list: Vec<_> = keys.iter().map(|k| json!({ "key_id": k.key_id, "account_id": k.account_id, "created_at": k.created_at })).collect();
    Ok(json(200, &serde_json::Value::Array(list)))
}

/// `DELETE /v2/api_keys/{key_id}` → 204, or 404 when the caller has no such key.
pub async fn delete_api_key(
    deps: &Deps,
    req: &Request,
    key_id: &str,
) -> Result<Response<Body>, ApiError> {
    app::auth::delete_api_key(deps, &credentials(req), key_id).await?;
    Ok(no_content())
}
