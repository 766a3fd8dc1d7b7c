//! Collecting payment, provider webhooks, and dunning.
//!
//! Issuing an invoice queues, in the same transaction, a collection job (the
//! payment provider is called outside any database transaction, with an
//! idempotency key per invoice and attempt) and an overdue check at its due
//! date. A failed payment or an invoice past its due date makes the
//! subscription `past_due` and schedules the [`DunningPolicy`] as jobs:
//! reminder mails, payment retries and, after the grace period, suspension of
//! the tenant through the saas-core lifecycle (requests are refused with the
//! unpaid invoice named; data is kept). A payment, however it arrives, ends
//! the dunning and reactivates a tenant that dunning suspended. Every step is
//! audited in the tenant's chain.

use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};
use saas_audit::Target;
use saas_core::db::Tx;
use saas_core::db::sea_query::{Expr, ExprTrait, OnConflict, Query};
use saas_core::jobs::{JobQueue, NewJob};
use saas_core::tenant::TenantStatus;
use saas_core::{InvoiceId, PlatformContext, TenantContext, TenantId};
use serde::{Deserialize, Serialize};

use crate::billing::{Billing, in_dunning_in, live_in};
use crate::error::BillingError;
use crate::invoice::{self, DocumentKind, INVOICES, Invoice, InvoiceStatus};
use crate::money::{Money, minor_to_decimal};
use crate::payment::{PaymentOutcome, PaymentRequest, WebhookHeaders, WebhookKind};
use crate::subscription::SubscriptionStatus as S;

/// Collects an issued invoice through the payment provider.
pub const COLLECT_JOB: &str = "billing.collect";
/// Starts dunning when an invoice is still unpaid at its due date.
pub const OVERDUE_JOB: &str = "billing.overdue";
/// Runs one step of the dunning schedule.
pub const DUNNING_JOB: &str = "billing.dunning";

const PAYMENTS: &str = "billing_payments";
const WEBHOOKS: &str = "billing_webhook_events_in";
/// How a dunning suspension's reason starts (and how it is recognised).
const SUSPENSION_REASON: &str = "unpaid invoice";

/// One step of the dunning schedule, counted in days from when the invoice
/// went unpaid (a failed payment or its due date).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DunningStep {
    /// Days after the start of dunning.
    pub after_days: u32,
    /// Mail the billing contact a reminder.
    #[serde(default)]
    pub remind: bool,
    /// Try the payment provider again.
    #[serde(default)]
    pub retry: bool,
    /// Suspend the tenant (the end of the grace period).
    #[serde(default)]
    pub suspend: bool,
}

/// The dunning schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DunningPolicy {
    /// The steps, in order of `after_days`.
    pub steps: Vec<DunningStep>,
}

impl Default for DunningPolicy {
    /// A reminder at once; retries with reminders on days 1, 3 and 7;
    /// suspension on day 14.
    fn default() -> Self {
        let step = |after_days, remind, retry, suspend| DunningStep {
            after_days,
            remind,
            retry,
            suspend,
        };
        Self {
            steps: vec![
                step(0, true, false, false),
                step(1, true, true, false),
                step(3, true, true, false),
                step(7, true, true, false),
                step(14, false, false, true),
            ],
        }
    }
}

/// What a webhook did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookResult {
    /// Applied now.
    Processed,
    /// Seen before: no second effect.
    Duplicate,
}

/// Queues collection at once and the overdue check at the due date.
pub(crate) async fn queue_collection(tx: &mut Tx, doc: &Invoice) -> Result<(), BillingError> {
    let id = doc.id;
    JobQueue::enqueue(
        tx,
        NewJob::new(
            COLLECT_JOB,
            serde_json::json!({"invoice": id, "attempt": 0}),
        )
        .dedupe_key(format!("collect:{id}:0")),
    )
    .await?;
    if let Some(due) = doc.due_at {
        JobQueue::enqueue(
            tx,
            NewJob::new(OVERDUE_JOB, serde_json::json!({"invoice": id}))
                .run_at(due)
                .dedupe_key(format!("overdue:{id}")),
        )
        .await?;
    }
    Ok(())
}

