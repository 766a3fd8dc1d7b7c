//! The chain walk on PostgreSQL: the events stream out of one binary `COPY`
//! in the walk's own transaction (so row-level security and its snapshot
//! still hold) and each is hashed from the bytes as they arrive, without
//! being decoded into an owned [`StoredEvent`](crate::StoredEvent). The
//! database sends on one core while the walk hashes on another.
//!
//! The format is PostgreSQL's binary `COPY` format: a signature, a flags
//! word and a header extension, then per row a field count and, per field,
//! a length (-1 for NULL) and the field's binary value; a count of -1 ends
//! the data. See <https://www.postgresql.org/docs/current/sql-copy.html>.

use chrono::{DateTime, Utc};
use saas_core::db::sea_query::{Expr, ExprTrait, Func, Order, PostgresQueryBuilder, Query};
use saas_core::db::{Db, Tx};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::AuditError;
use crate::event::{CanonicalFields, LinkReader, Outcome};
use crate::store::{CANONICAL, EVENT_COLS};
use crate::verify::ChainVerifier;

const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";
/// Bit 16 of the flags word: each row carries an OID (never asked for).
const HAS_OIDS: u32 = 1 << 16;
/// PostgreSQL's epoch (2000-01-01T00:00:00Z) in Unix seconds.
const PG_EPOCH: i64 = 946_684_800;

/// Columns per row of an event read whole: the store's event columns, in
/// their order (which [`Scratch::check_row`] reads them in), and its stored
/// canonical bytes.
const N: usize = EVENT_COLS.len() + 1;
/// The columns of an event read by its stored canonical bytes (which
/// [`Scratch::check_stored`] reads them in).
const STORED_COLS: [&str; 3] = [CANONICAL, "hash", "personal"];

/// How a walk may be split over several connections.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Split {
    /// Parts (connections) at most.
    pub(crate) parts: usize,
    /// Positions each part gets at least.
    pub(crate) min_part: i64,
}

impl Split {
    /// One part per core, at most four, of at least 25,000 positions each:
    /// shorter walks are over before more connections would pay off.
    pub(crate) fn for_this_machine() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        Self {
            parts: cores.min(4),
            min_part: 25_000,
        }
    }

    /// Where a walk of positions `from..=head` is split into at most
    /// `parts` parts: the first position of each part.
    fn starts(self, from: i64, head: Option<i64>, parts: usize) -> Vec<i64> {
        let span = head.map_or(0, |h| h - from + 1);
        let parts = std::cmp::max(
            std::cmp::min(
                i64::try_from(parts).unwrap_or(1),
                span / std::cmp::max(self.min_part, 1),
            ),
            1,
        );
        (0..parts).map(|i| from + span * i / parts).collect()
    }
}

/// How a `COPY` reads events.
#[derive(Clone, Copy)]
enum Read {
    /// Every column and the stored canonical bytes ([`Scratch::check_row`]).
    Whole,
    /// The stored canonical bytes, the hash and the personal blob only
    /// ([`Scratch::check_stored`]).
    Stored,
}

/// The chain a walk reads.
#[derive(Clone, Copy)]
pub(crate) struct ChainRows {
    /// Its events table.
    pub(crate) table: &'static str,
    /// The column naming the chain in that table.
    pub(crate) key_column: &'static str,
    /// The chain's key.
    pub(crate) key: Uuid,
    /// Whether events may be read by their stored canonical bytes alone:
    /// only while the table's guard is in place ([`guarded`]).
    pub(crate) by_stored_bytes: bool,
    /// The first and last positions, from where the walk starts, of events
    /// stored without their canonical bytes ([`legacy_span`]); they are
    /// read whole.
    pub(crate) legacy: Option<(i64, i64)>,
}

impl ChainRows {
    /// The `COPY` statements streaming positions `from_seq` up to `to_seq`
    /// (excluded; `None` for the rest of the chain), in order, oldest first:
    /// events are read by their stored bytes where that is allowed, and
    /// whole elsewhere. `COPY` takes no bind parameters: the values are a
    /// UUID and integers, inlined by sea-query.
    fn statements(self, from_seq: i64, to_seq: Option<i64>) -> Vec<String> {
        if !self.by_stored_bytes {
            return vec![self.statement(Read::Whole, from_seq, to_seq)];
        }
        let Some((first, last)) = self.legacy else {
            return vec![self.statement(Read::Stored, from_seq, to_seq)];
        };
        use std::cmp::{max, min};
        let last_wanted = to_seq.map_or(i64::MAX, |t| t - 1);
        let mut out = Vec::new();
        // Stored bytes before the legacy span, the span whole, stored bytes after.
        if from_seq < first {
            let end = min(first, last_wanted.saturating_add(1));
            out.push(self.statement(Read::Stored, from_seq, Some(end)));
        }
        let (lo, hi) = (max(from_seq, first), min(last_wanted, last));
        if lo <= hi {
            out.push(self.statement(Read::Whole, lo, Some(hi + 1)));
        }
        if last < last_wanted {
            out.push(self.statement(Read::Stored, max(from_seq, last + 1), to_seq));
        }
        out
    }

    fn statement(self, read: Read, from_seq: i64, to_seq: Option<i64>) -> String {
        let mut select = Query::select();
        match read {
            Read::Whole => select.columns(EVENT_COLS.into_iter().chain([CANONICAL])),
            Read::Stored => select.columns(STORED_COLS),
        };
        select
            .from(self.table)
            .and_where(Expr::col(self.key_column).eq(self.key))
            .and_where(Expr::col("seq").gte(from_seq));
        if let Some(to) = to_seq {
            select.and_where(Expr::col("seq").lt(to));
        }
        let select = select
            .order_by("seq", Order::Asc)
            .to_string(PostgresQueryBuilder);
        format!("COPY ({select}) TO STDOUT (FORMAT binary)")
    }
}

/// Each events table, its guard (migration 0005), and how the guard names
/// the table's chain.
const GUARDS: [(&str, &str, &str); 2] = [
    (
        "audit_events",
        "audit_events_canonical",
        "'\",\"chain\":\"tenant:', (tenant_id)::text",
    ),
    (
        "audit_platform_events",
        "audit_platform_events_canonical",
        "'\",\"chain\":\"platform'",
    ),
];

