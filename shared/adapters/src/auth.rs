//! Credentials: argon2id password hashes, session tokens and API key secrets of 256 random
//! bits stored only as SHA-256 digests, compared in constant time.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// 256 random bits, URL-safe base64 without padding (43 characters).
pub fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// An API key id in Alpaca's style: `PK` and 18 upper-case letters and digits.
pub fn new_key_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut bytes = [0u8; 18];
    rand::rng().fill_bytes(&mut bytes);
    let tail: String = bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect();
    format!("PK{tail}")
}

/// SHA-256 hex digest of a high-entropy secret (tokens, API secrets).
pub fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// What connections opened with the session of this token digest record.
pub fn session_reference(token_digest: &str) -> String {
    format!("session:{}", token_digest.get(..16).unwrap_or(token_digest))
}

/// What connections opened with this API key record.
pub fn key_reference(key_id: &str) -> String {
    format!("key:{key_id}")
}

/// Constant-time comparison of a presented secret with a stored digest.
pub fn digest_matches(secret: &str, stored_digest: &str) -> bool {
    digest(secret)
        .as_bytes()
        .ct_eq(stored_digest.as_bytes())
        .into()
}

pub fn hash_password(password: &str) -> Result<String, String> {
    let mut salt_bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut salt_bytes);
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| e.to_string())?;
    Argon2::default() // argon2id, v19, OWASP-recommended default cost
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

pub fn verify_password(password: &str, stored: &str) -> bool {
    match PasswordHash::new(stored) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// A hash to verify against when the email is unknown, so that login takes as long either way.
pub fn dummy_password_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password("not-a-real-password").unwrap_or_default())
}

/// Who is calling, and how they proved it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user_id: uuid::Uuid,
    pub account_id: uuid::Uuid,
    pub via_session: bool,
}

/// What a caller presented: a session token, an API key pair, or nothing usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    Session(String),
    ApiKey {
        key_id: String,
        secret: String,
    },
    /// Only half of an API key pair.
    IncompleteKey,
    None,
}

impl Credentials {
    /// The credential as connections record who opened them: `session:` and the first 16
    /// hex digits of the token's digest (not enough to use it), or `key:` and the key id.
    pub fn reference(&self) -> Option<String> {
        match self {
            Credentials::Session(token) => Some(session_reference(&digest(token))),
            Credentials::ApiKey { key_id, .. } => Some(key_reference(key_id)),
            Credentials::IncompleteKey | Credentials::None => None,
        }
    }

    /// From a bearer token and the two API key parts, whichever were sent (a token wins).
    pub fn from_parts(
        token: Option<String>,
        key_id: Option<String>,
        secret: Option<String>,
    ) -> Self {
        if let Some(t) = token.filter(|t| !t.is_empty()) {
            return Credentials::Session(t);
        }
        match (
            key_id.filter(|k| !k.is_empty()),
            secret.filter(|s| !s.is_empty()),
        ) {
            (Some(key_id), Some(secret)) => Credentials::ApiKey { key_id, secret },
            (Some(_), None) | (None, Some(_)) => Credentials::IncompleteKey,
            (None, None) => Credentials::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong", &h));
        assert!(!verify_password("x", "garbage"));
    }

    #[test]
    fn secrets_are_256_bits_and_compare_by_digest() {
        let s = random_secret();
        assert_eq!(s.len(), 43);
        assert_ne!(s, random_secret());
        assert!(digest_matches(&s, &digest(&s)));
        assert!(!digest_matches("other", &digest(&s)));
        let k = new_key_id();
        assert!(k.starts_with("PK") && k.len() == 20);
    }
}