pub(crate) fn invoice_of(payload: &serde_json::Value) -> Result<InvoiceId, BillingError> {
    payload
        .get("invoice")
        .and_then(|v| v.as_str())
        .and_then(|s| InvoiceId::from_str(s).ok())
        .ok_or_else(|| BillingError::validation("payload", "a billing job without an invoice"))
}

impl Billing {
    /// Collects `id` through the payment provider (attempt `attempt`, part of
    /// the idempotency key, so a retried job never charges twice). Returns the
    /// outcome, or `None` when the invoice no longer needs paying.
    pub async fn collect(
        &self,
        ctx: &TenantContext,
        id: InvoiceId,
        attempt: u32,
    ) -> Result<Option<PaymentOutcome>, BillingError> {
        let inv = self.invoice(ctx, id).await?;
        if inv.status != InvoiceStatus::Finalized || inv.amount_due <= 0 {
            return Ok(None);
        }
        let request = PaymentRequest {
            tenant_id: ctx.tenant().as_uuid(),
            invoice_id: id.as_uuid(),
            invoice_number: inv.number.clone().unwrap_or_default(),
            amount: Money {
                amount: inv.amount_due,
                currency: inv.currency,
            },
            idempotency_key: format!("invoice:{id}:{attempt}"),
            description: format!(
                "{} {}",
                self.inner.seller.name,
                inv.number.clone().unwrap_or_default()
            ),
        };
        // The provider is called outside any transaction: a slow provider
        // holds no lock and no connection.
        let outcome = self.inner.provider.collect(&request).await?;
        let mut tx = self.inner.db.begin(ctx).await?;
        let inv = invoice::load_in(&mut tx, ctx.tenant(), id).await?;
        record_payment(
            &mut tx,
            ctx.tenant(),
            &inv,
            self.inner.provider.name(),
            Payment::of(&outcome, request.amount.amount),
        )
        .await?;
        let mut suspended_for_us = false;
        match &outcome {
            PaymentOutcome::Succeeded { reference } if inv.status == InvoiceStatus::Finalized => {
                self.settle_paid(&mut tx, ctx, &inv, reference, "billing.payment.succeeded")
                    .await?;
                suspended_for_us = true;
            }
            PaymentOutcome::Failed { code, .. } => {
                self.audit(
                    &mut tx,
                    ctx,
                    "billing.payment.failed",
                    Target::new("invoice", id),
                    serde_json::json!({"number": inv.number, "code": code, "attempt": attempt}),
                )
                .await?;
                if inv.status == InvoiceStatus::Finalized {
                    self.start_dunning(&mut tx, ctx, &inv).await?;
                }
            }
            _ => {}
        }
        tx.commit().await?;
        if suspended_for_us {
            self.after_settlement(ctx).await;
        }
        Ok(Some(outcome))
    }

    /// Starts dunning for an unpaid invoice (once): the subscription goes
    /// past due and the schedule is queued.
    pub(crate) async fn start_dunning(
        &self,
        tx: &mut Tx,
        ctx: &TenantContext,
        inv: &Invoice,
    ) -> Result<(), BillingError> {
        let started = tx
            .execute(
                Query::update()
                    .table(INVOICES)
                    .value("dunning_step", 1i32)
                    .and_where(Expr::col("tenant_id").eq(ctx.tenant()))
                    .and_where(Expr::col("id").eq(inv.id))
                    .and_where(Expr::col("dunning_step").eq(0i32)),
            )
            .await?;
        if started == 0 {
            return Ok(());
        }
        let now = tx.now();
        if let Some(mut sub) = live_in(tx, ctx.tenant(), true).await?
            && sub.status == S::Active
        {
            let was = sub.status;
            // The first invoice unpaid: the subscription never became paid up.
            let first = inv.reason == "subscription_start";
            sub.status = if first { S::Incomplete } else { S::PastDue };
            sub.past_due_since = Some(now);
            sub.updated_at = now;
            crate::billing::update_subscription(tx, ctx.tenant(), &sub).await?;
            self.audit(
                tx,
                ctx,
                if first {
                    "billing.subscription.incomplete"
                } else {
                    "billing.subscription.past_due"
                },
                Target::new("subscription", sub.id),
                serde_json::json!({"from": was.as_str(), "invoice": inv.number}),
            )
            .await?;
        }
        for (i, step) in self.inner.dunning.steps.iter().enumerate() {
            JobQueue::enqueue(
                tx,
                NewJob::new(
                    DUNNING_JOB,
                    serde_json::json!({"invoice": inv.id, "step": i}),
                )
                .run_at(now + Duration::days(i64::from(step.after_days)))
                .dedupe_key(format!("dunning:{}:{i}", inv.id)),
            )
            .await?;
        }
        self.audit(
            tx,
            ctx,
            "billing.dunning.start",
            Target::new("invoice", inv.id),
            serde_json::json!({"number": inv.number, "steps": self.inner.dunning.steps.len()}),
        )
        .await
    }

