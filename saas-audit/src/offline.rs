//! Offline verification of an export file: a streaming read, in batches of
//! lines parsed and hashed on every core, then walked in order. Memory stays
//! bounded by the batch, plus the 32-byte hash of each event verified (an
//! export's checkpoint comes after the events it covers).

use std::borrow::Cow;
use std::io::BufRead;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use uuid::Uuid;

use crate::crypto::CheckpointSigner;
use crate::error::AuditError;
use crate::event::{CanonicalFields, Outcome};
use crate::store::{ExportHeader, ExportLine};
use crate::verify::{ChainVerifier, VerifyReport, on_every_core};

/// Lines read, parsed and hashed per batch.
const BATCH: usize = 16_384;

/// Verifies an export written by [`AuditLog::export`](crate::AuditLog::export)
/// offline (what `platformctl audit verify FILE` runs): every event's hash,
/// every link from the header's anchor, and the covering checkpoint's
/// position, hash and (with the signer's key) signature.
///
/// The file is read as a stream; memory grows by 32 bytes per event.
///
/// # Errors
///
/// [`AuditError::Export`] naming the line when the file is not an export
/// (a line that is not JSON of an event or a checkpoint), and
/// [`AuditError::Io`] when reading fails. A file that parses but does not
/// verify is an `Ok` report with its first problem.
pub fn verify_export(
    mut input: impl BufRead,
    signer: Option<&CheckpointSigner>,
) -> Result<VerifyReport, AuditError> {
    let mut first = String::new();
    if input.read_line(&mut first)? == 0 {
        return Err(AuditError::Export {
            line: 1,
            reason: "empty file".into(),
        });
    }
    let header: ExportHeader = serde_json::from_str(&first).map_err(|e| AuditError::Export {
        line: 1,
        reason: e.to_string(),
    })?;
    if header.format != "saas-audit-export" || header.version != 1 {
        return Err(AuditError::Export {
            line: 1,
            reason: "not a saas-audit export, version 1".into(),
        });
    }
    let mut walk = Walk {
        verifier: ChainVerifier::new(header.chain, header.from_seq, header.anchor, Vec::new()),
        going: true,
        hashes: Vec::new(),
        checkpoints: Vec::new(),
        line: 1,
    };
    // Lines are read into one buffer per batch (no allocation per line) and
    // split among the cores there.
    let mut batch = Lines::default();
    loop {
        let more = batch.fill(&mut input)?;
        walk.batch(&batch)?;
        if !more {
            break;
        }
    }
    Ok(walk.finish(signer))
}

struct Walk {
    verifier: ChainVerifier,
    /// False once the verifier found a problem: later events are only parsed.
    going: bool,
    /// The hash of every event fed without a problem, in order.
    hashes: Vec<[u8; 32]>,
    checkpoints: Vec<crate::Checkpoint>,
    /// Lines consumed so far (the header is line 1).
    line: usize,
}

/// A batch of lines, read into one buffer.
#[derive(Default)]
struct Lines {
    text: Vec<u8>,
    /// Where each line ends in `text` (its newline excluded).
    ends: Vec<usize>,
}

impl Lines {
    /// Reads up to [`BATCH`] lines; false once the input is exhausted.
    fn fill(&mut self, input: &mut impl BufRead) -> Result<bool, AuditError> {
        self.text.clear();
        self.ends.clear();
        while self.ends.len() < BATCH {
            if input.read_until(b'\n', &mut self.text)? == 0 {
                return Ok(false);
            }
            let end = self.text.len() - usize::from(self.text.last() == Some(&b'\n'));
            self.ends.push(end);
        }
        Ok(true)
    }

    /// The lines, as (start, end) offsets into `text`.
    fn spans(&self) -> Vec<(usize, usize)> {
        let mut start = 0;
        self.ends
            .iter()
            .map(|&end| {
                let span = (start, end);
                start = end + 1;
                span
            })
            .collect()
    }
}

