//! Per-subject encryption of personal data (crypto-shredding) and signed
//! checkpoints. [`seal`] and [`open`] (XChaCha20-Poly1305) are public so other
//! crates of the SDK encrypt their secrets at rest the same way.

use chacha20poly1305::XChaCha20Poly1305;
use chacha20poly1305::aead::{Aead, KeyInit};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::AuditError;

const NONCE_LEN: usize = 24;

/// A fresh random 256-bit key.
#[must_use]
pub fn new_key() -> Vec<u8> {
    let mut key = [0u8; 32];
    rand::fill(&mut key);
    key.to_vec()
}

/// `nonce || ciphertext` of `plaintext` under `key`.
pub fn seal(key: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, AuditError> {
    let cipher = XChaCha20Poly1305::new_from_slice(key)
        .map_err(|_| AuditError::Crypto("bad subject key"))?;
    let mut nonce = [0u8; NONCE_LEN];
    rand::fill(&mut nonce);
    let nonce_arr = chacha20poly1305::XNonce::try_from(&nonce[..])
        .map_err(|_| AuditError::Crypto("bad nonce"))?;
    let ct = cipher
        .encrypt(&nonce_arr, plaintext)
        .map_err(|_| AuditError::Crypto("encryption failed"))?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Decrypts `nonce || ciphertext`.
pub fn open(key: &[u8], sealed: &[u8]) -> Result<Vec<u8>, AuditError> {
    let cipher = XChaCha20Poly1305::new_from_slice(key)
        .map_err(|_| AuditError::Crypto("bad subject key"))?;
    let (nonce, ct) = sealed
        .split_at_checked(NONCE_LEN)
        .ok_or(AuditError::Crypto("sealed data too short"))?;
    let nonce =
        chacha20poly1305::XNonce::try_from(nonce).map_err(|_| AuditError::Crypto("bad nonce"))?;
    cipher
        .decrypt(&nonce, ct)
        .map_err(|_| AuditError::Crypto("decryption failed"))
}

/// Signs chain heads with HMAC-SHA256 under a key from configuration.
#[derive(Clone)]
pub struct CheckpointSigner {
    key_id: String,
    key: Vec<u8>,
}

impl std::fmt::Debug for CheckpointSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointSigner")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl CheckpointSigner {
    /// A signer with a key of at least 32 bytes, named `key_id` (so keys can rotate).
    pub fn new(key_id: impl Into<String>, key: &[u8]) -> Result<Self, AuditError> {
        if key.len() < 32 {
            return Err(AuditError::WeakKey);
        }
        Ok(Self {
            key_id: key_id.into(),
            key: key.to_vec(),
        })
    }

    /// A signer with a fresh random key (for tests, or a process that keeps no
    /// checkpoints across restarts).
    #[must_use]
    pub fn random(key_id: impl Into<String>) -> Self {
        Self {
            key_id: key_id.into(),
            key: new_key(),
        }
    }

    /// The key's name.
    #[must_use]
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    fn message(chain: &str, seq: i64, hash_hex: &str, signed_at: &str) -> String {
        format!("saas-audit-checkpoint-v1|{chain}|{seq}|{hash_hex}|{signed_at}")
    }

    fn mac(&self) -> Result<Hmac<Sha256>, AuditError> {
        <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(&self.key).map_err(|_| AuditError::WeakKey)
    }

    /// The signature of a chain head.
    pub fn sign(
        &self,
        chain: &str,
        seq: i64,
        hash_hex: &str,
        signed_at: &str,
    ) -> Result<Vec<u8>, AuditError> {
        let mut mac = self.mac()?;
        mac.update(Self::message(chain, seq, hash_hex, signed_at).as_bytes());
        Ok(mac.finalize().into_bytes().to_vec())
    }

    /// Checks a signature in constant time.
    #[must_use]
    pub fn verify(
        &self,
        chain: &str,
        seq: i64,
        hash_hex: &str,
        signed_at: &str,
        signature: &[u8],
    ) -> bool {
        let Ok(mut mac) = self.mac() else {
            return false;
        };
        mac.update(Self::message(chain, seq, hash_hex, signed_at).as_bytes());
        mac.verify_slice(signature).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_data_opens_only_with_its_key() {
        let k = new_key();
        let sealed = seal(&k, b"203.0.113.9").unwrap();
        assert_eq!(open(&k, &sealed).unwrap(), b"203.0.113.9");
        assert!(open(&new_key(), &sealed).is_err());
        assert!(open(&k, &sealed[..10]).is_err());
    }

    #[test]
    fn checkpoint_signatures_bind_every_field() {
        let s = CheckpointSigner::new("k1", &[7u8; 32]).unwrap();
        let sig = s.sign("tenant:x", 5, "ab", "t").unwrap();
        assert!(s.verify("tenant:x", 5, "ab", "t", &sig));
        assert!(!s.verify("tenant:x", 6, "ab", "t", &sig));
        assert!(!s.verify("tenant:y", 5, "ab", "t", &sig));
        assert!(
            !CheckpointSigner::new("k2", &[8u8; 32])
                .unwrap()
                .verify("tenant:x", 5, "ab", "t", &sig)
        );
        assert!(CheckpointSigner::new("short", &[1u8; 16]).is_err());
    }
}
