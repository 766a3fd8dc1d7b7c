-- saas-audit 0002: how far each sink has been fed, per chain.
CREATE TABLE audit_sink_cursors (
    sink TEXT NOT NULL,
    chain_id BLOB NOT NULL,
    tenant_id BLOB REFERENCES tenants (id) ON DELETE CASCADE,
    last_seq INTEGER NOT NULL,
    PRIMARY KEY (sink, chain_id)
);
