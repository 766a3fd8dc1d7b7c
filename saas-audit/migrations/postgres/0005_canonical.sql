-- saas-audit 0005: every event keeps the bytes that were hashed.
--
-- `canonical` holds the event's canonical form exactly as its hash was taken
-- (`StoredEvent::canonical`), so the chain walk hashes stored bytes instead of
-- rebuilding them from sixteen columns. The columns stay: they are what
-- queries filter and show. A CHECK constraint (the guard) keeps each row's
-- columns to its hashed bytes: whatever writes a row, even a superuser with
-- the append-only triggers disabled, can store it only if `canonical` is
-- byte for byte the canonical form of its columns and `hash` is its SHA-256.
-- The walk reads the bytes alone only while the guard is in place, unchanged
-- and validated; otherwise it reads and hashes every column as before.
--
-- Rows written before this migration keep `canonical` NULL and are walked
-- from their columns; the partial indexes find them.
--
-- The guard builds the form as the Rust writer does: strings escaped as
-- to_json escapes them (the same rules as serde_json), the time in UTC with
-- six decimals, hashes and UUIDs in lowercase.

ALTER TABLE audit_events ADD COLUMN canonical bytea;
ALTER TABLE audit_platform_events ADD COLUMN canonical bytea;

-- One guard for both tables; {CHAIN} is how each names its chain.
DO $guards$
DECLARE
    guard CONSTANT text := $guard$
        canonical IS NULL OR (
            hash = sha256(canonical)
            AND canonical = convert_to(concat(
                '{"action":', to_json(action)::text,
                ',"actor":{"id":', coalesce(to_json(actor_id)::text, 'null'),
                ',"kind":', to_json(actor_kind)::text,
                ',"reason":', coalesce(to_json(actor_reason)::text, 'null'),
                '},"at":"', to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                {CHAIN},
                '","correlation_id":', to_json(correlation_id)::text,
                ',"details":', details,
                ',"id":"', id::text,
                '","outcome":', to_json(outcome)::text,
                ',"personal":', coalesce('"' || encode(sha256(personal), 'hex') || '"', 'null'),
                ',"prev":"', encode(prev_hash, 'hex'),
                '","seq":', seq::text,
                ',"subject":', coalesce('"' || subject_id::text || '"', 'null'),
                ',"target":{"id":', coalesce(to_json(target_id)::text, 'null'),
                ',"kind":', to_json(target_kind)::text,
                '},"v":1}'
            ), 'UTF8')
        )$guard$;
BEGIN
    EXECUTE format(
        'ALTER TABLE audit_events ADD CONSTRAINT audit_events_canonical CHECK (%s)',
        replace(guard, '{CHAIN}', $chain$'","chain":"tenant:', tenant_id::text$chain$)
    );
    EXECUTE format(
        'ALTER TABLE audit_platform_events ADD CONSTRAINT audit_platform_events_canonical CHECK (%s)',
        replace(guard, '{CHAIN}', $chain$'","chain":"platform'$chain$)
    );
END
$guards$;

CREATE INDEX audit_events_legacy ON audit_events (tenant_id, seq) WHERE canonical IS NULL;
CREATE INDEX audit_platform_events_legacy ON audit_platform_events (chain_id, seq) WHERE canonical IS NULL;
