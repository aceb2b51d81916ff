//! TLS for the servers clients reach (the portal's Socket.IO, the REST API):
//! PEM files loaded with clear errors, certificates reloaded while serving
//! (when the files change, or on SIGHUP) without touching established
//! connections, and a listener for axum that does the handshakes.
//!
//! rustls with the `ring` provider only (no C build).

use crate::sync::Locked;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

/// `[tls]` of a service: mutual TLS for all its gRPC, server and client.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceTls {
    /// PEM CA certificate(s): peers must present a certificate signed by it.
    /// Default "" (no `[tls]`: gRPC is plaintext).
    pub ca: String,
    /// PEM certificate this service presents, as a server and as a client.
    /// Default "".
    pub cert: String,
    /// Its PEM private key. Default "".
    pub key: String,
    /// The name every server certificate is checked against, instead of
    /// the host dialed. For deployments where services are dialed by
    /// address (scaled agents advertise their container or pod IP), all
    /// sharing one certificate that carries this name. Default "" (the
    /// host dialed).
    pub server_name: String,
}

impl ServiceTls {
    pub fn enabled(&self) -> bool {
        !self.ca.is_empty() || !self.cert.is_empty() || !self.key.is_empty()
    }

    /// Check the files; the PEM texts.
    pub fn read(&self) -> Result<PemFiles, TlsError> {
        if self.ca.is_empty() {
            return Err(TlsError::Format {
                path: "[tls] ca".into(),
                what: "mutual TLS needs a CA certificate (tls.ca)".into(),
            });
        }
        load(&self.cert, &self.key)?;
        let ca = read(&self.ca)?;
        let cas: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&ca)
            .collect::<Result<_, _>>()
            .map_err(|e| TlsError::Format {
                path: self.ca.clone(),
                what: format!("not a PEM certificate ({e})"),
            })?;
        if cas.is_empty() {
            return Err(TlsError::Format {
                path: self.ca.clone(),
                what: "no PEM certificate in the file".into(),
            });
        }
        for c in &cas {
            check_validity(&self.ca, c)?;
        }
        Ok(PemFiles {
            ca,
            cert: read(&self.cert)?,
            key: read(&self.key)?,
        })
    }
}

/// The PEM texts of a `[tls]` table, checked.
pub struct PemFiles {
    pub ca: Vec<u8>,
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

/// `[*.tls]` of a server clients reach.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ServerTls {
    /// PEM certificate chain, the server's certificate first ("" = plaintext).
    /// Default "".
    pub cert: String,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1). Default "".
    pub key: String,
    /// How often the files are checked for changes, in ms (0: only on
    /// SIGHUP). Default 0, which means 5000.
    pub reload_interval: u64,
}

impl ServerTls {
    pub fn enabled(&self) -> bool {
        !self.cert.is_empty() || !self.key.is_empty()
    }

    fn interval(&self) -> Duration {
        Duration::from_millis(if self.reload_interval == 0 {
            5000
        } else {
            self.reload_interval
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS needs both a certificate and a key (cert = `{cert}`, key = `{key}`)")]
    Incomplete { cert: String, key: String },
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {what}")]
    Format { path: String, what: String },
    #[error("the key in {key} does not belong to the certificate in {cert}")]
    KeyMismatch { cert: String, key: String },
    #[error("the certificate in {path} expired on {not_after}")]
    Expired { path: String, not_after: String },
    #[error("the certificate in {path} is not valid before {not_before}")]
    NotYetValid { path: String, not_before: String },
}

fn read(path: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_string(),
        source,
    })
}

/// Load and check a certificate chain and its key.
pub fn load(cert_path: &str, key_path: &str) -> Result<CertifiedKey, TlsError> {
    if cert_path.is_empty() || key_path.is_empty() {
        return Err(TlsError::Incomplete {
            cert: cert_path.into(),
            key: key_path.into(),
        });
    }
    let format = |path: &str, what: String| TlsError::Format {
        path: path.to_string(),
        what,
    };
    let cert_pem = read(cert_path)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format(cert_path, format!("not a PEM certificate chain ({e})")))?;
    if chain.is_empty() {
        return Err(format(cert_path, "no PEM certificate in the file".into()));
    }
    let key_pem = read(key_path)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| format(key_path, format!("not a PEM private key ({e})")))?;
    check_validity(cert_path, &chain[0])?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(chain, key, &provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch {
            cert: cert_path.into(),
            key: key_path.into(),
        },
        other => format(key_path, format!("unusable private key ({other})")),
    })
}

fn check_validity(path: &str, cert: &CertificateDer<'_>) -> Result<(), TlsError> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).map_err(|e| TlsError::Format {
        path: path.to_string(),
        what: format!("not an X.509 certificate ({e})"),
    })?;
    let validity = parsed.validity();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    if validity.not_after.timestamp() < now {
        return Err(TlsError::Expired {
            path: path.to_string(),
            not_after: validity.not_after.to_string(),
        });
    }
    if validity.not_before.timestamp() > now {
        return Err(TlsError::NotYetValid {
            path: path.to_string(),
            not_before: validity.not_before.to_string(),
        });
    }
    Ok(())
}

