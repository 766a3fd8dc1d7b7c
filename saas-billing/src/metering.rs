//! Usage metering: idempotent event ingestion and the rollups reads use.
//!
//! An event is durable when [`Meter::record`] or [`Meter::record_batch`]
//! returns. Each event carries a client-chosen transaction id; the first event
//! under an id is counted, the same event sent again (or fifty times at once)
//! is a duplicate that changes nothing, and a *different* event under an id
//! already used is refused with [`BillingError::Conflict`]
//! (`idempotency_conflict`), writing nothing of its batch.
//!
//! Counting happens in the same transaction as the insert: only the events
//! the insert actually added update the rollups (`billing_usage`), one row per
//! metric, billing period and scope (the whole tenant, and each workspace).
//! Reading usage reads those rows, never the raw events, so it costs the same
//! whatever the number of events.
//!
//! Periods come from the tenant's billing cycle (its subscription's anchor,
//! or calendar months). An event whose period has ended lands in that period
//! while the period is inside the late grace window and not yet invoiced;
//! after that it lands in the open period, marked late.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use saas_core::db::sea_query::{Expr, ExprTrait, LockType, OnConflict, Query};
use saas_core::db::{Db, Tx};
use saas_core::{TenantContext, TenantId, WorkspaceId};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::types::Json;
use uuid::Uuid;

use crate::error::BillingError;
use crate::period::{Cycle, Period};

pub(crate) const EVENTS: &str = "billing_events";
pub(crate) const USAGE: &str = "billing_usage";
pub(crate) const UNIQUES: &str = "billing_usage_uniques";
pub(crate) const CLOSES: &str = "billing_period_closes";
pub(crate) const CYCLES: &str = "billing_cycles";

/// The most events one call takes.
pub const MAX_BATCH: usize = 10_000;
/// The longest transaction id.
pub const MAX_TRANSACTION_ID: usize = 255;
/// The largest serialised `properties` object, in bytes.
pub const MAX_PROPERTIES_BYTES: usize = 4096;
/// How far in the future an event's timestamp may be (clock skew).
pub const MAX_CLOCK_SKEW: Duration = Duration::minutes(5);
/// The default late grace window.
pub const DEFAULT_LATE_GRACE: Duration = Duration::hours(72);

/// How a metric aggregates its events over a period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    /// The number of events.
    Count,
    /// The sum of a value.
    Sum,
    /// The largest value.
    Max,
    /// The number of distinct values.
    UniqueCount,
    /// The value of the event with the latest timestamp.
    Latest,
}

/// A billable metric.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metric {
    /// Its code (plan charges and usage reads name it).
    pub code: String,
    /// What a person reads.
    pub name: String,
    /// The event code it reads (default: `code`).
    #[serde(default)]
    pub event: Option<String>,
    /// How it aggregates.
    pub aggregation: Aggregation,
    /// The property it aggregates (default for sum, max and latest: the
    /// event's quantity; required for unique counts). An event without the
    /// property does not count for this metric.
    #[serde(default)]
    pub field: Option<String>,
    /// An event counts only when each named property holds one of the values.
    #[serde(default)]
    pub filters: BTreeMap<String, Vec<String>>,
    /// A unit, for display.
    #[serde(default)]
    pub unit: Option<String>,
}

impl Metric {
    /// The event code this metric reads.
    #[must_use]
    pub fn event_code(&self) -> &str {
        self.event.as_deref().unwrap_or(&self.code)
    }
}

/// The billable metrics, loaded from TOML (`metrics.toml` ships the default).
#[derive(Debug, Clone, Serialize)]
pub struct MetricCatalogue {
    metrics: Vec<Metric>,
    #[serde(skip)]
    by_event: HashMap<String, Vec<usize>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricsFile {
    metrics: Vec<Metric>,
}

fn valid_code(code: &str) -> bool {
    (1..=64).contains(&code.len())
        && code
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

impl MetricCatalogue {
    /// The shipped catalogue.
    pub fn default_catalogue() -> Result<Self, BillingError> {
        Self::from_toml(include_str!("../metrics.toml"))
    }

    /// A catalogue from TOML text (`[[metrics]]` tables).
    pub fn from_toml(text: &str) -> Result<Self, BillingError> {
        let file: MetricsFile = toml::from_str(text)
            .map_err(|e| BillingError::Catalogue(format!("metrics catalogue: {e}")))?;
        Self::build(file.metrics)
    }

    /// Adds the metrics of `text` (TOML); a code already defined is an error.
    pub fn extend(mut self, text: &str) -> Result<Self, BillingError> {
        let more = Self::from_toml(text)?;
        self.metrics.extend(more.metrics);
        Self::build(self.metrics)
    }

    fn build(metrics: Vec<Metric>) -> Result<Self, BillingError> {
        let mut seen = BTreeSet::new();
        let mut by_event: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, m) in metrics.iter().enumerate() {
            let bad = |why: &str| BillingError::Catalogue(format!("metric {}: {why}", m.code));
            if !valid_code(&m.code) || !valid_code(m.event_code()) {
                return Err(bad("codes are 1 to 64 of a-z, 0-9, _ and -"));
            }
            if !seen.insert(m.code.clone()) {
                return Err(bad("defined twice"));
            }
            match (m.aggregation, &m.field) {
                (Aggregation::UniqueCount, None) => {
                    return Err(bad("a unique count needs a field"));
                }
                (Aggregation::Count, Some(_)) => {
                    return Err(bad("a count takes no field"));
                }
                _ => {}
            }
            by_event
                .entry(m.event_code().to_owned())
                .or_default()
                .push(i);
        }
        Ok(Self { metrics, by_event })
    }

    /// Every metric.
    #[must_use]
    pub fn metrics(&self) -> &[Metric] {
        &self.metrics
    }

    /// The metric with `code`.
    #[must_use]
    pub fn get(&self, code: &str) -> Option<&Metric> {
        self.metrics.iter().find(|m| m.code == code)
    }

    fn reading(&self, event_code: &str) -> impl Iterator<Item = &Metric> {
        self.by_event
            .get(event_code)
            .into_iter()
            .flatten()
            .filter_map(|i| self.metrics.get(*i))
    }

    /// True when some metric reads events of `code`.
    #[must_use]
    pub fn knows_event(&self, code: &str) -> bool {
        self.by_event.contains_key(code)
    }
}

/// One usage event as a client sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageEvent {
    /// The client's idempotency key: the same id means the same event.
    pub transaction_id: String,
    /// The event code (metrics read events by code).
    pub code: String,
    /// When it happened (default: when it was received).
    #[serde(default)]
    pub timestamp: Option<DateTime<Utc>>,
    /// The workspace it belongs to, if any.
    #[serde(default)]
    pub workspace_id: Option<WorkspaceId>,
    /// Who or what caused it (an opaque reference; personal data if it
    /// names a person).
    #[serde(default)]
    pub subject: Option<String>,
    /// Its quantity (default 1; never negative).
    #[serde(default)]
    pub quantity: Option<Decimal>,
    /// Further properties that metrics filter on and aggregate.
    #[serde(default)]
    pub properties: serde_json::Map<String, serde_json::Value>,
}

