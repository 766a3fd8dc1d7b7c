//! Outgoing mail: a durable outbox and pluggable [`Mailer`]s.
//!
//! A flow that sends mail writes the message into `auth_mail_outbox` and
//! enqueues an `auth.mail` job in the same transaction, so a message exists
//! exactly when the action that caused it committed. [`MailJob`] delivers it
//! through a [`Mailer`] with the job queue's retries and dead letters.
//! [`FileMailer`] writes `.eml` files for development; [`SmtpMailer`] speaks
//! SMTP (lettre).

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use saas_core::PlatformContext;
use saas_core::db::sea_query::{Expr, ExprTrait, Order, Query};
use saas_core::db::{Db, Tx};
use saas_core::jobs::{JobError, JobHandler, JobQueue, JobRun, NewJob};
use serde::Serialize;

use crate::error::AuthError;
use crate::service::Auth;

const TABLE: &str = "auth_mail_outbox";
/// The job kind that delivers outbox messages.
pub const MAIL_JOB: &str = "auth.mail";

/// One message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mail {
    /// Outbox id (also the Message-ID's local part).
    pub id: uuid::Uuid,
    /// Recipient.
    pub to: String,
    /// Subject.
    pub subject: String,
    /// Plain-text body.
    pub body: String,
}

/// Delivers mail. Implementations must be idempotent per [`Mail::id`] where
/// they can: a job may run twice.
#[async_trait::async_trait]
pub trait Mailer: Send + Sync + fmt::Debug {
    /// Delivers one message.
    async fn send(&self, mail: &Mail) -> Result<(), AuthError>;
}

fn message(from: &Mailbox, mail: &Mail) -> Result<Message, AuthError> {
    let to: Mailbox = mail
        .to
        .parse()
        .map_err(|_| AuthError::Mail("bad recipient".into()))?;
    let domain = from.email.domain().to_owned();
    Message::builder()
        .from(from.clone())
        .to(to)
        .subject(mail.subject.clone())
        .message_id(Some(format!("<{}@{domain}>", mail.id)))
        .body(mail.body.clone())
        .map_err(|e| AuthError::Mail(e.to_string()))
}

/// Development mailer: writes each message as `<dir>/<id>.eml`.
#[derive(Debug, Clone)]
pub struct FileMailer {
    dir: PathBuf,
    from: Mailbox,
}

impl FileMailer {
    /// Writes into `dir` (created if missing), from `from`.
    pub fn new(dir: impl Into<PathBuf>, from: &str) -> Result<Self, AuthError> {
        Ok(Self {
            dir: dir.into(),
            from: from
                .parse()
                .map_err(|_| AuthError::Mail("bad sender address".into()))?,
        })
    }
}

#[async_trait::async_trait]
impl Mailer for FileMailer {
    async fn send(&self, mail: &Mail) -> Result<(), AuthError> {
        let bytes = message(&self.from, mail)?.formatted();
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(|e| AuthError::Mail(e.to_string()))?;
        let path = self.dir.join(format!("{}.eml", mail.id));
        tokio::fs::write(&path, bytes)
            .await
            .map_err(|e| AuthError::Mail(e.to_string()))
    }
}

/// SMTP delivery.
#[derive(Clone)]
pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl fmt::Debug for SmtpMailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpMailer")
            .field("from", &self.from.email.to_string())
            .finish_non_exhaustive()
    }
}

impl SmtpMailer {
    /// From a URL as lettre reads it: `smtp://host:25` (plain, for a local
    /// relay), `smtp://user:pass@host:587?tls=required` (STARTTLS) or
    /// `smtps://user:pass@host:465`.
    pub fn from_url(url: &str, from: &str) -> Result<Self, AuthError> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| AuthError::Mail(format!("smtp url: {e}")))?
            .build();
        Ok(Self {
            transport,
            from: from
                .parse()
                .map_err(|_| AuthError::Mail("bad sender address".into()))?,
        })
    }
}

#[async_trait::async_trait]
impl Mailer for SmtpMailer {
    async fn send(&self, mail: &Mail) -> Result<(), AuthError> {
        let msg = message(&self.from, mail)?;
        self.transport
            .send(msg)
            .await
            .map(|_| ())
            .map_err(|e| AuthError::Mail(e.to_string()))
    }
}

