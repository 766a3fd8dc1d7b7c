//! `saas-server`: the reference server binary.

use saas_server::{Config, ServerError, bootstrap, prepare, serve, shutdown_signal};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("saas-server: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), ServerError> {
    let cfg = Config::load(|k| std::env::var(k).ok())?;
    tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .with_env_filter(EnvFilter::try_new(&cfg.log).unwrap_or_else(|_| EnvFilter::new("info")))
        .init();
    let state = prepare(&cfg).await?;
    tracing::info!(backend = ?state.db().backend(), bind = %cfg.bind, "database ready");
    if let Some(b) =
        bootstrap::bootstrap_if_empty(&state, &cfg.data_dir, &cfg.bootstrap_tenant).await?
    {
        let path = b.credentials.display();
        println!(
            "First start: created tenant '{slug}' and an operator credential.\n\
             The credential is in {path} (readable only by you).\n\
             Give the organization its first owner (the password link lands in data/mail):\n  \
             TOKEN=$(sed -n 's/^operator_token=//p' {path})\n  \
             TENANT=$(sed -n 's/^tenant_id=//p' {path})\n  \
             curl -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' \
             -d '{{\"email\":\"owner@example.com\",\"display_name\":\"Owner\"}}' http://{bind}/api/tenants/$TENANT/owners",
            slug = b.tenant_slug,
            bind = cfg.bind,
        );
    }
    let listener = tokio::net::TcpListener::bind(cfg.bind).await?;
    tracing::info!(addr = %cfg.bind, "listening");
    serve(listener, state, shutdown_signal()).await
}
