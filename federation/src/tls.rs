//! Mutual TLS for QUIC between federation sites.
//!
//! Both sides present their site certificate. A peer is accepted only when its chain
//! verifies against the federation CA **and** exactly one site listed in the federation
//! file matches its certificate; a client also requires the server to be the very site it
//! dialled (the TLS server name is `<site>.site.clusster`). Checks run inside the rustls
//! handshake, so a refused peer never gets to send application data. TLS 1.3 only, one of
//! the caller's ALPN protocols required (each protocol over the federation names its own:
//! this crate does not know them), no 0-RTT (early data could be replayed).

use super::file::Federation;
use super::identity::{CA_CERT_FILE, SiteIdentity};
use super::transport::{TransportSettings, transport_config};
use super::{FederationError, Membership, site_dns_name, site_from_dns_name};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use std::net::SocketAddr;
use std::sync::Arc;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(federation: &Federation) -> Result<Arc<rustls::RootCertStore>, FederationError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(federation.ca_cert.clone()).map_err(|e| {
        FederationError::Invalid(format!("the federation's CA certificate is unusable as a trust anchor: {e}"))
    })?;
    Ok(Arc::new(roots))
}

/// Why a certificate that chains to the CA is still refused.
#[derive(thiserror::Error)]
enum RefusedPeer {
    #[error("the certificate names no site listed in the federation file")]
    NotListed,
    #[error("the certificate matches several listed sites ({0})")]
    Ambiguous(String),
    #[error("site {0:?} is not listed in the federation file")]
    UnknownTarget(String),
    #[error("server name {0:?} is not <site>.site.clusster")]
    NotASiteName(String),
    #[error(
        "the certificate of site {0:?} is not the one the federation file pins (`tls_key`): an old or \
         foreign identity"
    )]
    NotPinned(String),
}

// rustls shows the reason with `Debug`: make that the readable sentence in the logs.
impl std::fmt::Debug for RefusedPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

fn refuse(reason: RefusedPeer) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(reason))))
}

/// The one listed site whose name the certificate carries, if its key is the one the
/// federation file pins for that site.
fn listed_site(federation: &Federation, cert: &CertificateDer<'_>) -> Result<String, rustls::Error> {
    let parsed = rustls::server::ParsedCertificate::try_from(cert)?;
    let matching: Vec<&str> = federation
        .sites()
        .filter(|site| {
            ServerName::try_from(site_dns_name(&site.name))
                .is_ok_and(|dns| rustls::client::verify_server_name(&parsed, &dns).is_ok())
        })
        .map(|site| site.name.as_str())
        .collect();
    match matching.as_slice() {
        [one] => {
            let pinned = federation.site(one).map(|site| site.tls_key);
            let pin = super::identity::key_pin(cert).map_err(|e| rustls::Error::General(e.to_string()))?;
            if pinned != Some(pin) {
                return Err(refuse(RefusedPeer::NotPinned((*one).to_owned())));
            }
            Ok((*one).to_owned())
        }
        [] => Err(refuse(RefusedPeer::NotListed)),
        many => Err(refuse(RefusedPeer::Ambiguous(many.join(", ")))),
    }
}

/// Server side: the client's chain must verify against the CA and name a listed site.
#[derive(Debug)]
struct FederationClientVerifier {
    chain: Arc<dyn ClientCertVerifier>,
    federation: Arc<Federation>,
}

impl ClientCertVerifier for FederationClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.chain.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.chain.verify_client_cert(end_entity, intermediates, now)?;
        listed_site(&self.federation, end_entity)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.supported_verify_schemes()
    }
}

/// Client side: the server must be the listed site we dialled, with a chain to the CA.
#[derive(Debug)]
struct FederationServerVerifier {
    chain: Arc<rustls::client::WebPkiServerVerifier>,
    federation: Arc<Federation>,
}

impl ServerCertVerifier for FederationServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let dns = match server_name {
            ServerName::DnsName(dns) => dns.as_ref(),
            other => return Err(refuse(RefusedPeer::NotASiteName(other.to_str().into_owned()))),
        };
        let target = site_from_dns_name(dns).ok_or_else(|| refuse(RefusedPeer::NotASiteName(dns.to_owned())))?;
        if self.federation.site(target).is_none() {
            return Err(refuse(RefusedPeer::UnknownTarget(target.to_owned())));
        }
        // Chain to the CA, validity, server EKU, and the name we dialled.
        self.chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)?;
        // And no other listed site: a certificate for two sites could stand in for either.
        listed_site(&self.federation, end_entity)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.supported_verify_schemes()
    }
}

