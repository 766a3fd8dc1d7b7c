//! Audit events: what callers record, what is stored, and the canonical form
//! that is hashed into the chain.
//!
//! The canonical form (version 1) is a JSON object with keys sorted at every
//! level and no whitespace. It holds no personal data: only the SHA-256 of the
//! encrypted personal-data blob, so destroying a subject's key leaves every
//! hash intact.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use saas_core::{PlatformActor, Principal};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::AuditError;

/// Largest `details` object, serialized.
pub const MAX_DETAILS_BYTES: usize = 8 * 1024;
/// Largest personal-data payload, serialized.
pub const MAX_PERSONAL_BYTES: usize = 8 * 1024;
/// Version of the canonical form this crate writes.
pub const CANONICAL_VERSION: u32 = 1;

/// How an action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It happened.
    Success,
    /// Authorization refused it.
    Denied,
    /// It was attempted and failed.
    Failure,
}

impl Outcome {
    /// The stored name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Denied => "denied",
            Self::Failure => "failure",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<Self, AuditError> {
        match s {
            "success" => Ok(Self::Success),
            "denied" => Ok(Self::Denied),
            "failure" => Ok(Self::Failure),
            _ => Err(AuditError::Corrupt(format!("unknown outcome {s}"))),
        }
    }
}

/// What the action was done to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// The kind of thing, e.g. `"workspace"`.
    pub kind: String,
    /// Its id, if it has one.
    pub id: Option<String>,
}

impl Target {
    /// A target of `kind` with an id.
    pub fn new(kind: impl Into<String>, id: impl ToString) -> Self {
        Self {
            kind: kind.into(),
            id: Some(id.to_string()),
        }
    }

    /// A target with no id (e.g. `"tenant_config"`).
    pub fn kind(kind: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            id: None,
        }
    }
}

/// Who acted, as stored. Derived from the context, never from the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// `user`, `api_key`, `service`, `operator`, `break_glass` or `system`.
    pub kind: String,
    /// The principal's id (a pseudonymous UUID), if it has one.
    pub id: Option<String>,
    /// The stated reason of a system actor.
    pub reason: Option<String>,
}

impl Actor {
    pub(crate) fn from_principal(p: &Principal) -> Self {
        let (kind, id, reason) = match p {
            Principal::User { id } => ("user", Some(id.to_string()), None),
            Principal::ApiKey { id } => ("api_key", Some(id.to_string()), None),
            Principal::Service { id } => ("service", Some(id.to_string()), None),
            Principal::Operator { id } => ("operator", Some(id.to_string()), None),
            Principal::System { reason } => ("system", None, Some(reason.clone())),
            _ => ("unknown", None, None),
        };
        Self {
            kind: kind.into(),
            id,
            reason,
        }
    }

    pub(crate) fn from_platform(a: &PlatformActor) -> Self {
        match a {
            PlatformActor::Operator { id } => Self {
                kind: "operator".into(),
                id: Some(id.to_string()),
                reason: None,
            },
            PlatformActor::System { reason } => Self {
                kind: "system".into(),
                id: None,
                reason: Some(reason.clone()),
            },
            _ => Self {
                kind: "unknown".into(),
                id: None,
                reason: None,
            },
        }
    }
}

/// Personal data attached to an event. Stored encrypted under the data
/// subject's key, outside the hashed form; destroyed with that key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonalData {
    /// Source IP address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// User agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// Other personal fields (email, name, free text), by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, String>,
}

impl PersonalData {
    /// True when nothing is set.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.ip.is_none() && self.user_agent.is_none() && self.fields.is_empty()
    }
}

/// An event to record. Tenant, actor, time and correlation id come from the
/// context and the clock, not from here.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    /// Dotted lowercase action name, e.g. `"tenant.suspend"`.
    pub action: String,
    /// What was acted on.
    pub target: Target,
    /// How it ended.
    pub outcome: Outcome,
    /// Structured, non-personal details (a JSON object, at most 8 KiB).
    pub details: serde_json::Value,
    /// Personal data (IP, user agent, emails, free text), kept out of the hash.
    pub personal: PersonalData,
    /// The data subject the personal data belongs to; defaults to the acting user.
    pub subject: Option<Uuid>,
}