/// A guard's definition as PostgreSQL 15 writes it back
/// (`pg_get_constraintdef`), the chain's part left out as `{CHAIN}`.
const GUARD_DEFINITION: &str = r#"CHECK (((canonical IS NULL) OR (canonical = convert_to(concat('{"action":', (to_json(action))::text, ',"actor":{"id":', COALESCE((to_json(actor_id))::text, 'null'::text), ',"kind":', (to_json(actor_kind))::text, ',"reason":', COALESCE((to_json(actor_reason))::text, 'null'::text), '},"at":"', to_char((occurred_at AT TIME ZONE 'UTC'::text), 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'::text), {CHAIN}, '","correlation_id":', (to_json(correlation_id))::text, ',"details":', details, ',"id":"', (id)::text, '","outcome":', (to_json(outcome))::text, ',"personal":', COALESCE((('"'::text || encode(sha256(personal), 'hex'::text)) || '"'::text), 'null'::text), ',"prev":"', encode(prev_hash, 'hex'::text), '","seq":', (seq)::text, ',"subject":', COALESCE((('"'::text || (subject_id)::text) || '"'::text), 'null'::text), ',"target":{"id":', COALESCE((to_json(target_id))::text, 'null'::text), ',"kind":', (to_json(target_kind))::text, '},"v":1}'), 'UTF8'::name))))"#;

/// Whether `table`'s guard is in place: the CHECK constraint of migration
/// 0005, validated, with the definition it was created with. While it is,
/// no row of the table can be stored (by anyone, the triggers disabled or
/// not) unless its stored canonical bytes are exactly the canonical form of
/// its columns, so a walk of the bytes alone checks what the columns show
/// (the walk checks the stored hash itself). A guard dropped, changed, or added back
/// `NOT VALID` (which leaves rows stored meanwhile unchecked) is not in
/// place, and neither is one written back differently by another version of
/// PostgreSQL: the walk then reads every column.
pub(crate) async fn guarded(tx: &mut Tx, table: &str) -> Result<bool, AuditError> {
    let Some((_, name, chain)) = GUARDS.iter().find(|(t, _, _)| *t == table) else {
        return Ok(false);
    };
    let definition = GUARD_DEFINITION.replace("{CHAIN}", chain);
    let conn = postgres(tx)?;
    let row: Option<(String, bool)> = sqlx::query_as(
        "SELECT pg_get_constraintdef(oid), convalidated FROM pg_constraint \
         WHERE conrelid = to_regclass($1) AND conname = $2 AND contype = 'c'",
    )
    .bind(table)
    .bind(*name)
    .fetch_optional(&mut *conn)
    .await?;
    let intact = row.is_some_and(|(def, valid)| valid && def == definition);
    if !intact {
        tracing::warn!(
            table,
            "the audit table's guard is not in place: the chain walk reads every column"
        );
    }
    Ok(intact)
}

/// The first and last positions at or after `from_seq` of events of the
/// chain stored without their canonical bytes, found by the partial index of
/// migration 0005.
pub(crate) async fn legacy_span(
    tx: &mut Tx,
    rows: ChainRows,
    from_seq: i64,
) -> Result<Option<(i64, i64)>, AuditError> {
    let row = tx
        .fetch_optional(
            Query::select()
                .expr_as(Func::min(Expr::col("seq")), "first")
                .expr_as(Func::max(Expr::col("seq")), "last")
                .from(rows.table)
                .and_where(Expr::col(rows.key_column).eq(rows.key))
                .and_where(Expr::col(CANONICAL).is_null())
                .and_where(Expr::col("seq").gte(from_seq)),
        )
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let first: Option<i64> = row.get("first")?;
    let last: Option<i64> = row.get("last")?;
    Ok(first.zip(last))
}

/// Walks the chain from the verifier's first position to its end on `tx`
/// (a transaction opened by `read_snapshot`), stopping at the first
/// problem.
///
/// A long chain is split into consecutive parts, each streamed on its own
/// connection reading `tx`'s snapshot (so every part sees the same rows)
/// and hashed by its own task, as many as `split`, the cores and the pool's
/// spare connections allow: the database sends the parts on several cores.
/// The parts are then joined in order. A part is taken as it is only when
/// it continues the walk so far exactly (the next position, linked to the
/// last hash) and was walked without a problem; otherwise the walk goes on
/// from there on `tx` in one piece, so it reports exactly what a walk in
/// one piece reports. Returns the number of parts.
pub(crate) async fn walk_chain(
    db: &Db,
    tx: &mut Tx,
    rows: ChainRows,
    head: Option<i64>,
    split: Split,
    verifier: &mut ChainVerifier,
) -> Result<usize, AuditError> {
    let from = verifier.first_seq();
    let wanted = split.starts(from, head, split.parts).len();
    let mut joined = Vec::new();
    if wanted > 1
        && let Some(snapshot) = tx.share_snapshot().await?
    {
        while joined.len() + 1 < wanted {
            match db.join_snapshot(&snapshot).await? {
                Some(other) => joined.push(other),
                None => break,
            }
        }
    }
    let starts = split.starts(from, head, joined.len() + 1);
    let end_of = |i: usize| starts.get(i + 1).copied();
    let chain = verifier.chain().to_owned();
    let mut parts = tokio::task::JoinSet::new();
    for (i, mut other) in (1..).zip(joined) {
        let Some(&start) = starts.get(i) else {
            break;
        };
        let statements = rows.statements(start, end_of(i));
        let mut part = verifier.part(start);
        let chain = chain.clone();
        parts.spawn(async move {
            let walked = match other.postgres_conn() {
                Some(conn) => walk(conn, &statements, &chain, &mut part).await,
                None => Err(internal("a joined snapshot is not on PostgreSQL")),
            };
            // Read-only: ending it either way changes nothing.
            let _ = other.rollback().await;
            walked.map(|()| (i, part))
        });
    }
    let conn = postgres(tx)?;
    walk(conn, &rows.statements(from, end_of(0)), &chain, verifier).await?;
    let mut walked = Vec::new();
    while let Some(done) = parts.join_next().await {
        walked.push(done.map_err(|e| internal(&format!("a part of the walk failed: {e}")))??);
    }
    walked.sort_unstable_by_key(|(i, _)| *i);
    for (_, part) in walked {
        if verifier.problem_found() {
            break;
        }
        if !verifier.join(part) {
            let from = verifier.next_seq();
            let conn = postgres(tx)?;
            walk(conn, &rows.statements(from, None), &chain, verifier).await?;
            break;
        }
    }
    Ok(starts.len())
}

