//! The database store: append-only hash chains, one per tenant and one for the
//! platform, with queries, checkpoints, export and verification.

use std::collections::HashMap;
use std::io::Write;

use chrono::{DateTime, Utc};
use saas_core::db::Backend;
use saas_core::db::sea_query::{Expr, ExprTrait, Func, LockType, OnConflict, Order, Query, Value};
use saas_core::db::{Db, Row, Scope as DbScope, Tx};
use saas_core::{PlatformContext, TenantContext};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::crypto::{self, CheckpointSigner};
use crate::error::AuditError;
use crate::event::{
    Actor, AuditEvent, GENESIS, Outcome, PersonalData, StoredEvent, Target, canonical_json,
    format_time,
};
use crate::verify::{ChainVerifier, Checkpoint, VerifyReport};

/// Which chain: a tenant's (through its context) or the platform's.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// A tenant's chain.
    Tenant(&'a TenantContext),
    /// The platform chain (operator actions).
    Platform(&'a PlatformContext),
}

impl<'a> From<&'a TenantContext> for Scope<'a> {
    fn from(c: &'a TenantContext) -> Self {
        Self::Tenant(c)
    }
}

impl<'a> From<&'a PlatformContext> for Scope<'a> {
    fn from(c: &'a PlatformContext) -> Self {
        Self::Platform(c)
    }
}

struct Tables {
    events: &'static str,
    heads: &'static str,
    checkpoints: &'static str,
    key: &'static str,
}

const TENANT: Tables = Tables {
    events: "audit_events",
    heads: "audit_heads",
    checkpoints: "audit_checkpoints",
    key: "tenant_id",
};
const PLATFORM: Tables = Tables {
    events: "audit_platform_events",
    heads: "audit_platform_heads",
    checkpoints: "audit_platform_checkpoints",
    key: "chain_id",
};
const KEYS: &str = "audit_subject_keys";
const CURSORS: &str = "audit_sink_cursors";
const PRUNES: &str = "audit_prunes";
/// The action a prune records in the chain.
pub(crate) const PRUNE_ACTION: &str = "audit.pruned";

pub(crate) const EVENT_COLS: [&str; 16] = [
    "seq",
    "id",
    "occurred_at",
    "actor_kind",
    "actor_id",
    "actor_reason",
    "action",
    "target_kind",
    "target_id",
    "outcome",
    "correlation_id",
    "details",
    "subject_id",
    "personal",
    "prev_hash",
    "hash",
];

/// How a chain was walked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Walked {
    /// In how many parts (connections).
    pub(crate) parts: usize,
    /// Whether events were read by their stored canonical bytes (PostgreSQL,
    /// its guard in place).
    pub(crate) by_stored_bytes: bool,
}

/// The column holding the bytes each event's hash was taken of (NULL for
/// events stored before saas-audit's migration 5).
pub(crate) const CANONICAL: &str = "canonical";

/// Rows per INSERT statement (keeps bind parameters under both backends' limits).
const INSERT_CHUNK: usize = 500;
/// Rows per page when walking a chain.
const PAGE: u64 = 5000;

struct Chain {
    tables: &'static Tables,
    key: Uuid,
    name: String,
    db_scope: DbScope,
}

fn chain_of(scope: Scope<'_>) -> Chain {
    match scope {
        Scope::Tenant(ctx) => Chain {
            tables: &TENANT,
            key: ctx.tenant().as_uuid(),
            name: format!("tenant:{}", ctx.tenant()),
            db_scope: DbScope::Tenant(ctx.tenant()),
        },
        Scope::Platform(_) => Chain {
            tables: &PLATFORM,
            key: Uuid::nil(),
            name: "platform".into(),
            db_scope: DbScope::Platform,
        },
    }
}

fn actor_of(scope: Scope<'_>) -> (Actor, String) {
    match scope {
        Scope::Tenant(ctx) => (
            Actor::from_principal(ctx.principal()),
            ctx.correlation_id().to_string(),
        ),
        Scope::Platform(p) => (
            Actor::from_platform(p.actor()),
            p.correlation_id().to_string(),
        ),
    }
}

/// Where an appended event landed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Receipt {
    /// The event id.
    pub id: Uuid,
    /// Its position.
    pub seq: i64,
    /// Its hash (hex).
    pub hash: String,
}

/// A stored event as read back, with its personal data decrypted while the
/// subject's key exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditRecord {
    /// The stored, hashed event.
    #[serde(flatten)]
    pub event: StoredEvent,
    /// The personal data, if there was some and its key still exists.
    pub personal_data: Option<PersonalData>,
    /// True when there was personal data and its subject's key was destroyed.
    pub personal_erased: bool,
}

/// Filters for [`AuditLog::query`]; every field narrows.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// At or after.
    pub from: Option<DateTime<Utc>>,
    /// Before.
    pub to: Option<DateTime<Utc>>,
    /// Acting principal's id.
    pub actor_id: Option<String>,
    /// Exact action.
    pub action: Option<String>,
    /// Actions starting with this prefix (e.g. `billing.`).
    #[serde(default)]
    pub action_prefix: Option<String>,
    /// Target kind.
    pub target_kind: Option<String>,
    /// Target id.
    pub target_id: Option<String>,
    /// Outcome.
    pub outcome: Option<Outcome>,
    /// Keyset cursor: only events before this position (newest first).
    pub before_seq: Option<i64>,
    /// Page size (1 to 500, default 100).
    pub limit: Option<u64>,
}

/// One page of [`AuditLog::query`], newest first.
#[derive(Debug, Clone, Serialize)]
pub struct AuditPage {
    /// The events.
    pub records: Vec<AuditRecord>,
    /// Pass as `before_seq` for the next page; `None` at the end.
    pub next_before_seq: Option<i64>,
}

