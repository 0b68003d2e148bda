//! The S3 listener against clients that hold connections without using them: thousands of
//! idle sockets from one host, a slowloris, a TLS handshake that never ends, while a real
//! client on another address keeps working.

mod common;

use aws_sdk_s3::primitives::ByteStream;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tests::{Daemon, content};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const BIN: &str = env!("CARGO_BIN_EXE_clusster");

/// A connection to `to` from the loopback address `from` (Linux routes all of 127/8 to lo).
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}

/// Waits until the server closes `stream` (end of stream or reset); false if it is still
/// open after `patience`.
async fn closed_by_server(stream: &mut TcpStream, patience: Duration) -> bool {
    let mut buf = [0u8; 512];
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            // A response (408, or an error page) before the close.
            Ok(Ok(_)) => continue,
        }
    }
}

fn s3_address(daemon: &Daemon) -> SocketAddr {
    let url = daemon.s3_url();
    url.trim_start_matches("http://").trim_start_matches("https://").parse().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_sockets_and_a_slowloris_leave_room_for_real_clients() {
    tests::raise_fd_limit(8192);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("clusster.toml");
    // Without the per-address cap, 2,000 idle sockets would take all 1,000 connections.
    std::fs::write(
        &config,
        "[s3]\nheader_read_timeout_ms = 2000\nmax_connections = 1000\nmax_connections_per_ip = 200\n",
    )
    .unwrap();
    let daemon = Daemon::start(BIN, &dir.path().join("site"), &["--config", config.to_str().unwrap()]);
    let address = s3_address(&daemon);

    let mut idle = Vec::new();
    for _ in 0..2000 {
        idle.push(connect_from("127.0.0.2", address).await);
    }
    // A request line, then one byte of a header every 100 ms: its head would never end.
    let slowloris = tokio::spawn(async move {
        let mut stream = connect_from("127.0.0.3", address).await;
        stream.write_all(b"PUT /data/slow HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ").await.unwrap();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(120) {
            if stream.write_all(b"a").await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    });

    // Meanwhile a real client from 127.0.0.1 writes and reads as usual.
    let (id, secret) = daemon.create_key(BIN, "proj");
    let client = common::s3_client(&daemon, &id, &secret);
    client.create_bucket().bucket("data").send().await.unwrap();
    for i in 0..20u64 {
        let body = content(i, 100_000 + i as usize, i);
        let key = format!("k{i}");
        client.put_object().bucket("data").key(&key).body(ByteStream::from(body.clone())).send().await.unwrap();
        let got = client.get_object().bucket("data").key(&key).send().await.unwrap();
        assert_eq!(got.body.collect().await.unwrap().into_bytes(), body, "{key}");
    }

    assert!(slowloris.await.unwrap(), "the slowloris was cut off before it sent its headers");
    // Every idle socket is closed: those over the cap at once, the others after 2 s.
    let mut still_open = 0;
    for stream in &mut idle {
        if !closed_by_server(stream, Duration::from_secs(30)).await {
            still_open += 1;
        }
    }
    assert_eq!(still_open, 0, "idle sockets the server left open");
    // And a keep-alive connection left idle after its request is closed too.
    let mut kept = connect_from("127.0.0.4", address).await;
    kept.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await.unwrap();
    assert!(closed_by_server(&mut kept, Duration::from_secs(30)).await, "an idle keep-alive connection is closed");
    assert!(daemon.stop().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tls_handshake_that_never_ends_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let config = dir.path().join("clusster.toml");
    std::fs::write(&config, format!("[s3]\ntls_cert = {cert:?}\ntls_key = {key:?}\ntls_handshake_timeout_ms = 1000\n"))
        .unwrap();
    let daemon = Daemon::start(BIN, &dir.path().join("site"), &["--config", config.to_str().unwrap()]);
    let address = s3_address(&daemon);
    // Connected, and silent: no ClientHello ever comes.
    let mut silent = connect_from("127.0.0.1", address).await;
    assert!(closed_by_server(&mut silent, Duration::from_secs(30)).await, "the handshake was given up");
    // Half a ClientHello, then silence.
    let mut half = connect_from("127.0.0.1", address).await;
    half.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).await.unwrap();
    assert!(closed_by_server(&mut half, Duration::from_secs(30)).await, "the handshake was given up");
    assert!(daemon.stop().success());
}
