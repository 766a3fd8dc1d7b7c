//! The billing service: billing accounts, the subscription state machine,
//! the billing run that closes periods into invoices, and the operator's
//! actions on invoices (mark paid, void, credit notes, prepaid credit).
//!
//! Each method is one transaction: it checks its preconditions, writes,
//! audits (in the same transaction) and commits, or writes nothing. What must
//! happen after a commit (mail, the tenant's tier) is queued in the same
//! transaction through the saas-core job queue, so it cannot be lost.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use saas_audit::{AuditEvent, AuditLog, Outcome, Target};
use saas_core::db::sea_query::{Expr, ExprTrait, LockType, OnConflict, Query};
use saas_core::db::{Db, Tx};
use saas_core::jobs::{JobError, JobHandler, JobQueue, JobRun, NewJob};
use saas_core::tenant::{TenantPatch, Tenants, Tier};
use saas_core::{InvoiceId, PlatformContext, SubscriptionId, TenantContext, TenantId};
use serde::{Deserialize, Serialize};

use crate::error::BillingError;
use crate::invoice::{self, DocumentKind, Draft, INVOICES, Invoice, InvoiceStatus, Party};
use crate::metering::{CLOSES, CYCLES, Meter};
use crate::money::{Currency, minor_to_decimal, to_minor};
use crate::period::{Cycle, Period};
use crate::plan::{Anchor, CancelTiming, DowngradeTiming, Interval, Plan, PlanCatalogue};
use crate::rating::{self, InvoiceLine, LineKind};
use crate::subscription::{PlanRef, Subscription, SubscriptionStatus as S, check};

pub(crate) const SUBSCRIPTIONS: &str = "billing_subscriptions";
pub(crate) const ACCOUNTS: &str = "billing_accounts";

/// The job that advances one subscription (ends its trial, closes its due
/// periods). Enqueued by [`Billing::run_due`], deduplicated per period.
pub const ADVANCE_JOB: &str = "billing.advance";
/// The job that brings the tenant's tier in line with its plan.
pub const SYNC_TIER_JOB: &str = "billing.sync_tier";

/// Where billing mail goes: the application's mail outbox, written in the
/// billing transaction (the reference server implements it over saas-auth's
/// outbox).
#[async_trait]
pub trait Outbox: Send + Sync + fmt::Debug {
    /// Queues one message in `tx`.
    async fn enqueue(
        &self,
        tx: &mut Tx,
        to: &str,
        subject: &str,
        body: &str,
    ) -> Result<(), BillingError>;
}

/// The tenant's billing details: the buyer on its invoices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BillingAccount {
    /// Legal name on invoices.
    pub legal_name: String,
    /// Where invoices and reminders go (a person's address is personal data).
    #[serde(default)]
    pub email: Option<String>,
    /// Postal address, lines separated by newlines.
    #[serde(default)]
    pub address: Option<String>,
    /// VAT or other tax id.
    #[serde(default)]
    pub tax_id: Option<String>,
    /// Tax rate in percent applied to the tenant's invoices (0 to 100).
    #[serde(default)]
    pub tax_rate: Decimal,
    /// Purchase-order number printed on its invoices.
    #[serde(default)]
    pub po_number: Option<String>,
}

/// Input for [`Billing::subscribe`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSubscription {
    /// The plan's code.
    pub plan: String,
    /// Its version (default: the newest).
    #[serde(default)]
    pub version: Option<u32>,
    /// Seats (default 1).
    #[serde(default)]
    pub seats: Option<u64>,
}

/// Input for [`Billing::change_plan`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanChange {
    /// The new plan's code.
    pub plan: String,
    /// Its version (default: the newest).
    #[serde(default)]
    pub version: Option<u32>,
    /// New seat count (default: unchanged).
    #[serde(default)]
    pub seats: Option<u64>,
}

/// What a plan change did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanChangeResult {
    /// The subscription after the change.
    pub subscription: Subscription,
    /// `now` or `period_end`.
    pub effective: &'static str,
    /// The prorated invoice or credit note, for an immediate change.
    pub document: Option<Invoice>,
}

/// What a billing run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RunReport {
    /// Subscriptions found due.
    pub due: u64,
    /// Advance jobs enqueued (a job already queued for a period is not queued again).
    pub enqueued: u64,
}

/// What advancing one subscription did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Advanced {
    /// True when a trial ended.
    pub trial_ended: bool,
    /// Periods closed.
    pub periods_closed: u64,
    /// Documents issued.
    pub documents: Vec<InvoiceId>,
}

/// Input for a credit note.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewCreditNote {
    /// Net amount credited, in minor units (tax is added at the invoice's rate).
    pub amount: i64,
    /// Why (printed on the credit note).
    pub reason: String,
}

/// Limits on seats per subscription.
pub const MAX_SEATS: u64 = 1_000_000;

/// The largest single credit grant, in minor units (so that balances can
/// never overflow).
pub const MAX_CREDIT: i64 = 1_000_000_000_000;

pub(crate) struct Inner {
    pub(crate) db: Db,
    audit: AuditLog,
    plans: PlanCatalogue,
    meter: Meter,
    pub(crate) seller: Party,
    pub(crate) tenants: Tenants,
    authorizer: Option<saas_policy::Authorizer>,
    pub(crate) outbox: Option<Arc<dyn Outbox>>,
    pub(crate) provider: Arc<dyn crate::payment::PaymentProvider>,
    pub(crate) dunning: crate::dunning::DunningPolicy,
}

/// The billing service. Cheap to clone.
#[derive(Clone)]
pub struct Billing {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for Billing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Billing")
            .field("plans", &self.inner.plans.plans().len())
            .finish_non_exhaustive()
    }
}

fn conflict(code: &'static str, message: impl Into<String>) -> BillingError {
    BillingError::Conflict {
        code,
        message: message.into(),
    }
}

fn sea(e: impl fmt::Display) -> BillingError {
    BillingError::Catalogue(e.to_string())
}

impl Billing {
    /// Billing over `db`, with `plans`, counting usage with `meter`, auditing
    /// into `audit`; `seller` is printed on every invoice.
    #[must_use]
    pub fn new(db: Db, audit: AuditLog, plans: PlanCatalogue, meter: Meter, seller: Party) -> Self {
        Self {
            inner: Arc::new(Inner {
                tenants: Tenants::new(db.clone()),
                db,
                audit,
                plans,
                meter,
                seller,
                authorizer: None,
                outbox: None,
                provider: Arc::new(crate::payment::ManualProvider::default()),
                dunning: crate::dunning::DunningPolicy::default(),
            }),
        }
    }

    fn with(self, f: impl FnOnce(&mut Inner)) -> Self {
        match Arc::try_unwrap(self.inner) {
            Ok(mut inner) => {
                f(&mut inner);
                Self {
                    inner: Arc::new(inner),
                }
            }
            Err(inner) => Self { inner },
        }
    }

    /// Drops the Authorizer's cached tier of a tenant when its plan changes.
    #[must_use]
    pub fn with_authorizer(self, authorizer: saas_policy::Authorizer) -> Self {
        self.with(|i| i.authorizer = Some(authorizer))
    }

    /// Sends invoices and reminders through `outbox`.
    #[must_use]
    pub fn with_outbox(self, outbox: Arc<dyn Outbox>) -> Self {
        self.with(|i| i.outbox = Some(outbox))
    }

    /// Collects payments through `provider` (default: manual bank transfer).
    #[must_use]
    pub fn with_provider(self, provider: Arc<dyn crate::payment::PaymentProvider>) -> Self {
        self.with(|i| i.provider = provider)
    }