impl UsageEvent {
    /// An event of `code` under `transaction_id`, quantity 1, stamped on receipt.
    #[must_use]
    pub fn new(transaction_id: impl Into<String>, code: impl Into<String>) -> Self {
        Self {
            transaction_id: transaction_id.into(),
            code: code.into(),
            timestamp: None,
            workspace_id: None,
            subject: None,
            quantity: None,
            properties: serde_json::Map::new(),
        }
    }

    /// Sets the quantity.
    #[must_use]
    pub fn quantity(mut self, q: Decimal) -> Self {
        self.quantity = Some(q);
        self
    }

    /// Sets the timestamp.
    #[must_use]
    pub fn at(mut self, t: DateTime<Utc>) -> Self {
        self.timestamp = Some(t);
        self
    }

    /// Sets the workspace.
    #[must_use]
    pub fn workspace(mut self, w: WorkspaceId) -> Self {
        self.workspace_id = Some(w);
        self
    }

    /// Sets one property.
    #[must_use]
    pub fn property(mut self, key: impl Into<String>, value: serde_json::Value) -> Self {
        self.properties.insert(key.into(), value);
        self
    }

    /// The digest of the content the client chose (a defaulted timestamp is
    /// not part of it, so a retry without one is still the same event): the
    /// SHA-256 of a canonical JSON object (keys sorted at every level) of
    /// code, properties, quantity, subject, timestamp and workspace, written
    /// straight into one buffer.
    /// `quantity` is the normalized quantity as text, as it is stored.
    fn fingerprint(&self, quantity: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        let string = |out: &mut Vec<u8>, s: Option<&str>| match s {
            // Serializing a &str into a Vec cannot fail.
            Some(s) => {
                let _ = serde_json::to_writer(&mut *out, s);
            }
            None => out.extend_from_slice(b"null"),
        };
        out.extend_from_slice(b"{\"code\":");
        string(&mut out, Some(&self.code));
        out.extend_from_slice(b",\"properties\":");
        saas_audit::event::write_canonical_object(&self.properties, &mut out);
        out.extend_from_slice(b",\"quantity\":");
        string(&mut out, Some(quantity));
        out.extend_from_slice(b",\"subject\":");
        string(&mut out, self.subject.as_deref());
        out.extend_from_slice(b",\"timestamp\":");
        let timestamp = self.timestamp.map(saas_audit::event::format_time);
        string(&mut out, timestamp.as_deref());
        out.extend_from_slice(b",\"workspace_id\":");
        let workspace = self.workspace_id.map(|w| w.to_string());
        string(&mut out, workspace.as_deref());
        out.push(b'}');
        Sha256::digest(&out).to_vec()
    }
}

/// The narrow key an event is stored under: a digest of its tenant-scoped
/// transaction id.
fn event_key(transaction_id: &str) -> Uuid {
    let digest = Sha256::new()
        .chain_update(b"saas-billing event\0")
        .chain_update(transaction_id.as_bytes())
        .finalize();
    let mut bytes = [0u8; 16];
    for (b, d) in bytes.iter_mut().zip(digest.iter()) {
        *b = *d;
    }
    Uuid::from_bytes(bytes)
}

/// What happened to one event of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventStatus {
    /// Stored and counted now.
    Counted,
    /// Already stored under its transaction id: not counted again.
    Duplicate,
}

/// The receipt for one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventReceipt {
    /// The event's transaction id.
    pub transaction_id: String,
    /// Counted now, or a duplicate.
    pub status: EventStatus,
    /// The start of the period it counts in (for a duplicate, as first stored).
    pub period_start: DateTime<Utc>,
    /// True when it arrived after its period closed and counts in a later one.
    pub late: bool,
}

/// The receipt for a call: every event is durable when it is returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BatchReceipt {
    /// Events counted by this call.
    pub counted: u64,
    /// Events that were already stored.
    pub duplicates: u64,
    /// Counted events that arrived late.
    pub late: u64,
    /// One receipt per event, in the order sent.
    pub events: Vec<EventReceipt>,
}

/// A metric's usage in a period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MetricUsage {
    /// The metric.
    pub metric: String,
    /// Its aggregation.
    pub aggregation: Aggregation,
    /// The aggregated value.
    pub value: Decimal,
    /// Events counted.
    pub events: u64,
    /// Of which late events (from earlier periods).
    pub late_events: u64,
}

/// Usage for a tenant (or one workspace) in one period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageReport {
    /// The period.
    pub period: Period,
    /// The workspace, when the report is for one.
    pub workspace_id: Option<WorkspaceId>,
    /// Every metric of the catalogue (or the one asked for).
    pub metrics: Vec<MetricUsage>,
}

