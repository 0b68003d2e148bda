//! Real quinn endpoints on 127.0.0.1 with certificates made by `identity`.

use super::*;
use crate::file::{SiteEntry, upsert_site};
use crate::identity::{init_federation, init_site};
use std::path::Path;
use std::time::Duration;
use tokio::time::timeout;

/// Bounds every network wait: a refused handshake must end, never hang the suite.
const WAIT: Duration = Duration::from_secs(10);

/// The protocol these endpoints speak: the federation crate takes it from its caller.
const ALPN: &[u8] = b"clusster-test/1";

fn entry(quic: &str) -> SiteEntry {
    SiteEntry { quic: Some(quic.into()), ..SiteEntry::default() }
}

/// A federation named `name` in `dir` with the given sites; returns it as loaded after
/// all of them were added.
fn federation_with(dir: &Path, name: &str, sites: &[&str]) -> Arc<Federation> {
    init_federation(dir, name, false).unwrap();
    for site in sites {
        init_site(dir, site, &dir.join(site), entry("127.0.0.1:1"), false).unwrap();
    }
    Arc::new(Federation::load(&dir.join("federation.toml")).unwrap())
}

fn identity(dir: &Path, site: &str) -> SiteIdentity {
    SiteIdentity::load(&dir.join(site), site).unwrap()
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn bind(identity: SiteIdentity, federation: &Arc<Federation>) -> FederationEndpoint {
    FederationEndpoint::bind_with(loopback(), identity, federation.clone(), &TransportSettings::default(), &[ALPN])
        .unwrap()
}

/// Accepts one connection, echoes `hello <peer>: <request>` on its first stream, and
/// returns the peer name (or the handshake error).
async fn serve_one(server: FederationEndpoint) -> Result<String, FederationError> {
    let (connection, peer) = server.accept().await.expect("endpoint open")?;
    let (mut send, mut recv) = connection.accept_bi().await.map_err(|e| FederationError::Peer(e.to_string()))?;
    let request = recv.read_to_end(1024).await.map_err(|e| FederationError::Peer(e.to_string()))?;
    let reply = format!("hello {peer}: {}", String::from_utf8_lossy(&request));
    send.write_all(reply.as_bytes()).await.map_err(|e| FederationError::Peer(e.to_string()))?;
    send.finish().map_err(|e| FederationError::Peer(e.to_string()))?;
    connection.closed().await;
    Ok(peer)
}

/// Sends `request` on a new stream and reads the reply.
async fn exchange(connection: &quinn::Connection, request: &str) -> Result<String, String> {
    let (mut send, mut recv) = connection.open_bi().await.map_err(|e| e.to_string())?;
    send.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
    send.finish().map_err(|e| e.to_string())?;
    let reply = recv.read_to_end(1024).await.map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&reply).into_owned())
}

/// Dials `server` as `client` and expects the handshake or the first exchange to fail,
/// and the server to refuse the handshake. Returns (client error, server error).
async fn expect_refused(client: &FederationEndpoint, target: &str, server: FederationEndpoint) -> (String, String) {
    let address = server.endpoint.local_addr().unwrap();
    let served = tokio::spawn(serve_one(server));
    let client_error = match timeout(WAIT, client.connect_to(target, address)).await.expect("connect hung") {
        // With TLS 1.3 the client may finish its side before the server has checked the
        // client certificate; the refusal then arrives as a close before any stream.
        Ok(connection) => timeout(WAIT, exchange(&connection, "ping")).await.expect("exchange hung").unwrap_err(),
        Err(e) => e.to_string(),
    };
    let server_error = timeout(WAIT, served).await.expect("server hung").unwrap().unwrap_err().to_string();
    (client_error, server_error)
}