    /// Runs `policy` for unpaid invoices.
    #[must_use]
    pub fn with_dunning(self, policy: crate::dunning::DunningPolicy) -> Self {
        self.with(|i| i.dunning = policy)
    }

    /// The plan catalogue.
    #[must_use]
    pub fn plans(&self) -> &PlanCatalogue {
        &self.inner.plans
    }

    fn plan(&self, code: &str, version: Option<u32>) -> Result<&Plan, BillingError> {
        self.inner.plans.get(code, version).ok_or_else(|| {
            BillingError::validation(
                "plan",
                match version {
                    Some(v) => format!("no plan {code:?} version {v}"),
                    None => format!("no plan {code:?}"),
                },
            )
        })
    }

    pub(crate) async fn audit(
        &self,
        tx: &mut Tx,
        ctx: &TenantContext,
        action: &str,
        target: Target,
        details: serde_json::Value,
    ) -> Result<(), BillingError> {
        self.inner
            .audit
            .append(
                tx,
                ctx,
                AuditEvent::new(action, target)
                    .outcome(Outcome::Success)
                    .details(details),
            )
            .await?;
        Ok(())
    }

    // ---------------------------------------------------------------- account

    /// The tenant's billing account (defaults to the tenant's name, no tax).
    pub async fn account(&self, ctx: &TenantContext) -> Result<BillingAccount, BillingError> {
        let mut tx = self.inner.db.read(ctx).await?;
        let a = account_in(&mut tx, ctx.tenant()).await?;
        tx.commit().await?;
        Ok(a)
    }

    /// Sets the tenant's billing account; later invoices print it.
    pub async fn set_account(
        &self,
        ctx: &TenantContext,
        account: BillingAccount,
    ) -> Result<BillingAccount, BillingError> {
        validate_text("legal_name", &account.legal_name, 1, 200)?;
        for (field, v, max) in [
            ("email", &account.email, 254),
            ("address", &account.address, 1000),
            ("tax_id", &account.tax_id, 64),
            ("po_number", &account.po_number, 64),
        ] {
            if let Some(v) = v {
                validate_text(field, v, 1, max)?;
            }
        }
        if let Some(e) = &account.email
            && (!e.contains('@') || e.chars().any(char::is_whitespace))
        {
            return Err(BillingError::validation("email", "not a mail address"));
        }
        if account.tax_rate < Decimal::ZERO || account.tax_rate > Decimal::ONE_HUNDRED {
            return Err(BillingError::validation(
                "tax_rate",
                "from 0 to 100 percent",
            ));
        }
        let account = BillingAccount {
            email: account.email.map(|e| e.to_lowercase()),
            ..account
        };
        let mut tx = self.inner.db.begin(ctx).await?;
        let now = tx.now();
        let values = [
            ctx.tenant().into(),
            account.legal_name.clone().into(),
            account.email.clone().into(),
            account.address.clone().into(),
            account.tax_id.clone().into(),
            account.tax_rate.normalize().to_string().into(),
            account.po_number.clone().into(),
            now.into(),
        ];
        tx.execute(
            Query::insert()
                .into_table(ACCOUNTS)
                .columns([
                    "tenant_id",
                    "legal_name",
                    "email",
                    "address",
                    "tax_id",
                    "tax_rate",
                    "po_number",
                    "updated_at",
                ])
                .values(values)
                .map_err(sea)?
                .on_conflict(
                    OnConflict::column("tenant_id")
                        .update_columns([
                            "legal_name",
                            "email",
                            "address",
                            "tax_id",
                            "tax_rate",
                            "po_number",
                            "updated_at",
                        ])
                        .to_owned(),
                ),
        )
        .await?;
        self.audit(
            &mut tx,
            ctx,
            "billing.account.update",
            Target::kind("billing_account"),
            serde_json::json!({"tax_rate": account.tax_rate.normalize().to_string()}),
        )
        .await?;
        tx.commit().await?;
        Ok(account)
    }

    // ----------------------------------------------------------- subscriptions

    /// The tenant's live subscription, if any.
    pub async fn subscription(
        &self,
        ctx: &TenantContext,
    ) -> Result<Option<Subscription>, BillingError> {
        let mut tx = self.inner.db.read(ctx).await?;
        let s = live_in(&mut tx, ctx.tenant(), false).await?;
        tx.commit().await?;
        Ok(s)
    }

    /// Subscribes the tenant to a plan: a trial when the plan has one,
    /// otherwise active at once with an invoice for the (prorated) first
    /// period. The tenant's tier follows the plan.
    pub async fn subscribe(
        &self,
        ctx: &TenantContext,
        input: NewSubscription,
    ) -> Result<Subscription, BillingError> {
        let plan = self.plan(&input.plan, input.version)?.clone();
        let seats = seats_for(&plan, input.seats.unwrap_or(1))?;
        let mut tx = self.inner.db.begin(ctx).await?;
        if live_in(&mut tx, ctx.tenant(), true).await?.is_some() {
            return Err(conflict(
                "subscription_exists",
                "the organization already has a subscription; change its plan instead",
            ));
        }
        let now = tx.now();
        let cycle = cycle_of(&plan, now);
        let period = cycle.period_at(now)?;
        let trial_end =
            (plan.trial_days > 0).then(|| now + Duration::days(i64::from(plan.trial_days)));
        let sub = Subscription {
            id: SubscriptionId::new(),
            plan: PlanRef {
                code: plan.code.clone(),
                version: plan.version,
            },
            status: if trial_end.is_some() {
                S::Trialing
            } else {
                S::Active
            },
            seats,
            started_at: now,
            trial_end,
            current_period: period,
            cancel_at_period_end: false,
            next_plan: None,
            next_seats: None,
            past_due_since: None,
            canceled_at: None,
            created_at: now,
            updated_at: now,
        };
        insert_subscription(&mut tx, ctx.tenant(), &sub).await?;
        set_cycle(&mut tx, ctx.tenant(), cycle).await?;
        self.audit(
            &mut tx,
            ctx,
            "billing.subscription.create",
            Target::new("subscription", sub.id),
            serde_json::json!({"plan": plan.code, "version": plan.version, "seats": seats, "status": sub.status.as_str()}),
        )
        .await?;
        if sub.status == S::Active {
            let lines = fixed_lines(&plan, period, seats, now)?;
            self.issue(
                &mut tx,
                ctx,
                &sub,
                &plan,
                format!("start:{}", sub.id),
                "subscription_start",
                lines,
                Some(period),
            )
            .await?;
        }
        queue_tier_sync(&mut tx).await?;
        tx.commit().await?;
        self.sync_tier(ctx, plan.tier).await;
        Ok(sub)
    }

