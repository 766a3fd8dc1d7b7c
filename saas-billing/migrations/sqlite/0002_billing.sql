-- saas-billing 0002: billing accounts, subscriptions, invoices and credit
-- notes, gapless numbering, prepaid credits, payments and incoming webhooks
-- (see the PostgreSQL migration). SQLite has no RLS: the repositories filter
-- by tenant.

CREATE TABLE billing_accounts (
    tenant_id BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    legal_name TEXT NOT NULL,
    email TEXT,
    address TEXT,
    tax_id TEXT,
    tax_rate TEXT NOT NULL,
    po_number TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id)
);

CREATE TABLE billing_subscriptions (
    tenant_id BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id BLOB NOT NULL,
    plan_code TEXT NOT NULL,
    plan_version INTEGER NOT NULL,
    status TEXT NOT NULL,
    seats INTEGER NOT NULL,
    started_at TEXT NOT NULL,
    trial_end TEXT,
    period_start TEXT NOT NULL,
    period_end TEXT NOT NULL,
    cancel_at_period_end INTEGER NOT NULL,
    next_plan_code TEXT,
    next_plan_version INTEGER,
    past_due_since TEXT,
    canceled_at TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX billing_subscriptions_live ON billing_subscriptions (tenant_id)
    WHERE status <> 'canceled';
CREATE INDEX billing_subscriptions_due ON billing_subscriptions (period_end)
    WHERE status <> 'canceled';

CREATE TABLE billing_invoices (
    tenant_id BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id BLOB NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('invoice', 'credit_note')),
    source_key TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('draft', 'finalized', 'paid', 'void')),
    number TEXT,
    subscription_id BLOB,
    corrects_id BLOB,
    reason TEXT NOT NULL,
    currency TEXT NOT NULL,
    tax_rate TEXT NOT NULL,
    subtotal INTEGER NOT NULL,
    tax INTEGER NOT NULL,
    credits_applied INTEGER NOT NULL,
    total INTEGER NOT NULL,
    amount_due INTEGER NOT NULL,
    period_start TEXT,
    period_end TEXT,
    po_number TEXT,
    seller TEXT NOT NULL,
    buyer TEXT NOT NULL,
    buyer_contact TEXT,
    created_at TEXT NOT NULL,
    issued_at TEXT,
    due_at TEXT,
    paid_at TEXT,
    payment_reference TEXT,
    voided_at TEXT,
    void_reason TEXT,
    dunning_step INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX billing_invoices_source ON billing_invoices (tenant_id, source_key);
CREATE UNIQUE INDEX billing_invoices_number ON billing_invoices (tenant_id, kind, number);
CREATE INDEX billing_invoices_due ON billing_invoices (due_at) WHERE status = 'finalized';

CREATE TABLE billing_invoice_lines (
    tenant_id BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    invoice_id BLOB NOT NULL,
    position INTEGER NOT NULL,
    kind TEXT NOT NULL,
    charge_code TEXT NOT NULL,
    description TEXT NOT NULL,
    quantity TEXT NOT NULL,
    amount INTEGER NOT NULL,
    period_start TEXT NOT NULL,
    period_end TEXT NOT NULL,
    PRIMARY KEY (tenant_id, invoice_id, position),
    FOREIGN KEY (tenant_id, invoice_id) REFERENCES billing_invoices (tenant_id, id) ON DELETE CASCADE
);

CREATE TRIGGER billing_invoice_immutable BEFORE UPDATE ON billing_invoices
    WHEN OLD.status <> 'draft' AND (
        NEW.number IS NOT OLD.number OR NEW.total <> OLD.total
        OR NEW.subtotal <> OLD.subtotal OR NEW.tax <> OLD.tax
        OR NEW.credits_applied <> OLD.credits_applied OR NEW.currency <> OLD.currency
        OR NEW.seller <> OLD.seller OR NEW.buyer <> OLD.buyer OR NEW.kind <> OLD.kind
        OR NEW.issued_at IS NOT OLD.issued_at OR NEW.status = 'draft')
BEGIN
    SELECT RAISE(ABORT, 'a finalized invoice is immutable');
END;

CREATE TRIGGER billing_lines_immutable_update BEFORE UPDATE ON billing_invoice_lines
    WHEN EXISTS (SELECT 1 FROM billing_invoices i
                 WHERE i.tenant_id = OLD.tenant_id AND i.id = OLD.invoice_id AND i.status <> 'draft')
BEGIN
    SELECT RAISE(ABORT, 'the lines of a finalized invoice are immutable');
END;

CREATE TABLE billing_counters (
    tenant_id BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    series TEXT NOT NULL,
    last INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, series)
);

CREATE TABLE billing_credits (
    tenant_id BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id BLOB NOT NULL,
    currency TEXT NOT NULL,
    amount INTEGER NOT NULL,
    reason TEXT NOT NULL,
    invoice_id BLOB,
    created_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE billing_payments (
    tenant_id BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id BLOB NOT NULL,
    invoice_id BLOB NOT NULL,
    provider TEXT NOT NULL,
    status TEXT NOT NULL,
    amount INTEGER NOT NULL,
    currency TEXT NOT NULL,
    reference TEXT,
    failure_code TEXT,
    created_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE billing_webhook_events_in (
    provider TEXT NOT NULL,
    event_id TEXT NOT NULL,
    tenant_id BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    received_at TEXT NOT NULL,
    PRIMARY KEY (provider, event_id)
);
