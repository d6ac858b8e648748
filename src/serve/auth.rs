//! Signed access tokens: compact JWTs signed with HMAC-SHA256 (`HS256`).
//!
//! The format is the standard one so that any JWT library can mint tokens
//! for wsctl: `base64url(header).base64url(claims).base64url(signature)`,
//! with claims `sub`, `iat` and `exp` (Unix seconds). The signature is
//! checked in constant time by `hmac`'s `verify_slice`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub iat: u64,
    pub exp: u64,
}

/// Why a token was refused; the message goes into the 401 body.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("missing token")]
    Missing,
    #[error("malformed token")]
    Malformed,
    #[error("invalid token signature")]
    BadSignature,
    #[error("token expired")]
    Expired,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}

fn mac(secret: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length; `new_from_slice` only fails for
    // algorithms with fixed key sizes.
    <HmacSha256 as Mac>::new_from_slice(secret).expect("HMAC accepts keys of any length")
}

/// Mints a token for `subject` that expires `ttl` from now.
pub fn sign(secret: &[u8], subject: &str, ttl: Duration) -> anyhow::Result<String> {
    let iat = unix_now();
    let claims = Claims {
        sub: subject.to_string(),
        iat,
        exp: iat + ttl.as_secs().max(1),
    };
    let signing_input = format!(
        "{}.{}",
        B64.encode(HEADER),
        B64.encode(serde_json::to_vec(&claims)?)
    );
    let mut mac = mac(secret);
    mac.update(signing_input.as_bytes());
    let signature = B64.encode(mac.finalize().into_bytes());
    Ok(format!("{signing_input}.{signature}"))
}

/// Checks signature and expiry; returns the claims of a valid token.
pub fn verify(secret: &[u8], token: &str) -> Result<Claims, TokenError> {
    verify_at(secret, token, unix_now())
}

fn verify_at(secret: &[u8], token: &str, now: u64) -> Result<Claims, TokenError> {
    if token.is_empty() {
        return Err(TokenError::Missing);
    }
    let (signing_input, signature) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
    let (header, claims) = signing_input.split_once('.').ok_or(TokenError::Malformed)?;
    let signature = B64.decode(signature).map_err(|_| TokenError::Malformed)?;
    let mut mac = mac(secret);
    mac.update(signing_input.as_bytes());
    mac.verify_slice(&signature)
        .map_err(|_| TokenError::BadSignature)?;
    // Only after the signature holds do we look inside.
    let header: serde_json::Value = B64
        .decode(header)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or(TokenError::Malformed)?;
    if header.get("alg").and_then(|alg| alg.as_str()) != Some("HS256") {
        return Err(TokenError::Malformed);
    }
    let claims: Claims = B64
        .decode(claims)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or(TokenError::Malformed)?;
    if claims.exp <= now {
        return Err(TokenError::Expired);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_token_verifies_with_its_subject() {
        let token = sign(b"s3cret", "alice", Duration::from_secs(60)).unwrap();
        assert_eq!(token.split('.').count(), 3);
        assert_eq!(verify(b"s3cret", &token).unwrap().sub, "alice");
    }

    #[test]
    fn another_secret_is_a_bad_signature() {
        let token = sign(b"s3cret", "alice", Duration::from_secs(60)).unwrap();
        assert_eq!(
            verify(b"other", &token).unwrap_err(),
            TokenError::BadSignature
        );
    }

    #[test]
    fn a_tampered_claim_is_a_bad_signature() {
        let token = sign(b"s3cret", "alice", Duration::from_secs(60)).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let forged_claims = B64.encode(r#"{"sub":"mallory","iat":0,"exp":99999999999}"#);
        let forged = format!("{}.{}.{}", parts[0], forged_claims, parts[2]);
        assert_eq!(
            verify(b"s3cret", &forged).unwrap_err(),
            TokenError::BadSignature
        );
    }

    #[test]
    fn an_expired_token_is_refused() {
        let token = sign(b"s3cret", "alice", Duration::from_secs(60)).unwrap();
        let later = unix_now() + 61;
        assert_eq!(
            verify_at(b"s3cret", &token, later).unwrap_err(),
            TokenError::Expired
        );
    }

    #[test]
    fn garbage_is_malformed_and_empty_is_missing() {
        assert_eq!(verify(b"k", "abc").unwrap_err(), TokenError::Malformed);
        assert_eq!(verify(b"k", "a.b.!!").unwrap_err(), TokenError::Malformed);
        assert_eq!(verify(b"k", "").unwrap_err(), TokenError::Missing);
    }
}