    /// Changes the plan (and seats). An upgrade (a higher recurring fixed
    /// price) takes effect at once with a prorated invoice; a downgrade at the
    /// end of the period, or at once with a prorated credit when the current
    /// plan says so.
    pub async fn change_plan(
        &self,
        ctx: &TenantContext,
        id: SubscriptionId,
        change: PlanChange,
    ) -> Result<PlanChangeResult, BillingError> {
        let mut tx = self.inner.db.begin(ctx).await?;
        let mut sub = load_in(&mut tx, ctx.tenant(), id).await?;
        check(
            sub.status,
            &[S::Trialing, S::Active, S::PastDue],
            "change the plan of",
        )?;
        let old = self.plan(&sub.plan.code, Some(sub.plan.version))?.clone();
        let new = self.plan(&change.plan, change.version)?.clone();
        if new.currency != old.currency {
            return Err(BillingError::validation(
                "plan",
                "a plan in another currency needs a new subscription",
            ));
        }
        if new.interval != old.interval || new.anchor != old.anchor {
            return Err(BillingError::validation(
                "plan",
                "a plan with another billing interval or anchor needs a new subscription",
            ));
        }
        let seats = seats_for(&new, change.seats.unwrap_or(sub.seats))?;
        if new.code == old.code && new.version == old.version && seats == sub.seats {
            return Err(conflict(
                "no_change",
                "the subscription is already on this plan",
            ));
        }
        let now = tx.now();
        let upgrade = new.recurring_fixed(seats) >= old.recurring_fixed(sub.seats);
        let immediate =
            upgrade || old.downgrade == DowngradeTiming::Immediate || sub.status == S::Trialing;
        let mut document = None;
        if immediate {
            if sub.status != S::Trialing {
                let lines = change_lines(&old, &new, sub.seats, seats, sub.current_period, now)?;
                document = self
                    .issue(
                        &mut tx,
                        ctx,
                        &sub,
                        &new,
                        format!("change:{}:{}", sub.id, now.timestamp_micros()),
                        "plan_change",
                        lines,
                        Some(sub.current_period),
                    )
                    .await?;
            }
            sub.plan = PlanRef {
                code: new.code.clone(),
                version: new.version,
            };
            sub.seats = seats;
            sub.next_plan = None;
            sub.next_seats = None;
        } else {
            sub.next_plan = Some(PlanRef {
                code: new.code.clone(),
                version: new.version,
            });
            sub.next_seats = (seats != sub.seats).then_some(seats);
        }
        sub.updated_at = now;
        update_subscription(&mut tx, ctx.tenant(), &sub).await?;
        self.audit(
            &mut tx,
            ctx,
            "billing.subscription.change_plan",
            Target::new("subscription", sub.id),
            serde_json::json!({
                "from": {"plan": old.code, "version": old.version},
                "to": {"plan": new.code, "version": new.version},
                "seats": seats,
                "effective": if immediate { "now" } else { "period_end" },
                "document": document.as_ref().map(|d| d.id.to_string()),
            }),
        )
        .await?;
        if immediate {
            queue_tier_sync(&mut tx).await?;
        }
        tx.commit().await?;
        if immediate {
            self.sync_tier(ctx, new.tier).await;
        }
        Ok(PlanChangeResult {
            subscription: sub,
            effective: if immediate { "now" } else { "period_end" },
            document,
        })
    }

    /// Cancels: at the end of the period (the default of the plan), or at
    /// once, crediting the unused time of the fixed fees.
    pub async fn cancel(
        &self,
        ctx: &TenantContext,
        id: SubscriptionId,
        immediately: Option<bool>,
    ) -> Result<Subscription, BillingError> {
        let mut tx = self.inner.db.begin(ctx).await?;
        let mut sub = load_in(&mut tx, ctx.tenant(), id).await?;
        check(
            sub.status,
            &[S::Incomplete, S::Trialing, S::Active, S::PastDue, S::Paused],
            "cancel",
        )?;
        let plan = self.plan(&sub.plan.code, Some(sub.plan.version))?.clone();
        let now = tx.now();
        let now_ = immediately.unwrap_or(plan.cancel == CancelTiming::Immediate)
            || matches!(sub.status, S::Trialing | S::Incomplete | S::Paused);
        if now_ {
            if matches!(sub.status, S::Active | S::PastDue) {
                let mut lines = self
                    .usage_lines(&mut tx, ctx.tenant(), &plan, &sub, Some(now))
                    .await?;
                let credit = change_lines(&plan, &plan, sub.seats, 0, sub.current_period, now)?;
                lines.extend(
                    credit
                        .into_iter()
                        .filter(|l| l.kind == LineKind::Credit && l.amount != 0),
                );
                self.issue(
                    &mut tx,
                    ctx,
                    &sub,
                    &plan,
                    format!("cancel:{}", sub.id),
                    "cancellation",
                    lines,
                    Some(sub.current_period),
                )
                .await?;
            }
            sub.status = S::Canceled;
            sub.canceled_at = Some(now);
            sub.cancel_at_period_end = false;
        } else {
            if sub.cancel_at_period_end {
                return Err(conflict(
                    "no_change",
                    "the subscription already ends at the end of the period",
                ));
            }
            sub.cancel_at_period_end = true;
        }
        sub.updated_at = now;
        update_subscription(&mut tx, ctx.tenant(), &sub).await?;
        self.audit(
            &mut tx,
            ctx,
            "billing.subscription.cancel",
            Target::new("subscription", sub.id),
            serde_json::json!({"effective": if now_ { "now" } else { "period_end" }}),
        )
        .await?;
        if now_ {
            queue_tier_sync(&mut tx).await?;
        }
        tx.commit().await?;
        if now_ {
            self.sync_tier(ctx, Tier::Individual).await;
        }
        Ok(sub)
    }

    /// Pauses an active subscription: no fixed fees while paused.
    pub async fn pause(
        &self,
        ctx: &TenantContext,
        id: SubscriptionId,
    ) -> Result<Subscription, BillingError> {
        self.step(
            ctx,
            id,
            &[S::Active],
            S::Paused,
            "pause",
            "billing.subscription.pause",
        )
        .await
    }

    /// Resumes a paused subscription.
    pub async fn resume(
        &self,
        ctx: &TenantContext,
        id: SubscriptionId,
    ) -> Result<Subscription, BillingError> {
        self.step(
            ctx,
            id,
            &[S::Paused],
            S::Active,
            "resume",
            "billing.subscription.resume",
        )
        .await
    }

    async fn step(
        &self,
        ctx: &TenantContext,
        id: SubscriptionId,
        from: &[S],
        to: S,
        verb: &str,
        action: &str,
    ) -> Result<Subscription, BillingError> {
        let mut tx = self.inner.db.begin(ctx).await?;
        let mut sub = load_in(&mut tx, ctx.tenant(), id).await?;
        check(sub.status, from, verb)?;
        let was = sub.status;
        sub.status = to;
        sub.updated_at = tx.now();
        update_subscription(&mut tx, ctx.tenant(), &sub).await?;
        self.audit(
            &mut tx,
            ctx,
            action,
            Target::new("subscription", sub.id),
            serde_json::json!({"from": was.as_str(), "to": to.as_str()}),
        )
        .await?;
        tx.commit().await?;
        Ok(sub)
    }

    // ---------------------------------------------------------- billing run

    /// Finds the subscriptions with a trial or a period to close and enqueues
    /// one advance job each (deduplicated per period, so two runs enqueue
    /// once). Register [`BillingJobs`] on a worker to run them.
    pub async fn run_due(&self, pctx: &PlatformContext) -> Result<RunReport, BillingError> {
        let mut tx = self.inner.db.begin_platform(pctx).await?;
        let now = tx.now();
        let rows = tx
            .fetch_all(
                Query::select()
                    .columns(["tenant_id", "id", "period_start"])
                    .from(SUBSCRIPTIONS)
                    .and_where(Expr::col("status").ne(S::Canceled.as_str()))
                    .cond_where(
                        saas_core::db::sea_query::Cond::any()
                            .add(Expr::col("period_end").lte(now))
                            .add(
                                Expr::col("status")
                                    .eq(S::Trialing.as_str())
                                    .and(Expr::col("trial_end").lte(now)),
                            ),
                    ),
            )
            .await?;
        tx.commit().await?;
        let mut report = RunReport::default();
        for r in rows {
            let tenant: TenantId = r.get("tenant_id")?;
            let id: SubscriptionId = r.get("id")?;
            let start: DateTime<Utc> = r.get("period_start")?;
            report.due += 1;
            let ctx = TenantContext::system(tenant, "billing run");
            let mut tx = self.inner.db.begin(&ctx).await?;
            let queued = JobQueue::enqueue(
                &mut tx,
                NewJob::new(ADVANCE_JOB, serde_json::json!({"subscription": id}))
                    .dedupe_key(format!("advance:{id}:{}", start.timestamp_micros())),
            )
            .await?;
            tx.commit().await?;
            report.enqueued += u64::from(queued.is_some());
        }
        Ok(report)
    }