/// Which usage to read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// The period containing this instant (default: now).
    #[serde(default)]
    pub at: Option<DateTime<Utc>>,
    /// One metric (default: all).
    #[serde(default)]
    pub metric: Option<String>,
    /// One workspace (default: the whole tenant).
    #[serde(default)]
    pub workspace_id: Option<WorkspaceId>,
}

/// Records usage events and reads usage.
#[derive(Debug, Clone)]
pub struct Meter {
    db: Db,
    metrics: Arc<MetricCatalogue>,
    late_grace: Duration,
}

/// One validated event, ready to store.
struct Prepared {
    index: usize,
    key: Uuid,
    quantity: Decimal,
    /// `quantity` normalized, as text: what is stored and fingerprinted.
    quantity_text: String,
    fingerprint: Vec<u8>,
    occurred_at: DateTime<Utc>,
    period: Period,
    late: bool,
}

/// The change a batch makes to one rollup row.
#[derive(Default)]
struct Delta {
    period_end: Option<DateTime<Utc>>,
    events: i64,
    late_events: i64,
    sum: Decimal,
    max: Option<Decimal>,
    latest: Option<(DateTime<Utc>, Decimal)>,
    uniques: BTreeSet<String>,
}

/// A rollup row: metric code (borrowed from the catalogue), period start and
/// scope. Sorted, so every transaction locks rollup rows in the same order.
type GroupKey<'a> = (&'a str, DateTime<Utc>, Uuid);

impl Meter {
    /// A meter over `db` with `metrics`.
    #[must_use]
    pub fn new(db: Db, metrics: MetricCatalogue) -> Self {
        Self {
            db,
            metrics: Arc::new(metrics),
            late_grace: DEFAULT_LATE_GRACE,
        }
    }

    /// Sets how long after a period ends its late events still land in it.
    #[must_use]
    pub fn with_late_grace(mut self, grace: Duration) -> Self {
        self.late_grace = grace;
        self
    }

    /// The metric catalogue.
    #[must_use]
    pub fn metrics(&self) -> &MetricCatalogue {
        &self.metrics
    }

    /// Records one event; returns once it is durable.
    pub async fn record(
        &self,
        ctx: &TenantContext,
        event: UsageEvent,
    ) -> Result<EventReceipt, BillingError> {
        let receipt = self.record_batch(ctx, vec![event]).await?;
        receipt
            .events
            .into_iter()
            .next()
            .ok_or_else(|| BillingError::validation("events", "empty"))
    }

    /// Records a batch of events in one transaction; returns once they are
    /// durable. Invalid events or an idempotency conflict refuse the whole
    /// batch.
    pub async fn record_batch(
        &self,
        ctx: &TenantContext,
        events: Vec<UsageEvent>,
    ) -> Result<BatchReceipt, BillingError> {
        let mut tx = self.db.begin(ctx).await?;
        let receipt = self.record_in(&mut tx, ctx, &events).await?;
        tx.commit().await?;
        Ok(receipt)
    }

    /// Records events inside the caller's transaction (so an action and its
    /// usage commit or roll back together).
    pub async fn record_in(
        &self,
        tx: &mut Tx,
        ctx: &TenantContext,
        events: &[UsageEvent],
    ) -> Result<BatchReceipt, BillingError> {
        if events.is_empty() {
            return Err(BillingError::validation("events", "at least one event"));
        }
        if events.len() > MAX_BATCH {
            return Err(BillingError::validation(
                "events",
                format!("at most {MAX_BATCH} events per call"),
            ));
        }
        let tenant = ctx.tenant();
        let now = tx.now();
        for (i, e) in events.iter().enumerate() {
            self.validate(i, e, now)?;
        }
        check_workspaces(tx, events).await?;
        let cycle = cycle_in(tx, tenant).await?;
        let current = cycle.period_at(now)?;

        // Place each event in its period.
        let mut periods = BTreeSet::new();
        let mut placed = Vec::with_capacity(events.len());
        for (i, e) in events.iter().enumerate() {
            let t = e.timestamp.unwrap_or(now);
            let p = cycle.period_at(t)?;
            periods.insert(p.start);
            placed.push((i, t, p));
        }
        let closed = closed_periods(tx, tenant, &periods).await?;
        let mut prepared = Vec::with_capacity(events.len());
        let mut first_of_key: HashMap<Uuid, usize> = HashMap::new();
        for (i, t, p) in placed {
            let Some(e) = events.get(i) else { continue };
            let (period, late) = if p.start > current.start {
                (current, false)
            } else if p.start < current.start
                && (closed.contains(&p.start) || now >= p.end + self.late_grace)
            {
                (current, true)
            } else {
                (p, false)
            };
            let quantity = e.quantity.unwrap_or(Decimal::ONE);
            let quantity_text = quantity.normalize().to_string();
            let key = event_key(&e.transaction_id);
            let fingerprint = e.fingerprint(&quantity_text);
            if let Some(first) = first_of_key.get(&key) {
                let same = prepared
                    .get(*first)
                    .is_some_and(|f: &Prepared| f.fingerprint == fingerprint);
                if !same {
                    return Err(conflict(&[e.transaction_id.as_str()]));
                }
            } else {
                first_of_key.insert(key, prepared.len());
            }
            prepared.push(Prepared {
                index: i,
                key,
                quantity,
                quantity_text,
                fingerprint,
                occurred_at: t,
                period,
                late,
            });
        }

        let inserted = insert_events(tx, tenant, events, &prepared, &first_of_key, now).await?;
        let existing = existing_events(tx, tenant, &prepared, &inserted).await?;

        let mut receipts = Vec::with_capacity(events.len());
        let mut deltas: BTreeMap<GroupKey, Delta> = BTreeMap::new();
        let (mut counted, mut duplicates, mut late) = (0u64, 0u64, 0u64);
        let mut conflicts = Vec::new();
        for (n, p) in prepared.iter().enumerate() {
            let Some(e) = events.get(p.index) else {
                continue;
            };
            let is_first = first_of_key.get(&p.key) == Some(&n);
            if is_first && inserted.contains(&p.key) {
                counted += 1;
                late += u64::from(p.late);
                self.accumulate(&mut deltas, e, p)?;
                receipts.push(EventReceipt {
                    transaction_id: e.transaction_id.clone(),
                    status: EventStatus::Counted,
                    period_start: p.period.start,
                    late: p.late,
                });
                continue;
            }
            let stored = if inserted.contains(&p.key) {
                Some((
                    e.transaction_id.clone(),
                    p.fingerprint.clone(),
                    p.period.start,
                    p.late,
                ))
            } else {
                existing.get(&p.key).cloned()
            };
            match stored {
                Some((txn, fp, start, was_late))
                    if txn == e.transaction_id && fp == p.fingerprint =>
                {
                    duplicates += 1;
                    receipts.push(EventReceipt {
                        transaction_id: e.transaction_id.clone(),
                        status: EventStatus::Duplicate,
                        period_start: start,
                        late: was_late,
                    });
                }
                _ => conflicts.push(e.transaction_id.as_str()),
            }
        }
        if !conflicts.is_empty() {
            return Err(conflict(&conflicts));
        }
        apply_deltas(tx, tenant, deltas, now).await?;
        Ok(BatchReceipt {
            counted,
            duplicates,
            late,
            events: receipts,
        })
    }

