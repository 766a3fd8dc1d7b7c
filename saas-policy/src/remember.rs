//! Remembered decisions: a bounded, process-wide table in front of Cedar.
//!
//! A decision may be remembered only when the policies that can decide it
//! read nothing of the request but the tenant's tier and entitlements (the
//! Authorizer checks that per principal and action, see
//! `engine::reads_request`): then it is a function of the tenant's cached
//! state, the principal, the action and the resource, and stays right for
//! as long as that state does.
//!
//! The table is a hash table split in shards, each behind its own lock and
//! bounded in size, so a hit reads one entry and nothing of the tenant's
//! state. An entry is one cache line holding the whole key, the tenant's
//! *stamp*, when it expires and which of the shard's distinct decisions it
//! answers: with thousands of tenants the entries outgrow the processor's
//! caches, and a hit then costs one read from memory rather than several.
//!
//! Equal decisions are held once for the whole table, whichever shards
//! remember them: most requests get the same few answers, and a hit clones
//! its answer from memory that every tenant's requests keep warm rather than
//! from its shard's own copy. With a copy per shard, a hit at 10,000 tenants
//! cloned one of 128 copies spread over the heap; with one, the growth of
//! the median request from 10 to 10,000 tenants went from about +19% to
//! about +11% (docs/PERFORMANCE.md, "Authorization", 2026-12-07).
//!
//! The stamp is taken before the state a decision was computed from was
//! read: invalidating a tenant advances its counter (counters are shared by
//! hash, so a collision only drops more than needed) and invalidating
//! everything advances a global one, so an entry computed from a state that
//! was dropped meanwhile never matches. Entries also expire when the tenant
//! state they came from would (the tenant cache's TTL from when it was
//! read). Keys are compared whole, never by hash alone.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use foldhash::quality::RandomState;
use hashbrown::HashTable;
use saas_core::{TenantId, WorkspaceId};

use crate::engine::Decision;

/// Shards of the table (a power of two), each behind its own lock.
const SHARDS: usize = 64;
/// Decisions per shard; a full shard drops its stale and expired entries,
/// and starts over if that frees nothing.
const PER_SHARD: usize = 2_048;
/// Distinct decisions a shard keeps (most requests get the same few
/// answers); more and the shard starts over.
const DECISIONS_PER_SHARD: usize = 1_024;
/// Distinct decisions held once for all shards: twice what the shards can
/// hold together, so that dropping those no shard holds frees at least half.
const INTERNED: usize = 2 * SHARDS * DECISIONS_PER_SHARD;
/// Invalidation counters, shared by tenants by hash (a power of two).
const COUNTERS: usize = 1 << 12;
/// A shard's clock starts over (and the shard with it) once it is this far
/// from its start, so that expiry times fit in 32 bits of milliseconds.
const EPOCH: Duration = Duration::from_millis(1 << 31);

/// What a remembered decision answers: who, what, on what, in which tenant.
/// Object resources are not remembered (they carry free tags and ids).
///
/// Packed (52 bytes) so that a key and what it answers fill one cache line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(C)]
pub(crate) struct Key {
    tenant: [u8; 16],
    principal: [u8; 16],
    /// The workspace, when `who` says there is one.
    workspace: [u8; 16],
    action: u16,
    /// The principal's kind, and in the high bit whether a workspace is named.
    who: u8,
    pad: u8,
}

