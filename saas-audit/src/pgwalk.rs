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
use saas_core::db::sea_query::{Expr, ExprTrait, Order, PostgresQueryBuilder, Query};
use saas_core::db::{Db, Tx};
use uuid::Uuid;

use crate::error::AuditError;
use crate::event::{CanonicalFields, Outcome};
use crate::store::EVENT_COLS;
use crate::verify::ChainVerifier;

const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";
/// Bit 16 of the flags word: each row carries an OID (never asked for).
const HAS_OIDS: u32 = 1 << 16;
/// PostgreSQL's epoch (2000-01-01T00:00:00Z) in Unix seconds.
const PG_EPOCH: i64 = 946_684_800;

/// Columns per row: the store's event columns, in their order (which
/// [`Scratch::check_row`] reads them in).
const N: usize = EVENT_COLS.len();

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

/// The chain a walk reads.
#[derive(Clone, Copy)]
pub(crate) struct ChainRows {
    /// Its events table.
    pub(crate) table: &'static str,
    /// The column naming the chain in that table.
    pub(crate) key_column: &'static str,
    /// The chain's key.
    pub(crate) key: Uuid,
}

impl ChainRows {
    /// The `COPY` statement streaming positions `from_seq` up to `to_seq`
    /// (excluded; `None` for the rest of the chain), oldest first. `COPY`
    /// takes no bind parameters: the values are a UUID and integers,
    /// inlined by sea-query.
    fn statement(self, from_seq: i64, to_seq: Option<i64>) -> String {
        let mut select = Query::select();
        select
            .columns(EVENT_COLS)
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
        let statement = rows.statement(start, end_of(i));
        let mut part = verifier.part(start);
        let chain = chain.clone();
        parts.spawn(async move {
            let walked = match other.postgres_conn() {
                Some(conn) => walk(conn, &statement, &chain, &mut part).await,
                None => Err(internal("a joined snapshot is not on PostgreSQL")),
            };
            // Read-only: ending it either way changes nothing.
            let _ = other.rollback().await;
            walked.map(|()| (i, part))
        });
    }
    let conn = postgres(tx)?;
    walk(conn, &rows.statement(from, end_of(0)), &chain, verifier).await?;
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
            walk(conn, &rows.statement(from, None), &chain, verifier).await?;
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

/// Feeds every streamed row to `verifier`, stopping at its first problem.
/// Returns an error only when the stream itself is not what was asked for.
async fn walk(
    conn: &mut sqlx::PgConnection,
    statement: &str,
    chain: &str,
    verifier: &mut ChainVerifier,
) -> Result<(), AuditError> {
    // The rows are wanted in the chain's order, which its primary key index
    // gives as it is read. Among many other chains the planner may prefer a
    // bitmap scan and a sort instead, which spills to disk; not here.
    sqlx::query("SET LOCAL enable_sort = off")
        .execute(&mut *conn)
        .await?;
    let mut stream = conn.copy_out_raw(statement).await?;
    let mut rows = RowReader::default();
    let mut scratch = Scratch::default();
    let mut going = true;
    while let Some(chunk) =
        std::future::poll_fn(|cx| futures_core::Stream::poll_next(stream.as_mut(), cx)).await
    {
        let chunk = chunk?;
        // Once a problem is found the rest is read and dropped: the
        // connection is usable again only after the whole `COPY`.
        if going {
            going = rows.feed(&chunk, |fields| scratch.check_row(chain, fields, verifier))?;
        }
    }
    if going && !rows.ended {
        return Err(AuditError::Corrupt(
            "the chain's COPY stream ended early".into(),
        ));
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
        mut row: impl FnMut(&[Option<&[u8]>; N]) -> Result<bool, AuditError>,
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
    row: &mut impl FnMut(&[Option<&[u8]>; N]) -> Result<bool, AuditError>,
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
            Next::Row(len) => {
                going = row(&fields)?;
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
    /// A row of this many bytes, its fields (`None` for NULL) written out.
    Row(usize),
}

fn next_row<'a>(data: &'a [u8], fields: &mut [Option<&'a [u8]>; N]) -> Result<Next, AuditError> {
    let Some(&[hi, lo]) = data.get(..2) else {
        return Ok(Next::Incomplete);
    };
    let count = i16::from_be_bytes([hi, lo]);
    if count == -1 {
        return Ok(Next::End);
    }
    if usize::try_from(count).ok() != Some(N) {
        return Err(corrupt("wrong number of columns"));
    }
    let mut at = 2;
    for field in fields.iter_mut() {
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
    Ok(Next::Row(at))
}

/// Buffers reused from row to row.
#[derive(Default)]
struct Scratch {
    canonical: Vec<u8>,
    prev_hex: Vec<u8>,
    hash_hex: Vec<u8>,
}

impl Scratch {
    /// Hashes one row as [`StoredEvent::canonical`](crate::StoredEvent::canonical)
    /// would and feeds it to the verifier.
    fn check_row(
        &mut self,
        chain: &str,
        f: &[Option<&[u8]>; N],
        verifier: &mut ChainVerifier,
    ) -> Result<bool, AuditError> {
        let [
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
        ] = *f;
        let hash = required(hash)?;
        let prev_hex = hex_into(required(prev_hash)?, &mut self.prev_hex);
        let hash_hex = hex_into(hash, &mut self.hash_hex);
        let seq = int8(required(seq)?)?;
        // Text columns are hashed as the bytes that arrived, unchecked: what
        // is not UTF-8 cannot hash as a stored event does (see `json_bytes`).
        let fields = CanonicalFields {
            chain: chain.as_bytes(),
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
        let hash_ok = fields.digest(&mut self.canonical)[..] == *hash;
        Ok(verifier.feed_link(seq, prev_hex, hash_hex, hash_ok))
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
        data[at + 1] = 3; // three columns, not sixteen
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
    /// piece reports, on a PostgreSQL chain of 60 events.
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

        let (whole, parts) = walk(three).await.unwrap();
        assert_eq!(parts, 3);
        assert!(whole.is_valid(), "{whole:?}");
        assert_eq!(whole.checked, 60);
        assert_eq!(walk(one).await.unwrap(), (whole, 1));

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
                    "; UPDATE audit_events SET prev_hash = '\\x{}', hash = '\\x{hash}' \
                     WHERE {k} AND seq = {}",
                    e.prev_hash, e.seq
                ));
                prev = hash;
            }
            sql.push_str(&format!(
                "; UPDATE audit_heads SET hash = '\\x{prev}' WHERE {k}"
            ));
            sql
        };
        let mut cases = 0;
        for p in [1, 2, 19, 20, 21, 22, 39, 40, 41, 42, 58, 59, 60] {
            // The event at `p` rewritten with its hash recomputed, so that
            // only the link of the event after it breaks.
            let mut forged = log
                .query(
                    &ctx,
                    &AuditQuery {
                        target_id: Some(format!("w{}", p - 1)),
                        ..AuditQuery::default()
                    },
                )
                .await
                .unwrap()
                .records
                .remove(0)
                .event;
            assert_eq!(forged.seq, p);
            forged.action = "tenant.delete".into();
            let forged_hash = forged.compute_hash();
            let mut tampers = vec![
                format!("UPDATE audit_events SET action = 'tenant.delete' WHERE {k} AND seq = {p}"),
                format!(
                    "UPDATE audit_events SET action = 'tenant.delete', hash = '\\x{forged_hash}' WHERE {k} AND seq = {p}"
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
                insp.execute(&attack(tamper.clone())).await;
                let (in_parts, _) = walk(three).await.unwrap();
                let (in_one, parts) = walk(one).await.unwrap();
                assert_eq!(parts, 1);
                assert!(in_one.problem.is_some(), "{tamper}: {in_one:?}");
                assert_eq!(in_parts, in_one, "{tamper}");
                insp.execute(&restore).await;
                cases += 1;
            }
        }
        assert_eq!(cases, 13 * 5 + 12 + 11 * 2);
        assert!(walk(three).await.unwrap().0.is_valid());
    }

    #[test]
    fn postgres_times_count_from_2000() {
        let t = timestamptz(&1_500_000i64.to_be_bytes()).unwrap();
        assert_eq!(t.to_rfc3339(), "2000-01-01T00:00:01.500+00:00");
        assert!(timestamptz(&i64::MAX.to_be_bytes()).is_err());
    }
}