    fn validate(&self, i: usize, e: &UsageEvent, now: DateTime<Utc>) -> Result<(), BillingError> {
        let field = |f: &str| format!("events[{i}].{f}");
        if e.transaction_id.is_empty()
            || e.transaction_id.len() > MAX_TRANSACTION_ID
            || e.transaction_id.chars().any(char::is_control)
        {
            return Err(BillingError::validation(
                field("transaction_id"),
                format!("1 to {MAX_TRANSACTION_ID} bytes without control characters"),
            ));
        }
        if !self.metrics.knows_event(&e.code) {
            return Err(BillingError::validation(
                field("code"),
                format!("no metric reads events of code {:?}", truncate(&e.code)),
            ));
        }
        if let Some(q) = e.quantity
            && (q.is_sign_negative() && !q.is_zero())
        {
            return Err(BillingError::validation(
                field("quantity"),
                "must not be negative",
            ));
        }
        if let Some(t) = e.timestamp
            && t > now + MAX_CLOCK_SKEW
        {
            return Err(BillingError::validation(
                field("timestamp"),
                "is in the future",
            ));
        }
        if let Some(s) = &e.subject
            && (s.is_empty() || s.len() > MAX_TRANSACTION_ID)
        {
            return Err(BillingError::validation(
                field("subject"),
                format!("1 to {MAX_TRANSACTION_ID} bytes"),
            ));
        }
        let size = serde_json::to_vec(&e.properties).map_or(usize::MAX, |v| v.len());
        if size > MAX_PROPERTIES_BYTES {
            return Err(BillingError::validation(
                field("properties"),
                format!("at most {MAX_PROPERTIES_BYTES} bytes"),
            ));
        }
        for m in self.metrics.reading(&e.code) {
            if let Some(f) = &m.field
                && m.aggregation != Aggregation::UniqueCount
                && let Some(v) = e.properties.get(f)
                && number(v).is_none()
            {
                return Err(BillingError::validation(
                    field(&format!("properties.{f}")),
                    format!("metric {} needs a non-negative number", m.code),
                ));
            }
        }
        Ok(())
    }

    fn accumulate<'m>(
        &'m self,
        deltas: &mut BTreeMap<GroupKey<'m>, Delta>,
        e: &UsageEvent,
        p: &Prepared,
    ) -> Result<(), BillingError> {
        let prop = |k: &str| e.properties.get(k).map(property_text);
        for m in self.metrics.reading(&e.code) {
            let passes = m
                .filters
                .iter()
                .all(|(k, allowed)| prop(k).is_some_and(|v| allowed.contains(&v)));
            if !passes {
                continue;
            }
            let value = match (&m.field, m.aggregation) {
                (_, Aggregation::Count) => Some(Value::Number(Decimal::ONE)),
                (Some(f), Aggregation::UniqueCount) => prop(f).map(Value::Text),
                (Some(f), _) => e.properties.get(f).and_then(number).map(Value::Number),
                (None, _) => Some(Value::Number(p.quantity)),
            };
            let Some(value) = value else { continue };
            let scopes = [Some(Uuid::nil()), e.workspace_id.map(|w| w.as_uuid())];
            for scope in scopes.into_iter().flatten() {
                let d = deltas
                    .entry((m.code.as_str(), p.period.start, scope))
                    .or_default();
                d.period_end = Some(p.period.end);
                d.events += 1;
                d.late_events += i64::from(p.late);
                match (&value, m.aggregation) {
                    (Value::Text(s), _) => {
                        d.uniques.insert(s.clone());
                    }
                    (Value::Number(n), Aggregation::Count | Aggregation::Sum) => {
                        d.sum = d.sum.checked_add(*n).ok_or_else(too_large)?;
                    }
                    (Value::Number(n), Aggregation::Max) => {
                        d.max = Some(d.max.map_or(*n, |m| m.max(*n)));
                    }
                    (Value::Number(n), Aggregation::Latest) => {
                        if d.latest.is_none_or(|(at, _)| p.occurred_at >= at) {
                            d.latest = Some((p.occurred_at, *n));
                        }
                    }
                    (Value::Number(_), Aggregation::UniqueCount) => {}
                }
            }
        }
        Ok(())
    }

    /// Usage of `ctx`'s tenant (or one workspace) in a period, from the rollups.
    pub async fn usage(
        &self,
        ctx: &TenantContext,
        query: &UsageQuery,
    ) -> Result<UsageReport, BillingError> {
        if let Some(m) = &query.metric
            && self.metrics.get(m).is_none()
        {
            return Err(BillingError::validation(
                "metric",
                format!("unknown metric {:?}", truncate(m)),
            ));
        }
        let mut tx = self.db.read(ctx).await?;
        if let Some(w) = query.workspace_id {
            saas_core::workspace::get_in(&mut tx, w)
                .await?
                .ok_or(BillingError::NotFound {
                    entity: "workspace",
                })?;
        }
        let at = query.at.unwrap_or_else(|| tx.now());
        let period = cycle_in(&mut tx, ctx.tenant()).await?.period_at(at)?;
        let scope = query.workspace_id.map_or(Uuid::nil(), |w| w.as_uuid());
        let stored = read_usage(&mut tx, ctx.tenant(), period.start, scope).await?;
        tx.commit().await?;
        let metrics = self
            .metrics
            .metrics()
            .iter()
            .filter(|m| query.metric.as_ref().is_none_or(|c| *c == m.code))
            .map(|m| {
                let (value, events, late_events) = stored.get(&m.code).cloned().unwrap_or_default();
                MetricUsage {
                    metric: m.code.clone(),
                    aggregation: m.aggregation,
                    value,
                    events,
                    late_events,
                }
            })
            .collect();
        Ok(UsageReport {
            period,
            workspace_id: query.workspace_id,
            metrics,
        })
    }

    /// Every metric's tenant-wide value in the period starting at `start`,
    /// inside `tx` (rating reads it while closing a period).
    pub async fn period_usage_in(
        &self,
        tx: &mut Tx,
        tenant: TenantId,
        start: DateTime<Utc>,
    ) -> Result<BTreeMap<String, Decimal>, BillingError> {
        let stored = read_usage(tx, tenant, start, Uuid::nil()).await?;
        Ok(stored.into_iter().map(|(k, (v, _, _))| (k, v)).collect())
    }
}