    /// Ends a due trial and closes every due period of one subscription, in
    /// one transaction. Idempotent: run twice, or concurrently, it closes each
    /// period once and issues one invoice per period.
    pub async fn advance(
        &self,
        ctx: &TenantContext,
        id: SubscriptionId,
    ) -> Result<Advanced, BillingError> {
        let mut tx = self.inner.db.begin(ctx).await?;
        let mut sub = load_in(&mut tx, ctx.tenant(), id).await?;
        let now = tx.now();
        let mut out = Advanced::default();
        let start_tier = self.plan(&sub.plan.code, Some(sub.plan.version))?.tier;
        let cycle = crate::metering::cycle_in(&mut tx, ctx.tenant()).await?;
        // Catch up period by period (a run that was down for months closes each).
        for _ in 0..240 {
            let plan = self.plan(&sub.plan.code, Some(sub.plan.version))?.clone();
            if sub.status == S::Trialing
                && let Some(end) = sub
                    .trial_end
                    .filter(|e| *e <= now && *e < sub.current_period.end)
            {
                sub.status = S::Active;
                out.trial_ended = true;
                let lines = fixed_lines(&plan, sub.current_period, sub.seats, end)?;
                if let Some(d) = self
                    .issue(
                        &mut tx,
                        ctx,
                        &sub,
                        &plan,
                        format!("trial_end:{}", sub.id),
                        "subscription_start",
                        lines,
                        Some(sub.current_period),
                    )
                    .await?
                {
                    out.documents.push(d.id);
                }
                self.audit(
                    &mut tx,
                    ctx,
                    "billing.subscription.trial_end",
                    Target::new("subscription", sub.id),
                    serde_json::json!({"at": end}),
                )
                .await?;
                continue;
            }
            if sub.status == S::Canceled || sub.current_period.end > now {
                break;
            }
            let closing = sub.current_period;
            let next = cycle.next(closing)?;
            let mut lines = if matches!(sub.status, S::Active | S::PastDue) {
                self.usage_lines(&mut tx, ctx.tenant(), &plan, &sub, None)
                    .await?
            } else {
                Vec::new()
            };
            let ends = sub.cancel_at_period_end;
            let next_plan = match &sub.next_plan {
                Some(p) => self.plan(&p.code, Some(p.version))?.clone(),
                None => plan.clone(),
            };
            // Fixed fees of the next period, in advance. A trial still running
            // bills nothing now: its end is billed when it comes (above).
            if !ends && matches!(sub.status, S::Active | S::PastDue) {
                let seats = sub.next_seats.unwrap_or(sub.seats);
                lines.extend(fixed_lines(&next_plan, next, seats, next.start)?);
            }
            tx.execute(
                Query::insert()
                    .into_table(CLOSES)
                    .columns(["tenant_id", "period_start", "period_end", "closed_at"])
                    .values([
                        ctx.tenant().into(),
                        closing.start.into(),
                        closing.end.into(),
                        now.into(),
                    ])
                    .map_err(sea)?
                    .on_conflict(
                        OnConflict::columns(["tenant_id", "period_start"])
                            .do_nothing()
                            .to_owned(),
                    ),
            )
            .await?;
            if let Some(d) = self
                .issue(
                    &mut tx,
                    ctx,
                    &sub,
                    &next_plan,
                    format!("period:{}:{}", sub.id, closing.start.timestamp_micros()),
                    "period",
                    lines,
                    Some(closing),
                )
                .await?
            {
                out.documents.push(d.id);
            }
            out.periods_closed += 1;
            self.audit(
                &mut tx,
                ctx,
                "billing.period.close",
                Target::new("subscription", sub.id),
                serde_json::json!({"period_start": closing.start, "period_end": closing.end}),
            )
            .await?;
            sub.current_period = next;
            if ends {
                sub.status = S::Canceled;
                sub.canceled_at = Some(closing.end);
                sub.cancel_at_period_end = false;
                self.audit(
                    &mut tx,
                    ctx,
                    "billing.subscription.cancel",
                    Target::new("subscription", sub.id),
                    serde_json::json!({"effective": "period_end"}),
                )
                .await?;
            } else if let Some(p) = sub.next_plan.take() {
                sub.plan = p;
                if let Some(n) = sub.next_seats.take() {
                    sub.seats = n;
                }
            }
        }
        sub.updated_at = now;
        update_subscription(&mut tx, ctx.tenant(), &sub).await?;
        let end_tier = if sub.status == S::Canceled {
            Tier::Individual
        } else {
            self.plan(&sub.plan.code, Some(sub.plan.version))?.tier
        };
        if end_tier != start_tier {
            queue_tier_sync(&mut tx).await?;
        }
        tx.commit().await?;
        if end_tier != start_tier {
            self.sync_tier(ctx, end_tier).await;
        }
        Ok(out)
    }

    /// Usage (and minimum) lines of the current period, up to `until` for an
    /// early close. Usage in a period that began during the trial is free.
    async fn usage_lines(
        &self,
        tx: &mut Tx,
        tenant: TenantId,
        plan: &Plan,
        sub: &Subscription,
        until: Option<DateTime<Utc>>,
    ) -> Result<Vec<InvoiceLine>, BillingError> {
        let p = sub.current_period;
        if sub.trial_end.is_some_and(|e| e > p.start) {
            return Ok(Vec::new());
        }
        let usage = self
            .inner
            .meter
            .period_usage_in(tx, tenant, p.start)
            .await?;
        let end = until.unwrap_or(p.end);
        let lines = rating::rate_period(plan, (p.start, p.end), sub.seats, &usage)?;
        Ok(lines
            .into_iter()
            .filter(|l| {
                matches!(l.kind, LineKind::Usage | LineKind::Minimum)
                    && (l.amount != 0 || !l.quantity.is_zero())
            })
            .map(|mut l| {
                l.period_end = end;
                l
            })
            .collect())
    }

