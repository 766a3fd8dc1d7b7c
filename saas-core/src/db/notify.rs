//! Cache invalidation across replicas over PostgreSQL LISTEN/NOTIFY.
//!
//! A change sends [`notify`] inside its own transaction, so the message goes
//! out only if the change commits; every replica runs [`Db::listen`] and drops
//! the cache entries the message names. SQLite is a single process: there
//! [`notify`] does nothing and [`Db::listen`] returns at once.

use std::time::Duration;

use sea_query::{Func, Query};

use super::{Backend, Db, Tx};
use crate::error::CoreError;

/// What a listener hears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    /// One notification's payload.
    Message(String),
    /// The listener (re)connected: anything may have changed unseen, so
    /// callers drop every cached entry.
    Reset,
}

/// Sends `payload` on `channel` when `tx` commits (PostgreSQL only).
pub async fn notify(tx: &mut Tx, channel: &str, payload: &str) -> Result<(), CoreError> {
    if tx.backend() == Backend::Postgres {
        tx.fetch_optional(
            Query::select().expr(
                Func::cust("pg_notify")
                    .arg(channel.to_owned())
                    .arg(payload.to_owned()),
            ),
        )
        .await?;
    }
    Ok(())
}

impl Db {
    /// Listens on `channel` until `stop` turns true, calling `on` for every
    /// message, and with [`Heard::Reset`] whenever the connection is (re)made.
    /// Reconnects after a lost connection. Returns at once on SQLite.
    pub async fn listen<F, Fut>(
        &self,
        channel: &str,
        mut stop: tokio::sync::watch::Receiver<bool>,
        on: F,
    ) where
        F: Fn(Heard) -> Fut + Send,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let Some(pool) = self.postgres_pool().cloned() else {
            return;
        };
        let retry = Duration::from_secs(2);
        loop {
            let connected = match sqlx::postgres::PgListener::connect_with(&pool).await {
                Ok(mut l) => l.listen(channel).await.map(|()| l),
                Err(e) => Err(e),
            };
            let mut listener = match connected {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(channel, error = %e, "invalidation listener cannot subscribe; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(retry) => continue,
                        _ = stop.wait_for(|s| *s) => return,
                    }
                }
            };
            on(Heard::Reset).await;
            loop {
                let msg = tokio::select! {
                    m = listener.recv() => m,
                    _ = stop.wait_for(|s| *s) => return,
                };
                match msg {
                    Ok(n) => on(Heard::Message(n.payload().to_owned())).await,
                    Err(e) => {
                        tracing::warn!(channel, error = %e, "invalidation listener lost its connection");
                        on(Heard::Reset).await;
                        break;
                    }
                }
            }
        }
    }
}