/// What a prune archived and deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    /// The last position archived and deleted.
    pub up_to_seq: i64,
    /// How many events the archive holds.
    pub events: u64,
    /// SHA-256 of the archive (hex), recorded in the chain.
    pub archive_sha256: String,
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExportSummary {
    /// Events written.
    pub events: u64,
    /// The checkpoint written with them, if one covers the range.
    pub checkpoint_seq: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ExportHeader {
    pub(crate) format: String,
    pub(crate) version: u32,
    pub(crate) chain: String,
    pub(crate) from_seq: i64,
    pub(crate) anchor: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum ExportLine {
    Checkpoint { checkpoint: Checkpoint },
    Event(Box<StoredEvent>),
}

/// The audit log over a database.
#[derive(Debug, Clone)]
pub struct AuditLog {
    db: Db,
    signer: CheckpointSigner,
    split: crate::pgwalk::Split,
}

impl AuditLog {
    /// A log over `db` that signs checkpoints with `signer`.
    #[must_use]
    pub fn new(db: Db, signer: CheckpointSigner) -> Self {
        Self {
            db,
            signer,
            split: crate::pgwalk::Split::for_this_machine(),
        }
    }

    /// Caps the connections one [`AuditLog::verify`] walk reads a long chain
    /// over on PostgreSQL (at least 1). The default is one per core, at most
    /// four; a walk only ever takes connections the pool has to spare, and
    /// gives each at least 25,000 events. Give 1 to keep verification to a
    /// single connection on a busy database.
    ///
    /// ```
    /// # fn log(db: saas_core::db::Db, signer: saas_audit::CheckpointSigner) {
    /// let log = saas_audit::AuditLog::new(db, signer).verify_connections(1);
    /// # }
    /// ```
    #[must_use]
    pub fn verify_connections(mut self, n: usize) -> Self {
        self.split.parts = n.max(1);
        self
    }

    /// The checkpoint signer.
    #[must_use]
    pub fn signer(&self) -> &CheckpointSigner {
        &self.signer
    }

    /// The database the log is stored in.
    pub(crate) fn db(&self) -> &Db {
        &self.db
    }

    /// Appends `event` inside the caller's transaction, so the event and the
    /// action it records commit (or roll back) together. `tx` must be open for
    /// the same tenant (or be a platform transaction for the platform chain).
    pub async fn append<'a>(
        &self,
        tx: &mut Tx,
        scope: impl Into<Scope<'a>>,
        event: AuditEvent,
    ) -> Result<Receipt, AuditError> {
        let mut receipts = self.append_batch(tx, scope, vec![event]).await?;
        receipts
            .pop()
            .ok_or(AuditError::Corrupt("append produced no receipt".into()))
    }

    /// Appends several events in order, under one lock of the chain head.
    pub async fn append_batch<'a>(
        &self,
        tx: &mut Tx,
        scope: impl Into<Scope<'a>>,
        events: Vec<AuditEvent>,
    ) -> Result<Vec<Receipt>, AuditError> {
        append_in(tx, scope.into(), events).await
    }
    /// Appends in a transaction of its own (for actions that are not a
    /// database change, such as a denied request).
    pub async fn record<'a>(
        &self,
        scope: impl Into<Scope<'a>>,
        event: AuditEvent,
    ) -> Result<Receipt, AuditError> {
        let scope = scope.into();
        let mut tx = self.begin(scope).await?;
        let r = self.append(&mut tx, scope, event).await?;
        tx.commit().await?;
        Ok(r)
    }

    async fn begin(&self, scope: Scope<'_>) -> Result<Tx, AuditError> {
        Ok(match scope {
            Scope::Tenant(ctx) => self.db.begin(ctx).await?,
            Scope::Platform(p) => self.db.begin_platform(p).await?,
        })
    }

    /// A read that sees one snapshot throughout, which a walk can share.
    async fn read_snapshot(&self, scope: Scope<'_>) -> Result<Tx, AuditError> {
        Ok(match scope {
            Scope::Tenant(ctx) => self.db.read_snapshot(ctx).await?,
            Scope::Platform(p) => self.db.read_snapshot_platform(p).await?,
        })
    }

    async fn read(&self, scope: Scope<'_>) -> Result<Tx, AuditError> {
        Ok(match scope {
            Scope::Tenant(ctx) => self.db.read(ctx).await?,
            Scope::Platform(p) => self.db.begin_platform(p).await?,
        })
    }

    /// Up to `limit` events after position `after`, oldest first, without
    /// their personal data (for feeding sinks).
    pub(crate) async fn events_after(
        &self,
        scope: Scope<'_>,
        after: i64,
        limit: u64,
    ) -> Result<Vec<AuditRecord>, AuditError> {
        let chain = chain_of(scope);
        let mut tx = self.read(scope).await?;
        let events = events_page(&mut tx, &chain, after, None, limit).await?;
        tx.commit().await?;
        Ok(events
            .into_iter()
            .map(|event| AuditRecord {
                event,
                personal_data: None,
                personal_erased: false,
            })
            .collect())
    }

    /// The last position `sink` received from this chain (0 if none).
    pub(crate) async fn sink_cursor(
        &self,
        scope: Scope<'_>,
        sink: &str,
    ) -> Result<i64, AuditError> {
        let chain = chain_of(scope);
        let mut tx = self.read(scope).await?;
        let row = tx
            .fetch_optional(
                Query::select()
                    .column("last_seq")
                    .from(CURSORS)
                    .and_where(Expr::col("sink").eq(sink))
                    .and_where(Expr::col("chain_id").eq(chain.key)),
            )
            .await?;
        tx.commit().await?;
        Ok(row
            .map(|r| r.get::<i64>("last_seq"))
            .transpose()?
            .unwrap_or(0))
    }

    /// Records that `sink` has received this chain up to `seq`.
    pub(crate) async fn set_sink_cursor(
        &self,
        scope: Scope<'_>,
        sink: &str,
        seq: i64,
    ) -> Result<(), AuditError> {
        let chain = chain_of(scope);
        let tenant = match scope {
            Scope::Tenant(ctx) => Some(ctx.tenant().as_uuid()),
            Scope::Platform(_) => None,
        };
        let mut tx = self.begin(scope).await?;
        tx.execute(
            Query::insert()
                .into_table(CURSORS)
                .columns(["sink", "chain_id", "tenant_id", "last_seq"])
                .values([sink.into(), chain.key.into(), tenant.into(), seq.into()])
                .map_err(|e| AuditError::Corrupt(e.to_string()))?
                .on_conflict(
                    OnConflict::columns(["sink", "chain_id"])
                        .update_column("last_seq")
                        .to_owned(),
                ),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Events matching `q`, newest first, with keyset pagination.
    pub async fn query<'a>(
        &self,
        scope: impl Into<Scope<'a>>,
        q: &AuditQuery,
    ) -> Result<AuditPage, AuditError> {
        let scope = scope.into();
        let chain = chain_of(scope);
        let limit = q.limit.unwrap_or(100).clamp(1, 500);
        let mut sel = Query::select();
        sel.columns(EVENT_COLS)
            .from(chain.tables.events)
            .and_where(Expr::col(chain.tables.key).eq(chain.key))
            .order_by("seq", Order::Desc)
            .limit(limit);
        if let Some(v) = q.from {
            sel.and_where(Expr::col("occurred_at").gte(v));
        }
        if let Some(v) = q.to {
            sel.and_where(Expr::col("occurred_at").lt(v));
        }
        if let Some(v) = &q.actor_id {
            sel.and_where(Expr::col("actor_id").eq(v.as_str()));
        }
        if let Some(v) = &q.action {
            sel.and_where(Expr::col("action").eq(v.as_str()));
        }
        if let Some(v) = &q.action_prefix {
            // Actions are dotted lower-case names: drop LIKE's wildcards.
            let prefix: String = v
                .chars()
                .filter(|c| *c != '%' && *c != '_' && *c != '\\')
                .collect();
            sel.and_where(Expr::col("action").like(format!("{prefix}%")));
        }
        if let Some(v) = &q.target_kind {
            sel.and_where(Expr::col("target_kind").eq(v.as_str()));
        }
        if let Some(v) = &q.target_id {
            sel.and_where(Expr::col("target_id").eq(v.as_str()));
        }
        if let Some(v) = q.outcome {
            sel.and_where(Expr::col("outcome").eq(v.as_str()));
        }
        if let Some(v) = q.before_seq {
            sel.and_where(Expr::col("seq").lt(v));
        }
        let mut tx = self.read(scope).await?;
        let rows = tx.fetch_all(&sel).await?;
        let events = rows
            .iter()
            .map(|r| event_from_row(&chain.name, r))
            .collect::<Result<Vec<_>, _>>()?;
        let records = self.decrypt_all(&mut tx, &chain, events).await?;
        tx.commit().await?;
        let next_before_seq = (records.len() as u64 == limit)
            .then(|| records.last().map(|r| r.event.seq))
            .flatten();
        Ok(AuditPage {
            records,
            next_before_seq,
        })
    }

    /// Every event about or by `subject` (a user id), personal data readable
    /// while the key exists: the data-subject export.
    pub async fn subject_events(
        &self,
        ctx: &TenantContext,
        subject: Uuid,
    ) -> Result<Vec<AuditRecord>, AuditError> {
        let chain = chain_of(Scope::Tenant(ctx));
        let mut tx = self.db.read(ctx).await?;
        let rows = tx
            .fetch_all(
                Query::select()
                    .columns(EVENT_COLS)
                    .from(chain.tables.events)
                    .and_where(Expr::col("tenant_id").eq(chain.key))
                    .cond_where(
                        saas_core::db::sea_query::Cond::any()
                            .add(Expr::col("subject_id").eq(subject))
                            .add(Expr::col("actor_id").eq(subject.to_string())),
                    )
                    .order_by("seq", Order::Asc),
            )
            .await?;
        let events = rows
            .iter()
            .map(|r| event_from_row(&chain.name, r))
            .collect::<Result<Vec<_>, _>>()?;
        let records = self.decrypt_all(&mut tx, &chain, events).await?;
        tx.commit().await?;
        Ok(records)
    }

    /// Destroys `subject`'s key: their personal data in every event becomes
    /// unreadable for good, while every hash, and so the chain, stays valid.
    /// Returns how many events carried their personal data.
    pub async fn erase_subject(
        &self,
        ctx: &TenantContext,
        subject: Uuid,
    ) -> Result<u64, AuditError> {
        let chain = chain_of(Scope::Tenant(ctx));
        let mut tx = self.db.begin(ctx).await?;
        let n = tx
            .fetch_optional(
                Query::select()
                    .expr_as(Expr::col("seq").count(), "n")
                    .from(chain.tables.events)
                    .and_where(Expr::col("tenant_id").eq(chain.key))
                    .and_where(Expr::col("subject_id").eq(subject))
                    .and_where(Expr::col("personal").is_not_null()),
            )
            .await?
            .map(|r| r.get::<i64>("n"))
            .transpose()?
            .unwrap_or(0);
        tx.execute(
            Query::delete()
                .from_table(KEYS)
                .and_where(Expr::col("tenant_id").eq(chain.key))
                .and_where(Expr::col("subject_id").eq(subject)),
        )
        .await?;
        tx.commit().await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn decrypt_all(
        &self,
        tx: &mut Tx,
        chain: &Chain,
        events: Vec<StoredEvent>,
    ) -> Result<Vec<AuditRecord>, AuditError> {
        let mut keys: HashMap<Uuid, Option<Vec<u8>>> = HashMap::new();
        let mut out = Vec::with_capacity(events.len());
        for event in events {
            let (personal_data, personal_erased) = match (&event.personal, event.subject_id) {
                (Some(sealed), Some(subject)) if chain.tables.key == TENANT.key => {
                    let key = match keys.get(&subject) {
                        Some(k) => k.clone(),
                        None => {
                            let k = existing_key(tx, chain, subject).await?;
                            keys.insert(subject, k.clone());
                            k
                        }
                    };
                    match key {
                        Some(key) => {
                            let plain = crypto::open(&key, &unhex(sealed)?)?;
                            let pd: PersonalData = serde_json::from_slice(&plain)
                                .map_err(|e| AuditError::Corrupt(e.to_string()))?;
                            (Some(pd), false)
                        }
                        None => (None, true),
                    }
                }
                (Some(_), _) => (None, true),
                _ => (None, false),
            };
            out.push(AuditRecord {
                event,
                personal_data,
                personal_erased,
            });
        }
        Ok(out)
    }

    /// Signs the chain's current head and stores the checkpoint (no-op when the
    /// head is already checkpointed or the chain is empty).
    pub async fn checkpoint<'a>(
        &self,
        scope: impl Into<Scope<'a>>,
    ) -> Result<Option<Checkpoint>, AuditError> {
        let scope = scope.into();
        let chain = chain_of(scope);
        let mut tx = self.begin(scope).await?;
        let (seq, hash) = lock_head(&mut tx, &chain).await?;
        if seq == 0 {
            return Ok(None);
        }
        let existing = load_checkpoints(&mut tx, &chain).await?;
        if let Some(c) = existing.into_iter().find(|c| c.seq == seq) {
            return Ok(Some(c));
        }
        let checkpoint = self.store_checkpoint(&mut tx, &chain, seq, &hash).await?;
        tx.commit().await?;
        Ok(Some(checkpoint))
    }

    /// Signs `(seq, hash)` of the chain and stores the checkpoint (kept as is
    /// when one exists at that position).
    async fn store_checkpoint(
        &self,
        tx: &mut Tx,
        chain: &Chain,
        seq: i64,
        hash: &str,
    ) -> Result<Checkpoint, AuditError> {
        let now = tx.now();
        let signed_at = format_time(now);
        let signature = self.signer.sign(&chain.name, seq, hash, &signed_at)?;
        tx.execute(
            Query::insert()
                .into_table(chain.tables.checkpoints)
                .columns([
                    chain.tables.key,
                    "seq",
                    "hash",
                    "signed_at",
                    "key_id",
                    "signature",
                ])
                .values([
                    chain.key.into(),
                    seq.into(),
                    unhex(hash)?.into(),
                    now.into(),
                    self.signer.key_id().into(),
                    signature.clone().into(),
                ])
                .map_err(|e| AuditError::Corrupt(e.to_string()))?
                .on_conflict(
                    OnConflict::columns([chain.tables.key, "seq"])
                        .do_nothing()
                        .to_owned(),
                ),
        )
        .await?;
        Ok(Checkpoint {
            chain: chain.name.clone(),
            seq,
            hash: hash.to_owned(),
            signed_at,
            key_id: self.signer.key_id().to_owned(),
            signature: hex::encode(signature),
        })
    }

    /// Walks the chain from position `from_seq` (1 for the whole chain) and
    /// reports the first broken link, gap, tampered event, or missing tail
    /// against the newest checkpoint and the chain head.
    ///
    /// On PostgreSQL a long chain is read over several connections at once,
    /// each reading the same snapshot (see [`AuditLog::verify_connections`]),
    /// and, while the events table's guard (a CHECK constraint of
    /// saas-audit's migration 5) is in place, each event is read by the
    /// bytes its hash was taken of alone; otherwise, and on SQLite, every
    /// column is read and hashed.
    pub async fn verify<'a>(
        &self,
        scope: impl Into<Scope<'a>>,
        from_seq: i64,
    ) -> Result<VerifyReport, AuditError> {
        Ok(self
            .verify_split(scope.into(), from_seq, self.split)
            .await?
            .0)
    }

    /// [`Self::verify`], splitting the walk on PostgreSQL as `split` allows;
    /// also tells how it was walked.
    pub(crate) async fn verify_split(
        &self,
        scope: Scope<'_>,
        from_seq: i64,
        split: crate::pgwalk::Split,
    ) -> Result<(VerifyReport, Walked), AuditError> {
        let chain = chain_of(scope);
        let from_seq = std::cmp::max(from_seq, 1);
        let mut tx = self.read_snapshot(scope).await?;
        let head = tx
            .fetch_optional(
                Query::select()
                    .column("seq")
                    .from(chain.tables.heads)
                    .and_where(Expr::col(chain.tables.key).eq(chain.key)),
            )
            .await?
            .map(|r| r.get::<i64>("seq"))
            .transpose()?;
        let checkpoints = load_checkpoints(&mut tx, &chain).await?;
        let (from_seq, anchor, prune) = chain_start(&mut tx, &chain, from_seq).await?;
        let mut verifier = ChainVerifier::new(chain.name.clone(), from_seq, anchor, checkpoints);
        let mut walked = Walked {
            parts: 1,
            by_stored_bytes: false,
        };
        if tx.postgres_conn().is_some() {
            let mut rows = crate::pgwalk::ChainRows {
                table: chain.tables.events,
                key_column: chain.tables.key,
                key: chain.key,
                by_stored_bytes: false,
                legacy: None,
            };
            rows.by_stored_bytes = crate::pgwalk::guarded(&mut tx, chain.tables.events).await?;
            if rows.by_stored_bytes {
                rows.legacy = crate::pgwalk::legacy_span(&mut tx, rows, from_seq).await?;
            }
            walked.by_stored_bytes = rows.by_stored_bytes;
            walked.parts =
                crate::pgwalk::walk_chain(&self.db, &mut tx, rows, head, split, &mut verifier)
                    .await?;
        } else {
            let mut after = from_seq - 1;
            loop {
                let (events, canonical) = walk_page(&mut tx, &chain, after, PAGE).await?;
                let n = events.len();
                if let Some(last) = events.last() {
                    after = last.seq;
                }
                let go_on = verifier.feed_all(&events, &canonical);
                if !go_on || (n as u64) < PAGE {
                    break;
                }
            }
        }
        let recorded = match &prune {
            Some(p) => prune_is_recorded(&mut tx, &chain, p).await?,
            None => true,
        };
        tx.commit().await?;
        let mut report = verifier.finish(head, Some(&self.signer));
        if let (Some(p), false, None) = (&prune, recorded, &report.problem) {
            report.problem = Some(crate::verify::ChainProblem::UnrecordedPrune {
                up_to_seq: p.up_to_seq,
            });
        }
        Ok((report, walked))
    }

    /// Retention: archives every event recorded before `before` to `archive`
    /// (an export with a checkpoint signed at its last position, checked
    /// before anything is deleted), records the prune in the chain itself (an
    /// `audit.pruned` event naming the archive's SHA-256), then deletes exactly
    /// the archived rows. Returns `None` when nothing is old enough. The chain
    /// keeps verifying from the prune's anchor.
    ///
    /// The export is checked as it is written to `archive` (memory stays
    /// bounded however long the range); if it does not verify, nothing is
    /// deleted and an error is returned, what was written being evidence
    /// rather than an archive. `archive` is written and flushed before any
    /// row is deleted, and a failed write or flush deletes nothing: give a
    /// writer whose `flush`
    /// makes the data durable (a file's `sync_all`) to keep the archive safe
    /// across a crash. [`AuditLog::prune_expired`] prunes by the tenant's own
    /// retention period.
    pub async fn prune(
        &self,
        ctx: &TenantContext,
        before: DateTime<Utc>,
        archive: &mut (dyn Write + Send),
    ) -> Result<Option<PruneReport>, AuditError> {
        let chain = chain_of(Scope::Tenant(ctx));
        let mut tx = self.db.begin(ctx).await?;
        let (start, _, _) = chain_start(&mut tx, &chain, 1).await?;
        let last_old = tx
            .fetch_optional(
                Query::select()
                    .columns(["seq", "hash"])
                    .from(chain.tables.events)
                    .and_where(Expr::col("tenant_id").eq(chain.key))
                    .and_where(Expr::col("occurred_at").lt(before))
                    .order_by("seq", Order::Desc)
                    .limit(1),
            )
            .await?;
        let Some(row) = last_old else {
            return Ok(None);
        };
        let up_to: i64 = row.get("seq")?;
        let up_to_hash = hex::encode(row.get::<Vec<u8>>("hash")?);
        if up_to < start {
            return Ok(None);
        }
        // A checkpoint signed at the archive's last position.
        self.store_checkpoint(&mut tx, &chain, up_to, &up_to_hash)
            .await?;
        tx.commit().await?;

        // The archive is checked as it is written (as `verify_export` would
        // check the file) and hashed, in one pass: no more of it is held
        // than a batch of lines.
        let mut checked = crate::offline::CheckedWriter::new(archive);
        let summary = self.export(ctx, start, Some(up_to), &mut checked).await?;
        checked.flush()?;
        let (check, archive_sha256) = checked.finish(Some(&self.signer))?;
        if !check.is_valid() || check.checkpoint_seq != Some(up_to) {
            return Err(AuditError::Corrupt(format!(
                "refusing to prune a chain that does not verify: {:?}",
                check.problem
            )));
        }

        let mut tx = self.db.begin(ctx).await?;
        let event =
            AuditEvent::new(PRUNE_ACTION, Target::kind("audit_log")).details(serde_json::json!({
                "up_to_seq": up_to,
                "anchor": up_to_hash,
                "archive_sha256": archive_sha256,
                "events": summary.events,
            }));
        append_in(&mut tx, Scope::Tenant(ctx), vec![event]).await?;
        tx.execute(
            Query::insert()
                .into_table(PRUNES)
                .columns([
                    "tenant_id",
                    "up_to_seq",
                    "anchor_hash",
                    "archive_sha256",
                    "pruned_at",
                ])
                .values([
                    chain.key.into(),
                    up_to.into(),
                    unhex(&up_to_hash)?.into(),
                    unhex(&archive_sha256)?.into(),
                    tx.now().into(),
                ])
                .map_err(|e| AuditError::Corrupt(e.to_string()))?,
        )
        .await?;
        match tx.backend() {
            // The application role may not DELETE; a SECURITY DEFINER function
            // deletes exactly what a recorded prune covers.
            Backend::Postgres => {
                tx.fetch_optional(
                    Query::select().expr(Func::cust("saas_audit_prune").arg(chain.key).arg(up_to)),
                )
                .await?;
            }
            Backend::Sqlite => {
                tx.execute(
                    Query::delete()
                        .from_table(chain.tables.events)
                        .and_where(Expr::col("tenant_id").eq(chain.key))
                        .and_where(Expr::col("seq").lte(up_to)),
                )
                .await?;
            }
        }
        tx.commit().await?;
        Ok(Some(PruneReport {
            up_to_seq: up_to,
            events: summary.events,
            archive_sha256,
        }))
    }

    /// Writes positions `from_seq..=to_seq` (all when `to_seq` is `None`) as
    /// JSON lines: a header with the anchor hash, one line per event (personal
    /// data stays encrypted), then the newest checkpoint inside the range, so an
    /// auditor can verify the file offline with [`verify_export`](crate::verify_export).
    pub async fn export<'a>(
        &self,
        scope: impl Into<Scope<'a>>,
        from_seq: i64,
        to_seq: Option<i64>,
        out: &mut (dyn Write + Send),
    ) -> Result<ExportSummary, AuditError> {
        let scope = scope.into();
        let chain = chain_of(scope);
        let from_seq = std::cmp::max(from_seq, 1);
        let mut tx = self.read_snapshot(scope).await?;
        let (from_seq, anchor, _) = chain_start(&mut tx, &chain, from_seq).await?;
        let header = ExportHeader {
            format: "saas-audit-export".into(),
            version: 1,
            chain: chain.name.clone(),
            from_seq,
            anchor,
        };
        writeln!(
            out,
            "{}",
            serde_json::to_string(&header).map_err(|e| AuditError::Corrupt(e.to_string()))?
        )?;
        let mut written = 0u64;
        let mut last = None;
        let mut after = from_seq - 1;
        loop {
            let events = events_page(&mut tx, &chain, after, to_seq, PAGE).await?;
            for ev in &events {
                after = ev.seq;
                last = Some(ev.seq);
                writeln!(
                    out,
                    "{}",
                    serde_json::to_string(ev).map_err(|e| AuditError::Corrupt(e.to_string()))?
                )?;
                written += 1;
            }
            if (events.len() as u64) < PAGE {
                break;
            }
        }
        let checkpoint = load_checkpoints(&mut tx, &chain)
            .await?
            .into_iter()
            .filter(|c| c.seq >= from_seq && last.is_some_and(|l| c.seq <= l))
            .max_by_key(|c| c.seq);
        tx.commit().await?;
        let checkpoint_seq = checkpoint.as_ref().map(|c| c.seq);
        if let Some(checkpoint) = checkpoint {
            let line = ExportLine::Checkpoint { checkpoint };
            writeln!(
                out,
                "{}",
                serde_json::to_string(&line).map_err(|e| AuditError::Corrupt(e.to_string()))?
            )?;
        }
        out.flush()?;
        Ok(ExportSummary {
            events: written,
            checkpoint_seq,
        })
    }
}

