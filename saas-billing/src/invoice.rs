//! Invoices and credit notes: the documents, their gapless numbers and their
//! storage.
//!
//! A document is written as a draft and finalized in the same transaction:
//! finalizing takes the tenant's next number of its series (`INV-000001`,
//! `CN-000001`) under a row lock, so numbers are gapless under concurrent
//! issuing (a rolled-back transaction gives its number back), and from then
//! on its number, lines and amounts are immutable (database triggers refuse
//! a change). Each document has a `source_key` (the period it closes, the
//! plan change it prices, ...), unique per tenant, so issuing twice for one
//! source produces one document.

use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use saas_core::db::Tx;
use saas_core::db::sea_query::{Expr, ExprTrait, OnConflict, Order, Query};
use saas_core::{InvoiceId, SubscriptionId, TenantId};
use serde::{Deserialize, Serialize};
use sqlx::types::Json;
use std::str::FromStr;

use crate::error::BillingError;
use crate::money::Currency;
use crate::rating::{InvoiceLine, LineKind, totals};

pub(crate) const INVOICES: &str = "billing_invoices";
pub(crate) const LINES: &str = "billing_invoice_lines";
pub(crate) const COUNTERS: &str = "billing_counters";
pub(crate) const CREDITS: &str = "billing_credits";

/// A party on an invoice: the seller (from configuration) or the buyer (the
/// tenant's billing account).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Party {
    /// Legal name.
    pub name: String,
    /// Postal address, lines separated by newlines.
    #[serde(default)]
    pub address: Option<String>,
    /// VAT or other tax id.
    #[serde(default)]
    pub tax_id: Option<String>,
    /// Where invoices and reminders go.
    #[serde(default)]
    pub email: Option<String>,
}

/// An invoice or a credit note.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocumentKind {
    /// Money the customer owes.
    Invoice,
    /// A correction or refund of an invoice.
    CreditNote,
}

impl DocumentKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Invoice => "invoice",
            Self::CreditNote => "credit_note",
        }
    }

    fn parse(s: &str) -> Result<Self, BillingError> {
        match s {
            "invoice" => Ok(Self::Invoice),
            "credit_note" => Ok(Self::CreditNote),
            _ => Err(corrupt("kind")),
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Self::Invoice => "INV",
            Self::CreditNote => "CN",
        }
    }
}

/// Where a document is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceStatus {
    /// Being prepared; no number yet.
    Draft,
    /// Issued, numbered and immutable; awaiting payment.
    Finalized,
    /// Settled.
    Paid,
    /// Cancelled after issue; keeps its number.
    Void,
}

impl InvoiceStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Finalized => "finalized",
            Self::Paid => "paid",
            Self::Void => "void",
        }
    }

    fn parse(s: &str) -> Result<Self, BillingError> {
        match s {
            "draft" => Ok(Self::Draft),
            "finalized" => Ok(Self::Finalized),
            "paid" => Ok(Self::Paid),
            "void" => Ok(Self::Void),
            _ => Err(corrupt("status")),
        }
    }
}