    /// Issues a document for `sub` from `lines` (nothing when there are no
    /// lines, or when its source was issued before); mails it.
    #[expect(
        clippy::too_many_arguments,
        reason = "one internal call shape for every document"
    )]
    async fn issue(
        &self,
        tx: &mut Tx,
        ctx: &TenantContext,
        sub: &Subscription,
        plan: &Plan,
        source_key: String,
        reason: &'static str,
        lines: Vec<InvoiceLine>,
        period: Option<Period>,
    ) -> Result<Option<Invoice>, BillingError> {
        if lines.is_empty() {
            return Ok(None);
        }
        let account = account_in(tx, ctx.tenant()).await?;
        let sum: i64 = lines.iter().map(|l| l.amount).sum();
        let kind = if sum < 0 {
            DocumentKind::CreditNote
        } else {
            DocumentKind::Invoice
        };
        let draft = Draft {
            kind,
            source_key,
            reason,
            subscription_id: Some(sub.id),
            corrects_id: None,
            currency: plan.currency,
            tax_rate: account.tax_rate,
            lines,
            period: period.map(|p| (p.start, p.end)),
            po_number: account.po_number.clone(),
            seller: self.inner.seller.clone(),
            buyer: buyer_of(&account),
            net_terms_days: plan.net_terms_days,
            apply_credit: kind == DocumentKind::Invoice,
        };
        let Some(doc) = invoice::issue_in(tx, ctx.tenant(), draft).await? else {
            return Ok(None);
        };
        if doc.kind == DocumentKind::CreditNote {
            // A credit from a plan change or cancellation is prepaid credit.
            invoice::add_credit(
                tx,
                ctx.tenant(),
                doc.currency,
                -doc.total,
                "credit note",
                Some(doc.id),
            )
            .await?;
        }
        self.audit(
            tx,
            ctx,
            "billing.invoice.issue",
            Target::new("invoice", doc.id),
            serde_json::json!({"number": doc.number, "kind": doc.kind, "total": doc.total, "currency": doc.currency, "reason": reason}),
        )
        .await?;
        self.mail_document(tx, &account, &doc).await?;
        if doc.kind == DocumentKind::Invoice && doc.status == InvoiceStatus::Finalized {
            crate::dunning::queue_collection(tx, &doc).await?;
        }
        Ok(Some(doc))
    }

    pub(crate) async fn mail_document(
        &self,
        tx: &mut Tx,
        account: &BillingAccount,
        doc: &Invoice,
    ) -> Result<(), BillingError> {
        let (Some(outbox), Some(to)) = (&self.inner.outbox, &account.email) else {
            return Ok(());
        };
        let number = doc.number.clone().unwrap_or_default();
        let what = match doc.kind {
            DocumentKind::Invoice => "Invoice",
            DocumentKind::CreditNote => "Credit note",
        };
        let subject = format!("{what} {number} from {}", self.inner.seller.name);
        let body = format!(
            "{what} {number}\n\nTotal: {} {}\nDue: {}\n\nThe document is available in your billing settings (GET /api/invoices/{}).\n",
            minor_to_decimal(doc.total, doc.currency),
            doc.currency,
            doc.due_at
                .map(|d| d.format("%Y-%m-%d").to_string())
                .unwrap_or_default(),
            doc.id,
        );
        outbox.enqueue(tx, to, &subject, &body).await
    }

    // ------------------------------------------------------------ invoices

    /// The tenant's invoices and credit notes, newest first (without lines).
    pub async fn invoices(&self, ctx: &TenantContext) -> Result<Vec<Invoice>, BillingError> {
        let mut tx = self.inner.db.read(ctx).await?;
        let list = invoice::list_in(&mut tx, ctx.tenant()).await?;
        tx.commit().await?;
        Ok(list)
    }

    /// One document with its lines.
    pub async fn invoice(
        &self,
        ctx: &TenantContext,
        id: InvoiceId,
    ) -> Result<Invoice, BillingError> {
        let mut tx = self.inner.db.read(ctx).await?;
        let inv = invoice::read_in(&mut tx, ctx.tenant(), id).await?;
        tx.commit().await?;
        Ok(inv)
    }

    /// Marks a finalized invoice paid with a reference (a manual bank
    /// transfer). A past-due subscription with nothing else unpaid becomes
    /// active again.
    pub async fn mark_paid(
        &self,
        ctx: &TenantContext,
        id: InvoiceId,
        reference: &str,
    ) -> Result<Invoice, BillingError> {
        validate_text("reference", reference, 1, 200)?;
        let mut tx = self.inner.db.begin(ctx).await?;
        let inv = invoice::load_in(&mut tx, ctx.tenant(), id).await?;
        if inv.status != InvoiceStatus::Finalized {
            return Err(conflict(
                "invalid_invoice_state",
                format!(
                    "only a finalized invoice can be paid; this one is {}",
                    inv.status.as_str()
                ),
            ));
        }
        self.settle_paid(&mut tx, ctx, &inv, reference, "billing.invoice.mark_paid")
            .await?;
        let inv = invoice::load_in(&mut tx, ctx.tenant(), id).await?;
        tx.commit().await?;
        self.after_settlement(ctx).await;
        Ok(inv)
    }

    /// Voids a finalized, unpaid invoice; it keeps its number, and prepaid
    /// credit it used is given back.
    pub async fn void(
        &self,
        ctx: &TenantContext,
        id: InvoiceId,
        reason: &str,
    ) -> Result<Invoice, BillingError> {
        validate_text("reason", reason, 1, 500)?;
        let mut tx = self.inner.db.begin(ctx).await?;
        let inv = invoice::load_in(&mut tx, ctx.tenant(), id).await?;
        if inv.status != InvoiceStatus::Finalized || inv.kind != DocumentKind::Invoice {
            return Err(conflict(
                "invalid_invoice_state",
                format!(
                    "only a finalized, unpaid invoice can be voided; this one is {}",
                    inv.status.as_str()
                ),
            ));
        }
        if inv.amount_due != inv.total {
            // Part of it was paid or credited: voiding would lose that money.
            return Err(conflict(
                "invalid_invoice_state",
                "part of this invoice was paid or credited; issue a credit note instead",
            ));
        }
        let now = tx.now();
        tx.execute(
            Query::update()
                .table(INVOICES)
                .value("status", InvoiceStatus::Void.as_str())
                .value("voided_at", now)
                .value("void_reason", reason)
                .value("amount_due", 0i64)
                .and_where(Expr::col("tenant_id").eq(ctx.tenant()))
                .and_where(Expr::col("id").eq(id)),
        )
        .await?;
        if inv.credits_applied > 0 {
            invoice::add_credit(
                &mut tx,
                ctx.tenant(),
                inv.currency,
                inv.credits_applied,
                "voided invoice",
                Some(id),
            )
            .await?;
        }
        self.audit(
            &mut tx,
            ctx,
            "billing.invoice.void",
            Target::new("invoice", id),
            serde_json::json!({"number": inv.number, "reason": reason}),
        )
        .await?;
        self.settle_subscription(&mut tx, ctx).await?;
        let inv = invoice::load_in(&mut tx, ctx.tenant(), id).await?;
        tx.commit().await?;
        self.after_settlement(ctx).await;
        Ok(inv)
    }

    /// Issues a credit note against a finalized or paid invoice: it lowers
    /// what is due on an unpaid invoice, and becomes prepaid credit for a paid
    /// one. The total credited never exceeds the invoice.
    pub async fn credit_note(
        &self,
        ctx: &TenantContext,
        id: InvoiceId,
        input: NewCreditNote,
    ) -> Result<Invoice, BillingError> {
        validate_text("reason", &input.reason, 1, 500)?;
        if input.amount <= 0 {
            return Err(BillingError::validation(
                "amount",
                "a positive number of minor units",
            ));
        }
        let mut tx = self.inner.db.begin(ctx).await?;
        let inv = invoice::load_in(&mut tx, ctx.tenant(), id).await?;
        if inv.kind != DocumentKind::Invoice
            || !matches!(inv.status, InvoiceStatus::Finalized | InvoiceStatus::Paid)
        {
            return Err(conflict(
                "invalid_invoice_state",
                "credit notes correct finalized or paid invoices",
            ));
        }
        let (credited, notes) = credited_in(&mut tx, ctx.tenant(), id).await?;
        if input
            .amount
            .checked_add(credited)
            .is_none_or(|c| c > inv.subtotal)
        {
            return Err(BillingError::validation(
                "amount",
                format!(
                    "at most {} minor units remain creditable on this invoice",
                    inv.subtotal - credited
                ),
            ));
        }
        let now = tx.now();
        let account = account_in(&mut tx, ctx.tenant()).await?;
        let draft = Draft {
            kind: DocumentKind::CreditNote,
            source_key: format!("credit:{id}:{notes}"),
            reason: "correction",
            subscription_id: inv.subscription_id,
            corrects_id: Some(id),
            currency: inv.currency,
            tax_rate: inv.tax_rate,
            lines: vec![InvoiceLine {
                charge_code: "correction".into(),
                description: input.reason.clone(),
                quantity: Decimal::ONE,
                amount: -input.amount,
                period_start: inv.period_start.unwrap_or(now),
                period_end: inv.period_end.unwrap_or(now),
                kind: LineKind::Credit,
            }],
            period: inv.period_start.zip(inv.period_end),
            po_number: inv.po_number.clone(),
            seller: inv.seller.clone(),
            buyer: inv.buyer.clone(),
            net_terms_days: 0,
            apply_credit: false,
        };
        let note = invoice::issue_in(&mut tx, ctx.tenant(), draft)
            .await?
            .ok_or_else(|| {
                conflict(
                    "credit_note_exists",
                    "a credit note for this correction exists",
                )
            })?;
        let credit = -note.total;
        if inv.status == InvoiceStatus::Finalized {
            let left = inv.amount_due - credit;
            let mut q = Query::update();
            q.table(INVOICES)
                .value("amount_due", Ord::max(left, 0))
                .and_where(Expr::col("tenant_id").eq(ctx.tenant()))
                .and_where(Expr::col("id").eq(id));
            if left <= 0 {
                q.value("status", InvoiceStatus::Paid.as_str())
                    .value("paid_at", now)
                    .value("payment_reference", note.number.clone());
            }
            tx.execute(&q).await?;
            if left < 0 {
                invoice::add_credit(
                    &mut tx,
                    ctx.tenant(),
                    inv.currency,
                    -left,
                    "credit note beyond the amount due",
                    Some(note.id),
                )
                .await?;
            }
        } else {
            invoice::add_credit(
                &mut tx,
                ctx.tenant(),
                inv.currency,
                credit,
                "credit note on a paid invoice",
                Some(note.id),
            )
            .await?;
        }
        self.audit(
            &mut tx,
            ctx,
            "billing.credit_note.issue",
            Target::new("invoice", note.id),
            serde_json::json!({"corrects": inv.number, "number": note.number, "total": note.total}),
        )
        .await?;
        self.mail_document(&mut tx, &account, &note).await?;
        self.settle_subscription(&mut tx, ctx).await?;
        tx.commit().await?;
        self.after_settlement(ctx).await;
        Ok(note)
    }

    /// Grants prepaid credit (minor units of `currency`), applied to the next
    /// invoices before anything is charged.
    pub async fn grant_credit(
        &self,
        ctx: &TenantContext,
        amount: i64,
        currency: Currency,
        reason: &str,
    ) -> Result<i64, BillingError> {
        validate_text("reason", reason, 1, 500)?;
        if amount <= 0 || amount > MAX_CREDIT {
            return Err(BillingError::validation(
                "amount",
                format!("a positive number of minor units, at most {MAX_CREDIT}"),
            ));
        }
        let mut tx = self.inner.db.begin(ctx).await?;
        invoice::add_credit(&mut tx, ctx.tenant(), currency, amount, reason, None).await?;
        let balance = invoice::credit_balance(&mut tx, ctx.tenant(), currency).await?;
        self.audit(
            &mut tx,
            ctx,
            "billing.credit.grant",
            Target::kind("billing_credit"),
            serde_json::json!({"amount": amount, "currency": currency, "balance": balance}),
        )
        .await?;
        tx.commit().await?;
        Ok(balance)
    }

    /// The tenant's prepaid credit balance in `currency`.
    pub async fn credit_balance(
        &self,
        ctx: &TenantContext,
        currency: Currency,
    ) -> Result<i64, BillingError> {
        let mut tx = self.inner.db.read(ctx).await?;
        let b = invoice::credit_balance(&mut tx, ctx.tenant(), currency).await?;
        tx.commit().await?;
        Ok(b)
    }

    /// Marks `inv` paid with `reference`, audits `action`, and settles the
    /// subscription, in `tx`.
    pub(crate) async fn settle_paid(
        &self,
        tx: &mut Tx,
        ctx: &TenantContext,
        inv: &Invoice,
        reference: &str,
        action: &str,
    ) -> Result<(), BillingError> {
        let now = tx.now();
        tx.execute(
            Query::update()
                .table(INVOICES)
                .value("status", InvoiceStatus::Paid.as_str())
                .value("paid_at", now)
                .value("payment_reference", reference)
                .value("amount_due", 0i64)
                .and_where(Expr::col("tenant_id").eq(ctx.tenant()))
                .and_where(Expr::col("id").eq(inv.id)),
        )
        .await?;
        self.audit(tx, ctx, action, Target::new("invoice", inv.id), serde_json::json!({"number": inv.number, "amount": inv.amount_due, "reference": reference})).await?;
        self.settle_subscription(tx, ctx).await
    }

    /// A past-due (or incomplete) subscription with no unpaid invoice left
    /// becomes active.
    pub(crate) async fn settle_subscription(
        &self,
        tx: &mut Tx,
        ctx: &TenantContext,
    ) -> Result<(), BillingError> {
        let Some(mut sub) = live_in(tx, ctx.tenant(), true).await? else {
            return Ok(());
        };
        if !matches!(sub.status, S::PastDue | S::Incomplete)
            || in_dunning_in(tx, ctx.tenant()).await? > 0
        {
            return Ok(());
        }
        let was = sub.status;
        sub.status = S::Active;
        sub.past_due_since = None;
        sub.updated_at = tx.now();
        update_subscription(tx, ctx.tenant(), &sub).await?;
        self.audit(
            tx,
            ctx,
            "billing.subscription.reactivate",
            Target::new("subscription", sub.id),
            serde_json::json!({"from": was.as_str()}),
        )
        .await
    }

    /// Sets the tenant's tier from its plan at once (the queued sync job is
    /// the backstop if this fails) and drops the Authorizer's cache.
    async fn sync_tier(&self, ctx: &TenantContext, tier: Tier) {
        if let Err(e) = self.apply_tier(ctx.tenant(), tier).await {
            tracing::warn!(tenant = %ctx.tenant(), error = %e, "tier sync failed; the queued job retries it");
            return;
        }
        if let Some(a) = &self.inner.authorizer
            && let Err(e) = a.roles_changed(ctx).await
        {
            tracing::warn!(tenant = %ctx.tenant(), error = %e, "authorization cache invalidation failed");
        }
    }

    pub(crate) async fn apply_tier(
        &self,
        tenant: TenantId,
        tier: Tier,
    ) -> Result<(), BillingError> {
        let pctx = PlatformContext::system("billing: the plan sets the tier");
        let current = self.inner.tenants.get(&pctx, tenant).await?;
        if current.tier != tier {
            self.inner
                .tenants
                .update(
                    &pctx,
                    tenant,
                    TenantPatch {
                        name: None,
                        tier: Some(tier),
                    },
                )
                .await?;
        }
        Ok(())
    }

    /// The tier the tenant's subscription gives (the lowest without one).
    async fn tier_of(&self, ctx: &TenantContext) -> Result<Tier, BillingError> {
        Ok(match self.subscription(ctx).await? {
            Some(s) => self.plan(&s.plan.code, Some(s.plan.version))?.tier,
            None => Tier::Individual,
        })
    }
}

