//! Signing keys and JWT access tokens.
//!
//! Access tokens are EdDSA (Ed25519) JWTs. Keys live in `auth_signing_keys`,
//! their private half sealed under the [`MasterKey`]. [`KeyRing::rotate`] makes
//! a new key the signer; the old ones stay in the JWKS and keep verifying until
//! every token they signed has expired. Verification pins the algorithm, the
//! issuer and the audience, needs a known `kid`, and checks `exp` and `nbf`
//! against the injected clock.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use ed25519_dalek::pkcs8::EncodePrivateKey;
use ed25519_dalek::{Signature, VerifyingKey};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use saas_core::PlatformContext;
use saas_core::change::{Change, ChangeBy};
use saas_core::db::Db;
use saas_core::db::sea_query::{Expr, ExprTrait, Order, Query};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::AuthError;
use crate::secret::MasterKey;

const TABLE: &str = "auth_signing_keys";
/// Clock skew tolerated on `nbf` and `exp`, in seconds.
const LEEWAY_SECS: i64 = 30;

/// The JOSE header fields verification reads.
#[derive(Deserialize)]
struct JoseHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    /// Extensions the receiver must understand (RFC 7515, 4.1.11); none are.
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

/// The claims of every token this crate signs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// Subject: the user or service identity id.
    pub sub: String,
    /// Tenant the token is valid in.
    pub tid: uuid::Uuid,
    /// Session id (user tokens and MFA challenges).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<uuid::Uuid>,
    /// `user`, `service` or `mfa_challenge`.
    pub typ: String,
    /// Authentication methods: `pwd`, `otp`, `client_secret`.
    pub amr: Vec<String>,
    /// When MFA was last verified in this session (seconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mfa_at: Option<i64>,
    /// Issued at.
    pub iat: i64,
    /// Not before.
    pub nbf: i64,
    /// Expires.
    pub exp: i64,
    /// Token id.
    pub jti: String,
}

struct Verifier {
    /// The public key, decompressed once when the ring is loaded rather than
    /// on every verification.
    key: VerifyingKey,
    public: [u8; 32],
    verify_until: Option<DateTime<Utc>>,
}

struct Ring {
    signer: Option<(String, EncodingKey)>,
    verifiers: HashMap<String, Verifier>,
    loaded_at: DateTime<Utc>,
}

/// The signing keys: signs and verifies tokens, serves the JWKS.
///
/// A token whose signature was verified once, or that this ring signed, is
/// remembered (by the SHA-256 of the whole token) until it expires, so the
/// many requests a client makes with one access token pay for the signature
/// check at most once per replica; the key, the times and the session are
/// still checked on every use.
#[derive(Clone)]
pub struct KeyRing {
    db: Db,
    master: MasterKey,
    pctx: PlatformContext,
    issuer: String,
    audience: String,
    ring: Arc<RwLock<Ring>>,
    verified: moka::sync::Cache<[u8; 32], Arc<(String, Claims)>>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

fn lock_poisoned() -> AuthError {
    AuthError::Crypto("key ring lock poisoned".into())
}

impl KeyRing {
    /// Loads the keys, creating the first one if there is none.
    pub async fn load(
        db: Db,
        master: MasterKey,
        issuer: impl Into<String>,
        audience: impl Into<String>,
    ) -> Result<Self, AuthError> {
        let (issuer, audience) = (issuer.into(), audience.into());
        let ring = Self {
            pctx: PlatformContext::system("signing key management"),
            db,
            master,
            issuer,
            audience,
            verified: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(std::time::Duration::from_secs(15 * 60))
                .build(),
            ring: Arc::new(RwLock::new(Ring {
                signer: None,
                verifiers: HashMap::new(),
                loaded_at: DateTime::<Utc>::MIN_UTC,
            })),
        };
        ring.reload().await?;
        let has_signer = ring
            .ring
            .read()
            .map_err(|_| lock_poisoned())?
            .signer
            .is_some();
        if !has_signer {
            let pctx = ring.pctx.clone();
            // No retirement here: a replica starting at the same moment may
            // add its own first key; both stay valid signers' keys.
            ring.insert_key(&pctx, None).await?;
        }
        Ok(ring)
    }