fn rustls_server_config(
    identity: &SiteIdentity,
    federation: &Arc<Federation>,
    alpn: &[&[u8]],
) -> Result<rustls::ServerConfig, FederationError> {
    let chain = rustls::server::WebPkiClientVerifier::builder_with_provider(roots(federation)?, provider())
        .build()
        .map_err(|e| FederationError::Invalid(format!("cannot build the client certificate verifier: {e}")))?;
    let verifier = FederationClientVerifier { chain, federation: federation.clone() };
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(identity.cert_chain.clone(), identity.key())?;
    config.alpn_protocols = alpn_list(alpn)?;
    Ok(config)
}

fn rustls_client_config(
    identity: &SiteIdentity,
    federation: &Arc<Federation>,
    alpn: &[&[u8]],
) -> Result<rustls::ClientConfig, FederationError> {
    let chain = rustls::client::WebPkiServerVerifier::builder_with_provider(roots(federation)?, provider())
        .build()
        .map_err(|e| FederationError::Invalid(format!("cannot build the server certificate verifier: {e}")))?;
    let verifier = FederationServerVerifier { chain, federation: federation.clone() };
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(identity.cert_chain.clone(), identity.key())?;
    config.alpn_protocols = alpn_list(alpn)?;
    Ok(config)
}

/// The ALPN list rustls takes; at least one protocol, or every handshake would fail.
fn alpn_list(alpn: &[&[u8]]) -> Result<Vec<Vec<u8>>, FederationError> {
    if alpn.is_empty() || alpn.iter().any(|p| p.is_empty() || p.len() > 255) {
        return Err(FederationError::Invalid("ALPN: name 1 to 255-byte protocols to serve".into()));
    }
    Ok(alpn.iter().map(|p| p.to_vec()).collect())
}

fn quic_client_crypto(
    identity: &SiteIdentity,
    federation: &Arc<Federation>,
    alpn: &[&[u8]],
) -> Result<Arc<quinn::crypto::rustls::QuicClientConfig>, FederationError> {
    let config = rustls_client_config(identity, federation, alpn)?;
    quinn::crypto::rustls::QuicClientConfig::try_from(config)
        .map(Arc::new)
        .map_err(|e| FederationError::Invalid(format!("TLS config unusable for QUIC: {e}")))
}

/// The QUIC server config of a site: mutual TLS against `federation`, one of the `alpn`
/// protocols, and the transport `settings`.
pub fn server_config(
    identity: &SiteIdentity,
    federation: Arc<Federation>,
    settings: &TransportSettings,
    alpn: &[&[u8]],
) -> Result<quinn::ServerConfig, FederationError> {
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(rustls_server_config(identity, &federation, alpn)?)
        .map_err(|e| FederationError::Invalid(format!("TLS config unusable for QUIC: {e}")))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(transport_config(settings)));
    Ok(config)
}

/// The QUIC client config of a site. Connect with the server name
/// [`site_dns_name`]`(peer)`, or use [`FederationEndpoint::connect`], which does.
pub fn client_config(
    identity: &SiteIdentity,
    federation: Arc<Federation>,
    settings: &TransportSettings,
    alpn: &[&[u8]],
) -> Result<quinn::ClientConfig, FederationError> {
    let mut config = quinn::ClientConfig::new(quic_client_crypto(identity, &federation, alpn)?);
    config.transport_config(Arc::new(transport_config(settings)));
    Ok(config)
}

/// The authenticated site at the other end of an established connection.
pub fn peer_site_name(connection: &quinn::Connection, federation: &Federation) -> Result<String, FederationError> {
    let unauthenticated = || FederationError::Peer("the connection has no authenticated peer certificate".into());
    let identity = connection.peer_identity().ok_or_else(unauthenticated)?;
    let chain = identity.downcast::<Vec<CertificateDer<'static>>>().map_err(|_| unauthenticated())?;
    let leaf = chain.first().ok_or_else(unauthenticated)?;
    listed_site(federation, leaf).map_err(|e| FederationError::Peer(format!("peer refused: {e}")))
}