impl AuditEvent {
    /// A successful `action` on `target` with no details.
    pub fn new(action: impl Into<String>, target: Target) -> Self {
        Self {
            action: action.into(),
            target,
            outcome: Outcome::Success,
            details: serde_json::json!({}),
            personal: PersonalData::default(),
            subject: None,
        }
    }

    /// Sets the outcome.
    #[must_use]
    pub fn outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = outcome;
        self
    }

    /// Sets the details object.
    #[must_use]
    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }

    /// Attaches personal data belonging to `subject`.
    #[must_use]
    pub fn personal(mut self, subject: Option<Uuid>, personal: PersonalData) -> Self {
        self.subject = subject;
        self.personal = personal;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), AuditError> {
        let action_ok = !self.action.is_empty()
            && self.action.len() <= 128
            && self
                .action
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_');
        if !action_ok {
            return Err(AuditError::Invalid(
                "action must be 1 to 128 characters of a-z, 0-9, '.' and '_'".into(),
            ));
        }
        if self.target.kind.is_empty() || self.target.kind.len() > 64 {
            return Err(AuditError::Invalid(
                "target kind must be 1 to 64 characters".into(),
            ));
        }
        if self.target.id.as_ref().is_some_and(|id| id.len() > 256) {
            return Err(AuditError::Invalid(
                "target id must be at most 256 characters".into(),
            ));
        }
        if !self.details.is_object() {
            return Err(AuditError::Invalid("details must be a JSON object".into()));
        }
        if canonical_json(&self.details).len() > MAX_DETAILS_BYTES {
            return Err(AuditError::Invalid(format!(
                "details must be at most {MAX_DETAILS_BYTES} bytes"
            )));
        }
        Ok(())
    }
}

/// An event as stored: every field that goes into the hash, plus the hashes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// `tenant:<uuid>` or `platform`.
    pub chain: String,
    /// Position in the chain, from 1, without gaps.
    pub seq: i64,
    /// Event id.
    pub id: Uuid,
    /// When it was recorded.
    pub occurred_at: DateTime<Utc>,
    /// Who acted.
    pub actor: Actor,
    /// What was done.
    pub action: String,
    /// To what.
    pub target: Target,
    /// How it ended.
    pub outcome: Outcome,
    /// The request's correlation id.
    pub correlation_id: String,
    /// Canonical JSON text of the details object.
    pub details: String,
    /// The data subject whose key encrypts `personal`.
    pub subject_id: Option<Uuid>,
    /// Nonce and ciphertext of the personal data, hex; `None` when there was none.
    pub personal: Option<String>,
    /// Hash of the previous event (hex; zeros for the first).
    pub prev_hash: String,
    /// SHA-256 of this event's canonical form (hex).
    pub hash: String,
}

impl StoredEvent {
    /// The canonical bytes that are hashed: a JSON object with its keys in
    /// sorted order and no whitespace. `details` is embedded as stored (it is
    /// written in canonical form), so any change to the stored text changes
    /// the hash.
    #[must_use]
    pub fn canonical(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(384 + self.details.len());
        self.write_canonical(&mut out);
        out
    }

    fn write_canonical(&self, out: &mut Vec<u8>) {
        let personal = decode_personal(self.personal.as_deref());
        self.fields(personal.as_deref()).write(out);
    }

    /// The hashed fields, borrowed; `personal` is the decoded ciphertext.
    fn fields<'a>(&'a self, personal: Option<&'a [u8]>) -> CanonicalFields<'a> {
        canonical_fields!(self, personal)
    }

    /// Recomputes this event's hash (hex).
    #[must_use]
    pub fn compute_hash(&self) -> String {
        let mut buf = Vec::new();
        hex::encode(self.digest_with(&mut buf))
    }

    /// SHA-256 of the canonical form, written into a reusable buffer.
    pub(crate) fn digest_with(&self, buf: &mut Vec<u8>) -> [u8; 32] {
        let personal = decode_personal(self.personal.as_deref());
        self.fields(personal.as_deref()).digest(buf)
    }

    /// Whether the stored hash is the hash of the stored event, without
    /// allocating (the verifier's hot path); and, when the bytes that were
    /// hashed were stored too (`stored`), whether they are exactly this
    /// event's canonical form.
    pub(crate) fn hash_matches(&self, stored: Option<&[u8]>, buf: &mut Vec<u8>) -> bool {
        is_hex_of(self.digest_with(buf), &self.hash) && stored.is_none_or(|c| c == &buf[..])
    }
}