impl Key {
    /// The key of a decision, if one can be remembered: the principal is of
    /// a known kind and the action's index fits.
    pub(crate) fn new(
        tenant: TenantId,
        (kind, principal): (&'static str, uuid::Uuid),
        action: usize,
        workspace: Option<WorkspaceId>,
    ) -> Option<Self> {
        let kind = match kind {
            "User" => 1,
            "Service" => 2,
            "ApiKey" => 3,
            "Operator" => 4,
            _ => return None,
        };
        Some(Self {
            tenant: tenant.as_uuid().into_bytes(),
            principal: principal.into_bytes(),
            workspace: workspace.map_or([0; 16], |w| w.as_uuid().into_bytes()),
            action: u16::try_from(action).ok()?,
            who: if workspace.is_some() {
                kind | 0x80
            } else {
                kind
            },
            pad: 0,
        })
    }
}

/// The invalidation counters of one tenant, read before its state is: a
/// tenant state, and every decision remembered from it, is current while
/// the counters still read the same.
///
/// Held as the sum of the tenant's counter and the global one: both only
/// grow, so the sum stays the same exactly when both do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp(u64);

impl Stamp {
    /// The low 32 bits, as an entry keeps them: equal to a later stamp's
    /// only if the counters have not moved, or moved by a multiple of 2^32
    /// within the entry's lifetime.
    fn folded(self) -> u32 {
        // Truncating: the low 32 bits.
        self.0 as u32
    }
}

/// One remembered decision, one cache line.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
struct Entry {
    key: Key,
    stamp: u32,
    /// Milliseconds from the shard's epoch at which it expires.
    expires: u32,
    /// Index in the shard's distinct decisions.
    decision: u32,
}

#[derive(Debug)]
struct Shard {
    table: HashTable<Entry>,
    decisions: Vec<Arc<Decision>>,
    index: HashMap<Arc<Decision>, u32>,
    epoch: Instant,
}

impl Shard {
    fn new() -> Self {
        Self {
            table: HashTable::new(),
            decisions: Vec::new(),
            index: HashMap::new(),
            epoch: Instant::now(),
        }
    }

    fn clear(&mut self, now: Instant) {
        self.table.clear();
        self.decisions.clear();
        self.index.clear();
        self.epoch = now;
    }

    /// Milliseconds from the epoch to `at` (0 before it), saturating.
    fn millis(&self, at: Instant) -> u32 {
        u32::try_from(at.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u32::MAX)
    }

    /// The index of `decision` among the shard's, added if new; `None` when
    /// the shard is full of distinct decisions (the caller starts over).
    fn decision(&mut self, decision: &Arc<Decision>) -> Option<u32> {
        if let Some(i) = self.index.get(decision) {
            return Some(*i);
        }
        if self.decisions.len() >= DECISIONS_PER_SHARD {
            return None;
        }
        let i = u32::try_from(self.decisions.len()).ok()?;
        self.decisions.push(decision.clone());
        self.index.insert(decision.clone(), i);
        Some(i)
    }
}

/// The table. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub(crate) struct Remembered {
    shards: Box<[Mutex<Shard>]>,
    counters: Box<[AtomicU64]>,
    all: AtomicU64,
    /// Distinct decisions, shared by the shards.
    interned: Mutex<HashSet<Arc<Decision>>>,
    ttl: Duration,
    hasher: RandomState,
}

