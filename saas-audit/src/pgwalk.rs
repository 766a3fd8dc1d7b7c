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

/// The `COPY` statement streaming `chain` from position `from_seq`, oldest
/// first. `COPY` takes no bind parameters: the values are a UUID and an
/// integer, inlined by sea-query.
pub(crate) fn statement(
    table: &'static str,
    key_column: &'static str,
    key: Uuid,
    from_seq: i64,
) -> String {
    let select = Query::select()
        .columns(EVENT_COLS)
        .from(table)
        .and_where(Expr::col(key_column).eq(key))
        .and_where(Expr::col("seq").gte(from_seq))
        .order_by("seq", Order::Asc)
        .to_string(PostgresQueryBuilder);
    format!("COPY ({select}) TO STDOUT (FORMAT binary)")
}

/// Feeds every streamed row to `verifier`, stopping at its first problem.
/// Returns an error only when the stream itself is not what was asked for.
pub(crate) async fn walk(
    conn: &mut sqlx::PgConnection,
    statement: &str,
    chain: &str,
    verifier: &mut ChainVerifier,
) -> Result<(), AuditError> {
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
    /// Appends `chunk` and hands every complete row to `row`, in order,
    /// while it returns true. Returns false once `row` did.
    fn feed(
        &mut self,
        chunk: &[u8],
        mut row: impl FnMut(&[Option<&[u8]>; N]) -> Result<bool, AuditError>,
    ) -> Result<bool, AuditError> {
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
        let mut going = true;
        while going && !self.ended {
            let mut fields = [None; N];
            match next_row(self.pending.get(at..).unwrap_or_default(), &mut fields)? {
                Next::Incomplete => break,
                Next::End => self.ended = true,
                Next::Row(len) => {
                    going = row(&fields)?;
                    at += len;
                }
            }
        }
        self.pending.drain(..at);
        Ok(going)
    }
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
        let fields = CanonicalFields {
            chain,
            seq,
            id: uuid(required(id)?)?,
            occurred_at: timestamptz(required(occurred_at)?)?,
            actor_kind: text(required(actor_kind)?)?,
            actor_id: actor_id.map(text).transpose()?,
            actor_reason: actor_reason.map(text).transpose()?,
            action: text(required(action)?)?,
            target_kind: text(required(target_kind)?)?,
            target_id: target_id.map(text).transpose()?,
            outcome: Outcome::parse(text(required(outcome)?)?)?,
            correlation_id: text(required(correlation_id)?)?,
            details: text(required(details)?)?,
            subject_id: subject_id.map(uuid).transpose()?,
            personal,
            prev_hash: prev_hex,
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
    let micros = int8(v)?;
    DateTime::from_timestamp(PG_EPOCH, 0)
        .and_then(|epoch| epoch.checked_add_signed(chrono::TimeDelta::microseconds(micros)))
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

    #[test]
    fn postgres_times_count_from_2000() {
        let t = timestamptz(&1_500_000i64.to_be_bytes()).unwrap();
        assert_eq!(t.to_rfc3339(), "2000-01-01T00:00:01.500+00:00");
        assert!(timestamptz(&i64::MAX.to_be_bytes()).is_err());
    }
}
