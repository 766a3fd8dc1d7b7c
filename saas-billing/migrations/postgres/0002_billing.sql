-- saas-billing 0002: billing accounts, subscriptions, invoices and credit
-- notes, gapless numbering, prepaid credits, payments and incoming webhooks.

-- The buyer's details and tax rate, one row per tenant.
CREATE TABLE billing_accounts (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    legal_name text NOT NULL,
    email text,
    address text,
    tax_id text,
    tax_rate text NOT NULL,
    po_number text,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id)
);
SELECT saas_enable_tenant_rls('billing_accounts');

CREATE TABLE billing_subscriptions (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id uuid NOT NULL,
    plan_code text NOT NULL,
    plan_version integer NOT NULL,
    status text NOT NULL,
    seats bigint NOT NULL,
    started_at timestamptz NOT NULL,
    trial_end timestamptz,
    period_start timestamptz NOT NULL,
    period_end timestamptz NOT NULL,
    cancel_at_period_end boolean NOT NULL,
    next_plan_code text,
    next_plan_version integer,
    past_due_since timestamptz,
    canceled_at timestamptz,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
-- One live subscription per tenant.
CREATE UNIQUE INDEX billing_subscriptions_live ON billing_subscriptions (tenant_id)
    WHERE status <> 'canceled';
-- The billing run finds due periods across tenants.
CREATE INDEX billing_subscriptions_due ON billing_subscriptions (period_end)
    WHERE status <> 'canceled';
SELECT saas_enable_tenant_rls('billing_subscriptions', platform_visible => true);

-- Invoices and credit notes. A finalized document's number, lines and
-- amounts never change (a trigger refuses it); status, amount_due and the
-- payment fields move on. buyer_contact (a person's name and mail address)
-- is apart from the buyer's legal details so that erasure can clear it.
CREATE TABLE billing_invoices (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id uuid NOT NULL,
    kind text NOT NULL CHECK (kind IN ('invoice', 'credit_note')),
    source_key text NOT NULL,
    status text NOT NULL CHECK (status IN ('draft', 'finalized', 'paid', 'void')),
    number text,
    subscription_id uuid,
    corrects_id uuid,
    reason text NOT NULL,
    currency text NOT NULL,
    tax_rate text NOT NULL,
    subtotal bigint NOT NULL,
    tax bigint NOT NULL,
    credits_applied bigint NOT NULL,
    total bigint NOT NULL,
    amount_due bigint NOT NULL,
    period_start timestamptz,
    period_end timestamptz,
    po_number text,
    seller jsonb NOT NULL,
    buyer jsonb NOT NULL,
    buyer_contact text,
    created_at timestamptz NOT NULL,
    issued_at timestamptz,
    due_at timestamptz,
    paid_at timestamptz,
    payment_reference text,
    voided_at timestamptz,
    void_reason text,
    dunning_step integer NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX billing_invoices_source ON billing_invoices (tenant_id, source_key);
CREATE UNIQUE INDEX billing_invoices_number ON billing_invoices (tenant_id, kind, number);
CREATE INDEX billing_invoices_due ON billing_invoices (due_at) WHERE status = 'finalized';
SELECT saas_enable_tenant_rls('billing_invoices', platform_visible => true);

CREATE TABLE billing_invoice_lines (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    invoice_id uuid NOT NULL,
    position integer NOT NULL,
    kind text NOT NULL,
    charge_code text NOT NULL,
    description text NOT NULL,
    quantity text NOT NULL,
    amount bigint NOT NULL,
    period_start timestamptz NOT NULL,
    period_end timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, invoice_id, position),
    FOREIGN KEY (tenant_id, invoice_id) REFERENCES billing_invoices (tenant_id, id) ON DELETE CASCADE
);
SELECT saas_enable_tenant_rls('billing_invoice_lines');

CREATE FUNCTION billing_invoice_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status <> 'draft' AND (
        NEW.number IS DISTINCT FROM OLD.number OR NEW.total <> OLD.total
        OR NEW.subtotal <> OLD.subtotal OR NEW.tax <> OLD.tax
        OR NEW.credits_applied <> OLD.credits_applied OR NEW.currency <> OLD.currency
        OR NEW.seller <> OLD.seller OR NEW.buyer <> OLD.buyer OR NEW.kind <> OLD.kind
        OR NEW.issued_at IS DISTINCT FROM OLD.issued_at OR NEW.status = 'draft'
    ) THEN
        RAISE EXCEPTION 'a finalized invoice is immutable' USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER billing_invoice_immutable BEFORE UPDATE ON billing_invoices
    FOR EACH ROW EXECUTE FUNCTION billing_invoice_immutable();

CREATE FUNCTION billing_lines_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM billing_invoices i
               WHERE i.tenant_id = OLD.tenant_id AND i.id = OLD.invoice_id AND i.status <> 'draft') THEN
        RAISE EXCEPTION 'the lines of a finalized invoice are immutable' USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER billing_lines_immutable BEFORE UPDATE ON billing_invoice_lines
    FOR EACH ROW EXECUTE FUNCTION billing_lines_immutable();

-- Gapless per-tenant numbering: the next number of each series, taken under
-- the row lock inside the finalizing transaction (a rollback gives it back).
CREATE TABLE billing_counters (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    series text NOT NULL,
    last bigint NOT NULL,
    PRIMARY KEY (tenant_id, series)
);
SELECT saas_enable_tenant_rls('billing_counters');

-- Prepaid credit as a ledger: grants positive, applications negative.
CREATE TABLE billing_credits (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id uuid NOT NULL,
    currency text NOT NULL,
    amount bigint NOT NULL,
    reason text NOT NULL,
    invoice_id uuid,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
SELECT saas_enable_tenant_rls('billing_credits');

CREATE TABLE billing_payments (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id uuid NOT NULL,
    invoice_id uuid NOT NULL,
    provider text NOT NULL,
    status text NOT NULL,
    amount bigint NOT NULL,
    currency text NOT NULL,
    reference text,
    failure_code text,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
SELECT saas_enable_tenant_rls('billing_payments', platform_visible => true);

-- Provider webhooks, processed once per (provider, event id): the row is
-- written in the transaction that applies the event, under the tenant the
-- verified event names (the unique key holds across tenants).
CREATE TABLE billing_webhook_events_in (
    provider text NOT NULL,
    event_id text NOT NULL,
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    kind text NOT NULL,
    received_at timestamptz NOT NULL,
    PRIMARY KEY (provider, event_id)
);
SELECT saas_enable_tenant_rls('billing_webhook_events_in');

-- Erasure clears the person named as an event's subject (the event stays).
GRANT UPDATE (subject, properties) ON billing_events TO saas_app;
GRANT SELECT, INSERT, UPDATE ON billing_accounts, billing_subscriptions, billing_counters TO saas_app;
GRANT SELECT, INSERT, UPDATE ON billing_invoices TO saas_app;
GRANT SELECT, INSERT ON billing_invoice_lines, billing_credits, billing_payments, billing_webhook_events_in TO saas_app;
