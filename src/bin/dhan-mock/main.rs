//! `dhan-mock`: a stand-in for Dhan's auth and token-probe APIs, written from
//! docs/dhan-api.md (not from the operator's client) so tests cannot pass on a shared
//! misunderstanding. One listener serves both hosts' paths: `/app/*` and `/login/*` (auth.dhan.co)
//! and `/v2/*` (api.dhan.co), plus `/__control/*` for tests.

mod api;
mod auth;
mod control;
mod faults;
mod ist;
mod jwt;
mod kinds;
mod login_page;
mod login_verify;
mod reply;
mod state;
mod totp;

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::http::{Method, StatusCode, Uri};
use axum::response::Response;
use axum::routing::{any, get, post};
use clap::Parser;

use crate::reply::Reply;
use crate::state::{Account, AccountConfig, Config, Mock, Shared};

#[derive(Debug, Parser)]
#[command(
    name = "dhan-mock",
    about = "Mock of Dhan's authentication API for tests and demos"
)]
struct Cli {
    /// Address to listen on; port 0 picks a free port (the chosen address is printed).
    #[arg(long, env = "DHAN_MOCK_LISTEN", default_value = "127.0.0.1:8585")]
    listen: String,
    /// Minimum seconds between two successful generateAccessToken mints of one client.
    #[arg(long, env = "DHAN_MOCK_MINT_THROTTLE_SECONDS", default_value_t = 120)]
    mint_throttle_seconds: i64,
    /// Lifetime of issued tokens (`exp - iat`).
    #[arg(long, env = "DHAN_MOCK_TOKEN_TTL_SECONDS", default_value_t = 86_400)]
    token_ttl_seconds: i64,
    /// Consents allowed per client per IST calendar day.
    #[arg(long, env = "DHAN_MOCK_CONSENT_LIMIT", default_value_t = 25)]
    consent_limit: u32,
    /// Optional JSON file with an array of accounts (same shape as POST /__control/accounts),
    /// loaded at start-up — handy for demos.
    #[arg(long, env = "DHAN_MOCK_ACCOUNTS")]
    accounts: Option<PathBuf>,
    /// Serve HTTPS, as Dhan does, with a self-signed certificate for the listen address,
    /// `localhost` and 127.0.0.1, written (PEM) to this file for clients to trust
    /// (`dhan-operator run --dhan-ca-file`).
    #[arg(long, env = "DHAN_MOCK_TLS_CERT_OUT")]
    tls_cert_out: Option<PathBuf>,
}

pub fn router(mock: Shared) -> Router {
    Router::new()
        .route("/app/generateAccessToken", any(auth::generate_access_token))
        .route("/app/generate-consent", any(auth::generate_consent))
        .route("/app/consumeApp-consent", any(auth::consume_consent))
        .route("/v2/RenewToken", any(auth::renew_token))
        .route("/v2/profile", any(api::profile))
        .route("/v2/fundlimit", any(api::fundlimit))
        .route("/v2/ip/getIP", any(api::get_ip))
        .route("/login/consentApp-login", get(login_page::page))
        .route("/login/api/verify", post(login_verify::verify))
        .route("/login/consentApp-redirect", get(login_verify::redirect))
        // Browsers fetch this on their own; answering it keeps it out of the call log.
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .merge(control::routes())
        .fallback(not_found)
        .with_state(mock)
}

async fn not_found(
    axum::extract::State(mock): axum::extract::State<Shared>,
    method: Method,
    uri: Uri,
) -> Response {
    let r = Reply::auth_error(StatusCode::NOT_FOUND, "Not Found", "not_found");
    reply::finish(&mock, uri.path(), method.as_str(), None, r)
}

fn load_accounts(mock: &Mock, path: &PathBuf) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path:?}"))?;
    let list: Vec<AccountConfig> =
        serde_json::from_str(&text).with_context(|| format!("parsing {path:?}"))?;
    let mut inner = mock.lock();
    for cfg in list {
        let id = cfg.client_id.clone();
        let acct = Account::new(cfg).map_err(|e| anyhow::anyhow!("account {id}: {e}"))?;
        inner.accounts.insert(id, acct);
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let mock = Arc::new(Mock::new(Config {
        mint_throttle_secs: cli.mint_throttle_seconds,
        token_ttl_secs: cli.token_ttl_seconds,
        consent_limit: cli.consent_limit,
    }));
    if let Some(path) = &cli.accounts {
        load_accounts(&mock, path)?;
    }
    let listener = tokio::net::TcpListener::bind(&cli.listen)
        .await
        .with_context(|| format!("binding {}", cli.listen))?;
    let addr = listener.local_addr()?;
    let Some(cert_out) = &cli.tls_cert_out else {
        // Tests parse this exact line to learn the port.
        announce(&format!("http://{addr}"))?;
        axum::serve(listener, router(mock))
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
        return Ok(());
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let names = vec![
        addr.ip().to_string(),
        "localhost".into(),
        "127.0.0.1".into(),
    ];
    let (cert, key) = dhan_operator::http::tls::self_signed(names)?;
    std::fs::write(cert_out, &cert)
        .with_context(|| format!("writing the certificate to {}", cert_out.display()))?;
    let config =
        axum_server::tls_rustls::RustlsConfig::from_pem(cert.into_bytes(), key.into_bytes())
            .await?;
    announce(&format!("https://{addr}"))?;
    axum_server::from_tcp_rustls(listener.into_std()?, config)?
        .serve(router(mock).into_make_service())
        .await?;
    Ok(())
}

/// The line tests and scripts read the mock's URL from.
fn announce(url: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout();
    writeln!(out, "dhan-mock listening on {url}")?;
    out.flush()?;
    tracing::info!(%url, "ready");
    Ok(())
}

#[cfg(test)]
mod http_tests;