    /// Re-reads the keys from the database (after a rotation on another replica).
    pub async fn reload(&self) -> Result<(), AuthError> {
        let mut tx = self.db.begin_platform(&self.pctx).await?;
        let now = tx.now();
        let rows = tx
            .fetch_all(
                Query::select()
                    .columns([
                        "kid",
                        "private_key",
                        "public_key",
                        "retired_at",
                        "verify_until",
                    ])
                    .from(TABLE)
                    .cond_where(
                        Expr::col("verify_until")
                            .is_null()
                            .or(Expr::col("verify_until").gt(now)),
                    )
                    .order_by("created_at", Order::Asc),
            )
            .await?;
        tx.commit().await?;
        let mut signer = None;
        let mut verifiers = HashMap::new();
        for row in rows {
            let kid: String = row.get("kid")?;
            let public: Vec<u8> = row.get("public_key")?;
            let public: [u8; 32] = public
                .try_into()
                .map_err(|_| AuthError::Crypto("stored public key is not 32 bytes".into()))?;
            let retired: Option<DateTime<Utc>> = row.get("retired_at")?;
            let verify_until: Option<DateTime<Utc>> = row.get("verify_until")?;
            if retired.is_none() {
                let sealed: Vec<u8> = row.get("private_key")?;
                let der = self.master.open(&sealed)?;
                signer = Some((kid.clone(), EncodingKey::from_ed_der(&der)));
            }
            verifiers.insert(
                kid,
                Verifier {
                    key: VerifyingKey::from_bytes(&public).map_err(|_| {
                        AuthError::Crypto("stored public key is not a valid Ed25519 key".into())
                    })?,
                    public,
                    verify_until,
                },
            );
        }
        let mut ring = self.ring.write().map_err(|_| lock_poisoned())?;
        ring.signer = signer;
        ring.verifiers = verifiers;
        ring.loaded_at = now;
        Ok(())
    }

    /// Adds a key that becomes the signer. With `retire`, every older key
    /// stops signing and verifies for that long (a rotation, audited).
    async fn insert_key(
        &self,
        pctx: &PlatformContext,
        retire: Option<Duration>,
    ) -> Result<String, AuthError> {
        let mut seed = [0u8; 32];
        rand::fill(&mut seed);
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        let der = key
            .to_pkcs8_der()
            .map_err(|e| AuthError::Crypto(format!("pkcs8: {e}")))?;
        let sealed = self.master.seal(der.as_bytes())?;
        let public = key.verifying_key().to_bytes().to_vec();
        let kid = uuid::Uuid::now_v7().simple().to_string();
        let mut tx = self.db.begin_platform(pctx).await?;
        let now = tx.now();
        if let Some(keep_old_for) = retire {
            tx.execute(
                Query::update()
                    .table(TABLE)
                    .value("retired_at", now)
                    .value("verify_until", now + keep_old_for)
                    .and_where(Expr::col("retired_at").is_null()),
            )
            .await?;
        }
        tx.execute(
            Query::insert()
                .into_table(TABLE)
                .columns(["kid", "alg", "private_key", "public_key", "created_at"])
                .values([
                    kid.clone().into(),
                    "EdDSA".into(),
                    sealed.into(),
                    public.into(),
                    now.into(),
                ])
                .map_err(|e| AuthError::Crypto(e.to_string()))?,
        )
        .await?;
        if let Some(keep_old_for) = retire {
            tx.record_change(Change {
                by: ChangeBy::Platform(pctx),
                action: "auth.signing_key.rotate",
                target_kind: "signing_key",
                target_id: Some(kid.clone()),
                details: serde_json::json!({"old_keys_verify_for_secs": keep_old_for.num_seconds()}),
            })
            .await?;
        }
        crate::cache::notify(&mut tx, "keys").await?;
        tx.commit().await?;
        self.reload().await?;
        Ok(kid)
    }