fn postgres(tx: &mut Tx) -> Result<&mut sqlx::PgConnection, AuditError> {
    tx.postgres_conn()
        .ok_or_else(|| internal("the COPY walk runs on PostgreSQL only"))
}

fn internal(what: &str) -> AuditError {
    AuditError::Core(saas_core::CoreError::Internal(what.to_owned()))
}

/// Feeds every row the `COPY` `statements` stream, in order, to
/// `verifier`, stopping at its first problem. Returns an error only when a
/// stream itself is not what was asked for.
async fn walk(
    conn: &mut sqlx::PgConnection,
    statements: &[String],
    chain: &str,
    verifier: &mut ChainVerifier,
) -> Result<(), AuditError> {
    // The rows are wanted in the chain's order, which its primary key index
    // gives as it is read. Among many other chains the planner may prefer a
    // bitmap scan and a sort instead, which spills to disk; not here.
    sqlx::query("SET LOCAL enable_sort = off")
        .execute(&mut *conn)
        .await?;
    let mut scratch = Scratch::new(chain);
    for statement in statements {
        let mut stream = conn.copy_out_raw(statement).await?;
        let mut rows = RowReader::default();
        let mut going = !verifier.problem_found();
        while let Some(chunk) =
            std::future::poll_fn(|cx| futures_core::Stream::poll_next(stream.as_mut(), cx)).await
        {
            let chunk = chunk?;
            // Once a problem is found the rest is read and dropped: the
            // connection is usable again only after the whole `COPY`.
            if going {
                going = rows.feed(&chunk, |fields| scratch.check(fields, verifier))?;
            }
        }
        if going && !rows.ended {
            return Err(AuditError::Corrupt(
                "the chain's COPY stream ended early".into(),
            ));
        }
        if verifier.problem_found() {
            break;
        }
    }
    Ok(())
}

/// Splits a binary `COPY` stream, arriving in chunks of any size, into rows.
#[derive(Default)]
struct RowReader {
    pending: Vec<u8>,
    header_read: bool,
    ended: bool,
}

impl RowReader {
    /// Hands every complete row of the stream so far (what came before and
    /// `chunk`) to `row`, in order, while it returns true. Returns false
    /// once `row` did.
    fn feed(
        &mut self,
        chunk: &[u8],
        mut row: impl FnMut(&[Option<&[u8]>]) -> Result<bool, AuditError>,
    ) -> Result<bool, AuditError> {
        if self.header_read && self.pending.is_empty() {
            // The usual case (PostgreSQL sends a row per message): the rows
            // are read where they arrived, and only a partial one is kept.
            let (going, used) = rows_in(chunk, &mut self.ended, &mut row)?;
            self.pending
                .extend_from_slice(chunk.get(used..).unwrap_or_default());
            return Ok(going);
        }
        self.pending.extend_from_slice(chunk);
        let mut at = 0;
        if !self.header_read {
            match header_len(&self.pending)? {
                Some(n) => {
                    at = n;
                    self.header_read = true;
                }
                None => return Ok(true),
            }
        }
        let (going, used) = rows_in(
            self.pending.get(at..).unwrap_or_default(),
            &mut self.ended,
            &mut row,
        )?;
        self.pending.drain(..at + used);
        Ok(going)
    }
}

/// Hands the complete rows at the start of `data` to `row` while it returns
/// true, noting the end of the data; returns whether `row` still wants more,
/// and how many bytes were read.
fn rows_in(
    data: &[u8],
    ended: &mut bool,
    row: &mut impl FnMut(&[Option<&[u8]>]) -> Result<bool, AuditError>,
) -> Result<(bool, usize), AuditError> {
    let mut at = 0;
    let mut going = true;
    while going && !*ended {
        let mut fields = [None; N];
        match next_row(data.get(at..).unwrap_or_default(), &mut fields)? {
            Next::Incomplete => break,
            Next::End => {
                *ended = true;
                at += 2;
            }
            Next::Row(len, count) => {
                going = row(fields.get(..count).unwrap_or_default())?;
                at += len;
            }
        }
    }
    Ok((going, at))
}

fn corrupt(what: &str) -> AuditError {
    AuditError::Corrupt(format!("unexpected COPY data: {what}"))
}

/// The header's length once all of it has arrived.
fn header_len(data: &[u8]) -> Result<Option<usize>, AuditError> {
    let seen = data.len().min(SIGNATURE.len());
    if data.get(..seen) != SIGNATURE.get(..seen) {
        return Err(corrupt("not a binary COPY header"));
    }
    let (Some(flags), Some(ext)) = (
        be_u32(data, SIGNATURE.len()),
        be_u32(data, SIGNATURE.len() + 4),
    ) else {
        return Ok(None);
    };
    if flags & HAS_OIDS != 0 {
        return Err(corrupt("rows carry OIDs"));
    }
    let len = SIGNATURE.len() + 8 + usize::try_from(ext).map_err(|_| corrupt("header"))?;
    Ok((data.len() >= len).then_some(len))
}

