//! TLS on the servers' listeners (rustls with ring): a certificate chain and
//! its key from PEM files, and the stream a listener hands on, plain or
//! encrypted. The handshake runs in a task of its own per connection, under
//! the deadline of the connection's first request head, so a client that
//! never finishes one holds a place of its address's cap and nothing else.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// What a listener serves TLS with.
#[derive(Clone)]
pub struct ServerTls {
    pub(crate) acceptor: tokio_rustls::TlsAcceptor,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerTls")
    }
}

impl ServerTls {
    /// The certificate chain in `cert` (PEM, the server's own first) and its
    /// private key in `key` (PEM: PKCS#8, PKCS#1 or SEC1). Each error names
    /// the file and what is wrong with it.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, String> {
        let chain = CertificateDer::pem_file_iter(cert)
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(|e| format!("{}: cannot read a PEM certificate: {e}", cert.display()))?;
        if chain.is_empty() {
            return Err(format!("{}: no PEM certificate in it", cert.display()));
        }
        let private_key = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| format!("{}: cannot read a PEM private key: {e}", key.display()))?;
        let mut config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_no_client_auth()
                .with_single_cert(chain, private_key)
                .map_err(|e| format!("{} with {}: {e}", cert.display(), key.display()))?;
        // Both servers speak HTTP/1.1 alone (WebSocket upgrades need it).
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self { acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)) })
    }
}

/// An accepted connection's bytes: as they came, or through TLS.
#[derive(Debug)]
pub enum Transport {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl AsyncRead for Transport {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Transport::Plain(s) => s.is_write_vectored(),
            Transport::Tls(s) => s.is_write_vectored(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{GuardMetrics, GuardedListener};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A self-signed certificate for localhost and 127.0.0.1, in files.
    fn certificate(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, rcgen::CertifiedKey) {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).expect("cert");
        std::fs::create_dir_all(dir).expect("dir");
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, made.cert.pem()).expect("write");
        std::fs::write(&key, made.key_pair.serialize_pem()).expect("write");
        (cert, key, made)
    }

    fn scratch(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("respawn-net-{name}-{}", std::process::id()))
    }

    #[test]
    fn unreadable_certificates_and_keys_are_named_in_the_error() {
        let dir = scratch("bad");
        let (cert, key, _) = certificate(&dir);
        let garbage = dir.join("garbage.pem");
        std::fs::write(&garbage, "not a certificate").expect("write");
        let missing = dir.join("missing.pem");
        let err = ServerTls::from_pem_files(&missing, &key).expect_err("missing");
        assert!(err.contains("missing.pem"), "{err}");
        let err = ServerTls::from_pem_files(&garbage, &key).expect_err("garbage");
        assert!(err.contains("garbage.pem") && err.contains("no PEM certificate"), "{err}");
        let err = ServerTls::from_pem_files(&cert, &garbage).expect_err("no key");
        assert!(err.contains("garbage.pem") && err.contains("private key"), "{err}");
        let (_, other_key, _) = certificate(&dir.join("other"));
        let err = ServerTls::from_pem_files(&cert, &other_key).expect_err("a key of another certificate");
        assert!(err.contains("cert.pem with"), "{err}");
        assert!(ServerTls::from_pem_files(&cert, &key).is_ok());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_client_that_never_says_hello_holds_up_no_other_handshake() {
        let dir = scratch("serve");
        let (cert, key, made) = certificate(&dir);
        let tls = ServerTls::from_pem_files(&cert, &key).expect("tls");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(made.cert.der().clone()).expect("root");
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async {
            let registry = prometheus::Registry::new();
            let metrics = GuardMetrics::register(&registry, "t").expect("metrics");
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            let guarded = GuardedListener::new(listener, 0, metrics).serving_tls(Some(tls));
            let app = axum::Router::new().route("/", axum::routing::get(|| async { "over TLS" }));
            tokio::spawn(async move { axum::serve(guarded, app).await });

            let _silent = TcpStream::connect(addr).await.expect("a client that sends nothing");
            let mut plain = TcpStream::connect(addr).await.expect("connect");
            plain.write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n").await.expect("write");
            let mut answer = Vec::new();
            let _ = plain.read_to_end(&mut answer).await;
            assert!(!answer.starts_with(b"HTTP/1.1 200"), "plain HTTP is not served on a TLS listener");

            let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
            let tcp = TcpStream::connect(addr).await.expect("connect");
            let mut tls = tokio::time::timeout(std::time::Duration::from_secs(5), connector.connect(name, tcp))
                .await
                .expect("the handshake went on beside the silent client")
                .expect("handshake");
            tls.write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n").await.expect("write");
            let mut answer = String::new();
            tls.read_to_string(&mut answer).await.expect("read");
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
            assert!(answer.ends_with("over TLS"), "{answer}");
        });
        let _ = std::fs::remove_dir_all(dir);
    }
}