    /// The overdue check at an invoice's due date.
    pub async fn check_overdue(
        &self,
        ctx: &TenantContext,
        id: InvoiceId,
    ) -> Result<bool, BillingError> {
        let mut tx = self.inner.db.begin(ctx).await?;
        let inv = invoice::load_in(&mut tx, ctx.tenant(), id).await?;
        let now = tx.now();
        let overdue =
            inv.status == InvoiceStatus::Finalized && inv.due_at.is_some_and(|d| d <= now);
        if overdue {
            self.start_dunning(&mut tx, ctx, &inv).await?;
        }
        tx.commit().await?;
        Ok(overdue)
    }

    /// Runs step `step` of the dunning schedule for `id`; nothing once the
    /// invoice is paid or void.
    pub async fn dunning_step(
        &self,
        ctx: &TenantContext,
        id: InvoiceId,
        step: usize,
    ) -> Result<(), BillingError> {
        let Some(s) = self.inner.dunning.steps.get(step).cloned() else {
            return Ok(());
        };
        let inv = self.invoice(ctx, id).await?;
        if inv.status != InvoiceStatus::Finalized {
            return Ok(());
        }
        if s.retry {
            let attempt = u32::try_from(step).unwrap_or(u32::MAX).saturating_add(1);
            if let Some(PaymentOutcome::Succeeded { .. }) = self.collect(ctx, id, attempt).await? {
                return Ok(());
            }
        }
        let mut tx = self.inner.db.begin(ctx).await?;
        let inv = invoice::load_in(&mut tx, ctx.tenant(), id).await?;
        if inv.status != InvoiceStatus::Finalized {
            return Ok(());
        }
        let number = inv.number.clone().unwrap_or_default();
        if s.remind {
            let account = crate::billing::account_in(&mut tx, ctx.tenant()).await?;
            if let (Some(outbox), Some(to)) = (&self.inner.outbox, &account.email) {
                let last = self
                    .inner
                    .dunning
                    .steps
                    .iter()
                    .skip(step + 1)
                    .find(|x| x.suspend);
                let warning = last
                    .map(|x| format!("\nWithout payment the organization is suspended {} days after the first reminder.\n", x.after_days))
                    .unwrap_or_default();
                let body = format!(
                    "Invoice {number} over {} {} is unpaid (due {}).\n{warning}",
                    minor_to_decimal(inv.amount_due, inv.currency),
                    inv.currency,
                    inv.due_at
                        .map(|d| d.format("%Y-%m-%d").to_string())
                        .unwrap_or_default(),
                );
                outbox
                    .enqueue(
                        &mut tx,
                        to,
                        &format!("Payment reminder: invoice {number}"),
                        &body,
                    )
                    .await?;
            }
        }
        self.audit(
            &mut tx,
            ctx,
            "billing.dunning.step",
            Target::new("invoice", id),
            serde_json::json!({"number": number, "step": step, "remind": s.remind, "retry": s.retry, "suspend": s.suspend}),
        )
        .await?;
        if s.suspend {
            self.audit(
                &mut tx,
                ctx,
                "billing.dunning.suspend",
                Target::kind("tenant"),
                serde_json::json!({"invoice": number}),
            )
            .await?;
        }
        tx.commit().await?;
        if s.suspend {
            let pctx = PlatformContext::system("billing: dunning");
            let tenant = self.inner.tenants.get(&pctx, ctx.tenant()).await?;
            if tenant.status == TenantStatus::Active {
                self.inner
                    .tenants
                    .suspend(
                        &pctx,
                        ctx.tenant(),
                        &format!("{SUSPENSION_REASON} {number}; pay it to reactivate"),
                    )
                    .await?;
            }
        }
        Ok(())
    }

