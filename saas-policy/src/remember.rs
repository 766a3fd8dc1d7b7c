//! Remembered decisions: a bounded, process-wide table in front of Cedar.
//!
//! A decision may be remembered only when the policies that can decide it
//! read nothing of the request but the tenant's tier and entitlements (the
//! Authorizer checks that per principal and action, see
//! `engine::reads_request`): then it is a function of the tenant's cached
//! state, the principal, the action and the resource, and stays right for
//! as long as that state does.
//!
//! The table is a hash map split in shards, each behind its own lock and
//! bounded in size, so a hit reads one entry and nothing of the tenant's
//! state. Every entry carries the tenant's *stamp* taken before the state it
//! was computed from was read: invalidating a tenant advances its counter (counters are
//! shared by hash, so a collision only drops more than needed) and
//! invalidating everything advances a global one, so an entry computed from
//! a state that was dropped meanwhile never matches. Entries also expire when
//! the tenant state they came from would (the tenant cache's TTL from when it
//! was read). Keys are compared whole, never by hash alone.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;

use foldhash::quality::RandomState;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use saas_core::{TenantId, WorkspaceId};

use crate::engine::Decision;

/// Shards of the table (a power of two), each behind its own lock.
const SHARDS: usize = 64;
/// Decisions per shard; a full shard drops its stale and expired entries,
/// and starts over if that frees nothing.
const PER_SHARD: usize = 2_048;
/// Invalidation counters, shared by tenants by hash (a power of two).
const COUNTERS: usize = 1 << 12;
/// Distinct decisions kept for sharing; more and the set starts over.
const SHARED: usize = 10_000;

/// What a remembered decision answers: who, what, on what, in which tenant.
/// Object resources are not remembered (they carry free tags and ids).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    pub(crate) tenant: TenantId,
    pub(crate) principal: (&'static str, uuid::Uuid),
    pub(crate) action: usize,
    pub(crate) workspace: Option<WorkspaceId>,
}

/// The invalidation counters of one tenant, read before its state is: a
/// tenant state, and every decision remembered from it, is current while
/// the counters still read the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    tenant: u64,
    all: u64,
}

#[derive(Debug)]
struct Slot {
    stamp: Stamp,
    /// When the tenant state the decision came from was read.
    at: Instant,
    decision: Arc<Decision>,
}

/// The table. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub(crate) struct Remembered {
    shards: Box<[Mutex<HashMap<Key, Slot, RandomState>>]>,
    counters: Box<[AtomicU64]>,
    all: AtomicU64,
    ttl: Duration,
    hasher: RandomState,
    /// One copy of each distinct decision, shared by every entry holding it
    /// (most tenants give the same few answers).
    shared: Mutex<HashSet<Arc<Decision>>>,
}

impl Remembered {
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(HashMap::with_hasher(RandomState::default())))
                .collect(),
            counters: (0..COUNTERS).map(|_| AtomicU64::new(0)).collect(),
            all: AtomicU64::new(0),
            ttl,
            hasher: RandomState::default(),
            shared: Mutex::new(HashSet::new()),
        }
    }

    fn counter(&self, tenant: TenantId) -> Option<&AtomicU64> {
        let h = self.hasher.hash_one(tenant);
        self.counters
            .get(usize::try_from(h).unwrap_or(0) & (COUNTERS - 1))
    }

    /// The tenant's counters now: take it before reading the tenant's state.
    pub(crate) fn stamp(&self, tenant: TenantId) -> Stamp {
        Stamp {
            all: self.all.load(Ordering::Acquire),
            tenant: self
                .counter(tenant)
                .map_or(0, |c| c.load(Ordering::Acquire)),
        }
    }

    /// Drops every decision remembered for `tenant` (and, by a shared
    /// counter, perhaps some of other tenants).
    pub(crate) fn forget_tenant(&self, tenant: TenantId) {
        if let Some(c) = self.counter(tenant) {
            c.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Drops every remembered decision.
    pub(crate) fn forget_all(&self) {
        self.all.fetch_add(1, Ordering::AcqRel);
    }

    fn shard(&self, key: &Key) -> Option<&Mutex<HashMap<Key, Slot, RandomState>>> {
        let h = self.hasher.hash_one(key);
        self.shards
            .get(usize::try_from(h).unwrap_or(0) & (SHARDS - 1))
    }

    /// The remembered decision for `key`, if one was computed from the
    /// tenant's current state and has not expired.
    pub(crate) fn get(&self, key: &Key) -> Option<Decision> {
        let now = self.stamp(key.tenant);
        let shard = self.shard(key)?.lock().ok()?;
        let s = shard.get(key)?;
        let fresh = s.stamp == now && s.at.elapsed() < self.ttl;
        fresh.then(|| Decision::clone(&s.decision))
    }

    /// Remembers `decision` for `key`, computed from the tenant's state read
    /// at `read_at`, after `stamp` was taken. Nothing is kept if the tenant
    /// was invalidated meanwhile, and the entry expires with that state.
    pub(crate) fn put(&self, key: Key, stamp: Stamp, read_at: Instant, decision: &Decision) {
        // Nothing is kept that is already stale or expired (a TTL of zero
        // remembers nothing).
        if self.stamp(key.tenant) != stamp || read_at.elapsed() >= self.ttl {
            return;
        }
        let decision = self.share(decision);
        let Some(Ok(mut shard)) = self.shard(&key).map(Mutex::lock) else {
            return;
        };
        if shard.len() >= PER_SHARD && !shard.contains_key(&key) {
            shard.retain(|k, s| s.stamp == self.stamp(k.tenant) && s.at.elapsed() < self.ttl);
            if shard.len() >= PER_SHARD {
                shard.clear();
            }
        }
        shard.insert(
            key,
            Slot {
                stamp,
                at: read_at,
                decision,
            },
        );
    }

    /// Entries held, current or not yet dropped.
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .filter_map(|s| s.lock().ok().map(|m| m.len()))
            .sum()
    }

    fn share(&self, decision: &Decision) -> Arc<Decision> {
        let Ok(mut shared) = self.shared.lock() else {
            return Arc::new(decision.clone());
        };
        if let Some(d) = shared.get(decision) {
            return d.clone();
        }
        if shared.len() >= SHARED {
            shared.clear();
        }
        let d = Arc::new(decision.clone());
        shared.insert(d.clone());
        d
    }
}