/// Periodic quotas follow the tenant's billing cycle, so the monthly requests
/// quota and the invoice count the same period.
#[async_trait::async_trait]
impl saas_policy::QuotaPeriods for Meter {
    async fn period(
        &self,
        tx: &mut Tx,
        tenant: TenantId,
        now: DateTime<Utc>,
    ) -> Result<(DateTime<Utc>, DateTime<Utc>), saas_policy::PolicyError> {
        let period = async {
            let p = cycle_in(tx, tenant).await?.period_at(now)?;
            Ok::<_, BillingError>((p.start, p.end))
        };
        period.await.map_err(|e| match e {
            BillingError::Core(c) => saas_policy::PolicyError::Core(c),
            other => saas_policy::PolicyError::Engine(other.to_string()),
        })
    }
}

enum Value {
    Number(Decimal),
    Text(String),
}

fn too_large() -> BillingError {
    BillingError::validation("quantity", "the total is too large")
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

fn conflict(ids: &[&str]) -> BillingError {
    let shown: Vec<String> = ids.iter().take(10).map(|s| truncate(s)).collect();
    BillingError::Conflict {
        code: "idempotency_conflict",
        message: format!(
            "a different event was already recorded under transaction id {}",
            shown.join(", ")
        ),
    }
}

/// A property as text, for filters and unique counts.
fn property_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A non-negative number from a JSON number or numeric string.
fn number(v: &serde_json::Value) -> Option<Decimal> {
    let d = match v {
        serde_json::Value::Number(n) => Decimal::from_str(&n.to_string())
            .or_else(|_| Decimal::from_scientific(&n.to_string()))
            .ok()?,
        serde_json::Value::String(s) => Decimal::from_str(s).ok()?,
        _ => return None,
    };
    (!d.is_sign_negative() || d.is_zero()).then_some(d)
}

async fn check_workspaces(tx: &mut Tx, events: &[UsageEvent]) -> Result<(), BillingError> {
    let ids: BTreeSet<WorkspaceId> = events.iter().filter_map(|e| e.workspace_id).collect();
    for id in ids {
        if saas_core::workspace::get_in(tx, id).await?.is_none() {
            return Err(BillingError::NotFound {
                entity: "workspace",
            });
        }
    }
    Ok(())
}

/// The tenant's billing cycle (calendar months without a subscription).
pub(crate) async fn cycle_in(tx: &mut Tx, tenant: TenantId) -> Result<Cycle, BillingError> {
    let row = tx
        .fetch_optional(
            Query::select()
                .columns(["anchor", "months"])
                .from(CYCLES)
                .and_where(Expr::col("tenant_id").eq(tenant)),
        )
        .await?;
    Ok(match row {
        Some(r) => Cycle {
            anchor: r.get("anchor")?,
            months: u32::try_from(r.get::<i32>("months")?).unwrap_or(1),
        },
        None => Cycle::calendar_monthly(),
    })
}

async fn closed_periods(
    tx: &mut Tx,
    tenant: TenantId,
    starts: &BTreeSet<DateTime<Utc>>,
) -> Result<BTreeSet<DateTime<Utc>>, BillingError> {
    if starts.is_empty() {
        return Ok(BTreeSet::new());
    }
    let rows = tx
        .fetch_all(
            Query::select()
                .column("period_start")
                .from(CLOSES)
                .and_where(Expr::col("tenant_id").eq(tenant))
                .and_where(Expr::col("period_start").is_in(starts.iter().copied())),
        )
        .await?;
    rows.iter()
        .map(|r| r.get("period_start").map_err(BillingError::from))
        .collect()
}

/// Rows per INSERT on SQLite: under its bind limit.
const ROWS_PER_INSERT: usize = 1_000;

/// Inserts the first event of each key; returns the keys actually inserted
/// (the others were already stored, possibly by a concurrent batch).
async fn insert_events(
    tx: &mut Tx,
    tenant: TenantId,
    events: &[UsageEvent],
    prepared: &[Prepared],
    first_of_key: &HashMap<Uuid, usize>,
    now: DateTime<Utc>,
) -> Result<BTreeSet<Uuid>, BillingError> {
    // Insert in key order, so concurrent batches that share keys take their
    // locks in the same order and cannot deadlock.
    let mut firsts: Vec<(&Prepared, &UsageEvent)> = prepared
        .iter()
        .enumerate()
        .filter(|(n, p)| first_of_key.get(&p.key) == Some(n))
        .filter_map(|(_, p)| Some((p, events.get(p.index)?)))
        .collect();
    firsts.sort_by_key(|(p, _)| p.key);
    if let Some(conn) = tx.postgres_conn() {
        return insert_events_postgres(conn, tenant, &firsts, now).await;
    }
    let mut inserted = BTreeSet::new();
    for chunk in firsts.chunks(ROWS_PER_INSERT) {
        let mut q = Query::insert();
        q.into_table(EVENTS).columns([
            "tenant_id",
            "key",
            "transaction_id",
            "code",
            "workspace_id",
            "subject",
            "quantity",
            "properties",
            "occurred_at",
            "received_at",
            "period_start",
            "late",
            "fingerprint",
        ]);
        for (p, e) in chunk {
            q.values([
                tenant.into(),
                p.key.into(),
                e.transaction_id.clone().into(),
                e.code.clone().into(),
                e.workspace_id.into(),
                e.subject.clone().into(),
                p.quantity_text.clone().into(),
                serde_json::Value::Object(e.properties.clone()).into(),
                p.occurred_at.into(),
                now.into(),
                p.period.start.into(),
                p.late.into(),
                p.fingerprint.clone().into(),
            ])
            .map_err(|e| BillingError::Catalogue(e.to_string()))?;
        }
        q.on_conflict(
            OnConflict::columns(["tenant_id", "key"])
                .do_nothing()
                .to_owned(),
        )
        .returning_col("key");
        for row in tx.fetch_all(&q).await? {
            inserted.insert(row.get::<Uuid>("key")?);
        }
    }
    Ok(inserted)
}

/// PostgreSQL: the whole batch in one statement, each column bound as one
/// array and unpacked by `UNNEST`. The text is the same whatever the batch
/// size, so it is parsed once per connection, and 13 values are bound instead
/// of 13 per event. The tail is empty for the first, optimistic attempt (a
/// plain insert: a batch of new events pays no speculative insertion and
/// sends nothing back) and `ON CONFLICT ... DO NOTHING RETURNING key` for the
/// attempt after a unique violation.
/// Neither reads the table, so no cached plan can turn into a scan (an
/// anti-join did: docs/PERFORMANCE.md).
macro_rules! insert_events_pg {
    ($tail:literal) => {
        concat!(
            "INSERT INTO billing_events (tenant_id, key, transaction_id, code, workspace_id, \
                subject, quantity, properties, occurred_at, received_at, period_start, late, \
                fingerprint) \
            SELECT $1, e.key, e.transaction_id, e.code, e.workspace_id, e.subject, e.quantity, \
                e.properties, e.occurred_at, $2, e.period_start, e.late, e.fingerprint \
            FROM UNNEST($3::uuid[], $4::text[], $5::text[], $6::uuid[], $7::text[], $8::text[], \
                $9::jsonb[], $10::timestamptz[], $11::timestamptz[], $12::boolean[], \
                $13::bytea[]) \
                AS e (key, transaction_id, code, workspace_id, subject, quantity, properties, \
                    occurred_at, period_start, late, fingerprint) ",
            $tail
        )
    };
}
/// Every event of the batch is new (the common case): a plain insert, which
/// inserts every row or fails.
const INSERT_NEW_EVENTS_PG: &str = insert_events_pg!("");
/// Some event was already stored: insert the others, naming them.
const INSERT_EVENTS_PG: &str =
    insert_events_pg!("ON CONFLICT (tenant_id, key) DO NOTHING RETURNING key");

/// PostgreSQL ingestion: hold the tenant row `FOR KEY SHARE` once per batch
/// (in place of a foreign key checked, and the row locked, once per event; a
/// purge of the tenant waits for the batch, and its trigger deletes the
/// events), then insert the batch in one statement (two when some event was
/// already stored).
async fn insert_events_postgres(
    conn: &mut sqlx::PgConnection,
    tenant: TenantId,
    rows: &[(&Prepared, &UsageEvent)],
    now: DateTime<Utc>,
) -> Result<BTreeSet<Uuid>, BillingError> {
    let held: Option<i32> = sqlx::query_scalar("SELECT 1 FROM tenants WHERE id = $1 FOR KEY SHARE")
        .bind(tenant.as_uuid())
        .fetch_optional(&mut *conn)
        .await?;
    if held.is_none() {
        return Err(saas_core::CoreError::NotFound { entity: "tenant" }.into());
    }
    let (prepared, events): (Vec<&Prepared>, Vec<&UsageEvent>) = rows.iter().copied().unzip();
    let keys: Vec<Uuid> = prepared.iter().map(|p| p.key).collect();
    let transaction_ids: Vec<&str> = events.iter().map(|e| e.transaction_id.as_str()).collect();
    let codes: Vec<&str> = events.iter().map(|e| e.code.as_str()).collect();
    let workspaces: Vec<Option<Uuid>> = events
        .iter()
        .map(|e| e.workspace_id.map(|w| w.as_uuid()))
        .collect();
    let subjects: Vec<Option<&str>> = events.iter().map(|e| e.subject.as_deref()).collect();
    let quantities: Vec<&str> = prepared.iter().map(|p| p.quantity_text.as_str()).collect();
    let properties: Vec<Json<&serde_json::Map<String, serde_json::Value>>> =
        events.iter().map(|e| Json(&e.properties)).collect();
    let occurred: Vec<DateTime<Utc>> = prepared.iter().map(|p| p.occurred_at).collect();
    let starts: Vec<DateTime<Utc>> = prepared.iter().map(|p| p.period.start).collect();
    let late: Vec<bool> = prepared.iter().map(|p| p.late).collect();
    let fingerprints: Vec<&[u8]> = prepared.iter().map(|p| p.fingerprint.as_slice()).collect();
    let insert = |sql: &'static str| {
        sqlx::query(sql)
            .bind(tenant.as_uuid())
            .bind(now)
            .bind(&keys)
            .bind(&transaction_ids)
            .bind(&codes)
            .bind(&workspaces)
            .bind(&subjects)
            .bind(&quantities)
            .bind(&properties)
            .bind(&occurred)
            .bind(&starts)
            .bind(&late)
            .bind(&fingerprints)
    };
    // Optimistic first: a batch of new events is a plain insert. A unique
    // violation (an event already stored, or stored meanwhile by a concurrent
    // batch, which this insert waited for) undoes it to the savepoint, and
    // the batch goes again with `ON CONFLICT DO NOTHING`.
    sqlx::query("SAVEPOINT billing_ingest")
        .execute(&mut *conn)
        .await?;
    match insert(INSERT_NEW_EVENTS_PG).execute(&mut *conn).await {
        Ok(_) => {
            sqlx::query("RELEASE SAVEPOINT billing_ingest")
                .execute(&mut *conn)
                .await?;
            Ok(keys.iter().copied().collect())
        }
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            sqlx::query("ROLLBACK TO SAVEPOINT billing_ingest")
                .execute(&mut *conn)
                .await?;
            let rows = insert(INSERT_EVENTS_PG).fetch_all(&mut *conn).await?;
            sqlx::query("RELEASE SAVEPOINT billing_ingest")
                .execute(&mut *conn)
                .await?;
            rows.iter()
                .map(|r| sqlx::Row::try_get::<Uuid, _>(r, 0).map_err(BillingError::from))
                .collect()
        }
        Err(e) => Err(e.into()),
    }
}