/// The encrypted personal-data blob of a stored or exported event, from its
/// hex form (what is not hex hashes as an empty blob, as it always has).
pub(crate) fn decode_personal(hexed: Option<&str>) -> Option<Vec<u8>> {
    hexed.map(|h| hex::decode(h).unwrap_or_default())
}

/// Whether `hexed` is `digest` in lowercase hex, without allocating.
pub(crate) fn is_hex_of(digest: [u8; 32], hexed: impl AsRef<[u8]>) -> bool {
    let mut expected = [0u8; 64];
    hex::encode_to_slice(digest, &mut expected).is_ok() && expected[..] == *hexed.as_ref()
}

/// The fields of a stored event that go into its hash, borrowed from
/// wherever they were read (a [`StoredEvent`], or a row streamed out of the
/// database), so both are hashed by the one writer below.
pub(crate) struct CanonicalFields<'a> {
    // Text fields are bytes: a row streamed from the database is hashed as
    // it arrives, without a UTF-8 check of each column (see `json_bytes`).
    pub(crate) chain: &'a [u8],
    pub(crate) seq: i64,
    pub(crate) id: Uuid,
    pub(crate) occurred_at: DateTime<Utc>,
    pub(crate) actor_kind: &'a [u8],
    pub(crate) actor_id: Option<&'a [u8]>,
    pub(crate) actor_reason: Option<&'a [u8]>,
    pub(crate) action: &'a [u8],
    pub(crate) target_kind: &'a [u8],
    pub(crate) target_id: Option<&'a [u8]>,
    pub(crate) outcome: Outcome,
    pub(crate) correlation_id: &'a [u8],
    /// Canonical JSON, written as it is.
    pub(crate) details: &'a [u8],
    pub(crate) subject_id: Option<Uuid>,
    /// The encrypted personal-data blob (only its SHA-256 is hashed).
    pub(crate) personal: Option<&'a [u8]>,
    /// The previous event's hash, hex.
    pub(crate) prev_hash: &'a [u8],
}

/// The [`CanonicalFields`] of `$ev`: a [`StoredEvent`], or an event read
/// elsewhere with the same field names holding text; `$personal` is its
/// decoded personal-data blob.
macro_rules! canonical_fields {
    ($ev:expr, $personal:expr) => {
        $crate::event::CanonicalFields {
            chain: $ev.chain.as_bytes(),
            seq: $ev.seq,
            id: $ev.id,
            occurred_at: $ev.occurred_at,
            actor_kind: $ev.actor.kind.as_bytes(),
            actor_id: $ev.actor.id.as_deref().map(str::as_bytes),
            actor_reason: $ev.actor.reason.as_deref().map(str::as_bytes),
            action: $ev.action.as_bytes(),
            target_kind: $ev.target.kind.as_bytes(),
            target_id: $ev.target.id.as_deref().map(str::as_bytes),
            outcome: $ev.outcome,
            correlation_id: $ev.correlation_id.as_bytes(),
            details: $ev.details.as_bytes(),
            subject_id: $ev.subject_id,
            personal: $personal,
            prev_hash: $ev.prev_hash.as_bytes(),
        }
    };
}
pub(crate) use canonical_fields;