#[tokio::test]
async fn two_sites_connect_both_ways_and_name_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let federation = federation_with(dir.path(), "eu", &["paris", "julich"]);
    let paris = bind(identity(dir.path(), "paris"), &federation);
    let julich = bind(identity(dir.path(), "julich"), &federation);

    for (client, server, server_name) in [(&paris, &julich, "julich"), (&julich, &paris, "paris")] {
        let served = tokio::spawn(serve_one(server.clone()));
        let address = server.endpoint.local_addr().unwrap();
        let connection = timeout(WAIT, client.connect_to(server_name, address)).await.unwrap().unwrap();
        assert_eq!(peer_site_name(&connection, &federation).unwrap(), server_name);
        assert_eq!(
            connection
                .handshake_data()
                .unwrap()
                .downcast::<quinn::crypto::rustls::HandshakeData>()
                .unwrap()
                .protocol
                .unwrap(),
            ALPN
        );
        let reply = timeout(WAIT, exchange(&connection, "ping")).await.unwrap().unwrap();
        assert_eq!(reply, format!("hello {}: ping", client.site_name));
        connection.close(0u32.into(), b"done");
        assert_eq!(timeout(WAIT, served).await.unwrap().unwrap().unwrap(), client.site_name);
    }
}

#[tokio::test]
async fn connect_dials_the_address_in_the_federation_file() {
    let dir = tempfile::tempdir().unwrap();
    let federation = federation_with(dir.path(), "eu", &["paris", "julich"]);
    let julich = bind(identity(dir.path(), "julich"), &federation);
    // Point julich's entry at where it really listens.
    let text = std::fs::read_to_string(dir.path().join("federation.toml")).unwrap();
    let mut moved = entry(&julich.endpoint.local_addr().unwrap().to_string());
    moved.name = "julich".into();
    moved.signing_key = federation.site("julich").unwrap().signing_key;
    moved.tls_key = federation.site("julich").unwrap().tls_key;
    let federation = Arc::new(Federation::parse(&upsert_site(&text, dir.path(), &moved).unwrap(), dir.path()).unwrap());
    let paris = bind(identity(dir.path(), "paris"), &federation);

    let served = tokio::spawn(serve_one(julich));
    let connection = timeout(WAIT, paris.connect("julich")).await.unwrap().unwrap();
    assert_eq!(timeout(WAIT, exchange(&connection, "by name")).await.unwrap().unwrap(), "hello paris: by name");
    connection.close(0u32.into(), b"done");
    timeout(WAIT, served).await.unwrap().unwrap().unwrap();

    let unknown = paris.connect("mars").await.unwrap_err().to_string();
    assert!(unknown.contains("not listed"), "{unknown}");
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused_by_server_and_client() {
    let ours = tempfile::tempdir().unwrap();
    let theirs = tempfile::tempdir().unwrap();
    let federation = federation_with(ours.path(), "eu", &["paris", "julich"]);
    // Same federation name, same site name, different CA key.
    federation_with(theirs.path(), "eu", &["julich"]);
    let paris = bind(identity(ours.path(), "paris"), &federation);
    // The impostor trusts our federation file, so only the CA differs.
    let impostor_identity = identity(theirs.path(), "julich");

    // The impostor dials paris: the server refuses.
    let impostor = FederationEndpoint {
        endpoint: quinn::Endpoint::client(loopback()).unwrap(),
        federation: federation.clone(),
        site_name: "julich".into(),
        transport: TransportSettings::default(),
        crypto: quic_client_crypto(&impostor_identity, &federation, &[ALPN]).unwrap(),
        crypto_per_protocol: Vec::new(),
    };
    let (client_error, server_error) = expect_refused(&impostor, "paris", paris.clone()).await;
    // Same issuer name as our CA, so webpki finds the issuer and the signature fails.
    let forged = |e: &str| e.contains("BadSignature") || e.contains("UnknownIssuer");
    assert!(server_error.contains("refused") && forged(&server_error), "server: {server_error}");
    assert!(!client_error.is_empty());

    // Paris dials the impostor: the client refuses.
    let impostor_server = quinn::Endpoint::server(
        server_config(&impostor_identity, federation.clone(), &TransportSettings::default(), &[ALPN]).unwrap(),
        loopback(),
    )
    .unwrap();
    let address = impostor_server.local_addr().unwrap();
    let accepting = tokio::spawn(async move { impostor_server.accept().await.unwrap().await.map(|_| ()) });
    let error = timeout(WAIT, paris.connect_to("julich", address)).await.unwrap().unwrap_err().to_string();
    assert!(forged(&error), "client: {error}");
    assert!(timeout(WAIT, accepting).await.unwrap().unwrap().is_err());
}

#[tokio::test]
async fn an_old_identity_signed_by_the_ca_is_refused_once_the_site_is_reissued() {
    let dir = tempfile::tempdir().unwrap();
    federation_with(dir.path(), "eu", &["paris", "julich"]);
    // Julich's first identity, kept (stolen, or left on an old host) before a re-issue.
    let old_julich = identity(dir.path(), "julich");
    init_site(dir.path(), "julich", &dir.path().join("julich"), entry("127.0.0.1:1"), true).unwrap();
    let federation = Arc::new(Federation::load(&dir.path().join("federation.toml")).unwrap());
    let paris = bind(identity(dir.path(), "paris"), &federation);

    // The old identity dials paris: the CA signed it for "julich", but the key is not pinned.
    let impostor = FederationEndpoint {
        endpoint: quinn::Endpoint::client(loopback()).unwrap(),
        federation: federation.clone(),
        site_name: "julich".into(),
        transport: TransportSettings::default(),
        crypto: quic_client_crypto(&old_julich, &federation, &[ALPN]).unwrap(),
        crypto_per_protocol: Vec::new(),
    };
    let (_, server_error) = expect_refused(&impostor, "paris", paris.clone()).await;
    assert!(server_error.contains("not the one the federation file pins"), "server: {server_error}");

    // Paris dials "julich" and the old identity answers: the client refuses it.
    let old_server = quinn::Endpoint::server(
        server_config(&old_julich, federation.clone(), &TransportSettings::default(), &[ALPN]).unwrap(),
        loopback(),
    )
    .unwrap();
    let address = old_server.local_addr().unwrap();
    let accepting = tokio::spawn(async move { old_server.accept().await.unwrap().await.map(|_| ()) });
    let error = timeout(WAIT, paris.connect_to("julich", address)).await.unwrap().unwrap_err().to_string();
    assert!(error.contains("not the one the federation file pins"), "{error}");
    assert!(timeout(WAIT, accepting).await.unwrap().unwrap().is_err());

    // A site started with its old identity stops at once with the reason.
    let early = FederationEndpoint::bind_with(
        loopback(),
        old_julich,
        federation.clone(),
        &TransportSettings::default(),
        &[ALPN],
    );
    let early = early.unwrap_err().to_string();
    assert!(early.contains("would be refused by peers") && early.contains("pins"), "{early}");
    // The new identity is accepted.
    let julich = bind(identity(dir.path(), "julich"), &federation);
    let served = tokio::spawn(serve_one(julich.clone()));
    let connection =
        timeout(WAIT, paris.connect_to("julich", julich.endpoint.local_addr().unwrap())).await.unwrap().unwrap();
    assert_eq!(timeout(WAIT, exchange(&connection, "new")).await.unwrap().unwrap(), "hello paris: new");
    connection.close(0u32.into(), b"done");
    timeout(WAIT, served).await.unwrap().unwrap().unwrap();
}

#[tokio::test]
async fn a_site_missing_from_the_federation_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let federation = federation_with(dir.path(), "eu", &["paris", "julich"]);
    // Signed by the right CA, but issued after the copy of the file the sites hold.
    init_site(dir.path(), "mallory", &dir.path().join("mallory"), entry("127.0.0.1:1"), false).unwrap();
    let mallory_identity = identity(dir.path(), "mallory");
    let paris = bind(identity(dir.path(), "paris"), &federation);

    let mallory = FederationEndpoint {
        endpoint: quinn::Endpoint::client(loopback()).unwrap(),
        federation: federation.clone(),
        site_name: "mallory".into(),
        transport: TransportSettings::default(),
        crypto: quic_client_crypto(&mallory_identity, &federation, &[ALPN]).unwrap(),
        crypto_per_protocol: Vec::new(),
    };
    let (_, server_error) = expect_refused(&mallory, "paris", paris.clone()).await;
    assert!(server_error.contains("names no site listed"), "server: {server_error}");

    // And a client will not dial a site the file does not list, whoever answers.
    let julich = bind(identity(dir.path(), "julich"), &federation);
    let address = julich.endpoint.local_addr().unwrap();
    let accepting = tokio::spawn(serve_one(julich));
    let error = timeout(WAIT, paris.connect_to("mallory", address)).await.unwrap().unwrap_err().to_string();
    assert!(error.contains("site \"mallory\" is not listed"), "{error}");
    assert!(timeout(WAIT, accepting).await.unwrap().unwrap().is_err());
    // Binding as an unlisted site fails early with the fix.
    let early =
        FederationEndpoint::bind_with(loopback(), mallory_identity, federation, &TransportSettings::default(), &[ALPN]);
    assert!(early.unwrap_err().to_string().contains("not listed"));
}

