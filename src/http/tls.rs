//! TLS for the metrics port: a certificate from files (e.g. a cert-manager Secret, reread
//! every few minutes so a renewed one is served without a restart), or a self-signed one made
//! at start — what controller-runtime's secure metrics do when given none. A self-signed
//! certificate encrypts; the scraper then skips verification and relies on the bearer token.

use anyhow::Context as _;
use axum_server::tls_rustls::RustlsConfig;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tracing::{info, warn};

/// How often certificate files are reread.
const RELOAD_EVERY: Duration = Duration::from_secs(300);

/// A certificate and key in PEM files.
#[derive(Clone, Debug)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The TLS configuration: from `files` (reread in the background), else self-signed for
/// `names`.
pub async fn config(files: Option<CertFiles>, names: Vec<String>) -> anyhow::Result<RustlsConfig> {
    let Some(files) = files else {
        let (cert, key) = self_signed(names)?;
        info!("serving the metrics port with a self-signed certificate");
        return Ok(RustlsConfig::from_pem(cert.into_bytes(), key.into_bytes()).await?);
    };
    let config = load(&files.cert, &files.key).await?;
    tokio::spawn(reload(config.clone(), files));
    Ok(config)
}

async fn load(cert: &Path, key: &Path) -> anyhow::Result<RustlsConfig> {
    RustlsConfig::from_pem_file(cert, key)
        .await
        .with_context(|| {
            format!(
                "cannot read the metrics TLS certificate {} and key {}",
                cert.display(),
                key.display()
            )
        })
}

async fn reload(config: RustlsConfig, files: CertFiles) {
    loop {
        tokio::time::sleep(RELOAD_EVERY).await;
        if let Err(error) = config.reload_from_pem_file(&files.cert, &files.key).await {
            warn!(%error, "could not reread the metrics TLS certificate; serving the previous one");
        }
    }
}

/// A self-signed certificate and its key, in PEM, for `names` (DNS names or IP addresses).
pub fn self_signed(names: Vec<String>) -> anyhow::Result<(String, String)> {
    let certified = rcgen::generate_simple_self_signed(names)
        .context("cannot make a self-signed certificate")?;
    Ok((certified.cert.pem(), certified.signing_key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_signed_certificate_is_pem_for_the_names_given() {
        let (cert, key) =
            self_signed(vec!["dhan-operator-metrics".into(), "127.0.0.1".into()]).unwrap();
        assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"), "{cert}");
        assert!(key.contains("PRIVATE KEY-----"));
    }
}