impl CanonicalFields<'_> {
    /// SHA-256 of the canonical form, written into a reusable buffer.
    pub(crate) fn digest(&self, buf: &mut Vec<u8>) -> [u8; 32] {
        buf.clear();
        self.write(buf);
        Sha256::digest(&buf[..]).into()
    }

    /// Appends the canonical form (version 1) to `out`.
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"action\":");
        json_bytes(out, self.action);
        out.extend_from_slice(b",\"actor\":{\"id\":");
        json_opt_str(out, self.actor_id);
        out.extend_from_slice(b",\"kind\":");
        json_bytes(out, self.actor_kind);
        out.extend_from_slice(b",\"reason\":");
        json_opt_str(out, self.actor_reason);
        out.extend_from_slice(b"},\"at\":\"");
        push_time(out, self.occurred_at);
        out.extend_from_slice(b"\",\"chain\":");
        json_bytes(out, self.chain);
        out.extend_from_slice(b",\"correlation_id\":");
        json_bytes(out, self.correlation_id);
        out.extend_from_slice(b",\"details\":");
        out.extend_from_slice(self.details);
        out.extend_from_slice(b",\"id\":\"");
        out.extend_from_slice(
            self.id
                .hyphenated()
                .encode_lower(&mut Uuid::encode_buffer())
                .as_bytes(),
        );
        out.extend_from_slice(b"\",\"outcome\":\"");
        out.extend_from_slice(self.outcome.as_str().as_bytes());
        out.extend_from_slice(b"\",\"personal\":");
        match self.personal {
            Some(blob) => {
                let mut hexed = [0u8; 64];
                let _ = hex::encode_to_slice(Sha256::digest(blob), &mut hexed);
                out.push(b'"');
                out.extend_from_slice(&hexed);
                out.push(b'"');
            }
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"prev\":");
        json_bytes(out, self.prev_hash);
        out.extend_from_slice(b",\"seq\":");
        json_number(out, self.seq);
        out.extend_from_slice(b",\"subject\":");
        match self.subject_id {
            Some(s) => {
                out.push(b'"');
                out.extend_from_slice(
                    s.hyphenated()
                        .encode_lower(&mut Uuid::encode_buffer())
                        .as_bytes(),
                );
                out.push(b'"');
            }
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"target\":{\"id\":");
        json_opt_str(out, self.target_id);
        out.extend_from_slice(b",\"kind\":");
        json_bytes(out, self.target_kind);
        out.extend_from_slice(b"},\"v\":");
        json_number(out, CANONICAL_VERSION);
        out.push(b'}');
    }
}

/// What a chain walk needs of an event's stored canonical bytes: its
/// position, its link, and the digest of its personal-data blob.
pub(crate) struct Links<'a> {
    pub(crate) seq: i64,
    /// The previous event's hash as written (hex, unless tampered with: it
    /// is only ever compared with hashes in hex).
    pub(crate) prev: &'a [u8],
    /// The SHA-256 of the personal-data blob as written, likewise; `None`
    /// when there was none.
    pub(crate) personal: Option<&'a [u8]>,
}

/// Reads the [`Links`] out of canonical bytes of one chain without parsing
/// the rest of them.
///
/// It relies on the layout [`CanonicalFields::write`] gives, which is the
/// only one a chain holds but for tampering: the keys in sorted order, and
/// every string escaped so that a `"` inside one always follows a `\`. So
/// `,"k":` cannot occur inside a string. The first `,"chain":"` is the
/// event's own (only `action`, `actor` and `at` come before it), and the last
/// `,"prev":"` is too (after it come only numbers, UUIDs and the target's
/// strings). For any other bytes it reads something or nothing, never
/// anything that can pass for a tampered event: the chain's links are hashes
/// of the whole bytes, so a change anywhere breaks a link whatever is read
/// out of them.
pub(crate) struct LinkReader {
    chain_key: memchr::memmem::Finder<'static>,
    /// The chain's name and what follows it.
    chain_tail: Vec<u8>,
}

const CHAIN_KEY: &[u8] = b",\"chain\":\"";
const PREV_KEY: &[u8] = b",\"prev\":\"";

impl LinkReader {
    pub(crate) fn new(chain: &str) -> Self {
        let mut chain_tail = Vec::with_capacity(chain.len() + 20);
        json_str(&mut chain_tail, chain);
        // Without the opening quote, which the key's pattern holds.
        chain_tail.remove(0);
        chain_tail.extend_from_slice(b",\"correlation_id\":");
        Self {
            chain_key: memchr::memmem::Finder::new(CHAIN_KEY),
            chain_tail,
        }
    }

