//! Offline verification of an export file: a stream, in batches of lines
//! parsed and hashed on every core, then walked in order. Memory stays
//! bounded by the batch, plus the 32-byte hash of each event verified (an
//! export's checkpoint comes after the events it covers). The same check
//! runs on a file being read ([`verify_export`]) and on an export being
//! written ([`CheckedWriter`], for prunes).

use std::borrow::Cow;
use std::io::{BufRead, Write};

use chrono::{DateTime, Utc};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::crypto::CheckpointSigner;
use crate::error::AuditError;
use crate::event::{Outcome, canonical_fields, decode_personal, is_hex_of};
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
    let mut check = ExportCheck::default();
    loop {
        let chunk = input.fill_buf()?;
        if chunk.is_empty() {
            break;
        }
        check.push(chunk)?;
        let n = chunk.len();
        input.consume(n);
    }
    check.finish(signer)
}

/// Checks an export as its bytes come, in any chunks: what
/// [`verify_export`] reads, or what [`CheckedWriter`] is given.
#[derive(Default)]
struct ExportCheck {
    /// Set once the header line has been read.
    walk: Option<Walk>,
    /// The lines of the current batch, newlines left out, then the start of
    /// the next line.
    text: Vec<u8>,
    /// Where each complete line of the batch ends in `text`.
    ends: Vec<usize>,
}

impl ExportCheck {
    fn push(&mut self, mut bytes: &[u8]) -> Result<(), AuditError> {
        while let Some(i) = memchr::memchr(b'\n', bytes) {
            let (line, rest) = bytes.split_at(i);
            self.text.extend_from_slice(line);
            self.end_line()?;
            bytes = rest.get(1..).unwrap_or_default();
        }
        self.text.extend_from_slice(bytes);
        Ok(())
    }

    fn end_line(&mut self) -> Result<(), AuditError> {
        if self.walk.is_none() {
            self.walk = Some(Walk::from_header(&self.text)?);
            self.text.clear();
            return Ok(());
        }
        self.ends.push(self.text.len());
        if self.ends.len() == BATCH {
            self.run_batch()?;
        }
        Ok(())
    }

    /// Parses and hashes the batch's lines on every core, walks them in
    /// order, and keeps only the start of the next line.
    fn run_batch(&mut self) -> Result<(), AuditError> {
        let Some(walk) = self.walk.as_mut() else {
            return Ok(());
        };
        let mut start = 0;
        let spans: Vec<(usize, usize)> = self
            .ends
            .iter()
            .map(|&end| {
                let span = (start, end);
                start = end;
                span
            })
            .collect();
        walk.batch(&self.text, &spans)?;
        self.text.drain(..start);
        self.ends.clear();
        Ok(())
    }

    fn finish(mut self, signer: Option<&CheckpointSigner>) -> Result<VerifyReport, AuditError> {
        let unfinished = self.ends.last().copied().unwrap_or(0) < self.text.len();
        if unfinished || self.walk.is_none() && !self.text.is_empty() {
            // A last line without its newline.
            self.end_line()?;
        }
        self.run_batch()?;
        let walk = self.walk.ok_or(AuditError::Export {
            line: 1,
            reason: "empty file".into(),
        })?;
        Ok(walk.finish(signer))
    }
}

/// A writer that passes an export through to `out` while checking it as
/// [`verify_export`] would and hashing the bytes (SHA-256): a prune archives
/// and verifies in one pass, holding no more of the export than a batch.
pub(crate) struct CheckedWriter<'w> {
    out: &'w mut (dyn Write + Send),
    check: ExportCheck,
    sha256: Sha256,
}

impl<'w> CheckedWriter<'w> {
    pub(crate) fn new(out: &'w mut (dyn Write + Send)) -> Self {
        Self {
            out,
            check: ExportCheck::default(),
            sha256: Sha256::new(),
        }
    }

