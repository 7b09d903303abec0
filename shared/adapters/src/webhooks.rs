//! TradingView webhooks and their deliveries, in PostgreSQL.
//!
//! A webhook's id is the secret in its URL (`wh_` + 256 random bits); the passphrase the
//! alert body carries is stored as its SHA-256 (a random 256-bit value: a fast hash is
//! enough). The api manages webhooks; the webhook function reads them and records every
//! alert a live webhook receives.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::FromRow;
use uuid::Uuid;

use crate::error::DependencyError;
use crate::ledger::Ledger;

fn pg(e: sqlx::Error) -> DependencyError {
    DependencyError::postgres(e)
}

/// The work that authenticating alerts did: lookups of a webhook by id and comparisons of a
/// passphrase with a stored digest. Counted only inside [`AuthWork::count`] (a task-local
/// scope, so concurrent requests never mix), which the tests use to prove that an unknown
/// webhook and a wrong passphrase take the same work; elsewhere noting it is one failed
/// task-local lookup.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AuthWork {
    /// [`Ledger::webhook`] queries.
    pub lookups: u32,
    /// [`passphrase_matches`] calls.
    pub digest_comparisons: u32,
    /// The bytes of the stored digests compared.
    pub digest_bytes: usize,
}

tokio::task_local! {
    static AUTH_WORK: std::cell::Cell<AuthWork>;
}

impl AuthWork {
    /// Runs `work` and counts what it did (in this task).
    pub async fn count<F: std::future::Future>(work: F) -> (F::Output, AuthWork) {
        AUTH_WORK
            .scope(std::cell::Cell::new(AuthWork::default()), async {
                let out = work.await;
                (out, AUTH_WORK.with(std::cell::Cell::get))
            })
            .await
    }

    fn note(change: impl FnOnce(&mut AuthWork)) {
        let _ = AUTH_WORK.try_with(|w| {
            let mut work = w.get();
            change(&mut work);
            w.set(work);
        });
    }
}

/// Whether `passphrase` is the one whose digest is `stored_digest`, in constant time.
pub fn passphrase_matches(passphrase: &str, stored_digest: &str) -> bool {
    AuthWork::note(|w| {
        w.digest_comparisons += 1;
        w.digest_bytes += stored_digest.len();
    });
    crate::auth::digest_matches(passphrase, stored_digest)
}

/// Prefix of webhook ids: recognisable in a URL, and never confused with an order id.
pub const WEBHOOK_ID_PREFIX: &str = "wh_";

/// A new webhook id: the prefix and 256 random bits.
pub fn new_webhook_id() -> String {
    format!("{WEBHOOK_ID_PREFIX}{}", crate::auth::random_secret())
}