    /// The links of `canonical`, an event of this reader's chain; `None`
    /// when the bytes are not laid out as the writer lays them out, or name
    /// another chain.
    pub(crate) fn read<'a>(&self, canonical: &'a [u8]) -> Option<Links<'a>> {
        let chain_at = self.chain_key.find(canonical)? + CHAIN_KEY.len();
        if !canonical.get(chain_at..)?.starts_with(&self.chain_tail) {
            return None;
        }
        let prev_at = last_prev_key(canonical)?;
        if prev_at < chain_at {
            return None;
        }
        let (before, rest) = canonical.split_at(prev_at);
        let rest = rest.get(PREV_KEY.len()..)?;
        let prev = rest.get(..64)?;
        let rest = rest.get(64..)?.strip_prefix(b"\",\"seq\":")?;
        let digits = rest.get(..memchr::memchr(b',', rest)?)?;
        if digits.first() == Some(&b'+') {
            return None;
        }
        let seq = std::str::from_utf8(digits).ok()?.parse().ok()?;
        let personal = if before.ends_with(b"\"personal\":null") {
            None
        } else {
            let before = before.strip_suffix(b"\"")?;
            let (key, digest) = before.split_at(before.len().checked_sub(64)?);
            if !key.ends_with(b"\"personal\":\"") {
                return None;
            }
            Some(digest)
        };
        Some(Links {
            seq,
            prev,
            personal,
        })
    }
}

/// Where the last `,"prev":"` in `bytes` starts. Found from its `v`
/// backwards: only a few bytes follow the one that is wanted.
fn last_prev_key(bytes: &[u8]) -> Option<usize> {
    const V_AT: usize = 5;
    let mut end = bytes.len();
    while let Some(v) = memchr::memrchr(b'v', bytes.get(..end)?) {
        if let Some(start) = v.checked_sub(V_AT)
            && bytes.get(start..start + PREV_KEY.len()) == Some(PREV_KEY)
        {
            return Some(start);
        }
        end = v;
    }
    None
}

/// Appends `s` as a JSON string, as serde_json writes it: only `"`, `\\`
/// and control characters below U+0020 are escaped.
fn json_str(out: &mut Vec<u8>, s: &str) {
    json_bytes(out, s.as_bytes());
}