/// Appends `events` to the chain of `scope` inside `tx` (see [`AuditLog::append_batch`]).
pub(crate) async fn append_in(
    tx: &mut Tx,
    scope: Scope<'_>,
    events: Vec<AuditEvent>,
) -> Result<Vec<Receipt>, AuditError> {
    for e in &events {
        e.validate()?;
    }
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let chain = chain_of(scope);
    if tx.scope() != chain.db_scope {
        return Err(AuditError::ScopeMismatch(
            "the transaction is not open for this chain",
        ));
    }
    let (actor, correlation_id) = actor_of(scope);
    let default_subject = match scope {
        Scope::Tenant(ctx) => ctx.principal().user_id().map(|u| u.as_uuid()),
        Scope::Platform(_) => None,
    };
    let (mut seq, mut prev) = lock_head(tx, &chain).await?;
    let now = tx.now();
    let mut keys: HashMap<Uuid, Vec<u8>> = HashMap::new();
    let mut stored = Vec::with_capacity(events.len());
    for e in events {
        let (subject_id, personal) = if e.personal.is_empty() {
            (None, None)
        } else {
            let Scope::Tenant(_) = scope else {
                return Err(AuditError::Invalid(
                    "the platform chain takes no personal data".into(),
                ));
            };
            let subject = e
                .subject
                .or(default_subject)
                .ok_or_else(|| AuditError::Invalid("personal data needs a data subject".into()))?;
            let key = match keys.get(&subject) {
                Some(k) => k.clone(),
                None => {
                    let k = subject_key(tx, &chain, subject, now).await?;
                    keys.insert(subject, k.clone());
                    k
                }
            };
            let plain = serde_json::to_vec(&e.personal)
                .map_err(|_| AuditError::Invalid("unserializable personal data".into()))?;
            if plain.len() > crate::event::MAX_PERSONAL_BYTES {
                return Err(AuditError::Invalid("personal data is too large".into()));
            }
            (
                Some(subject),
                Some(hex::encode(crypto::seal(&key, &plain)?)),
            )
        };
        seq += 1;
        let mut ev = StoredEvent {
            chain: chain.name.clone(),
            seq,
            id: Uuid::now_v7(),
            occurred_at: now,
            actor: actor.clone(),
            action: e.action,
            target: e.target,
            outcome: e.outcome,
            correlation_id: correlation_id.clone(),
            details: canonical_json(&e.details),
            subject_id,
            personal,
            prev_hash: prev.clone(),
            hash: String::new(),
        };
        // The bytes hashed are stored as they are (see migration 0005).
        let canonical = ev.canonical();
        ev.hash = hex::encode(Sha256::digest(&canonical));
        prev.clone_from(&ev.hash);
        stored.push((ev, canonical));
    }
    for chunk in stored.chunks(INSERT_CHUNK) {
        let mut insert = Query::insert();
        insert.into_table(chain.tables.events).columns(
            std::iter::once(chain.tables.key)
                .chain(EVENT_COLS)
                .chain([CANONICAL]),
        );
        for (ev, canonical) in chunk {
            let mut values = event_values(chain.key, ev)?;
            values.push(canonical.clone().into());
            insert
                .values(values.into_iter().map(Expr::val))
                .map_err(|e| AuditError::Corrupt(e.to_string()))?;
        }
        tx.execute(&insert).await?;
    }
    tx.execute(
        Query::update()
            .table(chain.tables.heads)
            .value("seq", seq)
            .value("hash", unhex(&prev)?)
            .and_where(Expr::col(chain.tables.key).eq(chain.key)),
    )
    .await?;
    Ok(stored
        .into_iter()
        .map(|(e, _)| Receipt {
            id: e.id,
            seq: e.seq,
            hash: e.hash,
        })
        .collect())
}