    /// Makes a new key the signer. Old keys keep verifying for `keep_old_for`
    /// (at least the access-token lifetime), then leave the JWKS. Audited on
    /// the platform chain.
    pub async fn rotate(
        &self,
        pctx: &PlatformContext,
        keep_old_for: Duration,
    ) -> Result<String, AuthError> {
        self.insert_key(pctx, Some(keep_old_for)).await
    }

    /// The public keys as a JWKS document: the signer and every retired key
    /// whose tokens may still be live.
    pub fn jwks(&self) -> Result<serde_json::Value, AuthError> {
        let now = self.db.clock().now();
        let ring = self.ring.read().map_err(|_| lock_poisoned())?;
        let mut keys: Vec<_> = ring
            .verifiers
            .iter()
            .filter(|(_, v)| v.verify_until.is_none_or(|t| t > now))
            .map(|(kid, v)| {
                serde_json::json!({
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "alg": "EdDSA",
                    "use": "sig",
                    "kid": kid,
                    "x": URL_SAFE_NO_PAD.encode(v.public),
                })
            })
            .collect();
        keys.sort_by(|a, b| a["kid"].as_str().cmp(&b["kid"].as_str()));
        Ok(serde_json::json!({ "keys": keys }))
    }

    /// The issuer tokens carry.
    #[must_use]
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Signs `claims` with the current key.
    pub fn sign(&self, claims: &Claims) -> Result<String, AuthError> {
        let ring = self.ring.read().map_err(|_| lock_poisoned())?;
        let (kid, key) = ring
            .signer
            .as_ref()
            .ok_or_else(|| AuthError::Crypto("no signing key".into()))?;
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.clone());
        header.typ = Some("JWT".into());
        let token = jsonwebtoken::encode(&header, claims, key)
            .map_err(|e| AuthError::Crypto(e.to_string()))?;
        // What this replica signed for its own issuer and audience needs no
        // signature check when it comes back: the first use here is warm.
        // The key, the times and the session are still checked on every use.
        if claims.iss == self.issuer && claims.aud == self.audience {
            let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
            self.verified
                .insert(digest, Arc::new((kid.clone(), claims.clone())));
        }
        Ok(token)
    }

