-- saas-billing 0001: usage metering.
--
-- billing_events holds every accepted event once: its key is a 16-byte digest
-- of the client's transaction id, so the unique index stays narrow however
-- long the ids are; the fingerprint is a digest of the event's content, so a
-- different event sent under a key already used is recognised and refused.
-- billing_usage holds the rollups that reads use (one row per metric, period
-- and scope; scope is a workspace id, or the nil uuid for the whole tenant),
-- and billing_usage_uniques the distinct values behind unique-count metrics.
-- billing_period_closes marks the periods whose invoice is issued: a late
-- event never lands in a closed period.

CREATE TABLE billing_events (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    key uuid NOT NULL,
    transaction_id text NOT NULL,
    code text NOT NULL,
    workspace_id uuid,
    subject text,
    quantity text NOT NULL,
    properties jsonb NOT NULL,
    occurred_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL,
    period_start timestamptz NOT NULL,
    late boolean NOT NULL,
    fingerprint bytea NOT NULL,
    PRIMARY KEY (tenant_id, key)
);
SELECT saas_enable_tenant_rls('billing_events');

CREATE TABLE billing_usage (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    metric text NOT NULL,
    period_start timestamptz NOT NULL,
    scope uuid NOT NULL,
    period_end timestamptz NOT NULL,
    value text NOT NULL,
    events bigint NOT NULL,
    late_events bigint NOT NULL,
    last_at timestamptz,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, metric, period_start, scope)
);
SELECT saas_enable_tenant_rls('billing_usage');

CREATE TABLE billing_usage_uniques (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    metric text NOT NULL,
    period_start timestamptz NOT NULL,
    scope uuid NOT NULL,
    value text NOT NULL,
    PRIMARY KEY (tenant_id, metric, period_start, scope, value)
);
SELECT saas_enable_tenant_rls('billing_usage_uniques');

CREATE TABLE billing_period_closes (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    period_start timestamptz NOT NULL,
    period_end timestamptz NOT NULL,
    closed_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, period_start)
);
SELECT saas_enable_tenant_rls('billing_period_closes', platform_visible => true);

-- The tenant's billing cycle, which metering needs to place an event in its
-- period (the subscription owns it; without one, calendar months).
CREATE TABLE billing_cycles (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    anchor timestamptz NOT NULL,
    months integer NOT NULL CHECK (months > 0),
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id)
);
SELECT saas_enable_tenant_rls('billing_cycles', platform_visible => true);

-- Events are facts: the application may add them, never change or remove
-- them (tenant purge and DSAR erasure run as the owner).
GRANT SELECT, INSERT ON billing_events TO saas_app;
GRANT SELECT, INSERT, UPDATE ON billing_usage, billing_usage_uniques TO saas_app;
GRANT SELECT, INSERT ON billing_period_closes TO saas_app;
GRANT SELECT, INSERT, UPDATE ON billing_cycles TO saas_app;
