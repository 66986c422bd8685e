//! TLS with rustls (on ring): HTTPS on the public port (`[server.tls]`), and mutual TLS
//! between nodes on the cluster listener (`[cluster.tls]`): each node serves its
//! certificate, asks every peer for one that the cluster's CA signed, and shows the same
//! certificate when it calls a peer, whose certificate it checks against the same CA and
//! the address it called.
//!
//! The files are read once, at start; a file that is missing or holds no certificate or
//! key stops the start with a message naming it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::RootCertStore;

use crate::config::{ClusterTlsConfig, TlsConfig};

/// Why a TLS setting is unusable.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds nothing of what it should.
    #[error("{what} {path}: {message}")]
    File {
        what: &'static str,
        path: PathBuf,
        message: String,
    },
    /// rustls refused the certificates or the key.
    #[error("{what}: {message}")]
    Config { what: &'static str, message: String },
}

/// The TLS side of the public listener.
#[derive(Clone)]
pub struct ServerTls(pub tokio_rustls::TlsAcceptor);

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerTls")
    }
}

/// How a node calls its peers over mutual TLS.
#[derive(Clone)]
pub struct ClientTls(pub tokio_rustls::TlsConnector);

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientTls")
    }
}

impl ClientTls {
    /// Opens TLS over `stream` to the peer at `addr` (`host:port`), checking that its
    /// certificate names `host`.
    pub async fn connect(
        &self,
        addr: &str,
        stream: tokio::net::TcpStream,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let host = addr
            .rsplit_once(':')
            .map_or(addr, |(h, _)| h)
            .trim_start_matches('[')
            .trim_end_matches(']');
        let name = ServerName::try_from(host.to_string()).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{host} is not a name a certificate can hold: {e}"),
            )
        })?;
        self.0.connect(name, stream).await
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn resolve(base: &Path, file: &Path) -> PathBuf {
    if file.is_absolute() {
        file.to_path_buf()
    } else {
        base.join(file)
    }
}

fn certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |message: String| TlsError::File {
        what,
        path: path.to_path_buf(),
        message,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("holds no PEM certificate".into()));
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::File {
        what: "key_file",
        path: path.to_path_buf(),
        message: format!("holds no usable PEM private key ({e})"),
    })
}

fn roots(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in certs("ca_file", path)? {
        roots.add(c).map_err(|e| TlsError::File {
            what: "ca_file",
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    }
    Ok(Arc::new(roots))
}

fn refused(what: &'static str) -> impl Fn(rustls::Error) -> TlsError {
    move |e| TlsError::Config {
        what,
        message: e.to_string(),
    }
}

/// The public port's TLS (`[server.tls]`; paths relative to `base`): HTTP/1.1 over TLS
/// 1.2 or 1.3.
pub fn server(config: &TlsConfig, base: &Path) -> Result<ServerTls, TlsError> {
    let chain = certs("cert_file", &resolve(base, &config.cert_file))?;
    let key = key(&resolve(base, &config.key_file))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(refused("[server.tls]"))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(refused("[server.tls]"))?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(ServerTls(tokio_rustls::TlsAcceptor::from(Arc::new(tls))))
}

/// The cluster listener's TLS and the client side of calls to peers (`[cluster.tls]`;
/// paths relative to `base`): both ends show a certificate that `ca_file` signed.
pub fn cluster(config: &ClusterTlsConfig, base: &Path) -> Result<(ServerTls, ClientTls), TlsError> {
    let chain = certs("cert_file", &resolve(base, &config.cert_file))?;
    let key = key(&resolve(base, &config.key_file))?;
    let roots = roots(&resolve(base, &config.ca_file))?;
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .map_err(|e| TlsError::Config {
                what: "[cluster.tls] ca_file",
                message: e.to_string(),
            })?;
    let mut server = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(refused("[cluster.tls]"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(refused("[cluster.tls]"))?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    let mut client = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(refused("[cluster.tls]"))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(refused("[cluster.tls]"))?;
    client.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((
        ServerTls(tokio_rustls::TlsAcceptor::from(Arc::new(server))),
        ClientTls(tokio_rustls::TlsConnector::from(Arc::new(client))),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path) -> TlsConfig {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("certificate");
        std::fs::write(dir.join("c.pem"), cert.pem()).expect("write");
        std::fs::write(dir.join("c.key"), key.serialize_pem()).expect("write");
        TlsConfig {
            cert_file: "c.pem".into(),
            key_file: "c.key".into(),
        }
    }

    #[test]
    fn certificates_load_relative_to_the_config_and_bad_files_are_named() {
        let dir = tempfile::tempdir().expect("temp dir");
        let good = files(dir.path());
        assert!(server(&good, dir.path()).is_ok());
        let missing = TlsConfig {
            cert_file: "nope.pem".into(),
            ..good.clone()
        };
        let err = server(&missing, dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("cert_file") && err.contains("nope.pem"),
            "{err}"
        );
        std::fs::write(dir.path().join("empty.pem"), "not a certificate\n").expect("write");
        let empty = TlsConfig {
            cert_file: "empty.pem".into(),
            ..good.clone()
        };
        let err = server(&empty, dir.path()).unwrap_err().to_string();
        assert!(err.contains("holds no PEM certificate"), "{err}");
        let no_key = TlsConfig {
            key_file: "c.pem".into(),
            ..good.clone()
        };
        let err = server(&no_key, dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("key_file") && err.contains("private key"),
            "{err}"
        );
        let cluster_files = ClusterTlsConfig {
            cert_file: good.cert_file.clone(),
            key_file: good.key_file.clone(),
            ca_file: "empty.pem".into(),
        };
        let err = cluster(&cluster_files, dir.path()).unwrap_err().to_string();
        assert!(err.contains("ca_file"), "{err}");
        let ok = ClusterTlsConfig {
            ca_file: good.cert_file.clone(),
            ..cluster_files
        };
        assert!(cluster(&ok, dir.path()).is_ok());
    }
}