/// A recorded prune: positions up to `up_to_seq` were archived and deleted.
struct Prune {
    up_to_seq: i64,
    anchor: String,
}

/// Where a walk of the chain starts at or after `from_seq`: past the newest
/// prune, with the hash that precedes the first remaining position.
async fn chain_start(
    tx: &mut Tx,
    chain: &Chain,
    from_seq: i64,
) -> Result<(i64, String, Option<Prune>), AuditError> {
    let prune = if chain.tables.key == TENANT.key {
        tx.fetch_optional(
            Query::select()
                .columns(["up_to_seq", "anchor_hash"])
                .from(PRUNES)
                .and_where(Expr::col("tenant_id").eq(chain.key))
                .order_by("up_to_seq", Order::Desc)
                .limit(1),
        )
        .await?
        .map(|r| -> Result<Prune, AuditError> {
            Ok(Prune {
                up_to_seq: r.get("up_to_seq")?,
                anchor: hex::encode(r.get::<Vec<u8>>("anchor_hash")?),
            })
        })
        .transpose()?
    } else {
        None
    };
    if let Some(p) = &prune
        && from_seq <= p.up_to_seq + 1
    {
        let anchor = p.anchor.clone();
        return Ok((p.up_to_seq + 1, anchor, prune));
    }
    if from_seq == 1 {
        return Ok((1, hex::encode(GENESIS), prune));
    }
    let anchor = tx
        .fetch_optional(
            Query::select()
                .column("hash")
                .from(chain.tables.events)
                .and_where(Expr::col(chain.tables.key).eq(chain.key))
                .and_where(Expr::col("seq").eq(from_seq - 1)),
        )
        .await?
        .map(|r| r.get::<Vec<u8>>("hash").map(hex::encode))
        .transpose()?
        .unwrap_or_else(|| hex::encode(GENESIS));
    Ok((from_seq, anchor, prune))
}