/// The certificate in use, swapped on reload.
#[derive(Debug)]
pub struct Reloading {
    current: Mutex<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.locked().clone())
    }
}

impl Reloading {
    /// The certificate now served (its DER), for tests and logs.
    pub fn current_der(&self) -> Vec<u8> {
        self.current.locked().cert[0].to_vec()
    }
}

/// A server configuration that serves what `Reloading` holds; the files
/// are checked every `reload_interval` and on SIGHUP until `shutdown`.
pub fn server_config(
    tls: &ServerTls,
    alpn: &[&[u8]],
    shutdown: CancellationToken,
) -> Result<(Arc<rustls::ServerConfig>, Arc<Reloading>), TlsError> {
    let key = load(&tls.cert, &tls.key)?;
    let reloading = Arc::new(Reloading {
        current: Mutex::new(Arc::new(key)),
    });
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| TlsError::Format {
        path: tls.cert.clone(),
        what: e.to_string(),
    })?
    .with_no_client_auth()
    .with_cert_resolver(reloading.clone());
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio::spawn(watch(tls.clone(), reloading.clone(), shutdown));
    Ok((Arc::new(config), reloading))
}

fn modified(path: &str) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Reload when either file changes or on SIGHUP. A reload that fails keeps
/// the certificate in use and says why.
async fn watch(tls: ServerTls, reloading: Arc<Reloading>, shutdown: CancellationToken) {
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut seen = (modified(&tls.cert), modified(&tls.key));
    let mut tick = tokio::time::interval(tls.interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let signalled = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => false,
            Some(()) = async {
                match hup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            } => true,
        };
        let now = (modified(&tls.cert), modified(&tls.key));
        if !signalled && now == seen {
            continue;
        }
        seen = now;
        match load(&tls.cert, &tls.key) {
            Ok(key) => {
                *reloading.current.locked() = Arc::new(key);
                tracing::info!(cert = %tls.cert, "TLS certificate reloaded");
            }
            Err(e) => {
                tracing::error!(error = %e, "TLS certificate not reloaded; the previous one stays in use")
            }
        }
    }
}

/// A listener that hands axum TLS streams: TCP accepted here, handshakes
/// run concurrently (a slow or plaintext peer holds up nobody), failures
/// closed and counted.
pub struct TlsListener {
    local_addr: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
}

/// Longest a handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl TlsListener {
    pub fn new(
        tcp: TcpListener,
        config: Arc<rustls::ServerConfig>,
        nodelay: bool,
    ) -> std::io::Result<TlsListener> {
        let local_addr = tcp.local_addr()?;
        let acceptor = TlsAcceptor::from(config);
        let (tx, ready) = mpsc::channel(256);
        tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::debug!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if nodelay {
                    let _ = stream.set_nodelay(true);
                }
                if tx.is_closed() {
                    return;
                }
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => {
                            metrics::counter!("tls_handshake_failures_total").increment(1);
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        }
                        Err(_) => {
                            metrics::counter!("tls_handshake_failures_total").increment(1);
                            tracing::debug!(%peer, "TLS handshake timed out");
                        }
                    }
                });
            }
        });
        Ok(TlsListener { local_addr, ready })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // the accept task ended: nothing more will come
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    }

    fn cert(not_after_days: i64) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(2);
        params.not_after = now + time::Duration::days(not_after_days);
        (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
    }

    #[test]
    fn every_misconfiguration_names_its_file_and_problem() {
        let dir =
            std::env::temp_dir().join(format!("conclave-tls-{}", crate::trace::new_trace_id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (good_cert, good_key) = cert(30);
        let (_, other_key) = cert(30);
        let (old_cert, old_key) = cert(-1);
        let c = write(&dir, "cert.pem", &good_cert);
        let k = write(&dir, "key.pem", &good_key);
        load(&c, &k).unwrap();
        let missing = dir.join("nope.pem").display().to_string();
        let e = load(&missing, &k).unwrap_err().to_string();
        assert!(e.contains("cannot read") && e.contains("nope.pem"), "{e}");
        let garbage = write(&dir, "garbage.pem", "hello");
        let e = load(&garbage, &k).unwrap_err().to_string();
        assert!(
            e.contains("garbage.pem") && e.contains("no PEM certificate"),
            "{e}"
        );
        let e = load(&c, &garbage).unwrap_err().to_string();
        assert!(
            e.contains("garbage.pem") && e.contains("private key"),
            "{e}"
        );
        let wrong = write(&dir, "other-key.pem", &other_key);
        let e = load(&c, &wrong).unwrap_err().to_string();
        assert!(e.contains("does not belong"), "{e}");
        let oc = write(&dir, "old.pem", &old_cert);
        let ok = write(&dir, "old-key.pem", &old_key);
        let e = load(&oc, &ok).unwrap_err().to_string();
        assert!(e.contains("old.pem") && e.contains("expired"), "{e}");
        let e = load(&c, "").unwrap_err().to_string();
        assert!(e.contains("both a certificate and a key"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