/// [`json_str`] for text given as bytes. Most strings an event carries need
/// no escape and are copied whole; the rest go through serde_json itself.
/// Bytes that are not UTF-8 (which no stored event has: they can only come
/// from an edit in the database) are copied as they are, so the canonical
/// form they give is not UTF-8 either, cannot be that of any event, and its
/// hash does not match.
fn json_bytes(out: &mut Vec<u8>, s: &[u8]) {
    // No early exit, so that the check runs over whole vectors of bytes.
    let plain = !s.iter().fold(false, |esc, &b| {
        esc | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if !plain && let Ok(text) = std::str::from_utf8(s) {
        // Serializing a &str into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, text);
        return;
    }
    out.reserve(s.len() + 2);
    out.push(b'"');
    out.extend_from_slice(s);
    out.push(b'"');
}

fn json_number(out: &mut Vec<u8>, n: impl Serialize) {
    // Serializing an integer into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, &n);
}

fn json_opt_str(out: &mut Vec<u8>, s: Option<&[u8]>) {
    match s {
        Some(s) => json_bytes(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// Writes `t` as `YYYY-MM-DDTHH:MM:SS.ffffffZ` (what [`format_time`] gives),
/// digit by digit: it runs once per event the verifier hashes.
fn push_time(out: &mut Vec<u8>, t: DateTime<Utc>) {
    use chrono::{Datelike, Timelike};
    // The UTC fields once, rather than each accessor applying the offset.
    let n = t.naive_utc();
    let micros = n.nanosecond() / 1000;
    let Ok(year) = u32::try_from(n.year()) else {
        return push_time_slow(out, t);
    };
    if year > 9999 || micros > 999_999 {
        // Years past 9999 and leap seconds do not fit the fixed widths.
        return push_time_slow(out, t);
    }
    for (value, width, then) in [
        (year, 4, b'-'),
        (n.month(), 2, b'-'),
        (n.day(), 2, b'T'),
        (n.hour(), 2, b':'),
        (n.minute(), 2, b':'),
        (n.second(), 2, b'.'),
        (micros, 6, b'Z'),
    ] {
        push_digits(out, value, width);
        out.push(then);
    }
}

fn push_time_slow(out: &mut Vec<u8>, t: DateTime<Utc>) {
    use chrono::{Datelike, Timelike};
    use std::io::Write;
    let _ = write!(
        out,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond() / 1000
    );
}

/// `value`'s last `width` decimal digits, zero-padded.
fn push_digits(out: &mut Vec<u8>, mut value: u32, width: usize) {
    let start = out.len();
    for _ in 0..width {
        out.push(b'0' + u8::try_from(value % 10).unwrap_or(0));
        value /= 10;
    }
    if let Some(digits) = out.get_mut(start..) {
        digits.reverse();
    }
}

/// Fixed-width UTC time with microseconds, as hashed.
#[must_use]
pub fn format_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// JSON with object keys sorted at every level and no insignificant whitespace.
#[must_use]
pub fn canonical_json(v: &serde_json::Value) -> String {
    let mut out = Vec::new();
    write_canonical(v, &mut out);
    // Everything written is JSON text, so it is UTF-8.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Appends `map` to `out` as [`canonical_json`] would write it as an object,
/// without building a `Value` around it.
pub fn write_canonical_object(map: &serde_json::Map<String, serde_json::Value>, out: &mut Vec<u8>) {
    let mut entries: Vec<(&String, &serde_json::Value)> = map.iter().collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    out.push(b'{');
    for (i, (k, v)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json_str(out, k);
        out.push(b':');
        write_canonical(v, out);
    }
    out.push(b'}');
}

fn write_canonical(v: &serde_json::Value, out: &mut Vec<u8>) {
    use serde_json::Value;
    match v {
        Value::Object(map) => write_canonical_object(map, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        // Serializing a scalar into a Vec cannot fail.
        other => {
            let _ = serde_json::to_writer(&mut *out, other);
        }
    }
}

/// The hash that precedes the first event of a chain.
pub const GENESIS: [u8; 32] = [0; 32];

#[cfg(test)]
mod tests {
    use super::*;

    /// The form as first written (a `Value` per key and scalar, through
    /// `to_string`): every stored hash and billing fingerprint was made with
    /// it, so the faster writer must give the same bytes.
    fn reference_canonical(v: &serde_json::Value) -> String {
        use serde_json::Value;
        match v {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                let parts: Vec<String> = keys
                    .iter()
                    .map(|k| {
                        format!(
                            "{}:{}",
                            Value::String((*k).clone()),
                            reference_canonical(&map[k.as_str()])
                        )
                    })
                    .collect();
                format!("{{{}}}", parts.join(","))
            }
            Value::Array(items) => {
                let parts: Vec<String> = items.iter().map(reference_canonical).collect();
                format!("[{}]", parts.join(","))
            }
            other => other.to_string(),
        }
    }

    fn golden_event() -> StoredEvent {
        StoredEvent {
            chain: "tenant:0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b".into(),
            seq: 1_234_567,
            id: Uuid::parse_str("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c").unwrap(),
            occurred_at: DateTime::from_timestamp(1_764_000_000, 7_000).unwrap(),
            actor: Actor {
                kind: "operator".into(),
                id: Some("op \"1\" é".into()),
                reason: Some("incident\n#42 🦀".into()),
            },
            action: "tenant.suspend".into(),
            target: Target::new("tenant", "t/1"),
            outcome: Outcome::Denied,
            correlation_id: "corr-\u{1}".into(),
            details: canonical_json(&serde_json::json!({"b": [1, null], "a": "\\\t"})),
            subject_id: Some(Uuid::parse_str("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5d").unwrap()),
            personal: Some("00ff10".into()),
            prev_hash: "ab".repeat(32),
            hash: String::new(),
        }
    }

    #[test]
    fn a_json_string_is_written_as_serde_json_writes_it() {
        let mut cases: Vec<String> = (0u8..=0x7f)
            .map(|b| format!("a{}b", char::from(b)))
            .collect();
        cases.extend(
            [
                "",
                "plain",
                "é ü 你好 🦀",
                "\u{7f}\u{80}\u{2028}",
                "\"quoted\" \\ end\n",
            ]
            .map(String::from),
        );
        for s in cases {
            let mut ours = Vec::new();
            json_str(&mut ours, &s);
            assert_eq!(ours, serde_json::to_vec(&s).unwrap(), "{s:?}");
        }
    }

    #[test]
    fn text_that_is_not_utf8_never_writes_the_form_of_a_stored_string() {
        for bytes in [&b"ab\xff"[..], b"\"\xc3", b"\n\xe2\x82", b"\xed\xa0\x80"] {
            let mut ours = Vec::new();
            json_bytes(&mut ours, bytes);
            assert!(std::str::from_utf8(&ours).is_err(), "{bytes:?}");
        }
        let mut ours = Vec::new();
        json_bytes(&mut ours, "é \"q\"\n".as_bytes());
        assert_eq!(ours, serde_json::to_vec("é \"q\"\n").unwrap());
    }

    #[test]
    fn the_canonical_bytes_and_hash_of_every_field_stay_those_of_version_1() {
        // Pinned from the first writer: a chain stored by any earlier release
        // must keep verifying.
        let ev = golden_event();
        assert_eq!(
            String::from_utf8(ev.canonical()).unwrap(),
            r#"{"action":"tenant.suspend","actor":{"id":"op \"1\" é","kind":"operator","reason":"incident\n#42 🦀"},"at":"2025-11-24T16:00:00.000007Z","chain":"tenant:0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b","correlation_id":"corr-\u0001","details":{"a":"\\\t","b":[1,null]},"id":"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c","outcome":"denied","personal":"2da45f2cd1f9c8e69a67abf7a6b26c282533d0a7686787a9533265418680d4d2","prev":"abababababababababababababababababababababababababababababababab","seq":1234567,"subject":"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5d","target":{"id":"t/1","kind":"tenant"},"v":1}"#
        );
        assert_eq!(
            ev.compute_hash(),
            "aca6ae6c2e24594a9b7a921a164cde6784308e3ce9dc02ec825077e15cda14f7"
        );
        let mut bare = golden_event();
        bare.personal = None;
        bare.subject_id = None;
        bare.actor.id = None;
        bare.actor.reason = None;
        bare.target.id = None;
        bare.seq = -3;
        bare.occurred_at = DateTime::from_timestamp(-62_000_000_000, 999_999_000).unwrap();
        assert_eq!(
            bare.compute_hash(),
            "36d21ae83096d5da45774f86930dfbacff038c96f9a043aa174b8fdae87e8693"
        );
    }

    #[test]
    fn the_hashed_time_is_written_digit_by_digit_as_the_first_writer_formatted_it() {
        let mut times: Vec<DateTime<Utc>> = [
            (0, 0),
            (1_764_000_000, 7_000),
            (1_764_000_000, 999_999_999),
            (-62_000_000_000, 1_000),
            (-70_000_000_000, 0),
            (253_402_300_799, 999_999_000),
            (253_402_300_800, 0),
            (300_000_000_000, 5_000),
        ]
        .into_iter()
        .map(|(s, n)| DateTime::from_timestamp(s, n).unwrap())
        .collect();
        // A leap second (nanoseconds past one billion).
        times.push(
            chrono::NaiveDate::from_ymd_opt(2016, 12, 31)
                .unwrap()
                .and_hms_micro_opt(23, 59, 59, 1_500_000)
                .unwrap()
                .and_utc(),
        );
        for s in (0..4_000_000_000i64).step_by(37_000_017) {
            times.push(
                DateTime::from_timestamp(s, u32::try_from(s % 1_000_000).unwrap() * 1000).unwrap(),
            );
        }
        for t in times {
            let (mut fast, mut first) = (Vec::new(), Vec::new());
            push_time(&mut fast, t);
            push_time_slow(&mut first, t);
            assert_eq!(
                String::from_utf8(fast).unwrap(),
                String::from_utf8(first).unwrap(),
                "{t:?}"
            );
            if (0..=9999).contains(&chrono::Datelike::year(&t))
                && chrono::Timelike::nanosecond(&t) < 1_000_000_000
            {
                let mut out = Vec::new();
                push_time(&mut out, t);
                assert_eq!(String::from_utf8(out).unwrap(), format_time(t), "{t:?}");
            }
        }
    }

    #[test]
    fn the_canonical_writer_gives_the_bytes_of_the_first_form() {
        let controls: String = (0u8..0x20).map(char::from).collect();
        let cases = [
            serde_json::json!({"b": 1, "a": {"d": [3, {"z": 1, "y": 2}], "c": "x"}}),
            serde_json::json!({"q\"uote": "back\\slash", "ctl": controls, "é": "ü€😀", "": null}),
            serde_json::json!({"n": [0, -1, 1.5, 1e21, 1e-7, 18446744073709551615u64, -9223372036854775808i64]}),
            serde_json::json!({"t": true, "f": false, "nested": {"b": {"a": [[], {}]}}, "Z": 0, "a": 0, "_": 0}),
            serde_json::json!("top-level \u{7f} string"),
            serde_json::json!([1, "two", {"b": 2, "a": 1}]),
        ];
        for v in &cases {
            assert_eq!(canonical_json(v), reference_canonical(v), "{v}");
            if let serde_json::Value::Object(map) = v {
                let mut out = Vec::new();
                write_canonical_object(map, &mut out);
                assert_eq!(String::from_utf8(out).unwrap(), reference_canonical(v));
            }
        }
    }

    /// The links read out of stored bytes are the event's own, whatever its
    /// strings hold (keys that look like `prev` or `chain` included), and
    /// nothing is read out of bytes of another chain or cut short.
    #[test]
    fn the_links_read_from_stored_bytes_are_the_events_own() {
        let mut tricky = golden_event();
        let fake = format!(",\"prev\":\"{}\",\"seq\":7,", "cd".repeat(32));
        tricky.target = Target::new("tenant", format!("{fake},\"chain\":\"tenant:other\""));
        tricky.actor.reason = Some(fake.clone());
        tricky.details = canonical_json(&serde_json::json!({
            "chain": "tenant:other", "prev": "cd".repeat(32), "seq": 7, "personal": null,
            "nested": { "x": fake },
        }));
        let without_personal = StoredEvent {
            personal: None,
            subject_id: None,
            seq: -3,
            ..tricky.clone()
        };
        for ev in [golden_event(), tricky, without_personal] {
            let reader = LinkReader::new(&ev.chain);
            let bytes = ev.canonical();
            let links = reader.read(&bytes).unwrap();
            assert_eq!(links.seq, ev.seq);
            assert_eq!(links.prev, ev.prev_hash.as_bytes());
            let digest = decode_personal(ev.personal.as_deref())
                .map(|blob| hex::encode(Sha256::digest(blob)));
            assert_eq!(links.personal, digest.as_deref().map(str::as_bytes));

            assert!(LinkReader::new("tenant:other").read(&bytes).is_none());
            assert!(LinkReader::new("platform").read(&bytes).is_none());
            let at = bytes.windows(8).rposition(|w| w == b"\"prev\":\"").unwrap();
            assert!(reader.read(&bytes[..at + 40]).is_none());
            assert!(reader.read(b"").is_none());
        }
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let v = serde_json::json!({"b": 1, "a": {"d": [3, {"z": 1, "y": 2}], "c": "x"}});
        assert_eq!(
            canonical_json(&v),
            r#"{"a":{"c":"x","d":[3,{"y":2,"z":1}]},"b":1}"#
        );
    }

    #[test]
    fn the_canonical_form_is_sorted_json_that_parses_and_matches_the_time_format() {
        let ev = StoredEvent {
            chain: "tenant:x".into(),
            seq: 3,
            id: Uuid::nil(),
            occurred_at: DateTime::from_timestamp(1_700_000_000, 123_456_000).unwrap(),
            actor: Actor {
                kind: "user".into(),
                id: Some("u\"1".into()),
                reason: None,
            },
            action: "a.b".into(),
            target: Target::kind("t"),
            outcome: Outcome::Success,
            correlation_id: "c".into(),
            details: canonical_json(&serde_json::json!({"z": 1, "a": "\n"})),
            subject_id: None,
            personal: None,
            prev_hash: "00".into(),
            hash: String::new(),
        };
        let bytes = ev.canonical();
        let text = String::from_utf8(bytes.clone()).unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            canonical_json(&parsed),
            text,
            "keys are in sorted order with no whitespace"
        );
        assert_eq!(parsed["at"], format_time(ev.occurred_at));
        assert_eq!(parsed["actor"]["id"], "u\"1");
        assert_eq!(ev.compute_hash().len(), 64);
    }

    #[test]
    fn invalid_events_are_refused_with_a_reason() {
        let ok = AuditEvent::new("tenant.suspend", Target::new("tenant", 1));
        assert!(ok.validate().is_ok());
        assert!(
            AuditEvent::new("Bad Action", Target::kind("x"))
                .validate()
                .is_err()
        );
        assert!(
            ok.clone()
                .details(serde_json::json!([1]))
                .validate()
                .is_err()
        );
        let big = serde_json::json!({"x": "y".repeat(MAX_DETAILS_BYTES)});
        assert!(ok.details(big).validate().is_err());
    }
}