#[tokio::test]
async fn a_client_offering_a_wrong_alpn_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let federation = federation_with(dir.path(), "eu", &["paris", "julich"]);
    let paris = bind(identity(dir.path(), "paris"), &federation);
    let julich_identity = identity(dir.path(), "julich");

    for offered in [vec![b"clusster-test/0".to_vec()], vec![b"h3".to_vec()], vec![]] {
        let mut tls = rustls_client_config(&julich_identity, &federation, &[ALPN]).unwrap();
        tls.alpn_protocols = offered.clone();
        let crypto = Arc::new(quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap());
        let client = FederationEndpoint {
            endpoint: quinn::Endpoint::client(loopback()).unwrap(),
            federation: federation.clone(),
            site_name: "julich".into(),
            transport: TransportSettings::default(),
            crypto,
            crypto_per_protocol: Vec::new(),
        };
        let (client_error, server_error) = expect_refused(&client, "paris", paris.clone()).await;
        assert!(server_error.contains("refused"), "{offered:?} server: {server_error}");
        assert!(
            client_error.contains("no_application_protocol") || client_error.contains("120"),
            "{offered:?} client: {client_error}"
        );
    }
}

#[tokio::test]
async fn the_client_refuses_a_server_that_is_not_the_site_it_dialled() {
    let dir = tempfile::tempdir().unwrap();
    let federation = federation_with(dir.path(), "eu", &["paris", "julich", "bologna"]);
    let paris = bind(identity(dir.path(), "paris"), &federation);
    let julich = bind(identity(dir.path(), "julich"), &federation);
    let address = julich.endpoint.local_addr().unwrap();
    let accepting = tokio::spawn(serve_one(julich));
    // Paris wants bologna but reaches julich (a stale address, or julich posing).
    let error = timeout(WAIT, paris.connect_to("bologna", address)).await.unwrap().unwrap_err().to_string();
    assert!(error.contains("not valid for name \"bologna.site.clusster\""), "{error}");
    assert!(timeout(WAIT, accepting).await.unwrap().unwrap().is_err());
}