impl Walk {
    fn batch(&mut self, lines: &Lines) -> Result<(), AuditError> {
        let spans = lines.spans();
        let parsed = on_every_core(&spans, |part| {
            let mut buf = Vec::with_capacity(1024);
            part.iter()
                .map(|&(start, end)| {
                    parse(lines.text.get(start..end).unwrap_or_default(), &mut buf)
                })
                .collect()
        });
        for item in parsed {
            self.line += 1;
            let item = item.map_err(|reason| AuditError::Export {
                line: self.line,
                reason,
            })?;
            match item {
                Line::Blank => {}
                Line::Checkpoint(c) => self.checkpoints.push(c),
                Line::Event {
                    seq,
                    prev_hash,
                    hash,
                    digest,
                } => {
                    if self.going {
                        let hash_ok = digest.is_some();
                        self.going = self.verifier.feed_link(seq, &prev_hash, &hash, hash_ok);
                        if let (true, Some(digest)) = (self.going, digest) {
                            self.hashes.push(digest);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn finish(mut self, signer: Option<&CheckpointSigner>) -> VerifyReport {
        self.checkpoints.sort_by_key(|c| c.seq);
        let first = self
            .verifier
            .last_seq()
            .map(|last| last - i64::try_from(self.hashes.len()).unwrap_or(0) + 1);
        for c in self.checkpoints {
            let at = first
                .and_then(|f| usize::try_from(c.seq - f).ok())
                .and_then(|i| self.hashes.get(i))
                .map(hex::encode);
            self.verifier.checkpoint_after(c, at.as_deref());
        }
        self.verifier.finish(None, signer)
    }
}

/// One line of an export, parsed and (for an event) hashed.
enum Line<'a> {
    Blank,
    Checkpoint(crate::Checkpoint),
    Event {
        seq: i64,
        prev_hash: Cow<'a, str>,
        hash: Cow<'a, str>,
        /// The hash of the content, when it is the stored hash.
        digest: Option<[u8; 32]>,
    },
}

/// An event line, borrowed from the line where it can be: the fields of
/// [`StoredEvent`](crate::StoredEvent) under the same names.
#[derive(Deserialize)]
struct EventLine<'a> {
    #[serde(borrow)]
    chain: Cow<'a, str>,
    seq: i64,
    id: Uuid,
    occurred_at: DateTime<Utc>,
    #[serde(borrow)]
    actor: ActorLine<'a>,
    #[serde(borrow)]
    action: Cow<'a, str>,
    #[serde(borrow)]
    target: TargetLine<'a>,
    outcome: Outcome,
    #[serde(borrow)]
    correlation_id: Cow<'a, str>,
    #[serde(borrow)]
    details: Cow<'a, str>,
    subject_id: Option<Uuid>,
    #[serde(borrow)]
    personal: Option<Cow<'a, str>>,
    #[serde(borrow)]
    prev_hash: Cow<'a, str>,
    #[serde(borrow)]
    hash: Cow<'a, str>,
}

#[derive(Deserialize)]
struct ActorLine<'a> {
    #[serde(borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct TargetLine<'a> {
    #[serde(borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
}

fn parse<'a>(line: &'a [u8], buf: &mut Vec<u8>) -> Result<Line<'a>, String> {
    if line.trim_ascii().is_empty() {
        return Ok(Line::Blank);
    }
    let Ok(ev) = serde_json::from_slice::<EventLine<'a>>(line) else {
        // Not an event: a checkpoint, or an error worded for either form.
        return match serde_json::from_slice::<ExportLine>(line).map_err(|e| e.to_string())? {
            ExportLine::Checkpoint { checkpoint } => Ok(Line::Checkpoint(checkpoint)),
            // Only when the two forms disagree, which they must not.
            ExportLine::Event(ev) => {
                let digest = ev.digest_with(buf);
                let ok = hex::encode(digest) == ev.hash;
                Ok(Line::Event {
                    seq: ev.seq,
                    prev_hash: Cow::Owned(ev.prev_hash),
                    hash: Cow::Owned(ev.hash),
                    digest: ok.then_some(digest),
                })
            }
        };
    };
    let personal = ev
        .personal
        .as_deref()
        .map(|hexed| hex::decode(hexed).unwrap_or_default());
    let digest = CanonicalFields {
        chain: &ev.chain,
        seq: ev.seq,
        id: ev.id,
        occurred_at: ev.occurred_at,
        actor_kind: &ev.actor.kind,
        actor_id: ev.actor.id.as_deref(),
        actor_reason: ev.actor.reason.as_deref(),
        action: &ev.action,
        target_kind: &ev.target.kind,
        target_id: ev.target.id.as_deref(),
        outcome: ev.outcome,
        correlation_id: &ev.correlation_id,
        details: &ev.details,
        subject_id: ev.subject_id,
        personal: personal.as_deref(),
        prev_hash: &ev.prev_hash,
    }
    .digest(buf);
    let mut hexed = [0u8; 64];
    let ok = hex::encode_to_slice(digest, &mut hexed).is_ok() && hexed[..] == *ev.hash.as_bytes();
    Ok(Line::Event {
        seq: ev.seq,
        prev_hash: ev.prev_hash,
        hash: ev.hash,
        digest: ok.then_some(digest),
    })
}