/// Runs billing's jobs: [`ADVANCE_JOB`] and [`SYNC_TIER_JOB`]. Register both
/// kinds on a worker (`Worker::register(Arc::new(jobs.advance()))`, ...).
#[derive(Debug, Clone)]
pub struct BillingJobs {
    billing: Billing,
    kind: &'static str,
}

impl Billing {
    /// The handler of [`ADVANCE_JOB`].
    #[must_use]
    pub fn advance_job(&self) -> BillingJobs {
        BillingJobs {
            billing: self.clone(),
            kind: ADVANCE_JOB,
        }
    }

    /// The handler of [`SYNC_TIER_JOB`].
    #[must_use]
    pub fn sync_tier_job(&self) -> BillingJobs {
        BillingJobs {
            billing: self.clone(),
            kind: SYNC_TIER_JOB,
        }
    }

    /// A handler for each of billing's jobs (advance, tier sync, collection,
    /// overdue checks, dunning steps): register them all on a worker.
    #[must_use]
    pub fn jobs(&self) -> Vec<BillingJobs> {
        [
            ADVANCE_JOB,
            SYNC_TIER_JOB,
            crate::dunning::COLLECT_JOB,
            crate::dunning::OVERDUE_JOB,
            crate::dunning::DUNNING_JOB,
        ]
        .into_iter()
        .map(|kind| BillingJobs {
            billing: self.clone(),
            kind,
        })
        .collect()
    }
}