fn be_u32(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

enum Next {
    Incomplete,
    End,
    /// A row of this many bytes and this many fields, its fields (`None`
    /// for NULL) written out.
    Row(usize, usize),
}

fn next_row<'a>(data: &'a [u8], fields: &mut [Option<&'a [u8]>; N]) -> Result<Next, AuditError> {
    let Some(&[hi, lo]) = data.get(..2) else {
        return Ok(Next::Incomplete);
    };
    let count = i16::from_be_bytes([hi, lo]);
    if count == -1 {
        return Ok(Next::End);
    }
    let count = usize::try_from(count).unwrap_or(0);
    if count != N && count != STORED_COLS.len() {
        return Err(corrupt("wrong number of columns"));
    }
    let mut at = 2;
    for field in fields.iter_mut().take(count) {
        let Some(len) = be_u32(data, at) else {
            return Ok(Next::Incomplete);
        };
        at += 4;
        // A length of -1 is NULL; no other negative length is valid.
        if len == u32::MAX {
            *field = None;
            continue;
        }
        let len = usize::try_from(len)
            .ok()
            .filter(|l| i32::try_from(*l).is_ok())
            .ok_or_else(|| corrupt("field length"))?;
        let Some(value) = data.get(at..at + len) else {
            return Ok(Next::Incomplete);
        };
        *field = Some(value);
        at += len;
    }
    Ok(Next::Row(at, count))
}

/// Buffers reused from row to row.
struct Scratch {
    chain: String,
    links: LinkReader,
    canonical: Vec<u8>,
    prev_hex: Vec<u8>,
    hash_hex: Vec<u8>,
}

impl Scratch {
    fn new(chain: &str) -> Self {
        Self {
            chain: chain.to_owned(),
            links: LinkReader::new(chain),
            canonical: Vec::new(),
            prev_hex: Vec::new(),
            hash_hex: Vec::new(),
        }
    }

    /// Checks one row, read whole or by its stored bytes, and feeds it to
    /// the verifier.
    fn check(
        &mut self,
        f: &[Option<&[u8]>],
        verifier: &mut ChainVerifier,
    ) -> Result<bool, AuditError> {
        match f {
            [canonical, hash, personal] => {
                Ok(self.check_stored(*canonical, required(*hash)?, *personal, verifier))
            }
            whole => self.check_row(whole, verifier),
        }
    }

    /// Checks an event by the bytes stored as its canonical form: their
    /// SHA-256 must be the stored hash, and the position, link and personal
    /// data digest are read out of them (see [`LinkReader`]). The columns
    /// are not read: while the guard is in place they can only be what
    /// these bytes say ([`guarded`]).
    fn check_stored(
        &mut self,
        canonical: Option<&[u8]>,
        hash: &[u8],
        personal: Option<&[u8]>,
        verifier: &mut ChainVerifier,
    ) -> bool {
        let hash_hex = hex_into(hash, &mut self.hash_hex);
        let links = canonical.and_then(|c| Some((c, self.links.read(c)?)));
        let Some((canonical, links)) = links else {
            // No bytes, or not bytes the writer writes: this cannot be the
            // event that was hashed at this position.
            return verifier.feed_link(verifier.next_seq(), b"", hash_hex, false);
        };
        let personal_ok = match (links.personal, personal) {
            (None, None) => true,
            (Some(digest), Some(blob)) => {
                crate::event::is_hex_of(Sha256::digest(blob).into(), digest)
            }
            _ => false,
        };
        let hash_ok = Sha256::digest(canonical)[..] == *hash;
        verifier.feed_link(links.seq, links.prev, hash_hex, hash_ok && personal_ok)
    }

    /// Hashes one row read whole as [`StoredEvent::canonical`](crate::StoredEvent::canonical)
    /// would; its stored canonical bytes, if any, must be exactly that form.
    fn check_row(
        &mut self,
        f: &[Option<&[u8]>],
        verifier: &mut ChainVerifier,
    ) -> Result<bool, AuditError> {
        let &[
            seq,
            id,
            occurred_at,
            actor_kind,
            actor_id,
            actor_reason,
            action,
            target_kind,
            target_id,
            outcome,
            correlation_id,
            details,
            subject_id,
            personal,
            prev_hash,
            hash,
            stored,
        ] = f
        else {
            return Err(corrupt("wrong number of columns"));
        };
        let hash = required(hash)?;
        let prev_hex = hex_into(required(prev_hash)?, &mut self.prev_hex);
        let hash_hex = hex_into(hash, &mut self.hash_hex);
        let seq = int8(required(seq)?)?;
        // Text columns are hashed as the bytes that arrived, unchecked: what
        // is not UTF-8 cannot hash as a stored event does (see `json_bytes`).
        let fields = CanonicalFields {
            chain: self.chain.as_bytes(),
            seq,
            id: uuid(required(id)?)?,
            occurred_at: timestamptz(required(occurred_at)?)?,
            actor_kind: required(actor_kind)?,
            actor_id,
            actor_reason,
            action: required(action)?,
            target_kind: required(target_kind)?,
            target_id,
            outcome: Outcome::parse(text(required(outcome)?)?)?,
            correlation_id: required(correlation_id)?,
            details: required(details)?,
            subject_id: subject_id.map(uuid).transpose()?,
            personal,
            prev_hash: prev_hex.as_bytes(),
        };
        let hash_ok = fields.digest(&mut self.canonical)[..] == *hash
            && stored.is_none_or(|c| c == &self.canonical[..]);
        Ok(verifier.feed_link(seq, prev_hex.as_bytes(), hash_hex, hash_ok))
    }
}

fn required(field: Option<&[u8]>) -> Result<&[u8], AuditError> {
    field.ok_or_else(|| corrupt("NULL in a NOT NULL column"))
}

/// Lowercase hex, as [`hex::encode`] writes it, in a reused buffer.
fn hex_into<'b>(bytes: &[u8], buf: &'b mut Vec<u8>) -> &'b str {
    buf.resize(bytes.len() * 2, 0);
    // The buffer is exactly twice as long as the input, and hex is ASCII.
    let _ = hex::encode_to_slice(bytes, buf);
    std::str::from_utf8(buf).unwrap_or_default()
}

fn int8(v: &[u8]) -> Result<i64, AuditError> {
    Ok(i64::from_be_bytes(
        v.try_into().map_err(|_| corrupt("int8"))?,
    ))
}

fn uuid(v: &[u8]) -> Result<Uuid, AuditError> {
    Uuid::from_slice(v).map_err(|_| corrupt("uuid"))
}