/// An invoice or credit note as stored. Amounts are minor units of
/// `currency`; a credit note's amounts are negative.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Invoice {
    /// Its id.
    pub id: InvoiceId,
    /// Invoice or credit note.
    pub kind: DocumentKind,
    /// `INV-000042` / `CN-000003`, gapless per tenant and series; none for a draft.
    pub number: Option<String>,
    /// Draft, finalized, paid or void.
    pub status: InvoiceStatus,
    /// True for a finalized invoice past its due date.
    pub overdue: bool,
    /// What it bills: `period`, `subscription_start`, `plan_change`, `cancellation`, `correction`.
    pub reason: String,
    /// The subscription it belongs to.
    pub subscription_id: Option<SubscriptionId>,
    /// For a credit note: the invoice it corrects.
    pub corrects_id: Option<InvoiceId>,
    /// The currency of every amount.
    pub currency: Currency,
    /// Tax rate in percent.
    pub tax_rate: Decimal,
    /// The lines.
    pub lines: Vec<InvoiceLine>,
    /// Sum of the lines.
    pub subtotal: i64,
    /// Tax on the subtotal.
    pub tax: i64,
    /// Prepaid credit applied.
    pub credits_applied: i64,
    /// subtotal + tax - credits_applied.
    pub total: i64,
    /// What is still to be paid (less credit notes and payments).
    pub amount_due: i64,
    /// The billing period, when it bills one.
    pub period_start: Option<DateTime<Utc>>,
    /// The end of that period.
    pub period_end: Option<DateTime<Utc>>,
    /// The buyer's purchase-order number.
    pub po_number: Option<String>,
    /// The seller.
    pub seller: Party,
    /// The buyer's legal details.
    pub buyer: Party,
    /// When it was drafted.
    pub created_at: DateTime<Utc>,
    /// When it was finalized.
    pub issued_at: Option<DateTime<Utc>>,
    /// When payment is due (issue date plus net terms).
    pub due_at: Option<DateTime<Utc>>,
    /// When it was paid.
    pub paid_at: Option<DateTime<Utc>>,
    /// The payment's reference (bank transfer, provider charge).
    pub payment_reference: Option<String>,
    /// When it was voided.
    pub voided_at: Option<DateTime<Utc>>,
    /// Why it was voided.
    pub void_reason: Option<String>,
}

fn corrupt(what: &str) -> BillingError {
    BillingError::Catalogue(format!("a stored invoice has a corrupt {what}"))
}

/// A document about to be issued.
#[derive(Debug, Clone)]
pub(crate) struct Draft {
    pub(crate) kind: DocumentKind,
    pub(crate) source_key: String,
    pub(crate) reason: &'static str,
    pub(crate) subscription_id: Option<SubscriptionId>,
    pub(crate) corrects_id: Option<InvoiceId>,
    pub(crate) currency: Currency,
    pub(crate) tax_rate: Decimal,
    pub(crate) lines: Vec<InvoiceLine>,
    pub(crate) period: Option<(DateTime<Utc>, DateTime<Utc>)>,
    pub(crate) po_number: Option<String>,
    pub(crate) seller: Party,
    pub(crate) buyer: Party,
    pub(crate) net_terms_days: u32,
    pub(crate) apply_credit: bool,
}

