//! First start: create a tenant and an operator credential, and write the
//! credential to a file only the current user can read (never to the log).

use std::io::Write;
use std::path::{Path, PathBuf};

use saas_core::tenant::{NewTenant, Tier};
use saas_core::{CoreError, PlatformContext};

use crate::app::AppState;

/// What bootstrap created.
#[derive(Debug)]
pub struct Bootstrapped {
    /// The credentials file.
    pub credentials: PathBuf,
    /// The first tenant's slug.
    pub tenant_slug: String,
}

/// Bootstrap failed.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// The database refused.
    #[error(transparent)]
    Core(#[from] CoreError),
    /// The credentials file could not be written.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Runs bootstrap if no operator credential exists yet; returns what it made.
pub async fn bootstrap_if_empty(
    state: &AppState,
    data_dir: &Path,
    slug: &str,
) -> Result<Option<Bootstrapped>, BootstrapError> {
    if state.operators().any().await? {
        return Ok(None);
    }
    let p = PlatformContext::system("first-start bootstrap");
    let tenant = match state
        .tenants()
        .create(
            &p,
            NewTenant {
                slug: slug.to_owned(),
                name: "Default organization".into(),
                tier: Tier::Enterprise,
            },
        )
        .await
    {
        Ok(t) => state.tenants().activate(&p, t.id).await?,
        // Another replica bootstrapped at the same moment.
        Err(CoreError::Conflict { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let (_, token) = state.operators().create(&p, "bootstrap operator").await?;
    let path = data_dir.join("bootstrap-credentials.txt");
    let io = |source| BootstrapError::Io {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(data_dir).map_err(io)?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut file = opts.open(&path).map_err(io)?;
    writeln!(
        file,
        "# saas-server bootstrap credentials, shown once. Keep this file private.\noperator_token={}\ntenant_id={}\ntenant_slug={}",
        token.expose(),
        tenant.id,
        tenant.slug
    )
    .map_err(io)?;
    Ok(Some(Bootstrapped {
        credentials: path,
        tenant_slug: tenant.slug,
    }))
}

/// A 256-bit key kept in `<data_dir>/<name>` (hex, mode 0600), created on
/// first use: the audit checkpoint key and the auth master key. Replicas on
/// PostgreSQL should share keys through `SAAS_AUDIT_KEY` and `SAAS_AUTH_KEY`.
pub fn key_file(data_dir: &Path, name: &str) -> Result<String, BootstrapError> {
    let path = data_dir.join(name);
    let io = |source| BootstrapError::Io {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(k) => return Ok(k.trim().to_owned()),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
        Err(_) => {}
    }
    std::fs::create_dir_all(data_dir).map_err(io)?;
    let mut key = [0u8; 32];
    rand::fill(&mut key);
    let hexed = hex::encode(key);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut file = opts.open(&path).map_err(io)?;
    writeln!(file, "{hexed}").map_err(io)?;
    Ok(hexed)
}
