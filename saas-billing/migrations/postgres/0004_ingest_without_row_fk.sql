-- saas-billing 0004: ingestion without a per-row foreign key.
--
-- A foreign key checks (and key-share locks) the tenant row once per inserted
-- event; at tens of thousands of events a second that check was the largest
-- single cost of ingestion. The ingesting transaction now takes the same
-- KEY SHARE lock on its tenant row once per batch (so a concurrent purge
-- waits for it, as it would for the foreign key), and this trigger keeps the
-- ON DELETE CASCADE the foreign key gave: purging a tenant removes its events.
ALTER TABLE billing_events DROP CONSTRAINT billing_events_tenant_id_fkey;

CREATE FUNCTION saas_billing_purge_events() RETURNS trigger
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = public
    AS $$
BEGIN
    DELETE FROM billing_events WHERE tenant_id = OLD.id;
    RETURN OLD;
END
$$;
REVOKE ALL ON FUNCTION saas_billing_purge_events() FROM PUBLIC;

CREATE TRIGGER tenants_purge_billing_events AFTER DELETE ON tenants
    FOR EACH ROW EXECUTE FUNCTION saas_billing_purge_events();