/// Issues `draft` in `tx`: stores it, applies prepaid credit, finalizes it
/// with the next number. Returns `None` when a document for the same source
/// already exists (issuing is idempotent per source).
pub(crate) async fn issue_in(
    tx: &mut Tx,
    tenant: TenantId,
    draft: Draft,
) -> Result<Option<Invoice>, BillingError> {
    let now = tx.now();
    let available = if draft.apply_credit {
        Ord::max(credit_balance(tx, tenant, draft.currency).await?, 0)
    } else {
        0
    };
    let t = totals(&draft.lines, draft.tax_rate, available, draft.currency)?;
    let id = InvoiceId::new();
    let (period_start, period_end) = draft.period.unzip();
    // The buyer's mail address is a person's contact, kept apart from the
    // immutable legal details so that erasure can clear it.
    let mut legal = draft.buyer.clone();
    let contact = legal.email.take();
    let inserted = tx
        .execute(
            Query::insert()
                .into_table(INVOICES)
                .columns([
                    "tenant_id",
                    "id",
                    "kind",
                    "source_key",
                    "status",
                    "subscription_id",
                    "corrects_id",
                    "reason",
                    "currency",
                    "tax_rate",
                    "subtotal",
                    "tax",
                    "credits_applied",
                    "total",
                    "amount_due",
                    "period_start",
                    "period_end",
                    "po_number",
                    "seller",
                    "buyer",
                    "buyer_contact",
                    "created_at",
                ])
                .values([
                    tenant.into(),
                    id.into(),
                    draft.kind.as_str().into(),
                    draft.source_key.clone().into(),
                    InvoiceStatus::Draft.as_str().into(),
                    draft.subscription_id.into(),
                    draft.corrects_id.into(),
                    draft.reason.into(),
                    draft.currency.as_str().into(),
                    draft.tax_rate.normalize().to_string().into(),
                    t.subtotal.into(),
                    t.tax.into(),
                    t.credits_applied.into(),
                    t.total.into(),
                    t.total.into(),
                    period_start.into(),
                    period_end.into(),
                    draft.po_number.clone().into(),
                    serde_json::to_value(&draft.seller)
                        .map_err(|e| BillingError::Catalogue(e.to_string()))?
                        .into(),
                    serde_json::to_value(&legal)
                        .map_err(|e| BillingError::Catalogue(e.to_string()))?
                        .into(),
                    contact.into(),
                    now.into(),
                ])
                .map_err(|e| BillingError::Catalogue(e.to_string()))?
                .on_conflict(
                    OnConflict::columns(["tenant_id", "source_key"])
                        .do_nothing()
                        .to_owned(),
                ),
        )
        .await?;
    if inserted == 0 {
        return Ok(None);
    }
    if !draft.lines.is_empty() {
        let mut q = Query::insert();
        q.into_table(LINES).columns([
            "tenant_id",
            "invoice_id",
            "position",
            "kind",
            "charge_code",
            "description",
            "quantity",
            "amount",
            "period_start",
            "period_end",
        ]);
        for (i, l) in draft.lines.iter().enumerate() {
            q.values([
                tenant.into(),
                id.into(),
                i64::try_from(i).unwrap_or(i64::MAX).into(),
                line_kind(l.kind).into(),
                l.charge_code.clone().into(),
                l.description.clone().into(),
                l.quantity.normalize().to_string().into(),
                l.amount.into(),
                l.period_start.into(),
                l.period_end.into(),
            ])
            .map_err(|e| BillingError::Catalogue(e.to_string()))?;
        }
        tx.execute(&q).await?;
    }
    if t.credits_applied > 0 {
        add_credit(
            tx,
            tenant,
            draft.currency,
            -t.credits_applied,
            "applied to an invoice",
            Some(id),
        )
        .await?;
    }
    // Finalize: the next number of the series, under the counter's row lock.
    let number = next_number(tx, tenant, draft.kind).await?;
    let due = now + Duration::days(i64::from(draft.net_terms_days));
    // A document with nothing to pay is settled on issue.
    let status = if t.total <= 0 {
        InvoiceStatus::Paid
    } else {
        InvoiceStatus::Finalized
    };
    let mut update = Query::update();
    update
        .table(INVOICES)
        .value("status", status.as_str())
        .value("number", number.clone())
        .value("issued_at", now)
        .value("due_at", due)
        .and_where(Expr::col("tenant_id").eq(tenant))
        .and_where(Expr::col("id").eq(id));
    if status == InvoiceStatus::Paid {
        update.value("paid_at", now).value("amount_due", 0i64);
    }
    tx.execute(&update).await?;
    load_in(tx, tenant, id).await.map(Some)
}

async fn next_number(
    tx: &mut Tx,
    tenant: TenantId,
    kind: DocumentKind,
) -> Result<String, BillingError> {
    tx.execute(
        Query::insert()
            .into_table(COUNTERS)
            .columns(["tenant_id", "series", "last"])
            .values([tenant.into(), kind.as_str().into(), 0i64.into()])
            .map_err(|e| BillingError::Catalogue(e.to_string()))?
            .on_conflict(
                OnConflict::columns(["tenant_id", "series"])
                    .do_nothing()
                    .to_owned(),
            ),
    )
    .await?;
    let row = tx
        .fetch_optional(
            Query::update()
                .table(COUNTERS)
                .value("last", Expr::col("last").add(1i64))
                .and_where(Expr::col("tenant_id").eq(tenant))
                .and_where(Expr::col("series").eq(kind.as_str()))
                .returning_col("last"),
        )
        .await?
        .ok_or(BillingError::NotFound { entity: "counter" })?;
    let n: i64 = row.get("last")?;
    Ok(format!("{}-{n:06}", kind.prefix()))
}

