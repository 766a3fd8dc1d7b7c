//! Where audit records go besides the database.
//!
//! The database store ([`crate::AuditLog`]) is the source of truth and is
//! written in the transaction of the action it records. Other sinks are fed
//! *from* the stored log, at least once, so a sink that fails loses nothing:
//! it is retried from the log. [`AuditSink`] is small and dyn-compatible, with
//! blanket impls for `Arc` and `Box` and a fan-out for several sinks.

use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use crate::error::AuditError;
use crate::store::{AuditLog, AuditRecord, Scope};

/// Receives stored audit records (at least once, in chain order).
#[async_trait::async_trait]
pub trait AuditSink: Send + Sync + fmt::Debug {
    /// Delivers one record. An error means "try again later".
    async fn deliver(&self, record: &AuditRecord) -> Result<(), AuditError>;
}

#[async_trait::async_trait]
impl<S: AuditSink + ?Sized> AuditSink for Arc<S> {
    async fn deliver(&self, record: &AuditRecord) -> Result<(), AuditError> {
        (**self).deliver(record).await
    }
}

#[async_trait::async_trait]
impl<S: AuditSink + ?Sized> AuditSink for Box<S> {
    async fn deliver(&self, record: &AuditRecord) -> Result<(), AuditError> {
        (**self).deliver(record).await
    }
}

/// Delivers to every sink in order; fails if any fails (so the record is
/// retried for all: sinks must tolerate duplicates).
#[derive(Debug, Default, Clone)]
pub struct FanOut(pub Vec<Arc<dyn AuditSink>>);

#[async_trait::async_trait]
impl AuditSink for FanOut {
    async fn deliver(&self, record: &AuditRecord) -> Result<(), AuditError> {
        for sink in &self.0 {
            sink.deliver(record).await?;
        }
        Ok(())
    }
}

/// Appends one JSON object per line to a file, for log shipping. Personal data
/// is never written: only the stored (hashed) form.
#[derive(Debug, Clone)]
pub struct JsonLinesSink {
    path: PathBuf,
}

impl JsonLinesSink {
    /// A sink appending to `path` (created if missing).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }
}

#[async_trait::async_trait]
impl AuditSink for JsonLinesSink {
    async fn deliver(&self, record: &AuditRecord) -> Result<(), AuditError> {
        let line =
            serde_json::to_string(&record.event).map_err(|e| AuditError::Corrupt(e.to_string()))?;
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || -> Result<(), AuditError> {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?;
            writeln!(f, "{line}")?;
            f.sync_data()?;
            Ok(())
        })
        .await
        .map_err(|_| AuditError::Corrupt("json-lines writer task failed".into()))?
    }
}

/// Emits each record as a `tracing` event on target `audit` (for a log
/// pipeline that already collects tracing output). Personal data is never
/// emitted.
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingSink;

#[async_trait::async_trait]
impl AuditSink for TracingSink {
    async fn deliver(&self, record: &AuditRecord) -> Result<(), AuditError> {
        let e = &record.event;
        tracing::info!(
            target: "audit",
            chain = %e.chain,
            seq = e.seq,
            action = %e.action,
            outcome = e.outcome.as_str(),
            actor_kind = %e.actor.kind,
            target_kind = %e.target.kind,
            correlation_id = %e.correlation_id,
            hash = %e.hash,
            "audit event"
        );
        Ok(())
    }
}

/// Feeds one sink from the stored log, chain by chain, at least once and in
/// order, remembering how far it got in the database. Run it periodically (the
/// reference server does): a sink that fails is retried from where it stopped.
#[derive(Debug, Clone)]
pub struct AuditForwarder {
    log: AuditLog,
    name: String,
    sink: Arc<dyn AuditSink>,
}

/// Events read per round trip while forwarding.
const FORWARD_BATCH: u64 = 500;

impl AuditForwarder {
    /// A forwarder feeding `sink`, whose progress is stored under `name`.
    pub fn new(log: AuditLog, name: impl Into<String>, sink: Arc<dyn AuditSink>) -> Self {
        Self {
            log,
            name: name.into(),
            sink,
        }
    }

    /// Delivers every event of the chain the sink has not received yet;
    /// returns how many it delivered. On a sink error the cursor stays at the
    /// last fully delivered batch, so nothing is skipped.
    pub async fn forward<'a>(&self, scope: impl Into<Scope<'a>>) -> Result<u64, AuditError> {
        let scope = scope.into();
        let mut delivered = 0;
        loop {
            let after = self.log.sink_cursor(scope, &self.name).await?;
            let batch = self.log.events_after(scope, after, FORWARD_BATCH).await?;
            let Some(last) = batch.last().map(|r| r.event.seq) else {
                break;
            };
            for record in &batch {
                self.sink.deliver(record).await?;
            }
            self.log.set_sink_cursor(scope, &self.name, last).await?;
            delivered += batch.len() as u64;
            if (batch.len() as u64) < FORWARD_BATCH {
                break;
            }
        }
        Ok(delivered)
    }
}