/// Sizes a live connection's flow-control windows for the link to `peer` (when
/// `settings.size_windows_from_links`): the server cannot know its peer before the
/// handshake, so it applies this once the connection is up.
pub fn tune_for_peer(
    connection: &quinn::Connection,
    federation: &Federation,
    local_site: &str,
    peer: &str,
    settings: &TransportSettings,
) -> TransportSettings {
    let tuned = if settings.size_windows_from_links {
        settings.for_link(federation.link(local_site, peer))
    } else {
        settings.clone()
    };
    tuned.apply_to_connection(connection);
    tuned
}

/// Socket buffer asked for each way. The kernel's default (~208 KiB) overflows within a
/// millisecond at 1 Gbit/s whenever the receiving task is descheduled, and every drop is
/// a retransmission on the wire (measured on the emulated links: 60,000 to 85,000 drops
/// per GiB). As root the kernel's `rmem_max`/`wmem_max` caps are bypassed.
const SOCKET_BUFFER_BYTES: libc::c_int = 16 << 20;

/// Asks for [`SOCKET_BUFFER_BYTES`] of receive and send buffer, forcing past the system cap
/// where allowed; says in the log when the kernel gives less.
fn enlarge_socket_buffers(socket: &std::net::UdpSocket) {
    use std::os::fd::AsRawFd;
    let fd = socket.as_raw_fd();
    for (force, plain, name) in
        [(libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, "receive"), (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, "send")]
    {
        let size = SOCKET_BUFFER_BYTES;
        let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: fd is an open socket owned by `socket` for the duration of the call;
        // the option value points at a live c_int of the given length.
        let forced =
            unsafe { libc::setsockopt(fd, libc::SOL_SOCKET, force, (&size as *const libc::c_int).cast(), len) };
        if forced != 0 {
            // SAFETY: as above.
            unsafe { libc::setsockopt(fd, libc::SOL_SOCKET, plain, (&size as *const libc::c_int).cast(), len) };
        }
        let mut got: libc::c_int = 0;
        let mut got_len = len;
        // SAFETY: as above; `got` and `got_len` are live and sized for the option.
        let read = unsafe {
            libc::getsockopt(fd, libc::SOL_SOCKET, plain, (&mut got as *mut libc::c_int).cast(), &mut got_len)
        };
        // Linux reports twice the usable size (it counts its bookkeeping).
        if read == 0 && got / 2 < size {
            tracing::info!(
                "QUIC socket {name} buffer is {} KiB, not the {} KiB asked for: raise net.core.{}mem_max or run as root",
                got / 2 / 1024,
                size / 1024,
                if name == "receive" { "r" } else { "w" }
            );
        }
    }
}

/// Binds a QUIC endpoint on `listen` that accepts federation peers and dials them (its
/// default client config is this site's).
pub fn bind_endpoint(
    listen: SocketAddr,
    identity: &SiteIdentity,
    federation: Arc<Federation>,
    settings: &TransportSettings,
    alpn: &[&[u8]],
) -> Result<quinn::Endpoint, FederationError> {
    check_own_certificate(identity, &federation)?;
    let server = server_config(identity, federation.clone(), settings, alpn)?;
    let io_error = |e| FederationError::Io { path: format!("QUIC listener {listen}").into(), source: e };
    let socket = std::net::UdpSocket::bind(listen).map_err(io_error)?;
    enlarge_socket_buffers(&socket);
    let runtime = quinn::default_runtime().ok_or_else(|| io_error(std::io::Error::other("no async runtime")))?;
    let mut endpoint =
        quinn::Endpoint::new(quinn::EndpointConfig::default(), Some(server), socket, runtime).map_err(io_error)?;
    endpoint.set_default_client_config(client_config(identity, federation, settings, alpn)?);
    Ok(endpoint)
}

