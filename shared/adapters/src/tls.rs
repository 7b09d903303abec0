//! The process's TLS crypto provider.

/// Makes ring the process's rustls crypto provider, for `rediss://` (ElastiCache encrypts in
/// transit) and PostgreSQL's `verify-ca` (sqlx's verifier without the name check asks rustls
/// for the process default). The build links both of rustls's providers (ring for us,
/// aws-lc-rs for the AWS SDK), so rustls cannot pick one by itself: without this the TLS
/// set-up panics. Idempotent: a provider already installed is kept.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
