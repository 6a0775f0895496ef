//! The TLS every client of Respawn's servers uses (the HTTP client, the
//! bots' WebSocket connections): rustls with ring, trusting the Mozilla
//! roots and the system's bundle, where a site's own CA goes
//! (`SSL_CERT_FILE`, else Debian's path).

use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// Debian's bundle of trusted certificates (the ca-certificates package).
const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The one client configuration, made at first use.
pub fn client_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
            let bundle = std::env::var("SSL_CERT_FILE").unwrap_or_else(|_| SYSTEM_BUNDLE.into());
            // A certificate the bundle holds that rustls cannot use is left out, not fatal.
            let certificates = CertificateDer::pem_file_iter(&bundle).into_iter().flatten().flatten();
            roots.add_parsable_certificates(certificates);
            let config =
                rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                    .with_safe_default_protocol_versions()
                    .map(|builder| builder.with_root_certificates(roots).with_no_client_auth());
            Arc::new(config.unwrap_or_else(|e| unreachable!("ring supports the default TLS versions: {e}")))
        })
        .clone()
}