    /// Reactivates a tenant that dunning suspended once nothing is unpaid.
    pub(crate) async fn after_settlement(&self, ctx: &TenantContext) {
        if let Err(e) = self.reactivate_if_settled(ctx).await {
            tracing::warn!(tenant = %ctx.tenant(), error = %e, "reactivation after payment failed");
        }
    }

    async fn reactivate_if_settled(&self, ctx: &TenantContext) -> Result<(), BillingError> {
        let pctx = PlatformContext::system("billing: payment received");
        let tenant = self.inner.tenants.get(&pctx, ctx.tenant()).await?;
        let ours = tenant.status == TenantStatus::Suspended
            && tenant
                .status_reason
                .as_deref()
                .is_some_and(|r| r.starts_with(SUSPENSION_REASON));
        if !ours {
            return Ok(());
        }
        let mut tx = self.inner.db.begin(ctx).await?;
        let unpaid = in_dunning_in(&mut tx, ctx.tenant()).await?;
        if unpaid > 0 {
            return Ok(());
        }
        self.audit(
            &mut tx,
            ctx,
            "billing.dunning.reactivate",
            Target::kind("tenant"),
            serde_json::json!({}),
        )
        .await?;
        tx.commit().await?;
        self.inner.tenants.reactivate(&pctx, ctx.tenant()).await?;
        Ok(())
    }