    /// Claims for a new token issued now.
    pub(crate) fn claims(
        &self,
        now: DateTime<Utc>,
        ttl: Duration,
        typ: &str,
        sub: String,
        tid: uuid::Uuid,
    ) -> Claims {
        Claims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub,
            tid,
            sid: None,
            typ: typ.into(),
            amr: Vec::new(),
            mfa_at: None,
            iat: now.timestamp(),
            nbf: now.timestamp(),
            exp: (now + ttl).timestamp(),
            jti: uuid::Uuid::now_v7().simple().to_string(),
        }
    }

    /// Verifies a token's signature, algorithm, issuer, audience and times.
    /// A `kid` this replica does not know triggers one reload (rate-limited),
    /// so keys rotated elsewhere are picked up.
    pub async fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<Claims, AuthError> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(hit) = self.verified.get(&digest) {
            self.accept(&hit.0, &hit.1, now)?;
            return Ok(hit.1.clone());
        }
        let (kid, claims) = match self.verify_signature(token) {
            Err(AuthError::InvalidToken("unknown key")) => {
                let stale = {
                    let ring = self.ring.read().map_err(|_| lock_poisoned())?;
                    now - ring.loaded_at > Duration::seconds(5)
                };
                if !stale {
                    return Err(AuthError::InvalidToken("unknown key"));
                }
                self.reload().await?;
                self.verify_signature(token)?
            }
            other => other?,
        };
        self.accept(&kid, &claims, now)?;
        self.verified
            .insert(digest, Arc::new((kid, claims.clone())));
        Ok(claims)
    }

    /// Full verification against the keys in memory, without the cache
    /// (no I/O): signature, algorithm, issuer, audience, key and times.
    pub fn verify_loaded(&self, token: &str, now: DateTime<Utc>) -> Result<Claims, AuthError> {
        let (kid, claims) = self.verify_signature(token)?;
        self.accept(&kid, &claims, now)?;
        Ok(claims)
    }

    /// The signature, algorithm, issuer and audience; returns the key id.
    ///
    /// The compact JWS is taken apart here rather than by `jsonwebtoken`,
    /// whose verifier decompresses the public key on every call: the header
    /// must name `EdDSA` and a known `kid` and carry no `crit`; the Ed25519
    /// signature is checked strictly (no small-order keys or points, canonical
    /// scalars) with the key decompressed once at load; then the claims are
    /// decoded once, with `iss`, `aud`, `sub`, `exp` and `nbf` required.
    fn verify_signature(&self, token: &str) -> Result<(String, Claims), AuthError> {
        let malformed = || AuthError::InvalidToken("malformed");
        let mut parts = token.split('.');
        let (Some(header64), Some(payload64), Some(signature64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed());
        };
        // Header, dot, payload: the bytes that were signed.
        let signed = token
            .get(..header64.len() + 1 + payload64.len())
            .ok_or_else(malformed)?;
        let header: JoseHeader = URL_SAFE_NO_PAD
            .decode(header64)
            .ok()
            .and_then(|h| serde_json::from_slice(&h).ok())
            .ok_or_else(malformed)?;
        if header.alg != "EdDSA" {
            return Err(AuthError::InvalidToken("algorithm not accepted"));
        }
        if header.crit.is_some() {
            return Err(AuthError::InvalidToken("critical header not understood"));
        }
        let kid = header.kid.ok_or(AuthError::InvalidToken("no key id"))?;
        let signature: [u8; 64] = URL_SAFE_NO_PAD
            .decode(signature64)
            .ok()
            .and_then(|s| s.try_into().ok())
            .ok_or(AuthError::InvalidToken("bad signature"))?;
        {
            let ring = self.ring.read().map_err(|_| lock_poisoned())?;
            let verifier = ring
                .verifiers
                .get(&kid)
                .ok_or(AuthError::InvalidToken("unknown key"))?;
            verifier
                .key
                .verify_strict(signed.as_bytes(), &Signature::from_bytes(&signature))
                .map_err(|_| AuthError::InvalidToken("bad signature"))?;
        }
        let claims: Claims = URL_SAFE_NO_PAD
            .decode(payload64)
            .ok()
            .and_then(|c| serde_json::from_slice(&c).ok())
            .ok_or_else(malformed)?;
        if claims.iss != self.issuer {
            return Err(AuthError::InvalidToken("wrong issuer"));
        }
        if claims.aud != self.audience {
            return Err(AuthError::InvalidToken("wrong audience"));
        }
        Ok((kid, claims))
    }

    /// What is checked on every use: the key still verifies, and the times.
    fn accept(&self, kid: &str, claims: &Claims, now: DateTime<Utc>) -> Result<(), AuthError> {
        {
            let ring = self.ring.read().map_err(|_| lock_poisoned())?;
            let live = ring
                .verifiers
                .get(kid)
                .is_some_and(|v| v.verify_until.is_none_or(|t| t > now));
            if !live {
                return Err(AuthError::InvalidToken("unknown key"));
            }
        }
        let t = now.timestamp();
        if claims.exp <= t - LEEWAY_SECS {
            return Err(AuthError::InvalidToken("expired"));
        }
        if claims.nbf > t + LEEWAY_SECS {
            return Err(AuthError::InvalidToken("not yet valid"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_round_trip_as_json() {
        let c = Claims {
            iss: "i".into(),
            aud: "a".into(),
            sub: "s".into(),
            tid: uuid::Uuid::nil(),
            sid: None,
            typ: "user".into(),
            amr: vec!["pwd".into()],
            mfa_at: None,
            iat: 1,
            nbf: 1,
            exp: 2,
            jti: "j".into(),
        };
        let v = serde_json::to_value(&c).unwrap();
        assert!(v.get("sid").is_none());
        assert_eq!(serde_json::from_value::<Claims>(v).unwrap(), c);
    }
}
