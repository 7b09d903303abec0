//! Every Redis key and pub/sub channel name, in one place. All of them live under the
//! deployment's `KEY_PREFIX`, so deployments or test runs can share one Redis.
//!
//! | name | holds | written by |
//! |---|---|---|
//! | `px:{SYMBOL}` | the latest quote (JSON), `PX PRICE_TTL_MS` | market data |
//! | `stale:{SYMBOL}` | `"1"`: the price is not being kept fresh | market data |
//! | `sess:{token digest}` | a login session | api |
//! | `pending:{account}` | orders accepted, not yet applied | api, executor |
//! | `positions:{account}` | the account's positions snapshot | executor, ws |
//! | `positions` (channel) | new positions snapshots | executor |
//! | `connections` (channel) | WebSocket connection changes | ws |
//! | `rl:{bucket}:{subject}` | a token bucket | api, webhook |
//! | `login:email:{sha256}`, `login:ip:{ip}` | failed-login counters | api |
//! | `watch:{SYMBOL}`, `watch:symbols`, `watch:log`, `watch:built` | the trigger index | executor, triggers |
//!
//! Who may write what is enforced by Redis ACL users (ElastiCache RBAC on AWS), whose rules
//! are written here too: [`Keyspace::functions_access`] and [`Keyspace::ingest_access`].

use uuid::Uuid;

/// The key names under one prefix.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Keyspace {
    prefix: String,
}

impl Keyspace {
    pub fn new(prefix: &str) -> Keyspace {
        Keyspace {
            prefix: prefix.to_string(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn name(&self, rest: std::fmt::Arguments<'_>) -> String {
        format!("{}{rest}", self.prefix)
    }

    /// The latest quote of `symbol` (upper case).
    pub fn price(&self, symbol: &str) -> String {
        self.name(format_args!("px:{symbol}"))
    }

    /// Set while market data knows the price of `symbol` is not being kept fresh.
    pub fn stale(&self, symbol: &str) -> String {
        self.name(format_args!("stale:{symbol}"))
    }

    /// A login session, by the digest of its token.
    pub fn session(&self, token_digest: &str) -> String {
        self.name(format_args!("sess:{token_digest}"))
    }

    /// The digests of a user's sessions (a set), so that they can be revoked together.
    pub fn user_sessions(&self, user_id: Uuid) -> String {
        self.name(format_args!("usess:{user_id}"))
    }

    /// The account's orders accepted but not yet applied by the executor.
    pub fn pending_orders(&self, account_id: Uuid) -> String {
        self.name(format_args!("pending:{account_id}"))
    }

    /// The account's positions snapshot.
    pub fn positions(&self, account_id: Uuid) -> String {
        self.name(format_args!("positions:{account_id}"))
    }

    /// The pub/sub channel on which new positions snapshots are announced.
    pub fn positions_channel(&self) -> String {
        self.name(format_args!("positions"))
    }

    /// The pub/sub channel of WebSocket connection changes.
    pub fn connections_channel(&self) -> String {
        self.name(format_args!("connections"))
    }

    /// The token bucket `bucket` of `subject`.
    pub fn rate_bucket(&self, bucket: &str, subject: &str) -> String {
        self.name(format_args!("rl:{bucket}:{subject}"))
    }

    /// Failed logins for an email, by the hex SHA-256 of the normalized address.
    pub fn login_email(&self, email_sha256_hex: &str) -> String {
        self.name(format_args!("login:email:{email_sha256_hex}"))
    }

    /// Failed logins from an address.
    pub fn login_ip(&self, ip: &str) -> String {
        self.name(format_args!("login:ip:{ip}"))
    }

    /// The prefix of the trigger index's per-symbol hashes.
    pub fn watch_hash_prefix(&self) -> String {
        self.name(format_args!("watch:"))
    }

    /// The trigger index's hash of `symbol`.
    pub fn watch(&self, symbol: &str) -> String {
        self.name(format_args!("watch:{symbol}"))
    }

    /// The set of symbols with resting orders.
    pub fn watch_symbols(&self) -> String {
        self.name(format_args!("watch:symbols"))
    }

    /// The trigger index's change log.
    pub fn watch_log(&self) -> String {
        self.name(format_args!("watch:log"))
    }

    /// The marker of a complete trigger index.
    pub fn watch_built(&self) -> String {
        self.name(format_args!("watch:built"))
    }

    /// The ACL rules (an ElastiCache access string, without `on`) of the Lambda functions'
    /// Redis user: prices and stale markers read-only (`%R~`, Redis 7 / Valkey 7.2), every
    /// other key family of this module read-write, this prefix's channels, no dangerous
    /// command. Only the ingest task writes prices, so a function that is fooled cannot move
    /// the market every other account trades at.
    pub fn functions_access(&self) -> String {
        let read_only = ["px:", "stale:"];
        let read_write = [
            "sess:",
            "usess:",
            "pending:",
            "positions:",
            "rl:",
            "login:",
            "watch:",
        ];
        let p = &self.prefix;
        let mut rules: Vec<String> = read_only.iter().map(|f| format!("%R~{p}{f}*")).collect();
        rules.extend(read_write.iter().map(|f| format!("~{p}{f}*")));
        rules.push(format!("&{p}*"));
        rules.push("+@all -@dangerous".into());
        rules.join(" ")
    }

    /// The ACL rules of the ingest task's Redis user: every key and channel of the prefix
    /// (it writes prices, the trigger index, and reads the rest), no dangerous command.
    pub fn ingest_access(&self) -> String {
        let p = &self.prefix;
        format!("~{p}* &{p}* +@all -@dangerous")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_live_under_the_prefix() {
        let k = Keyspace::new("t1:");
        assert_eq!(k.price("BTCUSDT"), "t1:px:BTCUSDT");
        assert_eq!(k.stale("BTCUSDT"), "t1:stale:BTCUSDT");
        assert_eq!(k.session("ab"), "t1:sess:ab");
        assert_eq!(
            k.pending_orders(Uuid::nil()),
            format!("t1:pending:{}", Uuid::nil())
        );
        assert_eq!(
            k.positions(Uuid::nil()),
            format!("t1:positions:{}", Uuid::nil())
        );
        assert_eq!(k.positions_channel(), "t1:positions");
        assert_eq!(k.connections_channel(), "t1:connections");
        assert_eq!(k.rate_bucket("orders", "a"), "t1:rl:orders:a");
        assert_eq!(k.login_email("ff"), "t1:login:email:ff");
        assert_eq!(k.login_ip("1.2.3.4"), "t1:login:ip:1.2.3.4");
        assert_eq!(k.watch("ETHUSDT"), "t1:watch:ETHUSDT");
        assert_eq!(k.watch_hash_prefix(), "t1:watch:");
        assert_eq!(k.watch_symbols(), "t1:watch:symbols");
        assert_eq!(k.watch_log(), "t1:watch:log");
        assert_eq!(k.watch_built(), "t1:watch:built");
        assert_eq!(Keyspace::default().price("X"), "px:X");
    }
}