#[tokio::test]
async fn the_server_tunes_windows_for_the_link_to_its_peer() {
    let dir = tempfile::tempdir().unwrap();
    federation_with(dir.path(), "eu", &["paris", "julich"]);
    let path = dir.path().join("federation.toml");
    let text = std::fs::read_to_string(&path).unwrap()
        + "\n[[link]]\na = \"paris\"\nb = \"julich\"\nbandwidth_mbps = 10000\nrtt_ms = 100\n";
    let federation = Arc::new(Federation::parse(&text, dir.path()).unwrap());
    let paris = bind(identity(dir.path(), "paris"), &federation);
    let julich = bind(identity(dir.path(), "julich"), &federation);
    assert_eq!(paris.settings_for("julich").receive_window_bytes, 250_000_000);
    assert_eq!(paris.settings_for("nowhere").receive_window_bytes, TransportSettings::default().receive_window_bytes);

    let address = julich.endpoint.local_addr().unwrap();
    let served = tokio::spawn(serve_one(julich));
    let connection = timeout(WAIT, paris.connect_to("julich", address)).await.unwrap().unwrap();
    assert_eq!(timeout(WAIT, exchange(&connection, "fat")).await.unwrap().unwrap(), "hello paris: fat");
    connection.close(0u32.into(), b"done");
    timeout(WAIT, served).await.unwrap().unwrap().unwrap();
}
