//! In-process caches on the hot path of authentication, and their
//! invalidation across replicas.
//!
//! Session liveness, API keys and service identities are cached with moka.
//! Every revocation invalidates the local entry at once and, on PostgreSQL,
//! sends `NOTIFY saas_auth_invalidate` inside the revoking transaction, so
//! other replicas drop their entry when it commits ([`crate::Auth::listen`]).
//! Entries also expire after a minute, which bounds the delay should a
//! notification be lost; a listener that loses its connection clears
//! everything before it reconnects.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use moka::sync::Cache;
use saas_core::db::Tx;
use saas_core::{CoreError, TenantId, WorkspaceId};

/// The notification channel.
pub(crate) const CHANNEL: &str = "saas_auth_invalidate";

/// Sends an invalidation that other replicas receive when `tx` commits
/// (PostgreSQL only; SQLite is a single process).
pub(crate) async fn notify(tx: &mut Tx, payload: &str) -> Result<(), CoreError> {
    saas_core::db::notify(tx, CHANNEL, payload).await
}

/// A session as the hot path needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SessionState {
    pub(crate) tenant: TenantId,
    pub(crate) live_until: Option<DateTime<Utc>>,
}

/// An API key as the hot path needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyState {
    pub(crate) tenant: TenantId,
    pub(crate) secret_hash: Vec<u8>,
    pub(crate) scopes: Vec<String>,
    pub(crate) workspace: Option<WorkspaceId>,
    pub(crate) expires_at: Option<DateTime<Utc>>,
    pub(crate) revoked: bool,
    pub(crate) last_used_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub(crate) struct Caches {
    pub(crate) sessions: Cache<uuid::Uuid, SessionState>,
    pub(crate) api_keys: Cache<uuid::Uuid, Arc<KeyState>>,
    pub(crate) services: Cache<uuid::Uuid, (TenantId, bool)>,
}

impl Caches {
    pub(crate) fn new() -> Self {
        let ttl = Duration::from_secs(60);
        Self {
            sessions: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ttl)
                .build(),
            api_keys: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(ttl)
                .build(),
            services: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(ttl)
                .build(),
        }
    }

    /// Applies one invalidation message; `true` when the signing keys changed.
    pub(crate) fn apply(&self, payload: &str) -> bool {
        let (kind, id) = payload.split_once(':').unwrap_or((payload, ""));
        let id = uuid::Uuid::parse_str(id).ok();
        match (kind, id) {
            ("session", Some(id)) => self.sessions.invalidate(&id),
            ("apikey", Some(id)) => self.api_keys.invalidate(&id),
            ("service", Some(id)) => self.services.invalidate(&id),
            ("keys", _) => return true,
            _ => self.clear(),
        }
        false
    }

    pub(crate) fn clear(&self) {
        self.sessions.invalidate_all();
        self.api_keys.invalidate_all();
        self.services.invalidate_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_drop_exactly_their_entry() {
        let c = Caches::new();
        let (a, b) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
        let st = SessionState {
            tenant: TenantId::new(),
            live_until: None,
        };
        c.sessions.insert(a, st);
        c.sessions.insert(b, st);
        assert!(!c.apply(&format!("session:{a}")));
        assert!(c.sessions.get(&a).is_none());
        assert!(c.sessions.get(&b).is_some());
        assert!(c.apply("keys"));
        c.apply("garbage");
        assert!(c.sessions.get(&b).is_none());
    }
}