type Stored = (String, Vec<u8>, DateTime<Utc>, bool);
/// A stored event as PostgreSQL returns it: its key, then [`Stored`].
type StoredRow = (Uuid, String, Vec<u8>, DateTime<Utc>, bool);

async fn existing_events(
    tx: &mut Tx,
    tenant: TenantId,
    prepared: &[Prepared],
    inserted: &BTreeSet<Uuid>,
) -> Result<HashMap<Uuid, Stored>, BillingError> {
    let missing: BTreeSet<Uuid> = prepared
        .iter()
        .map(|p| p.key)
        .filter(|k| !inserted.contains(k))
        .collect();
    let keys: Vec<Uuid> = missing.into_iter().collect();
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    if let Some(conn) = tx.postgres_conn() {
        let rows: Vec<StoredRow> = sqlx::query_as(
            "SELECT key, transaction_id, fingerprint, period_start, late FROM billing_events \
             WHERE tenant_id = $1 AND key = ANY($2)",
        )
        .bind(tenant.as_uuid())
        .bind(keys)
        .fetch_all(conn)
        .await?;
        return Ok(rows
            .into_iter()
            .map(|(key, txn, fp, start, late)| (key, (txn, fp, start, late)))
            .collect());
    }
    let mut out = HashMap::new();
    for chunk in keys.chunks(ROWS_PER_INSERT) {
        let rows = tx
            .fetch_all(
                Query::select()
                    .columns([
                        "key",
                        "transaction_id",
                        "fingerprint",
                        "period_start",
                        "late",
                    ])
                    .from(EVENTS)
                    .and_where(Expr::col("tenant_id").eq(tenant))
                    .and_where(Expr::col("key").is_in(chunk.iter().copied())),
            )
            .await?;
        for r in rows {
            out.insert(
                r.get::<Uuid>("key")?,
                (
                    r.get("transaction_id")?,
                    r.get("fingerprint")?,
                    r.get("period_start")?,
                    r.get("late")?,
                ),
            );
        }
    }
    Ok(out)
}