#[async_trait]
impl JobHandler for BillingJobs {
    fn kind(&self) -> &str {
        self.kind
    }

    async fn run(&self, job: &JobRun) -> Result<(), JobError> {
        let ctx = job
            .tenant_context()
            .ok_or_else(|| JobError("a billing job without a tenant".into()))?;
        let err = |e: BillingError| JobError(e.to_string());
        match self.kind {
            crate::dunning::COLLECT_JOB => {
                let id = crate::dunning::invoice_of(&job.payload).map_err(err)?;
                let attempt = job
                    .payload
                    .get("attempt")
                    .and_then(serde_json::Value::as_u64)
                    .unwrap_or(0);
                self.billing
                    .collect(&ctx, id, u32::try_from(attempt).unwrap_or(0))
                    .await
                    .map_err(err)?;
            }
            crate::dunning::OVERDUE_JOB => {
                let id = crate::dunning::invoice_of(&job.payload).map_err(err)?;
                self.billing.check_overdue(&ctx, id).await.map_err(err)?;
            }
            crate::dunning::DUNNING_JOB => {
                let id = crate::dunning::invoice_of(&job.payload).map_err(err)?;
                let step = job
                    .payload
                    .get("step")
                    .and_then(serde_json::Value::as_u64)
                    .unwrap_or(0);
                self.billing
                    .dunning_step(&ctx, id, usize::try_from(step).unwrap_or(usize::MAX))
                    .await
                    .map_err(err)?;
            }
            ADVANCE_JOB => {
                let id = job
                    .payload
                    .get("subscription")
                    .and_then(|v| v.as_str())
                    .and_then(|s| SubscriptionId::from_str(s).ok())
                    .ok_or_else(|| JobError("an advance job without a subscription".into()))?;
                self.billing.advance(&ctx, id).await.map_err(err)?;
            }
            _ => {
                let tier = self.billing.tier_of(&ctx).await.map_err(err)?;
                self.billing
                    .apply_tier(ctx.tenant(), tier)
                    .await
                    .map_err(err)?;
                if let Some(a) = &self.billing.inner.authorizer {
                    a.roles_changed(&ctx)
                        .await
                        .map_err(|e| JobError(e.to_string()))?;
                }
            }
        }
        Ok(())
    }
}

fn validate_text(field: &str, v: &str, min: usize, max: usize) -> Result<(), BillingError> {
    let n = v.chars().count();
    if n < min || n > max || v.chars().any(|c| c.is_control() && c != '\n') {
        return Err(BillingError::validation(
            field,
            format!("{min} to {max} characters without control characters"),
        ));
    }
    Ok(())
}

fn seats_for(plan: &Plan, seats: u64) -> Result<u64, BillingError> {
    if seats == 0 || seats > MAX_SEATS {
        return Err(BillingError::validation(
            "seats",
            format!("1 to {MAX_SEATS}"),
        ));
    }
    if let Some(max) = plan.limits.max_users
        && seats > max
    {
        return Err(BillingError::validation(
            "seats",
            format!("the {} plan allows at most {max} seats", plan.code),
        ));
    }
    Ok(seats)
}

fn cycle_of(plan: &Plan, now: DateTime<Utc>) -> Cycle {
    let months = match plan.interval {
        Interval::Monthly => 1,
        Interval::Yearly => 12,
    };
    match plan.anchor {
        Anchor::Anniversary => Cycle::anniversary(now, months),
        Anchor::Calendar => Cycle::calendar(months),
    }
}

/// The plan's fixed charges for `period`, prorated from `from` when the
/// subscription starts (or its trial ends) inside it.
fn fixed_lines(
    plan: &Plan,
    period: Period,
    seats: u64,
    from: DateTime<Utc>,
) -> Result<Vec<InvoiceLine>, BillingError> {
    let full = rating::rate_period(plan, (period.start, period.end), seats, &BTreeMap::new())?;
    full.into_iter()
        .filter(|l| l.kind == LineKind::Fixed)
        .map(|mut l| {
            if from > period.start {
                let share = rating::prorate(
                    minor_to_decimal(l.amount, plan.currency),
                    (period.start, period.end),
                    from,
                    period.end,
                )?;
                l.amount = to_minor(share, plan.currency)?;
                l.period_start = from;
                l.description = format!("{} (prorated)", l.description);
            }
            Ok(l)
        })
        .collect()
}

/// The credit and charge lines of a change from `old` (`old_seats`) to `new`
/// (`new_seats`) at `at`. A seat change on the same plan prices the seats.
fn change_lines(
    old: &Plan,
    new: &Plan,
    old_seats: u64,
    new_seats: u64,
    period: Period,
    at: DateTime<Utc>,
) -> Result<Vec<InvoiceLine>, BillingError> {
    let p = (period.start, period.end);
    if old_seats == new_seats {
        return rating::plan_change(old, new, new_seats, p, at);
    }
    // Seats differ: credit the old plan at the old seats, charge the new at the new seats.
    let credit = rating::plan_change(old, old, old_seats, p, at)?;
    let mut lines: Vec<InvoiceLine> = credit
        .into_iter()
        .filter(|l| l.kind == LineKind::Credit)
        .collect();
    let remaining = fixed_lines(new, period, new_seats, at)?;
    let charge: i64 = remaining.iter().map(|l| l.amount).sum();
    lines.push(InvoiceLine {
        charge_code: new.code.clone(),
        description: format!("remaining time on {} ({new_seats} seats)", new.name),
        quantity: Decimal::from(new_seats),
        amount: charge,
        period_start: at,
        period_end: period.end,
        kind: LineKind::Proration,
    });
    Ok(lines)
}

fn buyer_of(a: &BillingAccount) -> Party {
    Party {
        name: a.legal_name.clone(),
        address: a.address.clone(),
        tax_id: a.tax_id.clone(),
        email: a.email.clone(),
    }
}

pub(crate) async fn account_in(
    tx: &mut Tx,
    tenant: TenantId,
) -> Result<BillingAccount, BillingError> {
    let row = tx
        .fetch_optional(
            Query::select()
                .columns([
                    "legal_name",
                    "email",
                    "address",
                    "tax_id",
                    "tax_rate",
                    "po_number",
                ])
                .from(ACCOUNTS)
                .and_where(Expr::col("tenant_id").eq(tenant)),
        )
        .await?;
    Ok(match row {
        Some(r) => BillingAccount {
            legal_name: r.get("legal_name")?,
            email: r.get("email")?,
            address: r.get("address")?,
            tax_id: r.get("tax_id")?,
            tax_rate: Decimal::from_str(&r.get::<String>("tax_rate")?)
                .map_err(|_| BillingError::Catalogue("a stored tax rate is corrupt".into()))?,
            po_number: r.get("po_number")?,
        },
        None => BillingAccount {
            legal_name: saas_core::tenant::get_in(tx, tenant).await?.name,
            email: None,
            address: None,
            tax_id: None,
            tax_rate: Decimal::ZERO,
            po_number: None,
        },
    })
}