/// A bound endpoint with what it needs to dial peers by site name.
#[derive(Clone)]
pub struct FederationEndpoint {
    /// The QUIC endpoint (server and client).
    pub endpoint: quinn::Endpoint,
    /// The federation it trusts.
    pub federation: Arc<Federation>,
    /// This site's name.
    pub site_name: String,
    /// The configured transport settings (before per-link sizing).
    pub transport: TransportSettings,
    crypto: Arc<quinn::crypto::rustls::QuicClientConfig>,
    /// one client config per protocol served, offering that protocol alone
    crypto_per_protocol: Vec<(Vec<u8>, Arc<quinn::crypto::rustls::QuicClientConfig>)>,
}

impl std::fmt::Debug for FederationEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FederationEndpoint")
            .field("endpoint", &self.endpoint)
            .field("federation", &self.federation.name)
            .field("site_name", &self.site_name)
            .field("transport", &self.transport)
            .finish_non_exhaustive()
    }
}

impl FederationEndpoint {
    /// Loads the site's membership from disk and binds, as [`bind_endpoint`], keeping the
    /// federation and settings for [`Self::connect`]. `alpn` lists the protocols served and
    /// offered, each owner's constant (the transfer protocol names its own).
    pub fn bind(
        site_name: &str,
        settings: &Membership,
        transport: &TransportSettings,
        alpn: &[&[u8]],
    ) -> Result<Self, FederationError> {
        let federation = Arc::new(Federation::load(&settings.file)?);
        let identity = SiteIdentity::load(&settings.tls_dir, site_name)?;
        let ca_copy = settings.tls_dir.join(CA_CERT_FILE);
        if ca_copy.exists() {
            let copy = CertificateDer::from_pem_file(&ca_copy)
                .map_err(|e| FederationError::Invalid(format!("{}: not a PEM certificate: {e}", ca_copy.display())))?;
            if copy != federation.ca_cert {
                return Err(FederationError::Invalid(format!(
                    "{} differs from the CA of federation file {}: one of them is stale; copy both from the \
                     federation's operator",
                    ca_copy.display(),
                    settings.file.display()
                )));
            }
        }
        Self::bind_with(settings.quic_listen, identity, federation, transport, alpn)
    }

    /// Binds with an identity and federation already in memory.
    pub fn bind_with(
        listen: SocketAddr,
        identity: SiteIdentity,
        federation: Arc<Federation>,
        transport: &TransportSettings,
        alpn: &[&[u8]],
    ) -> Result<Self, FederationError> {
        let endpoint = bind_endpoint(listen, &identity, federation.clone(), transport, alpn)?;
        let crypto = quic_client_crypto(&identity, &federation, alpn)?;
        let crypto_per_protocol = alpn
            .iter()
            .map(|p| Ok((p.to_vec(), quic_client_crypto(&identity, &federation, &[p])?)))
            .collect::<Result<_, FederationError>>()?;
        Ok(Self {
            endpoint,
            federation,
            site_name: identity.name,
            transport: transport.clone(),
            crypto,
            crypto_per_protocol,
        })
    }

    /// The transport settings for connections to `peer`: sized for the link when
    /// `size_windows_from_links`, else as configured.
    pub fn settings_for(&self, peer: &str) -> TransportSettings {
        if self.transport.size_windows_from_links {
            self.transport.for_link(self.federation.link(&self.site_name, peer))
        } else {
            self.transport.clone()
        }
    }

    /// Opens one connection to a listed site at its federation-file address, with windows
    /// sized for the link. Open [`TransportSettings::connections_per_peer`] of them (from
    /// [`Self::settings_for`]) to spread streams.
    pub async fn connect(&self, peer: &str) -> Result<quinn::Connection, FederationError> {
        self.connect_to(peer, self.address_of(peer).await?).await
    }

    /// As [`Self::connect`], for one of the protocols this endpoint was bound with alone
    /// (the first one listed is what [`Self::connect`] gets).
    pub async fn connect_for(&self, peer: &str, protocol: &[u8]) -> Result<quinn::Connection, FederationError> {
        let crypto =
            self.crypto_per_protocol.iter().find(|(p, _)| p == protocol).map(|(_, c)| c.clone()).ok_or_else(|| {
                FederationError::Connect {
                    site: peer.to_owned(),
                    reason: format!("protocol {:?} is not served here", String::from_utf8_lossy(protocol)),
                }
            })?;
        self.connect_with_crypto(peer, self.address_of(peer).await?, crypto).await
    }