/// Whether `id` has the shape of a webhook id (the prefix and 43 base64url characters):
/// nothing else can name one, so nothing else is looked up.
pub fn is_webhook_id(id: &str) -> bool {
    id.strip_prefix(WEBHOOK_ID_PREFIX).is_some_and(|rest| {
        rest.len() == 43
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Webhook {
    pub id: String,
    pub account_id: Uuid,
    pub name: String,
    pub passphrase_hash: String,
    /// `None`: any sender.
    pub allowed_ips: Option<Vec<String>>,
    pub created_at: DateTime<Utc>,
    pub rotated_at: Option<DateTime<Utc>>,
}

impl Webhook {
    /// Whether `ip` may send to this webhook.
    pub fn allows(&self, ip: &str) -> bool {
        self.allowed_ips
            .as_ref()
            .is_none_or(|ips| ips.iter().any(|a| a == ip))
    }
}

/// What became of one alert.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Delivery {
    pub id: Uuid,
    pub webhook_id: String,
    pub account_id: Uuid,
    pub received_at: DateTime<Utc>,
    pub source_ip: Option<String>,
    pub content_type: Option<String>,
    /// As received, the passphrase redacted.
    pub body: String,
    /// Stored as an `integer`.
    #[sqlx(try_from = "i32")]
    pub status: u16,
    /// `accepted` or `rejected`.
    pub outcome: String,
    pub code: Option<String>,
    pub message: Option<String>,
    pub order_id: Option<Uuid>,
    pub client_order_id: Option<String>,
}

const WEBHOOK_COLUMNS: &str =
    "id, account_id, name, passphrase_hash, allowed_ips, created_at, rotated_at";

fn webhook_from_row(r: &PgRow) -> Result<Webhook, sqlx::Error> {
    Webhook::from_row(r)
}

fn delivery_from_row(r: &PgRow) -> Result<Delivery, sqlx::Error> {
    Delivery::from_row(r)
}

impl Ledger {
    /// Stores a new webhook of the account.
    /// A new webhook, unless the account has `max_live` live webhooks already (then
    /// `None`). Creations for one account are serialized by a transaction-scoped advisory
    /// lock, so concurrent ones cannot pass the cap together.
    pub async fn create_webhook(
        &self,
        account_id: Uuid,
        name: &str,
        passphrase_hash: &str,
        allowed_ips: Option<&[String]>,
        max_live: i64,
    ) -> Result<Option<Webhook>, DependencyError> {
        let mut tx = self.serialized("webhooks", account_id).await?;
        let row = sqlx::query(&format!(
            "INSERT INTO webhooks (id, account_id, name, passphrase_hash, allowed_ips)
             SELECT $1, $2, $3, $4, $5
             WHERE (SELECT count(*) FROM webhooks WHERE account_id = $2 AND deleted_at IS NULL) < $6
             RETURNING {WEBHOOK_COLUMNS}"
        ))
        .bind(new_webhook_id())
        .bind(account_id)
        .bind(name)
        .bind(passphrase_hash)
        .bind(allowed_ips)
        .bind(max_live)
        .fetch_optional(&mut *tx)
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        row.as_ref().map(webhook_from_row).transpose().map_err(pg)
    }

    /// The account's live webhooks, oldest first.
    pub async fn webhooks(&self, account_id: Uuid) -> Result<Vec<Webhook>, DependencyError> {
        let rows = sqlx::query(&format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE account_id = $1 AND deleted_at IS NULL ORDER BY created_at, id"
        ))
        .bind(account_id)
        .fetch_all(self.pool())
        .await
        .map_err(pg)?;
        rows.iter()
            .map(webhook_from_row)
            .collect::<Result<_, _>>()
            .map_err(pg)
    }

    /// A live webhook by its id (the secret in its URL).
    pub async fn webhook(&self, id: &str) -> Result<Option<Webhook>, DependencyError> {
        AuthWork::note(|w| w.lookups += 1);
        let row = sqlx::query(&format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = $1 AND deleted_at IS NULL"
        ))
        .bind(id)
        .fetch_optional(self.pool())
        .await
        .map_err(pg)?;
        row.as_ref().map(webhook_from_row).transpose().map_err(pg)
    }

    /// Replaces the passphrase of the account's webhook; `None` if it has no such webhook.
    pub async fn rotate_webhook(
        &self,
        account_id: Uuid,
        id: &str,
        passphrase_hash: &str,
    ) -> Result<Option<Webhook>, DependencyError> {
        let row = sqlx::query(&format!(
            "UPDATE webhooks SET passphrase_hash = $3, rotated_at = now()
             WHERE id = $1 AND account_id = $2 AND deleted_at IS NULL RETURNING {WEBHOOK_COLUMNS}"
        ))
        .bind(id)
        .bind(account_id)
        .bind(passphrase_hash)
        .fetch_optional(self.pool())
        .await
        .map_err(pg)?;
        row.as_ref().map(webhook_from_row).transpose().map_err(pg)
    }

    /// Deletes the account's webhook (its deliveries stay readable to nobody); false if it
    /// has no such webhook.
    pub async fn delete_webhook(
        &self,
        account_id: Uuid,
        id: &str,
    ) -> Result<bool, DependencyError> {
        self.changed_one(
            sqlx::query(
                "UPDATE webhooks SET deleted_at = now() WHERE id = $1 AND account_id = $2 AND deleted_at IS NULL",
            )
            .bind(id)
            .bind(account_id),
        )
        .await
    }

    pub async fn record_delivery(&self, d: &Delivery) -> Result<(), DependencyError> {
        sqlx::query(
            "INSERT INTO webhook_deliveries (id, webhook_id, account_id, received_at, source_ip, content_type, body,
               status, outcome, code, message, order_id, client_order_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(d.id)
        .bind(&d.webhook_id)
        .bind(d.account_id)
        .bind(d.received_at)
        .bind(&d.source_ip)
        .bind(&d.content_type)
        .bind(&d.body)
        .bind(i32::from(d.status))
        .bind(&d.outcome)
        .bind(&d.code)
        .bind(&d.message)
        .bind(d.order_id)
        .bind(&d.client_order_id)
        .execute(self.pool())
        .await
        .map_err(pg)?;
        Ok(())
    }

    /// The latest `limit` deliveries of the account's webhook, newest first.
    pub async fn deliveries(
        &self,
        account_id: Uuid,
        webhook_id: &str,
        limit: i64,
    ) -> Result<Vec<Delivery>, DependencyError> {
        let rows = sqlx::query(
            "SELECT id, webhook_id, account_id, received_at, source_ip, content_type, body, status, outcome, code,
               message, order_id, client_order_id
             FROM webhook_deliveries WHERE webhook_id = $1 AND account_id = $2
             ORDER BY received_at DESC, id DESC LIMIT $3",
        )
        .bind(webhook_id)
        .bind(account_id)
        .bind(limit)
        .fetch_all(self.pool())
        .await
        .map_err(pg)?;
        rows.iter()
            .map(delivery_from_row)
            .collect::<Result<_, _>>()
            .map_err(pg)
    }
}