fn line_kind(k: LineKind) -> &'static str {
    match k {
        LineKind::Fixed => "fixed",
        LineKind::Usage => "usage",
        LineKind::Minimum => "minimum",
        LineKind::Proration => "proration",
        LineKind::Credit => "credit",
    }
}

fn parse_line_kind(s: &str) -> Result<LineKind, BillingError> {
    Ok(match s {
        "fixed" => LineKind::Fixed,
        "usage" => LineKind::Usage,
        "minimum" => LineKind::Minimum,
        "proration" => LineKind::Proration,
        "credit" => LineKind::Credit,
        _ => return Err(corrupt("line kind")),
    })
}

const COLS: [&str; 28] = [
    "id",
    "kind",
    "number",
    "status",
    "reason",
    "subscription_id",
    "corrects_id",
    "currency",
    "tax_rate",
    "subtotal",
    "tax",
    "credits_applied",
    "total",
    "amount_due",
    "period_start",
    "period_end",
    "po_number",
    "seller",
    "buyer",
    "buyer_contact",
    "created_at",
    "issued_at",
    "due_at",
    "paid_at",
    "payment_reference",
    "voided_at",
    "void_reason",
    "source_key",
];

fn decode(r: &saas_core::db::Row, now: DateTime<Utc>) -> Result<Invoice, BillingError> {
    let status = InvoiceStatus::parse(&r.get::<String>("status")?)?;
    let due_at: Option<DateTime<Utc>> = r.get("due_at")?;
    let mut buyer: Party = r.get::<Json<Party>>("buyer")?.0;
    buyer.email = r.get("buyer_contact")?;
    Ok(Invoice {
        id: r.get("id")?,
        kind: DocumentKind::parse(&r.get::<String>("kind")?)?,
        number: r.get("number")?,
        status,
        overdue: status == InvoiceStatus::Finalized && due_at.is_some_and(|d| d < now),
        reason: r.get("reason")?,
        subscription_id: r.get("subscription_id")?,
        corrects_id: r.get("corrects_id")?,
        currency: Currency::from_str(&r.get::<String>("currency")?)?,
        tax_rate: Decimal::from_str(&r.get::<String>("tax_rate")?)
            .map_err(|_| corrupt("tax rate"))?,
        lines: Vec::new(),
        subtotal: r.get("subtotal")?,
        tax: r.get("tax")?,
        credits_applied: r.get("credits_applied")?,
        total: r.get("total")?,
        amount_due: r.get("amount_due")?,
        period_start: r.get("period_start")?,
        period_end: r.get("period_end")?,
        po_number: r.get("po_number")?,
        seller: r.get::<Json<Party>>("seller")?.0,
        buyer,
        created_at: r.get("created_at")?,
        issued_at: r.get("issued_at")?,
        due_at,
        paid_at: r.get("paid_at")?,
        payment_reference: r.get("payment_reference")?,
        voided_at: r.get("voided_at")?,
        void_reason: r.get("void_reason")?,
    })
}

/// One document with its lines, its row locked for the transaction.
pub(crate) async fn load_in(
    tx: &mut Tx,
    tenant: TenantId,
    id: InvoiceId,
) -> Result<Invoice, BillingError> {
    load(tx, tenant, id, true).await
}

/// One document with its lines, for reading.
pub(crate) async fn read_in(
    tx: &mut Tx,
    tenant: TenantId,
    id: InvoiceId,
) -> Result<Invoice, BillingError> {
    load(tx, tenant, id, false).await
}

