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
use crate::store::AuditRecord;

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