    /// The check's report and the SHA-256 (hex) of everything written.
    pub(crate) fn finish(
        self,
        signer: Option<&CheckpointSigner>,
    ) -> Result<(VerifyReport, String), AuditError> {
        let digest = hex::encode(self.sha256.finalize());
        Ok((self.check.finish(signer)?, digest))
    }
}

impl Write for CheckedWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        let written = buf.get(..n).unwrap_or_default();
        self.sha256.update(written);
        self.check.push(written).map_err(std::io::Error::other)?;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

struct Walk {
    verifier: ChainVerifier,
    /// The hash of every event fed without a problem, in order.
    hashes: Vec<[u8; 32]>,
    checkpoints: Vec<crate::Checkpoint>,
    /// Lines consumed so far (the header is line 1).
    line: usize,
}

impl Walk {
    /// Starts at the header line of an export.
    fn from_header(line: &[u8]) -> Result<Self, AuditError> {
        let header: ExportHeader =
            serde_json::from_slice(line).map_err(|e| AuditError::Export {
                line: 1,
                reason: e.to_string(),
            })?;
        if header.format != "saas-audit-export" || header.version != 1 {
            return Err(AuditError::Export {
                line: 1,
                reason: "not a saas-audit export, version 1".into(),
            });
        }
        Ok(Self {
            verifier: ChainVerifier::new(header.chain, header.from_seq, header.anchor, Vec::new()),
            hashes: Vec::new(),
            checkpoints: Vec::new(),
            line: 1,
        })
    }

