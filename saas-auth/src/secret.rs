//! Opaque secrets: generation, hashing for storage, constant-time comparison,
//! and sealing of secrets we must read back (signing keys, TOTP seeds).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::AuthError;

/// `prefix` followed by 256 random bits, base64url.
pub(crate) fn token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// SHA-256 of a high-entropy secret: what we store instead of it.
pub(crate) fn hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// Constant-time equality of two stored hashes.
pub(crate) fn hashes_equal(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// The key that encrypts secrets at rest (signing keys, TOTP seeds).
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl MasterKey {
    /// From 32 bytes of configuration.
    #[must_use]
    pub fn new(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// From a hex string of 64 characters.
    pub fn from_hex(hex_key: &str) -> Result<Self, AuthError> {
        let bytes = hex::decode(hex_key.trim())
            .map_err(|_| AuthError::validation("master_key", "must be hex"))?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| AuthError::validation("master_key", "must be 32 bytes"))?;
        Ok(Self(bytes))
    }

    /// A random key for tests and throw-away servers: secrets sealed under it
    /// die with the process.
    #[must_use]
    pub fn random() -> Self {
        let mut bytes = [0u8; 32];
        rand::fill(&mut bytes);
        Self(bytes)
    }

    pub(crate) fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>, AuthError> {
        saas_audit::crypto::seal(&self.0, plaintext).map_err(|e| AuthError::Crypto(e.to_string()))
    }

    pub(crate) fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, AuthError> {
        saas_audit::crypto::open(&self.0, sealed).map_err(|e| AuthError::Crypto(e.to_string()))
    }
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

/// A secret shown once to its owner and never stored (API key, refresh token,
/// client secret). `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub(crate) fn new(s: String) -> Self {
        Self(s)
    }

    /// The secret itself: show it once.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_carry_their_prefix_and_256_bits() {
        let t = token("srt_");
        assert!(t.starts_with("srt_"));
        assert_eq!(t.len(), 4 + 43);
        assert_ne!(token("x"), token("x"));
    }

    #[test]
    fn secrets_never_print_in_debug_output() {
        let s = Secret::new("srt_supersecret".into());
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"srt_supersecret\"");
    }

    #[test]
    fn sealed_secrets_open_only_under_their_key() {
        let k = MasterKey::random();
        let sealed = k.seal(b"seed").unwrap();
        assert_eq!(k.open(&sealed).unwrap(), b"seed");
        assert!(MasterKey::random().open(&sealed).is_err());
        assert_eq!(format!("{k:?}"), "MasterKey(<redacted>)");
    }
}
