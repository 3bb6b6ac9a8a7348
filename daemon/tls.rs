//! The server's TLS settings for STARTTLS (SMTP, RFC 3207) and STLS (POP3, RFC 2595),
//! read at start-up from `--tls-cert` and `--tls-key`, and again on SIGHUP (a renewed
//! certificate needs no restart; connections already in TLS keep the old one).

use std::sync::{Arc, RwLock};

use anyhow::{bail, Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

use crate::config::TlsFiles;

/// The certificate every new TLS handshake uses; replaced whole on reload.
pub struct Certificates {
    files: TlsFiles,
    current: RwLock<Arc<ServerConfig>>,
}

impl Certificates {
    pub fn load(files: &TlsFiles) -> Result<Arc<Certificates>> {
        let current = RwLock::new(load(files)?);
        Ok(Arc::new(Certificates { files: files.clone(), current }))
    }

    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Reads the files again; on any error the running certificate stays.
    pub fn reload(&self) -> Result<()> {
        let fresh = load(&self.files)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }
}

/// Loads the certificate chain and its key; a missing file, bad PEM or a key that does
/// not fit the certificate stops maild at start rather than at a client's STARTTLS.
fn load(files: &TlsFiles) -> Result<Arc<ServerConfig>> {
    let cert_name = files.cert.display();
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .with_context(|| format!("--tls-cert {cert_name}"))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("--tls-cert {cert_name}: not a PEM certificate chain"))?;
    if chain.is_empty() {
        bail!("--tls-cert {cert_name}: no CERTIFICATE block in the file");
    }
    let key_name = files.key.display();
    let key_pem = std::fs::read(&files.key).with_context(|| format!("--tls-key {key_name}: cannot read the file"))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .with_context(|| format!("--tls-key {key_name}: expected a PEM private key (BEGIN PRIVATE KEY) in the file"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .with_context(|| format!("--tls-key {} does not fit --tls-cert {cert_name}", files.key.display()))?;
    Ok(Arc::new(config))
}
