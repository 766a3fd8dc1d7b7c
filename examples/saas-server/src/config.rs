//! Server configuration: an optional TOML file, then environment variables.
//!
//! | variable | default | meaning |
//! | --- | --- | --- |
//! | `SAAS_CONFIG` | `./saas.toml` if present | TOML file with the same keys in lowercase (`bind`, `data_dir`, ...) |
//! | `SAAS_BIND` | `127.0.0.1:8080` | listen address |
//! | `SAAS_DATA_DIR` | `./data` | embedded database and local state |
//! | `DATABASE_URL` | `sqlite://<data_dir>/saas.db` | `postgres://...` for PostgreSQL |
//! | `DATABASE_MIGRATION_URL` | `DATABASE_URL` | PostgreSQL: the owner role migrations run as |
//! | `SAAS_DB_ROLE` | `saas_app` | PostgreSQL: role each connection switches to (`SET ROLE`); empty for none |
//! | `SAAS_BASE_DOMAIN` | none | resolve tenants from `<slug>.<base domain>` |
//! | `SAAS_BODY_LIMIT` | `1048576` | largest request body in bytes |
//! | `SAAS_REQUEST_TIMEOUT_SECS` | `30` | per-request timeout |
//! | `SAAS_LOG` | `info` | log filter (tracing `EnvFilter` syntax) |
//! | `SAAS_AUDIT_KEY` | generated into `<data_dir>/audit-checkpoint.key` | hex, at least 32 bytes: signs audit checkpoints (set the same key on every replica) |
//! | `SAAS_AUDIT_CHECKPOINT_SECS` | `300` | how often every audit chain head is signed |
//! | `SAAS_AUDIT_JSONL` | none | file the audit log is shipped to as JSON lines (fed from the stored log every 5 seconds) |
//! | `SAAS_AUTH_KEY` | generated into `<data_dir>/auth-master.key` | hex, 32 bytes: encrypts signing keys and TOTP seeds at rest (same key on every replica) |
//! | `SAAS_PUBLIC_URL` | `http://<bind>` | base URL of links in mail |
//! | `SAAS_SMTP_URL` | none | send mail by SMTP (`smtp://host:25`, `smtp://user:pass@host:587?tls=required`, `smtps://...`) |
//! | `SAAS_MAIL_DIR` | `<data_dir>/mail` | without SMTP, where mail is written as `.eml` files |
//! | `SAAS_MAIL_FROM` | `no-reply@localhost` | sender address |
//! | `SAAS_TRUST_PROXY` | `false` | take the client address from `X-Forwarded-For` (only behind a proxy that sets it) |
//! | `SAAS_PASSWORD_MIN_LENGTH` | `8` | shortest password accepted (15 recommended) |
//! | `SAAS_PASSWORD_MEMORY_KIB` | `19456` | argon2id memory cost (OWASP) |
//! | `SAAS_PASSWORD_ITERATIONS` | `2` | argon2id iterations (OWASP) |

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// The server's settings.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Listen address.
    pub bind: SocketAddr,
    /// Where the embedded database and bootstrap credentials live.
    pub data_dir: PathBuf,
    /// Database URL; SQLite under `data_dir` when absent.
    pub database_url: Option<String>,
    /// PostgreSQL: the URL migrations run with (defaults to `database_url`).
    pub database_migration_url: Option<String>,
    /// PostgreSQL: the role each pooled connection switches to; empty for none.
    pub db_role: String,
    /// Base domain for subdomain tenant resolution.
    pub base_domain: Option<String>,
    /// Largest request body in bytes.
    pub body_limit: usize,
    /// Per-request timeout in seconds.
    pub request_timeout_secs: u64,
    /// Log filter.
    pub log: String,
    /// Slug of the tenant created on first start.
    pub bootstrap_tenant: String,
    /// Hex key signing audit checkpoints (at least 32 bytes).
    pub audit_key: Option<String>,
    /// Seconds between audit checkpoints.
    pub audit_checkpoint_secs: u64,
    /// JSON-lines file the audit log is shipped to.
    pub audit_jsonl: Option<PathBuf>,
    /// Hex master key of saas-auth (signing keys and TOTP seeds at rest).
    pub auth_key: Option<String>,
    /// Base URL for links in mail.
    pub public_url: Option<String>,
    /// SMTP URL; without it mail goes to `mail_dir`.
    pub smtp_url: Option<String>,
    /// Folder of the development mailer.
    pub mail_dir: Option<PathBuf>,
    /// Sender address.
    pub mail_from: String,
    /// Trust `X-Forwarded-For` for the client address.
    pub trust_proxy: bool,
    /// Operators need an open break-glass grant (reason, MFA, time box) to
    /// act inside a tenant (`SAAS_REQUIRE_BREAK_GLASS`, default true). Off
    /// only for trusted test setups.
    pub require_break_glass: bool,
    /// Shortest password accepted.
    pub password_min_length: usize,
    /// argon2id memory cost in KiB.
    pub password_memory_kib: u32,
    /// argon2id iterations.
    pub password_iterations: u32,
    /// The seller on invoices (`SAAS_SELLER_NAME`, `SAAS_SELLER_ADDRESS`,
    /// `SAAS_SELLER_TAX_ID`, `SAAS_SELLER_EMAIL`).
    pub seller: saas_billing::Party,
    /// Seconds between billing runs (`SAAS_BILLING_RUN_SECS`, default 300).
    pub billing_run_secs: u64,
    /// The payment provider (`SAAS_PAYMENT_PROVIDER`: `manual`, the
    /// default, or `simulated_card` for demos, whose webhooks are signed with
    /// `SAAS_WEBHOOK_SECRET`, hex). Embedders set their own adapter here.
    #[serde(skip)]
    pub payment_provider: Option<std::sync::Arc<dyn saas_billing::payment::PaymentProvider>>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("bind", &self.bind)
            .field("data_dir", &self.data_dir)
            .field("base_domain", &self.base_domain)
            .field("body_limit", &self.body_limit)
            .field("audit_key", &self.audit_key.as_ref().map(|_| "<redacted>"))
            .field("auth_key", &self.auth_key.as_ref().map(|_| "<redacted>"))
            .field("smtp_url", &self.smtp_url.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("data"),
            database_url: None,
            database_migration_url: None,
            db_role: saas_core::db::APP_ROLE.into(),
            base_domain: None,
            body_limit: 1024 * 1024,
            request_timeout_secs: 30,
            log: "info".into(),
            bootstrap_tenant: "default".into(),
            audit_key: None,
            audit_checkpoint_secs: 300,
            audit_jsonl: None,
            auth_key: None,
            public_url: None,
            smtp_url: None,
            mail_dir: None,
            mail_from: "no-reply@localhost".into(),
            trust_proxy: false,
            require_break_glass: true,
            password_min_length: 8,
            password_memory_kib: 19_456,
            password_iterations: 2,
            seller: saas_billing::Party {
                name: "SaaS Reference Server".into(),
                address: None,
                tax_id: None,
                email: None,
            },
            billing_run_secs: 300,
            payment_provider: None,
        }
    }
}