    /// Parses and hashes the lines at `spans` of `text` on every core, then
    /// walks them in order.
    fn batch(&mut self, text: &[u8], spans: &[(usize, usize)]) -> Result<(), AuditError> {
        let parsed = on_every_core(spans, |part| {
            let mut buf = Vec::with_capacity(1024);
            part.iter()
                .map(|&(start, end)| parse(text.get(start..end).unwrap_or_default(), &mut buf))
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
                    // Once the verifier has found a problem it takes nothing
                    // more, and later events are only parsed.
                    if self
                        .verifier
                        .feed_link(seq, prev_hash.as_bytes(), &hash, digest.is_some())
                        && let Some(digest) = digest
                    {
                        self.hashes.push(digest);
                    }
                }
            }
        }
        Ok(())
    }

    fn finish(mut self, signer: Option<&CheckpointSigner>) -> VerifyReport {
        self.checkpoints.sort_by_key(|c| c.seq);
        // `hashes` holds the events fed without a problem: positions from
        // the verifier's first on.
        let first = self.verifier.first_seq();
        for c in self.checkpoints {
            let at = usize::try_from(c.seq - first)
                .ok()
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
    #[serde(deserialize_with = "rfc3339")]
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

/// A time as an export writes it (`2026-01-02T03:04:05.123456Z`, with 0 to
/// 9 digits of fraction), read field by field; any other form is left to
/// chrono, as before.
fn rfc3339<'de, D: serde::Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    let text = <Cow<'de, str>>::deserialize(d)?;
    match fixed_time(text.as_bytes()) {
        Some(t) => Ok(t),
        None => text.parse().map_err(serde::de::Error::custom),
    }
}

fn fixed_time(b: &[u8]) -> Option<DateTime<Utc>> {
    let num = |from: usize, to: usize| -> Option<u32> {
        b.get(from..to)?.iter().try_fold(0u32, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    let at = |i: usize, c: u8| b.get(i) == Some(&c);
    if !(at(4, b'-') && at(7, b'-') && at(10, b'T') && at(13, b':') && at(16, b':')) {
        return None;
    }
    let (nanos, end) = match b.get(19) {
        Some(b'.') => {
            let digits = b
                .get(20..)?
                .iter()
                .take_while(|c| c.is_ascii_digit())
                .count();
            if !(1..=9).contains(&digits) {
                return None;
            }
            (
                num(20, 20 + digits)? * 10u32.pow(9 - u32::try_from(digits).ok()?),
                20 + digits,
            )
        }
        _ => (0, 19),
    };
    if b.len() != end + 1 || !at(end, b'Z') {
        return None;
    }
    let date =
        chrono::NaiveDate::from_ymd_opt(i32::try_from(num(0, 4)?).ok()?, num(5, 7)?, num(8, 10)?)?;
    let time =
        chrono::NaiveTime::from_hms_nano_opt(num(11, 13)?, num(14, 16)?, num(17, 19)?, nanos)?;
    Some(date.and_time(time).and_utc())
}

fn parse<'a>(line: &'a [u8], buf: &mut Vec<u8>) -> Result<Line<'a>, String> {
    if line.trim_ascii().is_empty() {
        return Ok(Line::Blank);
    }
    // Checked as UTF-8 once, as a whole, rather than string by string.
    let ev = std::str::from_utf8(line)
        .ok()
        .and_then(|text| serde_json::from_str::<EventLine<'a>>(text).ok());
    let Some(ev) = ev else {
        // Not an event: a checkpoint, or an error worded for either form.
        return match serde_json::from_slice::<ExportLine>(line).map_err(|e| e.to_string())? {
            ExportLine::Checkpoint { checkpoint } => Ok(Line::Checkpoint(checkpoint)),
            // Only when the two forms disagree, which they must not.
            ExportLine::Event(ev) => {
                let digest = ev.digest_with(buf);
                let ok = is_hex_of(digest, &ev.hash);
                Ok(Line::Event {
                    seq: ev.seq,
                    prev_hash: Cow::Owned(ev.prev_hash),
                    hash: Cow::Owned(ev.hash),
                    digest: ok.then_some(digest),
                })
            }
        };
    };
    let personal = decode_personal(ev.personal.as_deref());
    let digest = canonical_fields!(ev, personal.as_deref()).digest(buf);
    let ok = is_hex_of(digest, ev.hash.as_bytes());
    Ok(Line::Event {
        seq: ev.seq,
        prev_hash: ev.prev_hash,
        hash: ev.hash,
        digest: ok.then_some(digest),
    })
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::indexing_slicing,
        reason = "tests fail loudly"
    )]

    use super::*;
    use crate::event::{Actor, StoredEvent, Target};

    #[test]
    fn an_exported_time_is_read_as_chrono_reads_it() {
        for text in [
            "2026-01-02T03:04:05Z",
            "2026-01-02T03:04:05.1Z",
            "2026-01-02T03:04:05.123456Z",
            "2026-12-31T23:59:59.999999999Z",
            "0001-01-01T00:00:00Z",
            "2024-02-29T12:00:00.5Z",
        ] {
            let want: DateTime<Utc> = text.parse().unwrap();
            assert_eq!(fixed_time(text.as_bytes()), Some(want), "{text}");
        }
        // Left to chrono: other forms, and what it would refuse.
        for text in [
            "2026-01-02T03:04:05+00:00",
            "2026-01-02 03:04:05Z",
            "2026-01-02T03:04:60Z",
            "2026-02-30T03:04:05Z",
            "2026-01-02T03:04:05.Z",
            "2026-01-02T03:04:05.1234567890Z",
            "2026-01-02T03:04:05.1Zx",
            "2026-1-02T03:04:05Z",
        ] {
            assert_eq!(fixed_time(text.as_bytes()), None, "{text}");
        }
    }

    /// An export of a chain of `n` events from its start, with no checkpoint.
    fn export(n: i64) -> Vec<u8> {
        let header = ExportHeader {
            format: "saas-audit-export".into(),
            version: 1,
            chain: "tenant:x".into(),
            from_seq: 1,
            anchor: hex::encode(crate::event::GENESIS),
        };
        let mut out = serde_json::to_vec(&header).unwrap();
        out.push(b'\n');
        let mut prev = header.anchor.clone();
        for seq in 1..=n {
            let mut ev = StoredEvent {
                chain: "tenant:x".into(),
                seq,
                id: Uuid::nil(),
                occurred_at: DateTime::from_timestamp(1_764_000_000 + seq, 0).unwrap(),
                actor: Actor {
                    kind: "system".into(),
                    id: None,
                    reason: Some("a \"quoted\" reason\n".into()),
                },
                action: "workspace.update".into(),
                target: Target::new("workspace", seq),
                outcome: Outcome::Success,
                correlation_id: "c".into(),
                details: "{}".into(),
                subject_id: None,
                personal: (seq % 2 == 0).then(|| "00ff".into()),
                prev_hash: prev.clone(),
                hash: String::new(),
            };
            ev.hash = ev.compute_hash();
            prev.clone_from(&ev.hash);
            out.extend_from_slice(&serde_json::to_vec(&ev).unwrap());
            out.push(b'\n');
        }
        out
    }

    fn in_chunks(data: &[u8], size: usize) -> VerifyReport {
        let mut check = ExportCheck::default();
        for chunk in data.chunks(size) {
            check.push(chunk).unwrap();
        }
        check.finish(None).unwrap()
    }

    #[test]
    fn an_export_checks_the_same_in_chunks_of_any_size_and_without_its_last_newline() {
        let data = export(40);
        let whole = verify_export(&data[..], None).unwrap();
        assert!(whole.is_valid(), "{whole:?}");
        assert_eq!(whole.checked, 40);
        for size in [1, 2, 7, 64, 333, 4096] {
            assert_eq!(in_chunks(&data, size), whole, "chunks of {size}");
        }
        assert_eq!(
            in_chunks(&data[..data.len() - 1], 5),
            whole,
            "no final newline"
        );
        let cut = data.len() - 30;
        assert!(
            verify_export(&data[..cut], None).is_err(),
            "a line cut short is not JSON"
        );
    }

    #[test]
    fn the_checked_writer_passes_every_byte_through_and_hashes_them() {
        let data = export(20);
        let mut out = Vec::new();
        let mut w = CheckedWriter::new(&mut out);
        for chunk in data.chunks(100) {
            w.write_all(chunk).unwrap();
        }
        let (report, sha) = w.finish(None).unwrap();
        assert!(report.is_valid() && report.checked == 20, "{report:?}");
        assert_eq!(sha, hex::encode(Sha256::digest(&data)));
        assert_eq!(out, data);
        let mut tampered = data.clone();
        let at = tampered.len() - 40;
        tampered[at] = if tampered[at] == b'a' { b'b' } else { b'a' };
        let mut sink = Vec::new();
        let mut w = CheckedWriter::new(&mut sink);
        w.write_all(&tampered).unwrap();
        assert!(!w.finish(None).unwrap().0.is_valid());
    }

    /// A long export checks as one chain across batches, and a bad line is
    /// reported at its own line number in whichever batch it falls,
    /// however the bytes come.
    #[test]
    fn a_bad_line_in_any_batch_is_reported_at_its_line() {
        let events = i64::try_from(BATCH * 2 + 100).unwrap();
        let data = export(events);
        let report = verify_export(&data[..], None).unwrap();
        assert!(
            report.is_valid() && report.checked == events.unsigned_abs(),
            "{report:?}"
        );
        // Line 1 is the header: event `k` is on line `k + 1`.
        for bad_line in [10, BATCH + 1, BATCH + 2, BATCH * 2 + 7] {
            let mut lines: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
            lines[bad_line - 1] = b"{not json";
            let broken = lines.join(&b'\n');
            for size in [8192, 1 << 20] {
                let mut check = ExportCheck::default();
                let pushed = broken.chunks(size).try_for_each(|c| check.push(c));
                let result = pushed.and_then(|()| check.finish(None));
                assert!(
                    matches!(result, Err(AuditError::Export { line, .. }) if line == bad_line),
                    "line {bad_line}, chunks of {size}: {result:?}"
                );
            }
        }
    }

    #[test]
    fn an_empty_file_or_a_bad_header_is_an_error() {
        assert!(verify_export(&b""[..], None).is_err());
        assert!(verify_export(&b"{\"format\":\"other\"}\n"[..], None).is_err());
        assert!(ExportCheck::default().finish(None).is_err());
    }
}