fn text(v: &[u8]) -> Result<&str, AuditError> {
    std::str::from_utf8(v).map_err(|_| corrupt("text that is not UTF-8"))
}

/// `timestamptz`: microseconds since PostgreSQL's epoch.
fn timestamptz(v: &[u8]) -> Result<DateTime<Utc>, AuditError> {
    int8(v)?
        .checked_add(PG_EPOCH * 1_000_000)
        .and_then(DateTime::from_timestamp_micros)
        .ok_or_else(|| corrupt("timestamptz out of range"))
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::indexing_slicing,
        reason = "tests fail loudly"
    )]

    use super::*;

    /// A binary COPY stream of `rows`, each with `N` fields.
    fn stream(rows: &[[Option<&[u8]>; N]]) -> Vec<u8> {
        let mut out = SIGNATURE.to_vec();
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(&3u32.to_be_bytes());
        out.extend_from_slice(b"ext");
        for row in rows {
            out.extend_from_slice(&i16::try_from(N).unwrap().to_be_bytes());
            for f in row {
                match f {
                    Some(v) => {
                        out.extend_from_slice(&u32::try_from(v.len()).unwrap().to_be_bytes());
                        out.extend_from_slice(v);
                    }
                    None => out.extend_from_slice(&(-1i32).to_be_bytes()),
                }
            }
        }
        out.extend_from_slice(&(-1i16).to_be_bytes());
        out
    }

    fn rows_of(data: &[u8], split: usize) -> (Vec<Vec<Option<Vec<u8>>>>, bool) {
        let mut reader = RowReader::default();
        let mut seen = Vec::new();
        for chunk in data.chunks(split) {
            reader
                .feed(chunk, |f| {
                    seen.push(f.iter().map(|v| v.map(<[u8]>::to_vec)).collect());
                    Ok(true)
                })
                .unwrap();
        }
        (seen, reader.ended)
    }

    #[test]
    fn rows_split_across_chunks_of_any_size_read_the_same() {
        let long = vec![7u8; 300];
        let mut a: [Option<&[u8]>; N] = [Some(b"x"); N];
        a[4] = None;
        a[13] = Some(&long);
        let mut b: [Option<&[u8]>; N] = [None; N];
        b[0] = Some(b"");
        let data = stream(&[a, b, a]);
        let (whole, ended) = rows_of(&data, data.len());
        assert!(ended);
        assert_eq!(whole.len(), 3);
        assert_eq!(whole[0][4], None);
        assert_eq!(whole[0][13].as_deref(), Some(&long[..]));
        assert_eq!(whole[1][0].as_deref(), Some(&b""[..]));
        assert_eq!(whole[1][1], None);
        for split in [1, 2, 3, 5, 7, 19, 64, 301] {
            assert_eq!(
                rows_of(&data, split),
                (whole.clone(), true),
                "split {split}"
            );
        }
    }

    #[test]
    fn a_stream_that_is_not_binary_copy_is_refused() {
        let mut reader = RowReader::default();
        assert!(reader.feed(b"1\tfoo\n2\tbar\n\\.\n", |_| Ok(true)).is_err());
        let mut data = stream(&[]);
        data[SIGNATURE.len() + 1] = 1; // the OIDs flag
        assert!(RowReader::default().feed(&data, |_| Ok(true)).is_err());
        let mut data = stream(&[[None; N]]);
        let at = SIGNATURE.len() + 8 + 3;
        data[at + 1] = 5; // five columns, neither seventeen nor three
        assert!(RowReader::default().feed(&data, |_| Ok(true)).is_err());
    }

    #[test]
    fn reading_stops_at_the_first_row_refused() {
        let data = stream(&[[Some(b"a"); N], [Some(b"b"); N], [Some(b"c"); N]]);
        let mut calls = 0;
        let going = RowReader::default()
            .feed(&data, |_| {
                calls += 1;
                Ok(calls < 2)
            })
            .unwrap();
        assert!(!going);
        assert_eq!(calls, 2);
    }

    /// Where walks are split: every part but the first starts at the given
    /// positions, and a short span stays in one piece.
    #[test]
    fn a_walk_is_split_only_into_parts_of_the_least_size() {
        let split = Split {
            parts: 3,
            min_part: 10,
        };
        assert_eq!(split.starts(1, Some(60), 3), [1, 21, 41]);
        assert_eq!(split.starts(1, Some(60), 2), [1, 31]);
        assert_eq!(split.starts(11, Some(35), 3), [11, 23]);
        assert_eq!(split.starts(1, Some(19), 3), [1]);
        assert_eq!(split.starts(1, None, 3), [1]);
        assert_eq!(split.starts(50, Some(10), 3), [50]);
    }

    /// Tampering at every position around the parts' edges (and inside
    /// them): a walk in three parts reports exactly what the walk in one
    /// piece reports, on a PostgreSQL chain of 60 events: read by the stored
    /// bytes behind the guard; with positions 15 to 45 stored without them
    /// (as before migration 5), read whole across the parts' edges; and
    /// read whole everywhere once the guard is dropped.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_walk_in_parts_reports_exactly_what_a_walk_in_one_piece_reports() {
        use saas_core::tenant::Tier;
        use saas_test_support::TestDb;

        use crate::{AuditEvent, AuditLog, AuditQuery, CheckpointSigner, Target};

        const LEN: i64 = 60;
        let sets = [saas_core::migrations(), crate::migrations()];
        let Some(t) = TestDb::postgres_with(&sets).await else {
            return;
        };
        let signer = CheckpointSigner::new("k", &[7; 32]).unwrap();
        let log = AuditLog::new(t.db.clone(), signer);
        let ctx = t.tenant("walked", Tier::Team).await;
        let events = (0..LEN)
            .map(|i| {
                AuditEvent::new(
                    "workspace.update",
                    Target::new("workspace", format!("w{i}")),
                )
                .details(serde_json::json!({ "n": i }))
            })
            .collect();
        let mut tx = t.db.begin(&ctx).await.unwrap();
        log.append_batch(&mut tx, &ctx, events).await.unwrap();
        tx.commit().await.unwrap();
        log.checkpoint(&ctx).await.unwrap().unwrap();
        let insp = t.inspector().await;
        insp.execute(
            "CREATE TABLE walked_events AS SELECT * FROM audit_events; \
             CREATE TABLE walked_bytes AS SELECT seq, canonical FROM audit_events; \
             CREATE TABLE walked_heads AS SELECT * FROM audit_heads; \
             CREATE TABLE walked_checkpoints AS SELECT * FROM audit_checkpoints",
        )
        .await;
        let attack = |sql: String| {
            format!(
                "SET session_replication_role = replica; {sql}; SET session_replication_role = origin"
            )
        };
        let restore = attack(
            "DELETE FROM audit_events; INSERT INTO audit_events SELECT * FROM walked_events; \
             DELETE FROM audit_heads; INSERT INTO audit_heads SELECT * FROM walked_heads; \
             DELETE FROM audit_checkpoints; \
             INSERT INTO audit_checkpoints SELECT * FROM walked_checkpoints"
                .into(),
        );
        let three = Split {
            parts: 3,
            min_part: 10,
        };
        let one = Split {
            parts: 1,
            min_part: 10,
        };
        let walk = |split| log.verify_split((&ctx).into(), 1, split);

        let k = format!("tenant_id = '{}'", ctx.tenant().as_uuid());
        let mut chain = log
            .query(
                &ctx,
                &AuditQuery {
                    limit: Some(100),
                    ..AuditQuery::default()
                },
            )
            .await
            .unwrap()
            .records
            .into_iter()
            .map(|r| r.event)
            .collect::<Vec<_>>();
        chain.sort_by_key(|e| e.seq);
        assert_eq!(chain.len(), 60);
        // Rows stored with their bytes keep them; rows stored without stay so.
        let bytes_of = |e: &crate::StoredEvent| {
            format!(
                "CASE WHEN canonical IS NULL THEN NULL ELSE '\\x{}'::bytea END",
                hex::encode(e.canonical())
            )
        };
        // Deletes the event at `p` and links the rest of the chain over the
        // hole with recomputed hashes, dropping the checkpoints that would
        // give it away: only the missing position is left to find.
        let rechain = |p: i64| {
            let mut sql = format!(
                "DELETE FROM audit_events WHERE {k} AND seq = {p}; \
                 DELETE FROM audit_checkpoints WHERE {k}"
            );
            let mut prev = if p == 1 {
                hex::encode(crate::event::GENESIS)
            } else {
                chain[usize::try_from(p - 2).unwrap()].hash.clone()
            };
            for e in chain.iter().filter(|e| e.seq > p) {
                let mut e = e.clone();
                e.prev_hash = prev;
                let hash = e.compute_hash();
                sql.push_str(&format!(
                    "; UPDATE audit_events SET prev_hash = '\\x{}', hash = '\\x{hash}', \
                     canonical = {} WHERE {k} AND seq = {}",
                    e.prev_hash,
                    bytes_of(&e),
                    e.seq
                ));
                prev = hash;
            }
            sql.push_str(&format!(
                "; UPDATE audit_heads SET hash = '\\x{prev}' WHERE {k}"
            ));
            sql
        };
        let (mut cases, mut refused) = (0, 0);
        for phase in [
            "stored bytes",
            "positions 15 to 45 without",
            "guard dropped",
        ] {
            match phase {
                "positions 15 to 45 without" => {
                    insp.execute(
                        "UPDATE walked_events SET canonical = NULL WHERE seq BETWEEN 15 AND 45",
                    )
                    .await;
                }
                "guard dropped" => {
                    insp.execute(
                        "UPDATE walked_events w SET canonical = b.canonical \
                         FROM walked_bytes b WHERE w.seq = b.seq",
                    )
                    .await;
                    insp.execute("ALTER TABLE audit_events DROP CONSTRAINT audit_events_canonical")
                        .await;
                }
                _ => {}
            }
            insp.execute(&restore).await;
            let guarded = phase != "guard dropped";
            let (whole, walked) = walk(three).await.unwrap();
            assert_eq!(walked.parts, 3);
            assert_eq!(walked.by_stored_bytes, guarded, "{phase}");
            assert!(whole.is_valid(), "{phase}: {whole:?}");
            assert_eq!(whole.checked, 60);
            let (in_one, walked) = walk(one).await.unwrap();
            assert_eq!((in_one, walked.parts), (whole, 1));
            for p in [
                1, 2, 14, 15, 19, 20, 21, 22, 39, 40, 41, 42, 45, 46, 58, 59, 60,
            ] {
                // The event at `p` rewritten with its hash (and bytes)
                // recomputed, so that only the link of the event after it
                // breaks.
                let mut forged = chain[usize::try_from(p - 1).unwrap()].clone();
                assert_eq!(forged.seq, p);
                forged.action = "tenant.delete".into();
                let forged_hash = forged.compute_hash();
                let mut tampers = vec![
                    format!(
                        "UPDATE audit_events SET action = 'tenant.delete' WHERE {k} AND seq = {p}"
                    ),
                    format!(
                        "UPDATE audit_events SET action = 'tenant.delete', hash = '\\x{forged_hash}', \
                         canonical = {} WHERE {k} AND seq = {p}",
                        bytes_of(&forged)
                    ),
                    format!("DELETE FROM audit_events WHERE {k} AND seq = {p}"),
                    format!("DELETE FROM audit_events WHERE {k} AND seq >= {p}"),
                    format!(
                        "DELETE FROM audit_events WHERE {k} AND seq >= {p}; UPDATE audit_heads SET seq = {} WHERE {k}",
                        p - 1
                    ),
                ];
                if p < LEN {
                    tampers.push(rechain(p));
                }
                if p + 2 <= LEN {
                    tampers.push(format!(
                        "DELETE FROM audit_events WHERE {k} AND seq BETWEEN {p} AND {}",
                        p + 2
                    ));
                    tampers.push(format!(
                        "UPDATE audit_events SET seq = -1 WHERE {k} AND seq = {p}; \
                         UPDATE audit_events SET seq = {p} WHERE {k} AND seq = {q}; \
                         UPDATE audit_events SET seq = {q} WHERE {k} AND seq = -1",
                        q = p + 1
                    ));
                }
                for tamper in tampers {
                    cases += 1;
                    if insp.try_execute(&attack(tamper.clone())).await.is_err() {
                        // The guard refuses a row whose columns are not
                        // what its stored bytes say.
                        assert!(guarded, "{phase}: {tamper}");
                        refused += 1;
                        continue;
                    }
                    let (in_parts, walked) = walk(three).await.unwrap();
                    assert_eq!(walked.by_stored_bytes, guarded);
                    let (in_one, walked) = walk(one).await.unwrap();
                    assert_eq!(walked.parts, 1);
                    assert!(in_one.problem.is_some(), "{phase}: {tamper}: {in_one:?}");
                    assert_eq!(in_parts, in_one, "{phase}: {tamper}");
                    insp.execute(&restore).await;
                }
            }
            assert!(walk(three).await.unwrap().0.is_valid());
        }
        assert_eq!(cases, 3 * (17 * 5 + 16 + 15 * 2));
        // Refused behind the guard: changing a column alone, and swapping
        // positions, wherever a row has its stored bytes (17 + 15 in the
        // first phase, 17 - 10 + 15 - 9 in the second).
        assert_eq!(refused, 32 + 13);
    }

    /// Behind the guard, even a superuser with the triggers disabled cannot
    /// store a row whose columns are not the bytes that were hashed; what
    /// gets past it (a row rewritten whole) is caught by the walk of the
    /// bytes alone; and a guard dropped, or added back `NOT VALID`, sends
    /// the walk back to every column.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn behind_the_guard_no_column_can_differ_from_the_bytes_that_were_hashed() {
        use saas_core::tenant::Tier;
        use saas_test_support::TestDb;

        use crate::event::PersonalData;
        use crate::{AuditEvent, AuditLog, AuditQuery, ChainProblem, CheckpointSigner, Target};

        let sets = [saas_core::migrations(), crate::migrations()];
        let Some(t) = TestDb::postgres_with(&sets).await else {
            return;
        };
        let log = AuditLog::new(t.db.clone(), CheckpointSigner::new("k", &[7; 32]).unwrap());
        let ctx = t.tenant("guarded", Tier::Team).await;
        // Every character JSON escapes, and some it does not, where the
        // caller writes text: the guard must build the very bytes the
        // writer built.
        let awkward: String = (1u8..0x20)
            .map(char::from)
            .chain("\"\\/\u{7f}\u{e9}\u{2028}\u{1f600}".chars())
            .collect();
        let events = (0..12)
            .map(|i| {
                let target = if i == 3 {
                    awkward.clone()
                } else {
                    format!("w{i}")
                };
                let mut e = AuditEvent::new("workspace.update", Target::new("workspace", target))
                    .details(
                        serde_json::json!({ "n": i, "text": awkward, "nested": { "prev": "x" } }),
                    );
                if i == 4 {
                    let personal = PersonalData {
                        ip: Some("192.0.2.1".into()),
                        ..PersonalData::default()
                    };
                    e = e.personal(Some(uuid::Uuid::now_v7()), personal);
                }
                e
            })
            .collect();
        let mut tx = t.db.begin(&ctx).await.unwrap();
        log.append_batch(&mut tx, &ctx, events).await.unwrap();
        tx.commit().await.unwrap();
        log.checkpoint(&ctx).await.unwrap().unwrap();
        let verify = || log.verify_split((&ctx).into(), 1, Split::for_this_machine());
        let (report, walked) = verify().await.unwrap();
        assert!(report.is_valid(), "{report:?}");
        assert!(walked.by_stored_bytes);
        // The platform chain's table has its own guard, in place too.
        let p = t.platform();
        log.record(
            &p,
            AuditEvent::new("tenant.create", Target::new("tenant", awkward.clone())),
        )
        .await
        .unwrap();
        let (report, walked) = log
            .verify_split((&p).into(), 1, Split::for_this_machine())
            .await
            .unwrap();
        assert!(report.is_valid() && report.checked == 1, "{report:?}");
        assert!(walked.by_stored_bytes);

        let insp = t.inspector().await;
        let k = format!("tenant_id = '{}'", ctx.tenant().as_uuid());
        let attack = |sql: &str| {
            format!(
                "SET session_replication_role = replica; {sql}; SET session_replication_role = origin"
            )
        };
        for (column, value) in [
            ("action", "'tenant.delete'"),
            ("actor_kind", "'system'"),
            ("actor_id", "'someone-else'"),
            ("actor_reason", "'because'"),
            ("target_kind", "'tenant'"),
            ("target_id", "'w9'"),
            ("outcome", "'denied'"),
            ("correlation_id", "'another'"),
            ("details", "'{\"n\":5}'"),
            ("occurred_at", "occurred_at + interval '1 microsecond'"),
            ("id", "gen_random_uuid()"),
            ("seq", "seq + 100"),
            ("subject_id", "gen_random_uuid()"),
            ("personal", "personal || '\\x00'::bytea"),
            ("prev_hash", "hash"),
            ("canonical", "canonical || '\\x20'::bytea"),
        ] {
            let seq = if column == "personal" { 5 } else { 6 };
            let err = insp
                .try_execute(&attack(&format!(
                    "UPDATE audit_events SET {column} = {value} WHERE {k} AND seq = {seq}"
                )))
                .await
                .unwrap_err();
            assert!(
                err.to_string().contains("audit_events_canonical"),
                "{column}: {err}"
            );
        }
        // The hash is the walk's to check, not the guard's: a changed one is
        // stored, and found.
        insp.execute(&attack(&format!(
            "UPDATE audit_events SET hash = prev_hash WHERE {k} AND seq = 6"
        )))
        .await;
        let (report, walked) = verify().await.unwrap();
        assert!(walked.by_stored_bytes);
        assert_eq!(report.problem, Some(ChainProblem::HashMismatch { seq: 6 }));
        insp.execute(&attack(&format!(
            "UPDATE audit_events SET hash = sha256(canonical) WHERE {k} AND seq = 6"
        )))
        .await;
        assert!(verify().await.unwrap().0.is_valid());
        let forged_row = "INSERT INTO audit_events (tenant_id, seq, id, occurred_at, actor_kind, \
             actor_id, actor_reason, action, target_kind, target_id, outcome, correlation_id, \
             details, subject_id, personal, prev_hash, hash, canonical) \
             SELECT tenant_id, 13, id, occurred_at, actor_kind, \
             actor_id, actor_reason, 'forged.action', target_kind, target_id, outcome, correlation_id, \
             details, subject_id, personal, hash, hash, canonical FROM audit_events";
        let err = insp
            .try_execute(&attack(&format!("{forged_row} WHERE {k} AND seq = 12")))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("audit_events_canonical"), "{err}");

        // Rewritten whole, bytes and hash recomputed: stored, and the next
        // link breaks.
        let mut ev = log
            .query(
                &ctx,
                &AuditQuery {
                    target_id: Some("w5".into()),
                    ..AuditQuery::default()
                },
            )
            .await
            .unwrap()
            .records
            .remove(0)
            .event;
        let original = ev.clone();
        ev.action = "tenant.delete".into();
        let set_row = |e: &crate::StoredEvent| {
            format!(
                "UPDATE audit_events SET action = '{}', hash = '\\x{}', canonical = '\\x{}' \
                 WHERE {k} AND seq = {}",
                e.action,
                e.compute_hash(),
                hex::encode(e.canonical()),
                e.seq
            )
        };
        insp.execute(&attack(&set_row(&ev))).await;
        let (report, walked) = verify().await.unwrap();
        assert!(walked.by_stored_bytes);
        assert_eq!(report.problem, Some(ChainProblem::BrokenLink { seq: 7 }));
        insp.execute(&attack(&set_row(&original))).await;
        assert!(verify().await.unwrap().0.is_valid());

        // The guard dropped, a column changed: the guard cannot be added back
        // while that row breaks it, and added back NOT VALID it is not in
        // place; the walk reads every column and finds the change.
        let saas_test_support::Inspector::Postgres(pool) = &insp else {
            unreachable!("a PostgreSQL test");
        };
        let definition: String = sqlx::query_scalar(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint \
             WHERE conname = 'audit_events_canonical'",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        let add_guard =
            &format!("ALTER TABLE audit_events ADD CONSTRAINT audit_events_canonical {definition}");
        insp.execute("ALTER TABLE audit_events DROP CONSTRAINT audit_events_canonical")
            .await;
        insp.execute(&attack(&format!(
            "UPDATE audit_events SET action = 'tenant.delete' WHERE {k} AND seq = 6"
        )))
        .await;
        let err = insp.try_execute(add_guard).await.unwrap_err();
        assert!(err.to_string().contains("audit_events_canonical"), "{err}");
        insp.execute(&format!("{add_guard} NOT VALID")).await;
        let (report, walked) = verify().await.unwrap();
        assert!(!walked.by_stored_bytes);
        assert_eq!(report.problem, Some(ChainProblem::HashMismatch { seq: 6 }));

        // Put right and the guard added back as migrated: bytes again.
        insp.execute("ALTER TABLE audit_events DROP CONSTRAINT audit_events_canonical")
            .await;
        insp.execute(&attack(&format!(
            "UPDATE audit_events SET action = 'workspace.update' WHERE {k} AND seq = 6"
        )))
        .await;
        insp.execute(add_guard).await;
        let (report, walked) = verify().await.unwrap();
        assert!(walked.by_stored_bytes);
        assert!(report.is_valid(), "{report:?}");
    }

    /// A row read by its stored bytes passes only if they hash to its
    /// stored hash and name the digest of its personal-data blob (or no
    /// blob, when it has none).
    #[test]
    fn a_row_read_by_its_bytes_must_match_its_hash_and_its_personal_blob() {
        use crate::event::{Actor, Outcome as O};
        use crate::{StoredEvent, Target};

        let chain = "tenant:0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";
        let ev = StoredEvent {
            chain: chain.into(),
            seq: 1,
            id: Uuid::now_v7(),
            occurred_at: chrono::Utc::now(),
            actor: Actor {
                kind: "system".into(),
                id: None,
                reason: Some("test".into()),
            },
            action: "workspace.update".into(),
            target: Target::new("workspace", "w1"),
            outcome: O::Success,
            correlation_id: "c".into(),
            details: "{}".into(),
            subject_id: Some(Uuid::now_v7()),
            personal: Some("00ff10".into()),
            prev_hash: hex::encode(crate::event::GENESIS),
            hash: String::new(),
        };
        let bytes = ev.canonical();
        let hash: [u8; 32] = Sha256::digest(&bytes).into();
        let blob: &[u8] = &[0x00, 0xff, 0x10];
        let mut wrong_hash = hash;
        wrong_hash[0] ^= 1;
        for (stored, hash, personal, passes) in [
            (Some(&bytes[..]), hash, Some(blob), true),
            (Some(&bytes[..]), hash, Some(&blob[..2]), false),
            (Some(&bytes[..]), hash, None, false),
            (Some(&bytes[..]), wrong_hash, Some(blob), false),
            (None, hash, Some(blob), false),
            (Some(&bytes[..bytes.len() / 2]), hash, Some(blob), false),
        ] {
            let mut verifier =
                ChainVerifier::new(chain.into(), 1, ev.prev_hash.clone(), Vec::new());
            Scratch::new(chain).check_stored(stored, &hash, personal, &mut verifier);
            let report = verifier.finish(None, None);
            assert_eq!(report.is_valid(), passes, "{report:?}");
            if !passes {
                assert_eq!(
                    report.problem,
                    Some(crate::ChainProblem::HashMismatch { seq: 1 })
                );
            }
        }
    }

    #[test]
    fn postgres_times_count_from_2000() {
        let t = timestamptz(&1_500_000i64.to_be_bytes()).unwrap();
        assert_eq!(t.to_rfc3339(), "2000-01-01T00:00:01.500+00:00");
        assert!(timestamptz(&i64::MAX.to_be_bytes()).is_err());
    }
}