async fn load(
    tx: &mut Tx,
    tenant: TenantId,
    id: InvoiceId,
    lock: bool,
) -> Result<Invoice, BillingError> {
    let now = tx.now();
    let mut q = Query::select();
    q.columns(COLS)
        .from(INVOICES)
        .and_where(Expr::col("tenant_id").eq(tenant))
        .and_where(Expr::col("id").eq(id));
    if lock {
        q.lock(saas_core::db::sea_query::LockType::Update);
    }
    let row = tx
        .fetch_optional(&q)
        .await?
        .ok_or(BillingError::NotFound { entity: "invoice" })?;
    let mut inv = decode(&row, now)?;
    let lines = tx
        .fetch_all(
            Query::select()
                .columns([
                    "kind",
                    "charge_code",
                    "description",
                    "quantity",
                    "amount",
                    "period_start",
                    "period_end",
                ])
                .from(LINES)
                .and_where(Expr::col("tenant_id").eq(tenant))
                .and_where(Expr::col("invoice_id").eq(id))
                .order_by("position", Order::Asc),
        )
        .await?;
    inv.lines = lines
        .iter()
        .map(|l| {
            Ok(InvoiceLine {
                charge_code: l.get("charge_code")?,
                description: l.get("description")?,
                quantity: Decimal::from_str(&l.get::<String>("quantity")?)
                    .map_err(|_| corrupt("quantity"))?,
                amount: l.get("amount")?,
                period_start: l.get("period_start")?,
                period_end: l.get("period_end")?,
                kind: parse_line_kind(&l.get::<String>("kind")?)?,
            })
        })
        .collect::<Result<_, BillingError>>()?;
    Ok(inv)
}

/// Every document of the tenant, newest first, without lines.
pub(crate) async fn list_in(tx: &mut Tx, tenant: TenantId) -> Result<Vec<Invoice>, BillingError> {
    let now = tx.now();
    let rows = tx
        .fetch_all(
            Query::select()
                .columns(COLS)
                .from(INVOICES)
                .and_where(Expr::col("tenant_id").eq(tenant))
                .order_by("created_at", Order::Desc)
                .order_by("id", Order::Desc)
                .limit(500),
        )
        .await?;
    rows.iter().map(|r| decode(r, now)).collect()
}

/// The tenant's prepaid credit in `currency` (minor units).
pub(crate) async fn credit_balance(
    tx: &mut Tx,
    tenant: TenantId,
    currency: Currency,
) -> Result<i64, BillingError> {
    let rows = tx
        .fetch_all(
            Query::select()
                .column("amount")
                .from(CREDITS)
                .and_where(Expr::col("tenant_id").eq(tenant))
                .and_where(Expr::col("currency").eq(currency.as_str())),
        )
        .await?;
    rows.iter().try_fold(0i64, |acc, r| {
        acc.checked_add(r.get::<i64>("amount")?)
            .ok_or_else(|| BillingError::Money("credit balance overflows".into()))
    })
}

/// Adds an entry to the credit ledger.
pub(crate) async fn add_credit(
    tx: &mut Tx,
    tenant: TenantId,
    currency: Currency,
    amount: i64,
    reason: &str,
    invoice: Option<InvoiceId>,
) -> Result<(), BillingError> {
    let now = tx.now();
    tx.execute(
        Query::insert()
            .into_table(CREDITS)
            .columns([
                "tenant_id",
                "id",
                "currency",
                "amount",
                "reason",
                "invoice_id",
                "created_at",
            ])
            .values([
                tenant.into(),
                uuid::Uuid::now_v7().into(),
                currency.as_str().into(),
                amount.into(),
                reason.into(),
                invoice.into(),
                now.into(),
            ])
            .map_err(|e| BillingError::Catalogue(e.to_string()))?,
    )
    .await?;
    Ok(())
}