impl Auth {
    /// Writes a message into the outbox and enqueues its delivery, in `tx`
    /// (other crates' mail, e.g. billing's invoices, goes through it too).
    pub async fn enqueue_mail(
        &self,
        tx: &mut Tx,
        to: &str,
        subject: &str,
        body: &str,
    ) -> Result<(), AuthError> {
        let id = uuid::Uuid::now_v7();
        let now = tx.now();
        tx.execute(
            Query::insert()
                .into_table(TABLE)
                .columns([
                    "id",
                    "tenant_id",
                    "to_addr",
                    "subject",
                    "body",
                    "status",
                    "attempts",
                    "created_at",
                ])
                .values([
                    id.into(),
                    tx.tenant().into(),
                    to.into(),
                    subject.into(),
                    body.into(),
                    "pending".into(),
                    0.into(),
                    now.into(),
                ])
                .map_err(|e| AuthError::Crypto(e.to_string()))?,
        )
        .await?;
        JobQueue::enqueue(
            tx,
            NewJob::new(MAIL_JOB, serde_json::json!({"id": id})).dedupe_key(format!("mail:{id}")),
        )
        .await?;
        Ok(())
    }

    /// The newest outbox messages to `to`, newest first (operators and tests).
    pub async fn outbox_to(
        &self,
        pctx: &PlatformContext,
        to: &str,
    ) -> Result<Vec<Mail>, AuthError> {
        let mut tx = self.db().begin_platform(pctx).await?;
        let rows = tx
            .fetch_all(
                Query::select()
                    .columns(["id", "to_addr", "subject", "body"])
                    .from(TABLE)
                    .and_where(Expr::col("to_addr").eq(to.to_lowercase()))
                    .order_by("id", Order::Desc)
                    .limit(50),
            )
            .await?;
        tx.commit().await?;
        rows.iter()
            .map(|r| {
                Ok(Mail {
                    id: r.get("id")?,
                    to: r.get("to_addr")?,
                    subject: r.get("subject")?,
                    body: r.get("body")?,
                })
            })
            .collect()
    }
}

/// Delivers `auth.mail` jobs through a [`Mailer`]; register it on a
/// [`saas_core::jobs::Worker`].
#[derive(Debug, Clone)]
pub struct MailJob {
    db: Db,
    mailer: Arc<dyn Mailer>,
    pctx: PlatformContext,
}

impl MailJob {
    /// A handler over `db` delivering through `mailer`.
    #[must_use]
    pub fn new(db: Db, mailer: Arc<dyn Mailer>) -> Self {
        Self {
            db,
            mailer,
            pctx: PlatformContext::system("mail delivery"),
        }
    }
}

#[async_trait::async_trait]
impl JobHandler for MailJob {
    fn kind(&self) -> &str {
        MAIL_JOB
    }

    async fn run(&self, job: &JobRun) -> Result<(), JobError> {
        let id = job
            .payload
            .get("id")
            .and_then(|v| v.as_str())
            .and_then(|s| uuid::Uuid::parse_str(s).ok())
            .ok_or_else(|| JobError("mail job without an id".into()))?;
        let mut tx = self.db.begin_platform(&self.pctx).await?;
        let row = tx
            .fetch_optional(
                Query::select()
                    .columns(["to_addr", "subject", "body", "status"])
                    .from(TABLE)
                    .and_where(Expr::col("id").eq(id)),
            )
            .await?;
        tx.commit().await?;
        // Erased (DSAR) or already sent: nothing to do.
        let Some(row) = row else { return Ok(()) };
        if row.get::<String>("status")? == "sent" {
            return Ok(());
        }
        let mail = Mail {
            id,
            to: row.get("to_addr")?,
            subject: row.get("subject")?,
            body: row.get("body")?,
        };
        let sent = self.mailer.send(&mail).await;
        let mut tx = self.db.begin_platform(&self.pctx).await?;
        let now = tx.now();
        let mut q = Query::update();
        q.table(TABLE)
            .value("attempts", Expr::col("attempts").add(1))
            .and_where(Expr::col("id").eq(id));
        match &sent {
            Ok(()) => q
                .value("status", "sent")
                .value("sent_at", now)
                .value("last_error", None::<String>),
            Err(e) => q.value("last_error", e.to_string()),
        };
        tx.execute(&q).await?;
        tx.commit().await?;
        sent.map_err(|e| JobError(e.to_string()))
    }
}
