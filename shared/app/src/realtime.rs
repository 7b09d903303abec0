//! The WebSocket side of revoking credentials: a revoked session or API key must not keep a
//! socket open that it authenticated. Connections record which credential opened them
//! (`Connection::opened_by`); these close the account's connections a revocation covers,
//! through the API Gateway management API (whose `$disconnect` then cleans the table).
//!
//! Best effort: the revocation itself has happened when these run, so a failure to close is
//! logged, not answered; such a socket lives at most until API Gateway's connection limit
//! (2 hours).

use adapters::now_ms;
use uuid::Uuid;

use crate::Deps;

/// Which of an account's connections a revocation covers, by the credential that opened them.
pub enum Opened<'a> {
    /// Opened with this credential (`session:…`, `key:…`).
    By(&'a str),
    /// Opened with any login session.
    BySessions,
    /// Any.
    All,
}

impl Opened<'_> {
    fn covers(&self, opened_by: Option<&str>) -> bool {
        match self {
            Opened::By(credential) => opened_by == Some(credential),
            Opened::BySessions => opened_by.is_some_and(|c| c.starts_with("session:")),
            Opened::All => true,
        }
    }
}

/// Closes the account's connections that `which` covers; returns how many were asked to
/// close.
pub async fn close(deps: &Deps, account_id: Uuid, which: Opened<'_>) -> usize {
    let Some(pusher) = &deps.pusher else {
        return 0;
    };
    let open = match deps.connections.by_account(account_id, now_ms()).await {
        Ok(open) => open,
        Err(e) => {
            tracing::warn!(error = %e, "could not list the connections a revocation closes");
            return 0;
        }
    };
    let mut closed = 0;
    for c in open.iter().filter(|c| which.covers(c.opened_by.as_deref())) {
        match pusher.disconnect(&c.connection_id).await {
            Ok(()) => closed += 1,
            Err(e) => tracing::warn!(error = %e, "could not close a revoked connection"),
        }
    }
    closed
}