    /// Verifies and applies a payment provider's webhook, once per event id:
    /// a replay has no second effect.
    pub async fn handle_webhook(
        &self,
        provider: &str,
        headers: &WebhookHeaders,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<WebhookResult, BillingError> {
        if provider != self.inner.provider.name() {
            return Err(BillingError::NotFound {
                entity: "payment provider",
            });
        }
        let event = self.inner.provider.verify_webhook(headers, body, now)?;
        let tenant = TenantId::from_uuid(event.tenant_id);
        let ctx = TenantContext::system(tenant, format!("{provider} webhook {}", event.id));
        let mut tx = self.inner.db.begin(&ctx).await?;
        // A signed event naming no tenant of ours is bad input, not a fault.
        saas_core::tenant::get_in(&mut tx, tenant).await?;
        let inserted = tx
            .execute(
                Query::insert()
                    .into_table(WEBHOOKS)
                    .columns(["provider", "event_id", "tenant_id", "kind", "received_at"])
                    .values([
                        provider.into(),
                        event.id.clone().into(),
                        tenant.into(),
                        serde_json::to_value(event.kind)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_default()
                            .into(),
                        tx.now().into(),
                    ])
                    .map_err(|e| BillingError::Catalogue(e.to_string()))?
                    .on_conflict(
                        OnConflict::columns(["provider", "event_id"])
                            .do_nothing()
                            .to_owned(),
                    ),
            )
            .await?;
        if inserted == 0 {
            return Ok(WebhookResult::Duplicate);
        }
        let id = InvoiceId::from_uuid(event.invoice_id);
        let inv = invoice::load_in(&mut tx, tenant, id).await?;
        if inv.kind != DocumentKind::Invoice || event.amount.currency != inv.currency {
            return Err(BillingError::validation(
                "event",
                "does not match the invoice",
            ));
        }
        let (status, failure) = match event.kind {
            WebhookKind::PaymentSucceeded => ("succeeded", None),
            WebhookKind::PaymentFailed => ("failed", event.failure_code.clone()),
            WebhookKind::RefundSucceeded => ("refunded", None),
        };
        record_payment(
            &mut tx,
            tenant,
            &inv,
            provider,
            Payment {
                status,
                amount: event.amount.amount,
                reference: Some(event.reference.clone()),
                failure,
            },
        )
        .await?;
        let mut settled = false;
        let open = inv.status == InvoiceStatus::Finalized;
        match event.kind {
            WebhookKind::PaymentSucceeded if open && event.amount.amount >= inv.amount_due => {
                self.settle_paid(
                    &mut tx,
                    &ctx,
                    &inv,
                    &event.reference,
                    "billing.payment.succeeded",
                )
                .await?;
                settled = true;
            }
            WebhookKind::PaymentSucceeded if open && event.amount.amount > 0 => {
                // A partial payment lowers what is due; the invoice stays open.
                tx.execute(
                    Query::update()
                        .table(INVOICES)
                        .value("amount_due", inv.amount_due - event.amount.amount)
                        .and_where(Expr::col("tenant_id").eq(tenant))
                        .and_where(Expr::col("id").eq(id)),
                )
                .await?;
                self.audit(&mut tx, &ctx, "billing.payment.partial", Target::new("invoice", id), serde_json::json!({"number": inv.number, "amount": event.amount.amount, "webhook": event.id})).await?;
            }
            WebhookKind::PaymentFailed if open => {
                self.audit(&mut tx, &ctx, "billing.payment.failed", Target::new("invoice", id), serde_json::json!({"number": inv.number, "code": event.failure_code, "webhook": event.id})).await?;
                self.start_dunning(&mut tx, &ctx, &inv).await?;
            }
            WebhookKind::RefundSucceeded => {
                self.audit(&mut tx, &ctx, "billing.payment.refunded", Target::new("invoice", id), serde_json::json!({"number": inv.number, "amount": event.amount.amount, "webhook": event.id})).await?;
            }
            _ => {
                self.audit(
                    &mut tx,
                    &ctx,
                    "billing.webhook.noted",
                    Target::new("invoice", id),
                    serde_json::json!({"webhook": event.id, "status": inv.status.as_str()}),
                )
                .await?;
            }
        }
        tx.commit().await?;
        if settled {
            self.after_settlement(&ctx).await;
        }
        Ok(WebhookResult::Processed)
    }
}

/// One payment attempt as recorded.
struct Payment {
    status: &'static str,
    amount: i64,
    reference: Option<String>,
    failure: Option<String>,
}

impl Payment {
    fn of(outcome: &PaymentOutcome, amount: i64) -> Self {
        let (status, reference, failure) = match outcome {
            PaymentOutcome::Succeeded { reference } => ("succeeded", Some(reference.clone()), None),
            PaymentOutcome::Pending { reference, .. } => ("pending", reference.clone(), None),
            PaymentOutcome::Failed { code, .. } => ("failed", None, Some(code.clone())),
        };
        Self {
            status,
            amount,
            reference,
            failure,
        }
    }
}

async fn record_payment(
    tx: &mut Tx,
    tenant: TenantId,
    inv: &Invoice,
    provider: &str,
    p: Payment,
) -> Result<(), BillingError> {
    let now = tx.now();
    tx.execute(
        Query::insert()
            .into_table(PAYMENTS)
            .columns([
                "tenant_id",
                "id",
                "invoice_id",
                "provider",
                "status",
                "amount",
                "currency",
                "reference",
                "failure_code",
                "created_at",
            ])
            .values([
                tenant.into(),
                uuid::Uuid::now_v7().into(),
                inv.id.into(),
                provider.into(),
                p.status.into(),
                p.amount.into(),
                inv.currency.as_str().into(),
                p.reference.into(),
                p.failure.into(),
                now.into(),
            ])
            .map_err(|e| BillingError::Catalogue(e.to_string()))?,
    )
    .await?;
    Ok(())
}