const SUB_COLS: [&str; 17] = [
    "id",
    "plan_code",
    "plan_version",
    "status",
    "seats",
    "started_at",
    "trial_end",
    "period_start",
    "period_end",
    "cancel_at_period_end",
    "next_plan_code",
    "next_plan_version",
    "past_due_since",
    "canceled_at",
    "created_at",
    "updated_at",
    "next_seats",
];

fn decode_sub(r: &saas_core::db::Row) -> Result<Subscription, BillingError> {
    let next_code: Option<String> = r.get("next_plan_code")?;
    let next_version: Option<i32> = r.get("next_plan_version")?;
    Ok(Subscription {
        id: r.get("id")?,
        plan: PlanRef {
            code: r.get("plan_code")?,
            version: u32::try_from(r.get::<i32>("plan_version")?).unwrap_or(1),
        },
        status: S::parse(&r.get::<String>("status")?)?,
        seats: u64::try_from(r.get::<i64>("seats")?).unwrap_or(1),
        started_at: r.get("started_at")?,
        trial_end: r.get("trial_end")?,
        current_period: Period {
            start: r.get("period_start")?,
            end: r.get("period_end")?,
        },
        cancel_at_period_end: r.get("cancel_at_period_end")?,
        next_plan: next_code.zip(next_version).map(|(code, v)| PlanRef {
            code,
            version: u32::try_from(v).unwrap_or(1),
        }),
        past_due_since: r.get("past_due_since")?,
        canceled_at: r.get("canceled_at")?,
        created_at: r.get("created_at")?,
        updated_at: r.get("updated_at")?,
        next_seats: r
            .get::<Option<i64>>("next_seats")?
            .map(|n| u64::try_from(n).unwrap_or(0)),
    })
}

/// The live (not canceled) subscription; `lock` takes its row lock.
pub(crate) async fn live_in(
    tx: &mut Tx,
    tenant: TenantId,
    lock: bool,
) -> Result<Option<Subscription>, BillingError> {
    let mut q = Query::select();
    q.columns(SUB_COLS)
        .from(SUBSCRIPTIONS)
        .and_where(Expr::col("tenant_id").eq(tenant))
        .and_where(Expr::col("status").ne(S::Canceled.as_str()));
    if lock {
        q.lock(LockType::Update);
    }
    tx.fetch_optional(&q)
        .await?
        .map(|r| decode_sub(&r))
        .transpose()
}

async fn load_in(
    tx: &mut Tx,
    tenant: TenantId,
    id: SubscriptionId,
) -> Result<Subscription, BillingError> {
    let row = tx
        .fetch_optional(
            Query::select()
                .columns(SUB_COLS)
                .from(SUBSCRIPTIONS)
                .and_where(Expr::col("tenant_id").eq(tenant))
                .and_where(Expr::col("id").eq(id))
                .lock(LockType::Update),
        )
        .await?
        .ok_or(BillingError::NotFound {
            entity: "subscription",
        })?;
    decode_sub(&row)
}

fn sub_values(tenant: TenantId, s: &Subscription) -> Vec<saas_core::db::sea_query::SimpleExpr> {
    vec![
        tenant.into(),
        s.id.into(),
        s.plan.code.clone().into(),
        i32::try_from(s.plan.version).unwrap_or(i32::MAX).into(),
        s.status.as_str().into(),
        i64::try_from(s.seats).unwrap_or(i64::MAX).into(),
        s.started_at.into(),
        s.trial_end.into(),
        s.current_period.start.into(),
        s.current_period.end.into(),
        s.cancel_at_period_end.into(),
        s.next_plan.as_ref().map(|p| p.code.clone()).into(),
        s.next_plan
            .as_ref()
            .map(|p| i32::try_from(p.version).unwrap_or(i32::MAX))
            .into(),
        s.past_due_since.into(),
        s.canceled_at.into(),
        s.created_at.into(),
        s.updated_at.into(),
        s.next_seats
            .map(|n| i64::try_from(n).unwrap_or(i64::MAX))
            .into(),
    ]
}

async fn insert_subscription(
    tx: &mut Tx,
    tenant: TenantId,
    s: &Subscription,
) -> Result<(), BillingError> {
    let mut cols = vec!["tenant_id"];
    cols.extend(SUB_COLS);
    tx.execute(
        Query::insert()
            .into_table(SUBSCRIPTIONS)
            .columns(cols)
            .values(sub_values(tenant, s))
            .map_err(sea)?,
    )
    .await?;
    Ok(())
}

pub(crate) async fn update_subscription(
    tx: &mut Tx,
    tenant: TenantId,
    s: &Subscription,
) -> Result<(), BillingError> {
    let mut q = Query::update();
    q.table(SUBSCRIPTIONS);
    let values = sub_values(tenant, s);
    for (col, v) in SUB_COLS.iter().zip(values.into_iter().skip(1)).skip(1) {
        q.value(*col, v);
    }
    q.and_where(Expr::col("tenant_id").eq(tenant))
        .and_where(Expr::col("id").eq(s.id));
    tx.execute(&q).await?;
    Ok(())
}

async fn set_cycle(tx: &mut Tx, tenant: TenantId, cycle: Cycle) -> Result<(), BillingError> {
    let now = tx.now();
    tx.execute(
        Query::insert()
            .into_table(CYCLES)
            .columns(["tenant_id", "anchor", "months", "updated_at"])
            .values([
                tenant.into(),
                cycle.anchor.into(),
                i32::try_from(cycle.months).unwrap_or(1).into(),
                now.into(),
            ])
            .map_err(sea)?
            .on_conflict(
                OnConflict::column("tenant_id")
                    .update_columns(["anchor", "months", "updated_at"])
                    .to_owned(),
            ),
    )
    .await?;
    Ok(())
}

async fn queue_tier_sync(tx: &mut Tx) -> Result<(), BillingError> {
    JobQueue::enqueue(
        tx,
        NewJob::new(SYNC_TIER_JOB, serde_json::json!({})).run_at(tx.now() + Duration::seconds(30)),
    )
    .await?;
    Ok(())
}

/// What the credit notes against invoice `id` have credited (net, minor
/// units) and how many there are.
async fn credited_in(
    tx: &mut Tx,
    tenant: TenantId,
    id: InvoiceId,
) -> Result<(i64, usize), BillingError> {
    let rows = tx
        .fetch_all(
            Query::select()
                .column("subtotal")
                .from(INVOICES)
                .and_where(Expr::col("tenant_id").eq(tenant))
                .and_where(Expr::col("corrects_id").eq(id)),
        )
        .await?;
    let credited = rows.iter().try_fold(0i64, |acc, r| {
        Ok::<_, BillingError>(acc.saturating_sub(r.get::<i64>("subtotal")?))
    })?;
    Ok((credited, rows.len()))
}

/// How many of the tenant's invoices are unpaid with dunning started (a
/// finalized invoice still inside its terms does not hold a tenant back).
pub(crate) async fn in_dunning_in(tx: &mut Tx, tenant: TenantId) -> Result<usize, BillingError> {
    let rows = tx
        .fetch_all(
            Query::select()
                .column("id")
                .from(INVOICES)
                .and_where(Expr::col("tenant_id").eq(tenant))
                .and_where(Expr::col("kind").eq("invoice"))
                .and_where(Expr::col("status").eq(InvoiceStatus::Finalized.as_str()))
                .and_where(Expr::col("dunning_step").gt(0i32)),
        )
        .await?;
    Ok(rows.len())
}