    /// A listed site's federation-file address, of this endpoint's IP family.
    async fn address_of(&self, peer: &str) -> Result<SocketAddr, FederationError> {
        let failed = |reason: String| FederationError::Connect { site: peer.to_owned(), reason };
        let site =
            self.federation.site(peer).ok_or_else(|| failed("it is not listed in the federation file".into()))?;
        let local = self.endpoint.local_addr().map_err(|e| failed(e.to_string()))?;
        tokio::net::lookup_host(site.quic.as_str())
            .await
            .map_err(|e| failed(format!("cannot resolve {}: {e}", site.quic)))?
            .find(|a| a.is_ipv4() == local.is_ipv4())
            .ok_or_else(|| failed(format!("{} has no address of this endpoint's IP family", site.quic)))
    }

    /// As [`Self::connect`], at an explicit address (the TLS checks are the same).
    pub async fn connect_to(&self, peer: &str, address: SocketAddr) -> Result<quinn::Connection, FederationError> {
        self.connect_with_crypto(peer, address, self.crypto.clone()).await
    }

    async fn connect_with_crypto(
        &self,
        peer: &str,
        address: SocketAddr,
        crypto: Arc<quinn::crypto::rustls::QuicClientConfig>,
    ) -> Result<quinn::Connection, FederationError> {
        let failed = |reason: String| FederationError::Connect { site: peer.to_owned(), reason };
        let mut config = quinn::ClientConfig::new(crypto);
        config.transport_config(Arc::new(transport_config(&self.settings_for(peer))));
        let connecting =
            self.endpoint.connect_with(config, address, &site_dns_name(peer)).map_err(|e| failed(e.to_string()))?;
        connecting.await.map_err(|e| failed(e.to_string()))
    }

    /// The protocol (ALPN) a connection negotiated.
    pub fn protocol_of(connection: &quinn::Connection) -> Option<Vec<u8>> {
        connection.handshake_data()?.downcast::<quinn::crypto::rustls::HandshakeData>().ok()?.protocol
    }

    /// Waits for the next incoming connection, completes its handshake, and returns it with
    /// the authenticated peer's name, its windows sized for the link. None once the endpoint
    /// is closed. A refused handshake is an `Err`: log it and accept again.
    pub async fn accept(&self) -> Option<Result<(quinn::Connection, String), FederationError>> {
        let incoming = self.endpoint.accept().await?;
        let remote = incoming.remote_address();
        Some(
            async {
                let connection = incoming
                    .await
                    .map_err(|e| FederationError::Peer(format!("handshake with {remote} refused: {e}")))?;
                let peer = peer_site_name(&connection, &self.federation)?;
                tune_for_peer(&connection, &self.federation, &self.site_name, &peer, &self.transport);
                Ok((connection, peer))
            }
            .await,
        )
    }
}

/// Checks that our own certificate would pass a peer's checks, so that a misconfigured
/// site fails at start with a message rather than in every handshake.
fn check_own_certificate(identity: &SiteIdentity, federation: &Arc<Federation>) -> Result<(), FederationError> {
    let hint = format!(
        "re-issue it with `clusster site init {}` from the federation that wrote {}",
        identity.name,
        federation.path.as_ref().map_or_else(|| "the federation file".into(), |p| p.display().to_string())
    );
    if federation.site(&identity.name).is_none() {
        return Err(FederationError::Invalid(format!(
            "site {:?} is not listed in the federation file; {hint}",
            identity.name
        )));
    }
    let chain = rustls::client::WebPkiServerVerifier::builder_with_provider(roots(federation)?, provider())
        .build()
        .map_err(|e| FederationError::Invalid(e.to_string()))?;
    let verifier = FederationServerVerifier { chain, federation: federation.clone() };
    let leaf = identity.cert_chain.first().ok_or_else(|| FederationError::Invalid("no certificate".into()))?;
    let name =
        ServerName::try_from(site_dns_name(&identity.name)).map_err(|e| FederationError::Invalid(e.to_string()))?;
    verifier.verify_server_cert(leaf, &identity.cert_chain[1..], &name, &[], UnixTime::now()).map(|_| ()).map_err(|e| {
        FederationError::Invalid(format!("this site's certificate would be refused by peers: {e}; {hint}"))
    })
}

#[cfg(test)]
mod tests;
