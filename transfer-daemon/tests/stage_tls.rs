//! Staging from a compute node over HTTPS: the admin routes' TLS listener
//! (`[admin] tls_listen`), its certificate checked against the CA the client is given.
//! A client that does not trust it, or speaks plain HTTP to it, gets nowhere (its token is
//! never sent) and is told why.

use std::path::{Path, PathBuf};
use std::process::Command;
use tests::{Daemon, content, tree, write_file};

const BIN: &str = env!("CARGO_BIN_EXE_clusster");

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").current_dir(dir).args(args).output().expect("run openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA named `name` and a certificate it signs for 127.0.0.1, as PEM files in `dir`:
/// the CA's certificate, then the site's certificate and key.
fn ca_and_site(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let file = |what: &str| format!("{name}-{what}");
    let subject = format!("/CN={name} test CA");
    let (ca_key, ca_pem, csr, ext) = (file("ca.key"), file("ca.pem"), file("site.csr"), file("site.ext"));
    let (site_key, site_pem) = (file("site.key"), file("site.pem"));
    let new_key = ["-newkey", "rsa:2048", "-nodes"];
    openssl(
        dir,
        &[&["req", "-x509"][..], &new_key, &["-days", "1", "-subj", &subject, "-keyout", &ca_key, "-out", &ca_pem]]
            .concat(),
    );
    openssl(dir, &[&["req"][..], &new_key, &["-subj", "/CN=localhost", "-keyout", &site_key, "-out", &csr]].concat());
    std::fs::write(dir.join(&ext), "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n").unwrap();
    let sign = ["x509", "-req", "-in", &csr, "-CA", &ca_pem, "-CAkey", &ca_key, "-CAcreateserial", "-days", "1"];
    openssl(dir, &[&sign[..], &["-extfile", &ext, "-out", &site_pem]].concat());
    (dir.join(ca_pem), dir.join(site_pem), dir.join(site_key))
}

/// Runs `clusster ARGS` as a job would, with `ca` as its CA file if any; exit code, stderr.
fn stage(endpoint: &str, token: &str, home: &Path, ca: Option<&Path>, args: &[&str]) -> (Option<i32>, String) {
    let mut command = tests::job_command(BIN, endpoint, token, home);
    if let Some(ca) = ca {
        command.env("CLUSSTER_CA_FILE", ca);
    }
    let out = command.args(args).output().expect("run clusster");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_job_stages_over_https_with_the_sites_ca_and_gets_nowhere_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = ca_and_site(dir.path(), "site");
    let config = dir.path().join("clusster.toml");
    let settings = format!("[admin]\ntls_listen = \"127.0.0.1:0\"\ntls_cert = {cert:?}\ntls_key = {key:?}\n");
    std::fs::write(&config, settings).unwrap();
    let daemon = Daemon::start(BIN, &dir.path().join("site"), &["--config", config.to_str().unwrap()]);
    let https = daemon.listeners["admin_tls"].as_str().expect("the TLS listener is reported").to_owned();
    assert!(https.starts_with("https://127.0.0.1:"), "{https}");
    let token = daemon.create_token(BIN, "climate", &["stage"]);
    let home = dir.path().join("home");

    let src = dir.path().join("src");
    write_file(&src.join("a.bin"), &content(1, 300_000, 1), 1_700_000_000_001);
    write_file(&src.join("b/c.txt"), b"over TLS\n", 1_700_000_000_002);
    let (s, dest) = (src.to_str().unwrap(), dir.path().join("dest"));
    let (code, err) = stage(&https, &token, &home, Some(&ca), &["stage-out", s, "local.jobs/run", "--tag", "v1"]);
    assert_eq!(code, Some(0), "{err}");
    let args = ["stage-in", "local.jobs/run@v1", dest.to_str().unwrap(), "--job", "7"];
    let (code, err) = stage(&https, &token, &home, Some(&ca), &args);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(tree(&dest), tree(&src), "byte for byte, with the mtimes");

    // Another CA, or the system's (no CA named): the site's certificate is not trusted.
    let elsewhere = dir.path().join("elsewhere");
    let (other, _, _) = ca_and_site(dir.path(), "other");
    for ca in [Some(other.as_path()), None] {
        let args = ["stage-in", "local.jobs/run@v1", elsewhere.to_str().unwrap(), "--job", "8"];
        let (code, err) = stage(&https, &token, &home, ca, &args);
        assert_eq!(code, Some(6), "{ca:?}: {err}");
        assert!(err.contains("certificate") || err.contains("UnknownIssuer"), "{ca:?}: {err}");
    }
    // A CA file that holds no certificate: a usage error, said as such.
    let (code, err) = stage(&https, &token, &home, Some(&key), &["stage-out", s, "local.jobs/run"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("CA file") && err.contains("--ca-file"), "{err}");
    // Plain HTTP to the TLS listener.
    let plain = https.replace("https://", "http://");
    let (code, err) = stage(&plain, &token, &home, None, &["stage-out", s, "local.jobs/run"]);
    assert_eq!(code, Some(6), "{err}");
    assert!(!elsewhere.exists() || tree(&elsewhere).is_empty(), "nothing staged in from an untrusted site");
    assert!(daemon.stop().success());
}