/// Whether the chain itself carries the `audit.pruned` event that vouches for
/// this prune (a prune record planted outside the chain does not).
async fn prune_is_recorded(tx: &mut Tx, chain: &Chain, prune: &Prune) -> Result<bool, AuditError> {
    let rows = tx
        .fetch_all(
            Query::select()
                .column("details")
                .from(chain.tables.events)
                .and_where(Expr::col(chain.tables.key).eq(chain.key))
                .and_where(Expr::col("action").eq(PRUNE_ACTION))
                .and_where(Expr::col("seq").gt(prune.up_to_seq)),
        )
        .await?;
    for r in &rows {
        let details: serde_json::Value =
            serde_json::from_str(&r.get::<String>("details")?).unwrap_or_default();
        if details.get("up_to_seq").and_then(serde_json::Value::as_i64) == Some(prune.up_to_seq)
            && details.get("anchor").and_then(serde_json::Value::as_str)
                == Some(prune.anchor.as_str())
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Up to `limit` events of the chain after position `after` (and at most
/// `to`), oldest first: the one page read behind walks, exports and sinks.
async fn events_page(
    tx: &mut Tx,
    chain: &Chain,
    after: i64,
    to: Option<i64>,
    limit: u64,
) -> Result<Vec<StoredEvent>, AuditError> {
    page_rows(tx, chain, after, to, limit, &[])
        .await?
        .iter()
        .map(|r| event_from_row(&chain.name, r))
        .collect()
}

/// A page of the chain as the walk on SQLite reads it: the events, and the
/// bytes stored as each one's canonical form, if any.
async fn walk_page(
    tx: &mut Tx,
    chain: &Chain,
    after: i64,
    limit: u64,
) -> Result<(Vec<StoredEvent>, Vec<Option<Vec<u8>>>), AuditError> {
    let rows = page_rows(tx, chain, after, None, limit, &[CANONICAL]).await?;
    let mut events = Vec::with_capacity(rows.len());
    let mut canonical = Vec::with_capacity(rows.len());
    for r in &rows {
        events.push(event_from_row(&chain.name, r)?);
        canonical.push(r.get::<Option<Vec<u8>>>(CANONICAL)?);
    }
    Ok((events, canonical))
}

/// The rows behind [`events_page`], with `extra` columns besides.
async fn page_rows(
    tx: &mut Tx,
    chain: &Chain,
    after: i64,
    to: Option<i64>,
    limit: u64,
    extra: &[&'static str],
) -> Result<Vec<Row>, AuditError> {
    let mut sel = Query::select();
    sel.columns(EVENT_COLS.into_iter().chain(extra.iter().copied()))
        .from(chain.tables.events)
        .and_where(Expr::col(chain.tables.key).eq(chain.key))
        .and_where(Expr::col("seq").gt(after))
        .order_by("seq", Order::Asc)
        .limit(limit);
    if let Some(to) = to {
        sel.and_where(Expr::col("seq").lte(to));
    }
    Ok(tx.fetch_all(&sel).await?)
}

/// Locks the tenant's chain head in `tx` (creating it if need be): whatever
/// `tx` reads afterwards cannot change under a concurrent append.
pub(crate) async fn lock_tenant_head(tx: &mut Tx, ctx: &TenantContext) -> Result<(), AuditError> {
    lock_head(tx, &chain_of(Scope::Tenant(ctx)))
        .await
        .map(|_| ())
}

async fn lock_head(tx: &mut Tx, chain: &Chain) -> Result<(i64, String), AuditError> {
    tx.execute(
        Query::insert()
            .into_table(chain.tables.heads)
            .columns([chain.tables.key, "seq", "hash"])
            .values([chain.key.into(), 0i64.into(), GENESIS.to_vec().into()])
            .map_err(|e| AuditError::Corrupt(e.to_string()))?
            .on_conflict(OnConflict::column(chain.tables.key).do_nothing().to_owned()),
    )
    .await?;
    let row = tx
        .fetch_optional(
            Query::select()
                .columns(["seq", "hash"])
                .from(chain.tables.heads)
                .and_where(Expr::col(chain.tables.key).eq(chain.key))
                .lock(LockType::Update),
        )
        .await?
        .ok_or(AuditError::Corrupt("chain head vanished".into()))?;
    Ok((row.get("seq")?, hex::encode(row.get::<Vec<u8>>("hash")?)))
}

async fn existing_key(
    tx: &mut Tx,
    chain: &Chain,
    subject: Uuid,
) -> Result<Option<Vec<u8>>, AuditError> {
    Ok(tx
        .fetch_optional(
            Query::select()
                .column("key")
                .from(KEYS)
                .and_where(Expr::col("tenant_id").eq(chain.key))
                .and_where(Expr::col("subject_id").eq(subject)),
        )
        .await?
        .map(|r| r.get::<Vec<u8>>("key"))
        .transpose()?)
}

async fn subject_key(
    tx: &mut Tx,
    chain: &Chain,
    subject: Uuid,
    now: DateTime<Utc>,
) -> Result<Vec<u8>, AuditError> {
    if let Some(k) = existing_key(tx, chain, subject).await? {
        return Ok(k);
    }
    tx.execute(
        Query::insert()
            .into_table(KEYS)
            .columns(["tenant_id", "subject_id", "key", "created_at"])
            .values([
                chain.key.into(),
                subject.into(),
                crypto::new_key().into(),
                now.into(),
            ])
            .map_err(|e| AuditError::Corrupt(e.to_string()))?
            .on_conflict(
                OnConflict::columns(["tenant_id", "subject_id"])
                    .do_nothing()
                    .to_owned(),
            ),
    )
    .await?;
    existing_key(tx, chain, subject)
        .await?
        .ok_or(AuditError::Corrupt("subject key vanished".into()))
}

async fn load_checkpoints(tx: &mut Tx, chain: &Chain) -> Result<Vec<Checkpoint>, AuditError> {
    let rows = tx
        .fetch_all(
            Query::select()
                .columns(["seq", "hash", "signed_at", "key_id", "signature"])
                .from(chain.tables.checkpoints)
                .and_where(Expr::col(chain.tables.key).eq(chain.key))
                .order_by("seq", Order::Asc),
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(Checkpoint {
                chain: chain.name.clone(),
                seq: r.get("seq")?,
                hash: hex::encode(r.get::<Vec<u8>>("hash")?),
                signed_at: format_time(r.get("signed_at")?),
                key_id: r.get("key_id")?,
                signature: hex::encode(r.get::<Vec<u8>>("signature")?),
            })
        })
        .collect()
}

fn unhex(s: &str) -> Result<Vec<u8>, AuditError> {
    hex::decode(s).map_err(|_| AuditError::Corrupt("bad hex".into()))
}

fn event_values(key: Uuid, ev: &StoredEvent) -> Result<Vec<Value>, AuditError> {
    Ok(vec![
        key.into(),
        ev.seq.into(),
        ev.id.into(),
        ev.occurred_at.into(),
        ev.actor.kind.clone().into(),
        ev.actor.id.clone().into(),
        ev.actor.reason.clone().into(),
        ev.action.clone().into(),
        ev.target.kind.clone().into(),
        ev.target.id.clone().into(),
        ev.outcome.as_str().into(),
        ev.correlation_id.clone().into(),
        ev.details.clone().into(),
        ev.subject_id.into(),
        ev.personal.as_deref().map(unhex).transpose()?.into(),
        unhex(&ev.prev_hash)?.into(),
        unhex(&ev.hash)?.into(),
    ])
}

fn event_from_row(chain: &str, r: &Row) -> Result<StoredEvent, AuditError> {
    Ok(StoredEvent {
        chain: chain.to_owned(),
        seq: r.get("seq")?,
        id: r.get("id")?,
        occurred_at: r.get("occurred_at")?,
        actor: Actor {
            kind: r.get("actor_kind")?,
            id: r.get("actor_id")?,
            reason: r.get("actor_reason")?,
        },
        action: r.get("action")?,
        target: Target {
            kind: r.get("target_kind")?,
            id: r.get("target_id")?,
        },
        outcome: Outcome::parse(&r.get::<String>("outcome")?)?,
        correlation_id: r.get("correlation_id")?,
        details: r.get("details")?,
        subject_id: r.get("subject_id")?,
        personal: r.get::<Option<Vec<u8>>>("personal")?.map(hex::encode),
        prev_hash: hex::encode(r.get::<Vec<u8>>("prev_hash")?),
        hash: hex::encode(r.get::<Vec<u8>>("hash")?),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use saas_core::tenant::Tier;
    use saas_test_support::TestDb;

    use super::*;
    use crate::CheckpointSigner;

    /// saas-audit's migrations before the hashed bytes were kept.
    fn before_migration_5() -> [saas_core::db::MigrationSet; 2] {
        [
            saas_core::migrations(),
            saas_core::db::MigrationSet {
                component: "saas-audit",
                migrations: crate::MIGRATIONS.get(..4).unwrap(),
            },
        ]
    }

    /// Stores `n` events of `scope`'s chain as a database migrated only up
    /// to migration 4 holds them: no stored bytes.
    async fn store_as_before(mut tx: Tx, scope: Scope<'_>, n: i64) {
        let chain = chain_of(scope);
        let mut prev = hex::encode(GENESIS);
        let mut insert = Query::insert();
        insert
            .into_table(chain.tables.events)
            .columns(std::iter::once(chain.tables.key).chain(EVENT_COLS));
        for seq in 1..=n {
            let mut ev = StoredEvent {
                chain: chain.name.clone(),
                seq,
                id: Uuid::now_v7(),
                occurred_at: tx.now(),
                actor: Actor {
                    kind: "system".into(),
                    id: None,
                    reason: Some("stored before migration 5".into()),
                },
                action: "workspace.update".into(),
                target: Target::new("workspace", format!("w{seq}")),
                outcome: Outcome::Success,
                correlation_id: "old".into(),
                details: canonical_json(&serde_json::json!({ "n": seq, "text": "\"é\n" })),
                subject_id: None,
                personal: None,
                prev_hash: prev.clone(),
                hash: String::new(),
            };
            ev.hash = ev.compute_hash();
            prev.clone_from(&ev.hash);
            insert
                .values(
                    event_values(chain.key, &ev)
                        .unwrap()
                        .into_iter()
                        .map(Expr::val),
                )
                .unwrap();
        }
        tx.execute(&insert).await.unwrap();
        tx.execute(
            Query::insert()
                .into_table(chain.tables.heads)
                .columns([chain.tables.key, "seq", "hash"])
                .values_panic([chain.key.into(), n.into(), unhex(&prev).unwrap().into()]),
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }

    /// A database with events stored before migration 5 is migrated (on
    /// PostgreSQL its events tables rebuilt): every event is kept, the
    /// chains verify, new events are stored with their bytes, and the
    /// chains go on verifying across old and new.
    async fn upgraded(t: TestDb) {
        let ctx = t.tenant("old", Tier::Team).await;
        let p = t.platform();
        store_as_before(t.db.begin(&ctx).await.unwrap(), Scope::Tenant(&ctx), 7).await;
        store_as_before(
            t.db.begin_platform(&p).await.unwrap(),
            Scope::Platform(&p),
            3,
        )
        .await;
        saas_core::db::migrate(&t.db, &[saas_core::migrations(), crate::migrations()])
            .await
            .unwrap();
        let log = AuditLog::new(t.db.clone(), CheckpointSigner::new("k", &[3; 32]).unwrap());
        for i in 0..4 {
            log.record(
                &ctx,
                crate::AuditEvent::new("workspace.create", Target::new("workspace", i)),
            )
            .await
            .unwrap();
        }
        log.record(
            &p,
            crate::AuditEvent::new("tenant.create", Target::new("tenant", 1)),
        )
        .await
        .unwrap();
        for (scope, events) in [(Scope::Tenant(&ctx), 11), (Scope::Platform(&p), 4)] {
            let (report, walked) = log
                .verify_split(scope, 1, crate::pgwalk::Split::for_this_machine())
                .await
                .unwrap();
            assert!(report.is_valid(), "{report:?}");
            assert_eq!(report.checked, events);
            assert_eq!(walked.by_stored_bytes, t.backend() == Backend::Postgres);
        }
        let page = log.query(&ctx, &AuditQuery::default()).await.unwrap();
        assert_eq!(page.records.len(), 11);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_stored_before_migration_5_are_kept_and_verify_after_it_on_postgres() {
        if let Some(t) = TestDb::postgres_with(&before_migration_5()).await {
            upgraded(t).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_stored_before_migration_5_are_kept_and_verify_after_it_on_sqlite() {
        upgraded(TestDb::sqlite_with(&before_migration_5()).await).await;
    }
}
