-- saas-audit 0002: how far each sink has been fed, per chain. Sinks are fed
-- from the stored log, so a failing sink resumes where it stopped.
CREATE TABLE audit_sink_cursors (
    sink text NOT NULL,
    chain_id uuid NOT NULL,
    tenant_id uuid REFERENCES tenants (id) ON DELETE CASCADE,
    last_seq bigint NOT NULL,
    PRIMARY KEY (sink, chain_id)
);
SELECT saas_enable_tenant_rls('audit_sink_cursors', platform_visible => true);
GRANT SELECT, INSERT, UPDATE ON audit_sink_cursors TO saas_app;