fn parse_stored(v: &str) -> Result<Decimal, BillingError> {
    Decimal::from_str(v)
        .map_err(|_| BillingError::Catalogue("a stored usage value is corrupt".into()))
}

async fn apply_deltas(
    tx: &mut Tx,
    tenant: TenantId,
    deltas: BTreeMap<GroupKey<'_>, Delta>,
    now: DateTime<Utc>,
) -> Result<(), BillingError> {
    // BTreeMap order: every transaction locks rollup rows in the same order.
    for ((metric, start, scope), d) in deltas {
        let end = d.period_end.unwrap_or(start);
        tx.execute(
            Query::insert()
                .into_table(USAGE)
                .columns([
                    "tenant_id",
                    "metric",
                    "period_start",
                    "scope",
                    "period_end",
                    "value",
                    "events",
                    "late_events",
                    "updated_at",
                ])
                .values([
                    tenant.into(),
                    metric.into(),
                    start.into(),
                    scope.into(),
                    end.into(),
                    "0".into(),
                    0i64.into(),
                    0i64.into(),
                    now.into(),
                ])
                .map_err(|e| BillingError::Catalogue(e.to_string()))?
                .on_conflict(
                    OnConflict::columns(["tenant_id", "metric", "period_start", "scope"])
                        .do_nothing()
                        .to_owned(),
                ),
        )
        .await?;
        let row = tx
            .fetch_optional(
                Query::select()
                    .columns(["value", "events", "late_events", "last_at"])
                    .from(USAGE)
                    .and_where(Expr::col("tenant_id").eq(tenant))
                    .and_where(Expr::col("metric").eq(metric))
                    .and_where(Expr::col("period_start").eq(start))
                    .and_where(Expr::col("scope").eq(scope))
                    .lock(LockType::Update),
            )
            .await?
            .ok_or(BillingError::NotFound { entity: "usage" })?;
        let mut value = parse_stored(&row.get::<String>("value")?)?;
        let events: i64 = row.get("events")?;
        let late_events: i64 = row.get("late_events")?;
        let mut last_at: Option<DateTime<Utc>> = row.get("last_at")?;
        if !d.uniques.is_empty() {
            let mut new = 0i64;
            let values: Vec<String> = d.uniques.into_iter().collect();
            for chunk in values.chunks(ROWS_PER_INSERT) {
                let mut q = Query::insert();
                q.into_table(UNIQUES).columns([
                    "tenant_id",
                    "metric",
                    "period_start",
                    "scope",
                    "value",
                ]);
                for v in chunk {
                    q.values([
                        tenant.into(),
                        metric.into(),
                        start.into(),
                        scope.into(),
                        v.clone().into(),
                    ])
                    .map_err(|e| BillingError::Catalogue(e.to_string()))?;
                }
                q.on_conflict(
                    OnConflict::columns(["tenant_id", "metric", "period_start", "scope", "value"])
                        .do_nothing()
                        .to_owned(),
                )
                .returning_col("value");
                new += i64::try_from(tx.fetch_all(&q).await?.len()).unwrap_or(i64::MAX);
            }
            value = value
                .checked_add(Decimal::from(new))
                .ok_or_else(too_large)?;
        }
        value = value.checked_add(d.sum).ok_or_else(too_large)?;
        if let Some(m) = d.max {
            value = value.max(m);
        }
        if let Some((at, v)) = d.latest
            && last_at.is_none_or(|l| at >= l)
        {
            value = v;
            last_at = Some(at);
        }
        tx.execute(
            Query::update()
                .table(USAGE)
                .value("value", value.normalize().to_string())
                .value("events", events.saturating_add(d.events))
                .value("late_events", late_events.saturating_add(d.late_events))
                .value("last_at", last_at)
                .value("updated_at", now)
                .and_where(Expr::col("tenant_id").eq(tenant))
                .and_where(Expr::col("metric").eq(metric))
                .and_where(Expr::col("period_start").eq(start))
                .and_where(Expr::col("scope").eq(scope)),
        )
        .await?;
    }
    Ok(())
}