/// The configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The TOML file could not be read or parsed.
    #[error("config file {path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// An environment variable had a bad value.
    #[error("environment variable {name}: {message}")]
    Env {
        /// The variable.
        name: &'static str,
        /// What went wrong.
        message: String,
    },
}

impl Config {
    /// Reads the TOML file (if any) and applies environment overrides from `env`.
    pub fn load(env: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let path = env("SAAS_CONFIG").map(PathBuf::from).or_else(|| {
            let p = PathBuf::from("saas.toml");
            p.exists().then_some(p)
        });
        let mut cfg = match path {
            Some(path) => {
                let text = std::fs::read_to_string(&path).map_err(|e| ConfigError::File {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
                toml::from_str(&text).map_err(|e| ConfigError::File {
                    path: path.clone(),
                    message: e.to_string(),
                })?
            }
            None => Self::default(),
        };
        if let Some(v) = env("SAAS_BIND") {
            cfg.bind = v.parse().map_err(|_| ConfigError::Env {
                name: "SAAS_BIND",
                message: "expected host:port, e.g. 127.0.0.1:8080".into(),
            })?;
        }
        if let Some(v) = env("SAAS_SELLER_NAME") {
            cfg.seller.name = v;
        }
        if let Some(v) = env("SAAS_SELLER_ADDRESS") {
            cfg.seller.address = Some(v.replace("\\n", "\n"));
        }
        if let Some(v) = env("SAAS_SELLER_TAX_ID") {
            cfg.seller.tax_id = Some(v);
        }
        if let Some(v) = env("SAAS_SELLER_EMAIL") {
            cfg.seller.email = Some(v);
        }
        if let Some(v) = env("SAAS_BILLING_RUN_SECS") {
            cfg.billing_run_secs = v.parse().map_err(|_| ConfigError::Env {
                name: "SAAS_BILLING_RUN_SECS",
                message: "expected a number of seconds".into(),
            })?;
        }
        if let Some(v) = env("SAAS_PAYMENT_PROVIDER") {
            cfg.payment_provider = match v.as_str() {
                "manual" => None,
                "simulated_card" => {
                    let secret =
                        match env("SAAS_WEBHOOK_SECRET") {
                            Some(hex) => saas_billing::payment::WebhookSecret::from_hex(&hex)
                                .map_err(|_| ConfigError::Env {
                                    name: "SAAS_WEBHOOK_SECRET",
                                    message: "expected 16 to 64 bytes as hex".into(),
                                })?,
                            None => saas_billing::payment::WebhookSecret::generate(),
                        };
                    Some(std::sync::Arc::new(
                        saas_billing::payment::SimulatedCardProvider::new(secret),
                    ))
                }
                _ => {
                    return Err(ConfigError::Env {
                        name: "SAAS_PAYMENT_PROVIDER",
                        message: "expected manual or simulated_card".into(),
                    });
                }
            };
        }
        if let Some(v) = env("SAAS_DATA_DIR") {
            cfg.data_dir = PathBuf::from(v);
        }
        if let Some(v) = env("DATABASE_URL") {
            cfg.database_url = Some(v);
        }
        if let Some(v) = env("DATABASE_MIGRATION_URL") {
            cfg.database_migration_url = Some(v);
        }
        if let Some(v) = env("SAAS_DB_ROLE") {
            cfg.db_role = v;
        }
        if let Some(v) = env("SAAS_BASE_DOMAIN") {
            cfg.base_domain = Some(v);
        }
        if let Some(v) = env("SAAS_BODY_LIMIT") {
            cfg.body_limit = v.parse().map_err(|_| ConfigError::Env {
                name: "SAAS_BODY_LIMIT",
                message: "expected a number of bytes".into(),
            })?;
        }
        if let Some(v) = env("SAAS_REQUEST_TIMEOUT_SECS") {
            cfg.request_timeout_secs = v.parse().map_err(|_| ConfigError::Env {
                name: "SAAS_REQUEST_TIMEOUT_SECS",
                message: "expected a number of seconds".into(),
            })?;
        }
        if let Some(v) = env("SAAS_LOG") {
            cfg.log = v;
        }
        if let Some(v) = env("SAAS_AUDIT_KEY") {
            cfg.audit_key = Some(v);
        }
        if let Some(v) = env("SAAS_AUDIT_JSONL") {
            cfg.audit_jsonl = Some(PathBuf::from(v));
        }
        if let Some(v) = env("SAAS_AUDIT_CHECKPOINT_SECS") {
            cfg.audit_checkpoint_secs = v.parse().map_err(|_| ConfigError::Env {
                name: "SAAS_AUDIT_CHECKPOINT_SECS",
                message: "expected a number of seconds".into(),
            })?;
        }
        if let Some(v) = env("SAAS_AUTH_KEY") {
            cfg.auth_key = Some(v);
        }
        if let Some(v) = env("SAAS_PUBLIC_URL") {
            cfg.public_url = Some(v);
        }
        if let Some(v) = env("SAAS_SMTP_URL") {
            cfg.smtp_url = Some(v);
        }
        if let Some(v) = env("SAAS_MAIL_DIR") {
            cfg.mail_dir = Some(PathBuf::from(v));
        }
        if let Some(v) = env("SAAS_MAIL_FROM") {
            cfg.mail_from = v;
        }
        if let Some(v) = env("SAAS_TRUST_PROXY") {
            cfg.trust_proxy = matches!(v.as_str(), "1" | "true" | "yes");
        }
        if let Some(v) = env("SAAS_REQUIRE_BREAK_GLASS") {
            cfg.require_break_glass = !matches!(v.as_str(), "0" | "false" | "no");
        }
        let number = |name: &'static str, v: String| {
            v.parse::<u32>().map_err(|_| ConfigError::Env {
                name,
                message: "expected a positive number".into(),
            })
        };
        if let Some(v) = env("SAAS_PASSWORD_MIN_LENGTH") {
            cfg.password_min_length = number("SAAS_PASSWORD_MIN_LENGTH", v)? as usize;
        }
        if let Some(v) = env("SAAS_PASSWORD_MEMORY_KIB") {
            cfg.password_memory_kib = number("SAAS_PASSWORD_MEMORY_KIB", v)?;
        }
        if let Some(v) = env("SAAS_PASSWORD_ITERATIONS") {
            cfg.password_iterations = number("SAAS_PASSWORD_ITERATIONS", v)?;
        }
        Ok(cfg)
    }

    /// The saas-auth configuration this server configuration implies.
    /// Without `auth_key`, a key for this process only (tokens and MFA seeds
    /// do not survive a restart; [`crate::prepare`] persists one).
    #[must_use]
    pub fn auth_config(&self) -> saas_auth::AuthConfig {
        let key = self
            .auth_key
            .as_deref()
            .and_then(|k| saas_auth::MasterKey::from_hex(k).ok())
            .unwrap_or_else(|| {
                tracing::warn!(
                    "no usable auth master key configured; using a key for this process only"
                );
                saas_auth::MasterKey::random()
            });
        let mut a = saas_auth::AuthConfig::new(key);
        a.public_url = self
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.bind));
        a.password.min_length = self.password_min_length;
        a.password.memory_kib = self.password_memory_kib;
        a.password.iterations = self.password_iterations;
        a
    }

    /// The database connection settings in force.
    #[must_use]
    pub fn db_config(&self) -> saas_core::db::DbConfig {
        let mut db = saas_core::db::DbConfig::new(self.database_url());
        db.app_role = (!self.db_role.is_empty()).then(|| self.db_role.clone());
        db.migration_url.clone_from(&self.database_migration_url);
        db
    }

    /// The database URL in force: the configured one, or SQLite under `data_dir`.
    #[must_use]
    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("saas.db").display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_give_the_embedded_setup() {
        let cfg = Config::load(|_| None).unwrap();
        assert_eq!(cfg.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(cfg.database_url(), "sqlite://data/saas.db");
    }

    #[test]
    fn environment_overrides_and_bad_values_are_named() {
        let cfg = Config::load(|k| match k {
            "SAAS_BIND" => Some("0.0.0.0:9000".into()),
            "DATABASE_URL" => Some("postgres://x@localhost/db".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(cfg.bind.port(), 9000);
        assert_eq!(cfg.database_url(), "postgres://x@localhost/db");
        let err = Config::load(|k| (k == "SAAS_BIND").then(|| "nope".into())).unwrap_err();
        assert!(err.to_string().contains("SAAS_BIND"));
    }

    #[test]
    fn a_toml_file_is_read_and_unknown_keys_refused() {
        let dir = std::env::temp_dir().join(format!("saas-cfg-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("saas.toml");
        std::fs::write(
            &file,
            "bind = \"127.0.0.1:7000\"\nbase_domain = \"example.test\"\n",
        )
        .unwrap();
        let f = file.display().to_string();
        let cfg = Config::load(|k| (k == "SAAS_CONFIG").then(|| f.clone())).unwrap();
        assert_eq!(
            (cfg.bind.port(), cfg.base_domain.as_deref()),
            (7000, Some("example.test"))
        );
        std::fs::write(&file, "bnid = 1\n").unwrap();
        assert!(Config::load(|k| (k == "SAAS_CONFIG").then(|| f.clone())).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
