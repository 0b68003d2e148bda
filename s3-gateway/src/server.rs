//! Serving the S3 service over HTTP or HTTPS, with graceful shutdown: on the signal the
//! listener closes, in-flight requests finish (up to a grace period), then it returns.
//!
//! Slow and idle clients cannot hold the listener ([`ConnectionLimits`]): a client has a
//! bounded time for its TLS handshake and for each request's headers (which also ends a
//! keep-alive connection left idle), and connections are capped in all and per client
//! address, so that one host opening thousands leaves room for everyone else. Plain HTTP
//! is HTTP/1.1 only (S3 clients do not speak cleartext HTTP/2): serving both would mean
//! reading the first bytes to tell them apart, a stage no timeout of hyper's covers.

use crate::SetupError;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use hyper_util::server::graceful::GracefulShutdown;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// How long in-flight requests get to finish once shutdown starts.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// What one client may hold of the S3 listener.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// Time a client has to send a request's headers, counted from when the connection
    /// opens or its previous response was sent: a slow sender (slowloris) and an idle
    /// keep-alive connection are both closed when it passes.
    pub header_read_timeout: Duration,
    /// Time a client has to finish the TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// Connections open at once, all clients together. One over it is closed at once.
    pub max_connections: usize,
    /// Connections open at once from one IP address.
    pub max_connections_per_ip: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(30),
            tls_handshake_timeout: Duration::from_secs(10),
            max_connections: 8192,
            max_connections_per_ip: 1024,
        }
    }
}

/// Open connections, in all and per client address.
#[derive(Default)]
struct OpenConnections {
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    total: std::sync::atomic::AtomicUsize,
}

/// One admitted connection, counted until dropped.
struct Admitted {
    open: Arc<OpenConnections>,
    ip: IpAddr,
}

impl OpenConnections {
    fn admit(self: &Arc<Self>, ip: IpAddr, limits: &ConnectionLimits) -> Option<Admitted> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut per_ip = self.per_ip.lock();
        let mine = per_ip.entry(ip).or_default();
        if *mine >= limits.max_connections_per_ip || self.total.load(Relaxed) >= limits.max_connections {
            if *mine == 0 {
                per_ip.remove(&ip);
            }
            return None;
        }
        *mine += 1;
        self.total.fetch_add(1, Relaxed);
        Some(Admitted { open: self.clone(), ip })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut per_ip = self.open.per_ip.lock();
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
        self.open.total.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Loads a PEM certificate chain and private key for HTTPS.
pub fn load_tls(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, SetupError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|source| SetupError::TlsFile { what: "certificate", path: cert.to_owned(), source })?
        .collect::<Result<_, _>>()
        .map_err(|source| SetupError::TlsPem { what: "certificate", path: cert.to_owned(), source })?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|source| SetupError::TlsFile {
        what: "private key",
        path: key.to_owned(),
        source,
    })?;
    // ring explicitly: other crates in the process may enable another provider.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves `service` on `listener` until `shutdown` turns true: the S3 gateway, and the
/// admin routes on their TLS listener. `what` names it in the logs.
pub async fn serve<S, B>(
    what: &'static str,
    listener: TcpListener,
    service: S,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: ConnectionLimits,
    mut shutdown: watch::Receiver<bool>,
) where
    S: hyper::service::Service<http::Request<hyper::body::Incoming>, Response = http::Response<B>>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = ConnBuilder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    // An h2 client that stops answering pings is gone.
    builder.http2().timer(TokioTimer::new()).keep_alive_interval(Duration::from_secs(30));
    let http1 = Arc::new(builder.clone().http1_only());
    let http2 = Arc::new(builder.http2_only());
    let graceful = GracefulShutdown::new();
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let open = Arc::new(OpenConnections::default());
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "{what} accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let Some(admitted) = open.admit(peer.ip(), &limits) else {
            tracing::debug!(%peer, "{what} connection refused: too many open");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let watcher = graceful.watcher();
        let (http1, http2, service, acceptor) = (http1.clone(), http2.clone(), service.clone(), acceptor.clone());
        let handshake_timeout = limits.tls_handshake_timeout;
        tokio::spawn(async move {
            let _admitted = admitted;
            let ended = match acceptor {
                None => watcher.watch(http1.serve_connection(TokioIo::new(stream), service).into_owned()).await,
                Some(acceptor) => {
                    let stream = match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "tls handshake failed"),
                        Err(_) => return tracing::debug!(%peer, "tls handshake timed out"),
                    };
                    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                    let builder = if h2 { &http2 } else { &http1 };
                    watcher.watch(builder.serve_connection(TokioIo::new(stream), service).into_owned()).await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(%peer, error = %e, "{what} connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(SHUTDOWN_GRACE) => tracing::warn!("{what} connections still open after the grace period"),
    }
}