type StoredUsage = BTreeMap<String, (Decimal, u64, u64)>;

async fn read_usage(
    tx: &mut Tx,
    tenant: TenantId,
    start: DateTime<Utc>,
    scope: Uuid,
) -> Result<StoredUsage, BillingError> {
    let rows = tx
        .fetch_all(
            Query::select()
                .columns(["metric", "value", "events", "late_events"])
                .from(USAGE)
                .and_where(Expr::col("tenant_id").eq(tenant))
                .and_where(Expr::col("period_start").eq(start))
                .and_where(Expr::col("scope").eq(scope)),
        )
        .await?;
    let mut out = BTreeMap::new();
    for r in rows {
        let events = u64::try_from(r.get::<i64>("events")?).unwrap_or(0);
        let late = u64::try_from(r.get::<i64>("late_events")?).unwrap_or(0);
        out.insert(
            r.get::<String>("metric")?,
            (parse_stored(&r.get::<String>("value")?)?, events, late),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_metrics_load() {
        let c = MetricCatalogue::default_catalogue().unwrap();
        assert!(c.get("ai_requests").is_some());
        assert!(c.knows_event("storage"));
        assert_eq!(c.reading("ai_requests").count(), 2);
    }

    #[test]
    fn malformed_metrics_are_refused() {
        for bad in [
            "[[metrics]]\ncode = \"x\"\nname = \"x\"\naggregation = \"unique_count\"",
            "[[metrics]]\ncode = \"x\"\nname = \"x\"\naggregation = \"count\"\nfield = \"f\"",
            "[[metrics]]\ncode = \"X Y\"\nname = \"x\"\naggregation = \"count\"",
            "[[metrics]]\ncode = \"x\"\nname = \"x\"\naggregation = \"median\"",
        ] {
            assert!(MetricCatalogue::from_toml(bad).is_err(), "{bad}");
        }
        let dup = MetricCatalogue::default_catalogue()
            .unwrap()
            .extend("[[metrics]]\ncode = \"api_calls\"\nname = \"x\"\naggregation = \"count\"");
        assert!(dup.is_err());
    }

    /// The fingerprint as first computed (a `json!` object through
    /// `canonical_json`): stored events were fingerprinted with it.
    fn first_fingerprint(e: &UsageEvent, quantity: Decimal) -> Vec<u8> {
        let content = serde_json::json!({
            "code": e.code,
            "timestamp": e.timestamp.map(saas_audit::event::format_time),
            "workspace_id": e.workspace_id.map(|w| w.to_string()),
            "subject": e.subject,
            "quantity": quantity.normalize().to_string(),
            "properties": serde_json::Value::Object(e.properties.clone()),
        });
        Sha256::digest(saas_audit::event::canonical_json(&content).as_bytes()).to_vec()
    }

    #[test]
    fn fingerprints_match_the_first_form_so_stored_events_still_compare() {
        let at = chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 5, 1, 12, 30, 0).unwrap();
        let mut full = UsageEvent::new("t-1", "ai_requests")
            .at(at)
            .workspace(WorkspaceId::new())
            .property("model", serde_json::json!("small \"q\" \u{1}é"))
            .property("tokens", serde_json::json!(120))
            .property("nested", serde_json::json!({"b": [1.5, null], "a": true}));
        full.subject = Some("user:42".into());
        let cases = [
            (UsageEvent::new("t-0", "api_calls"), Decimal::ONE),
            (full, Decimal::from_str("2.500").unwrap()),
            (
                UsageEvent::new("t-2", "storage_gb").property("z", serde_json::json!(0)),
                Decimal::from_str("-0").unwrap(),
            ),
        ];
        for (e, q) in &cases {
            let text = q.normalize().to_string();
            assert_eq!(e.fingerprint(&text), first_fingerprint(e, *q), "{e:?}");
        }
    }

    #[test]
    fn a_retry_without_a_timestamp_has_the_same_fingerprint() {
        let e = UsageEvent::new("t1", "ai_requests").property("model", "small".into());
        assert_eq!(e.fingerprint("1"), e.clone().fingerprint("1"));
        let other = e.clone().property("model", "large".into());
        assert_ne!(e.fingerprint("1"), other.fingerprint("1"));
        assert_ne!(event_key("a"), event_key("b"));
    }
}