impl Remembered {
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::new())).collect(),
            counters: (0..COUNTERS).map(|_| AtomicU64::new(0)).collect(),
            all: AtomicU64::new(0),
            interned: Mutex::new(HashSet::new()),
            ttl,
            hasher: RandomState::default(),
        }
    }

    fn counter(&self, tenant: &[u8; 16]) -> Option<&AtomicU64> {
        let h = self.hasher.hash_one(tenant);
        self.counters
            .get(usize::try_from(h).unwrap_or(0) & (COUNTERS - 1))
    }

    fn stamp_of(&self, tenant: &[u8; 16]) -> Stamp {
        let all = self.all.load(Ordering::Acquire);
        let own = self
            .counter(tenant)
            .map_or(0, |c| c.load(Ordering::Acquire));
        Stamp(all.wrapping_add(own))
    }

    /// The tenant's counters now: take it before reading the tenant's state.
    pub(crate) fn stamp(&self, tenant: TenantId) -> Stamp {
        self.stamp_of(tenant.as_uuid().as_bytes())
    }

    /// Drops every decision remembered for `tenant` (and, by a shared
    /// counter, perhaps some of other tenants).
    pub(crate) fn forget_tenant(&self, tenant: TenantId) {
        if let Some(c) = self.counter(tenant.as_uuid().as_bytes()) {
            c.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Drops every remembered decision.
    pub(crate) fn forget_all(&self) {
        self.all.fetch_add(1, Ordering::AcqRel);
    }

    /// The key's hash and its shard.
    fn shard(&self, key: &Key) -> Option<(u64, &Mutex<Shard>)> {
        let h = self.hasher.hash_one(key);
        // The shard takes bits the table does not: hashbrown places an
        // entry by the hash's low bits and tags it with its top seven, so
        // either would leave a shard's entries crowded on a few places or
        // tags.
        let shard = self
            .shards
            .get(usize::try_from(h >> 32).unwrap_or(0) & (SHARDS - 1))?;
        Some((h, shard))
    }

    /// The remembered decision for `key`, if one was computed from the
    /// tenant's current state and has not expired.
    pub(crate) fn get(&self, key: &Key) -> Option<Decision> {
        let now = self.stamp_of(&key.tenant).folded();
        let (hash, shard) = self.shard(key)?;
        let shard = shard.lock().ok()?;
        let e = shard.table.find(hash, |e| e.key == *key)?;
        if e.stamp != now || shard.millis(Instant::now()) >= e.expires {
            return None;
        }
        let d = shard.decisions.get(usize::try_from(e.decision).ok()?)?;
        Some(Decision::clone(d))
    }

    /// Remembers `decision` for `key`, computed from the tenant's state read
    /// at `read_at`, after `stamp` was taken. Nothing is kept if the tenant
    /// was invalidated meanwhile, and the entry expires with that state.
    pub(crate) fn put(&self, key: Key, stamp: Stamp, read_at: Instant, decision: &Decision) {
        // Nothing is kept that is already stale or expired (a TTL of zero
        // remembers nothing).
        if self.stamp_of(&key.tenant) != stamp || read_at.elapsed() >= self.ttl {
            return;
        }
        let Some(shared) = self.interned(decision) else {
            return;
        };
        let Some((hash, shard)) = self.shard(&key) else {
            return;
        };
        let Ok(mut shard) = shard.lock() else {
            return;
        };
        let now = Instant::now();
        if now.saturating_duration_since(shard.epoch) >= EPOCH {
            shard.clear(now);
        }
        let held = shard.table.find(hash, |e| e.key == key).is_some();
        if !held && shard.table.len() >= PER_SHARD {
            let at = shard.millis(now);
            shard
                .table
                .retain(|e| e.expires > at && self.stamp_of(&e.key.tenant).folded() == e.stamp);
            if shard.table.len() >= PER_SHARD {
                shard.clear(now);
            }
        }
        // A shard full of distinct decisions starts over.
        let Some(decision) = shard.decision(&shared).or_else(|| {
            shard.clear(now);
            shard.decision(&shared)
        }) else {
            return;
        };
        // Rounded down to the millisecond and capped at 2^32 - 1 ms from
        // the epoch: an entry may expire early, never late.
        let Some(expires_at) = read_at
            .checked_add(self.ttl)
            .or_else(|| now.checked_add(EPOCH))
        else {
            return;
        };
        let entry = Entry {
            key,
            stamp: stamp.folded(),
            expires: shard.millis(expires_at),
            decision,
        };
        if let Some(e) = shard.table.find_mut(hash, |e| e.key == key) {
            *e = entry;
        } else {
            let hasher = &self.hasher;
            shard
                .table
                .insert_unique(hash, entry, |e| hasher.hash_one(e.key));
        }
    }

    /// The one copy of `decision` that every shard shares: a hit then clones
    /// from memory that all tenants' requests keep warm, not from a copy of
    /// its shard's own. `None` if the lock is poisoned.
    fn interned(&self, decision: &Decision) -> Option<Arc<Decision>> {
        let mut interned = self.interned.lock().ok()?;
        if let Some(d) = interned.get(decision) {
            return Some(d.clone());
        }
        // A full set keeps only the decisions a shard still holds (at most
        // half of it), and starts over should that free nothing; what the
        // shards hold stays valid either way, only no longer shared with
        // later entries.
        if interned.len() >= INTERNED {
            interned.retain(|d| Arc::strong_count(d) > 1);
            if interned.len() >= INTERNED {
                interned.clear();
            }
        }
        let d = Arc::new(decision.clone());
        interned.insert(d.clone());
        Some(d)
    }

    /// Entries held, current or not yet dropped.
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .filter_map(|s| s.lock().ok().map(|s| s.table.len()))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Explanation;

    fn decision(allow: bool, policy: &str) -> Decision {
        let e = Explanation {
            action: "export_data".into(),
            policies: vec![policy.into()],
            errors: vec![],
            summary: format!("by {policy}"),
        };
        if allow {
            Decision::Allow(e)
        } else {
            Decision::Deny(e)
        }
    }

    fn key(tenant: TenantId, user: uuid::Uuid, action: usize, ws: Option<WorkspaceId>) -> Key {
        Key::new(tenant, ("User", user), action, ws).unwrap()
    }

    fn put(r: &Remembered, k: Key, tenant: TenantId, d: &Decision) {
        r.put(k, r.stamp(tenant), Instant::now(), d);
    }

    #[test]
    fn an_entry_fills_exactly_one_cache_line() {
        assert_eq!(std::mem::size_of::<Entry>(), 64);
        assert_eq!(std::mem::align_of::<Entry>(), 64);
    }

    #[test]
    fn a_key_differing_in_any_part_is_another_key() {
        let r = Remembered::new(Duration::from_secs(60));
        let (t, u, w) = (TenantId::new(), uuid::Uuid::now_v7(), WorkspaceId::new());
        let allow = decision(true, "p");
        put(&r, key(t, u, 3, Some(w)), t, &allow);
        assert_eq!(r.get(&key(t, u, 3, Some(w))), Some(allow));
        let nil = WorkspaceId::from_uuid(uuid::Uuid::nil());
        let other_tenant = TenantId::new();
        for other in [
            key(other_tenant, u, 3, Some(w)),
            key(t, uuid::Uuid::now_v7(), 3, Some(w)),
            Key::new(t, ("Service", u), 3, Some(w)).unwrap(),
            key(t, u, 4, Some(w)),
            key(t, u, 3, Some(WorkspaceId::new())),
            key(t, u, 3, None),
            key(t, u, 3, Some(nil)),
        ] {
            assert_eq!(r.get(&other), None, "{other:?}");
        }
        // And the organization is not the nil workspace.
        put(&r, key(t, u, 3, None), t, &decision(false, "q"));
        assert_eq!(r.get(&key(t, u, 3, Some(nil))), None);
        assert!(Key::new(t, ("Anonymous", u), 3, None).is_none());
        assert!(Key::new(t, ("User", u), usize::from(u16::MAX) + 1, None).is_none());
    }

    #[test]
    fn an_invalidated_or_expired_decision_is_not_answered() {
        let r = Remembered::new(Duration::from_secs(60));
        let (a, b, u) = (TenantId::new(), TenantId::new(), uuid::Uuid::now_v7());
        let d = decision(true, "p");
        put(&r, key(a, u, 1, None), a, &d);
        put(&r, key(b, u, 1, None), b, &d);
        r.forget_tenant(a);
        assert_eq!(r.get(&key(a, u, 1, None)), None);
        // Put under the stamp taken before the invalidation: not kept.
        let before = r.stamp(a);
        r.forget_tenant(a);
        r.put(key(a, u, 1, None), before, Instant::now(), &d);
        assert_eq!(r.get(&key(a, u, 1, None)), None);
        r.forget_all();
        assert_eq!(r.get(&key(b, u, 1, None)), None);
        // Read longer ago than the TTL: not kept.
        let short = Remembered::new(Duration::from_millis(500));
        let long_ago = Instant::now()
            .checked_sub(Duration::from_millis(600))
            .unwrap();
        short.put(key(a, u, 1, None), short.stamp(a), long_ago, &d);
        assert_eq!(short.get(&key(a, u, 1, None)), None);
        // Kept, then expired with the state it came from.
        short.put(key(a, u, 1, None), short.stamp(a), Instant::now(), &d);
        assert_eq!(short.get(&key(a, u, 1, None)), Some(d.clone()));
        std::thread::sleep(Duration::from_millis(600));
        assert_eq!(short.get(&key(a, u, 1, None)), None);
    }

    #[test]
    fn equal_decisions_remembered_in_different_shards_are_one_copy() {
        let r = Remembered::new(Duration::from_secs(60));
        let u = uuid::Uuid::now_v7();
        let tenants: Vec<TenantId> = (0..SHARDS * 4).map(|_| TenantId::new()).collect();
        for t in &tenants {
            put(&r, key(*t, u, 1, None), *t, &decision(true, "p"));
        }
        let mut copies: Vec<*const Decision> = Vec::new();
        let mut used = 0;
        for shard in &r.shards {
            let shard = shard.lock().unwrap();
            if !shard.decisions.is_empty() {
                used += 1;
            }
            copies.extend(shard.decisions.iter().map(Arc::as_ptr));
        }
        copies.dedup();
        assert!(used > 1, "the keys spread over several shards");
        assert_eq!(copies.len(), 1, "one copy, shared");
        for t in &tenants {
            assert_eq!(r.get(&key(*t, u, 1, None)), Some(decision(true, "p")));
        }
    }

    #[test]
    fn the_shared_copies_are_bounded_and_keep_what_the_shards_hold() {
        let r = Remembered::new(Duration::from_secs(60));
        let t = TenantId::new();
        for i in 0..INTERNED + 1_000 {
            let d = decision(true, &format!("p{i}"));
            put(&r, key(t, uuid::Uuid::now_v7(), 1, None), t, &d);
        }
        let interned = r.interned.lock().unwrap();
        assert!(interned.len() <= INTERNED);
        // What the shards hold was kept, and is still the shared copy.
        for shard in &r.shards {
            for d in &shard.lock().unwrap().decisions {
                assert!(interned.get(&**d).is_some_and(|i| Arc::ptr_eq(i, d)));
            }
        }
        drop(interned);
        // After the set was pruned, a new decision is still remembered.
        let k = key(t, uuid::Uuid::now_v7(), 1, None);
        put(&r, k, t, &decision(false, "last"));
        assert_eq!(r.get(&k), Some(decision(false, "last")));
    }

    #[test]
    fn a_table_given_more_than_it_holds_answers_only_what_it_was_told() {
        let r = Remembered::new(Duration::from_secs(60));
        let t = TenantId::new();
        // More keys than the table holds, and more distinct decisions than
        // a shard keeps: whatever is still answered is what was put.
        let keys: Vec<(Key, Decision)> = (0..SHARDS * PER_SHARD * 2)
            .map(|i| {
                let d = decision(i % 3 == 0, &format!("p{}", i % (DECISIONS_PER_SHARD * 4)));
                (key(t, uuid::Uuid::now_v7(), i % 50, None), d)
            })
            .collect();
        for (k, d) in &keys {
            put(&r, *k, t, d);
        }
        assert!(r.len() <= SHARDS * PER_SHARD);
        let mut answered = 0;
        for (k, d) in &keys {
            if let Some(got) = r.get(k) {
                assert_eq!(&got, d);
                answered += 1;
            }
        }
        assert!(answered > 0);
        // The latest decision for a key replaces the earlier one.
        let (k, _) = keys[keys.len() - 1];
        put(&r, k, t, &decision(false, "changed"));
        assert_eq!(r.get(&k), Some(decision(false, "changed")));
    }
}
