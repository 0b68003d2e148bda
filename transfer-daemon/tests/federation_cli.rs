//! The real `clusster` binary: `federation init` and `site init`, the happy path and every
//! bad input (exit code 2, a message that says what to do, nothing already written lost),
//! and `serve` refusing keys and a data dir others can read.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_clusster");

fn clusster(args: &[&str]) -> Output {
    Command::new(BIN).args(args).env("RUST_LOG", "warn").output().expect("run clusster")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Runs and expects exit code 2 with `message` on stderr.
fn usage_error(args: &[&str], message: &str) {
    let out = clusster(args);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out.stderr));
    assert!(text(&out.stderr).contains(message), "{args:?}: expected {message:?} in: {}", text(&out.stderr));
}

fn federation_init(dir: &Path) {
    let out = clusster(&["federation", "init", "--dir", path(dir), "--name", "eu-research", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["federation"], "eu-research");
}

#[test]
fn federation_of_two_sites_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let fed = dir.path().join("fed");
    federation_init(&fed);
    assert_eq!(mode(&fed.join("ca.key")), 0o600, "the CA key is private");
    let file = std::fs::read_to_string(fed.join("federation.toml")).unwrap();
    assert!(file.contains("name = \"eu-research\"") && file.contains("# The link table"), "{file}");

    let paris = dir.path().join("paris");
    let out = clusster(&[
        "site",
        "init",
        "paris",
        "--federation",
        path(&fed),
        "--out",
        path(&paris),
        "--quic",
        "transfer.paris.example.org:7444",
        "--s3",
        "https://s3.paris.example.org",
        "--attr",
        "country=fr",
        "--attr",
        "tier=hpc",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("listed in"), "{}", text(&out.stdout));
    for (name, private) in [("site.key", true), ("signing.key", true), ("site.pem", false), ("ca.pem", false)] {
        let file = paris.join(name);
        assert!(file.exists(), "{name}");
        assert_eq!(mode(&file) == 0o600, private, "{name} mode {:o}", mode(&file));
    }
    assert_eq!(std::fs::read(paris.join("ca.pem")).unwrap(), std::fs::read(fed.join("ca.pem")).unwrap());

    // The second site by federation file path, with --json.
    let julich = dir.path().join("julich");
    let out = clusster(&[
        "site",
        "init",
        "julich",
        "--federation",
        path(&fed.join("federation.toml")),
        "--out",
        path(&julich),
        "--attr",
        "country=de",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["federation_updated"], true);
    let signing = report["signing_public_key"].as_str().unwrap().to_owned();
    assert!(signing.starts_with("ed25519:") && signing.len() == 8 + 64, "{signing}");

    let file = std::fs::read_to_string(fed.join("federation.toml")).unwrap();
    assert!(file.contains("# The federation's name."), "comments survive the updates");
    assert!(file.contains("transfer.paris.example.org:7444") && file.contains("tier = \"hpc\""), "{file}");
    assert!(file.contains(&signing), "{file}");
    assert_eq!(file.lines().filter(|l| *l == "[[site]]").count(), 2, "{file}");

    // Re-issuing with --force replaces the keys and keeps one entry, updated in place.
    let old_key = std::fs::read(paris.join("site.key")).unwrap();
    let out = clusster(&[
        "site",
        "init",
        "paris",
        "--federation",
        path(&fed),
        "--out",
        path(&paris),
        "--force",
        "--quic",
        "transfer2.paris.example.org:7444",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_ne!(std::fs::read(paris.join("site.key")).unwrap(), old_key);
    assert_eq!(mode(&paris.join("site.key")), 0o600);
    let file = std::fs::read_to_string(fed.join("federation.toml")).unwrap();
    assert_eq!(file.lines().filter(|l| *l == "[[site]]").count(), 2, "{file}");
    let settings: Vec<&str> = file.lines().filter(|l| !l.starts_with('#')).collect();
    assert!(settings.contains(&"quic = \"transfer2.paris.example.org:7444\""), "{file}");
    assert!(!settings.iter().any(|l| l.contains("transfer.paris")), "the old address is gone: {file}");
    assert!(file.contains("country = \"fr\""), "attributes kept: {file}");
}

#[test]
fn bad_input_exits_2_and_keeps_what_exists() {
    let dir = tempfile::tempdir().unwrap();
    let fed = dir.path().join("fed");
    federation_init(&fed);
    let ca_key = std::fs::read(fed.join("ca.key")).unwrap();

    // federation init over an existing CA.
    usage_error(&["federation", "init", "--dir", path(&fed), "--name", "other"], "exists already; pass --force");
    assert_eq!(std::fs::read(fed.join("ca.key")).unwrap(), ca_key, "the CA key is untouched");
    usage_error(
        &["federation", "init", "--dir", path(&dir.path().join("x")), "--name", "bad name!"],
        "federation name \"bad name!\"",
    );

    let out_dir = dir.path().join("site");
    let out = path(&out_dir);
    let fed_dir = path(&fed);
    usage_error(&["site", "init", "1paris", "--federation", fed_dir, "--out", out], "must start with a letter");
    usage_error(&["site", "init", "Paris", "--federation", fed_dir, "--out", out], "lowercase");
    usage_error(
        &["site", "init", "paris", "--federation", fed_dir, "--out", out, "--attr", "country"],
        "not KEY=VALUE",
    );
    usage_error(&["site", "init", "paris", "--federation", fed_dir, "--out", out, "--quic", "paris"], "--quic");
    usage_error(&["site", "init", "paris", "--federation", fed_dir, "--out", out, "--s3", "paris"], "--s3");
    assert!(!out_dir.exists(), "nothing written for refused input");

    // No CA key next to the federation file.
    let copy = dir.path().join("copy");
    std::fs::create_dir_all(&copy).unwrap();
    for name in ["federation.toml", "ca.pem"] {
        std::fs::copy(fed.join(name), copy.join(name)).unwrap();
    }
    usage_error(&["site", "init", "paris", "--federation", path(&copy), "--out", out], "ca.key is missing");
    usage_error(
        &["site", "init", "paris", "--federation", path(&dir.path().join("nowhere")), "--out", out],
        "federation init",
    );

    // An existing site key without --force.
    let first = clusster(&["site", "init", "paris", "--federation", fed_dir, "--out", out]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    let key = std::fs::read(out_dir.join("site.key")).unwrap();
    let federation_file = std::fs::read(fed.join("federation.toml")).unwrap();
    usage_error(&["site", "init", "paris", "--federation", fed_dir, "--out", out], "site.key exists already");
    assert_eq!(std::fs::read(out_dir.join("site.key")).unwrap(), key, "the site key is untouched");
    assert_eq!(std::fs::read(fed.join("federation.toml")).unwrap(), federation_file, "the file is untouched");

    // A broken federation file names the field.
    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, String::from_utf8(federation_file).unwrap().replace("ca_cert", "ca_certificate")).unwrap();
    std::fs::copy(fed.join("ca.key"), dir.path().join("ca.key")).unwrap();
    usage_error(
        &["site", "init", "rome", "--federation", path(&broken), "--out", path(&dir.path().join("rome"))],
        "ca_certificate",
    );

    // Usage mistakes clap catches are exit 2 as well.
    usage_error(&["site", "init", "paris", "--out", out], "--federation");
}

#[test]
fn a_read_only_federation_file_gets_the_entry_printed() {
    let dir = tempfile::tempdir().unwrap();
    let fed = dir.path().join("fed");
    federation_init(&fed);
    let file = fed.join("federation.toml");
    let before = std::fs::read(&file).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o444)).unwrap();
    let site = dir.path().join("rome");
    let out = clusster(&[
        "site",
        "init",
        "rome",
        "--federation",
        path(&fed),
        "--out",
        path(&site),
        "--quic",
        "rome.example.org:7444",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("read-only") && stdout.contains("[[site]]"), "{stdout}");
    assert!(stdout.contains("name = \"rome\"") && stdout.contains("quic = \"rome.example.org:7444\""), "{stdout}");
    assert_eq!(std::fs::read(&file).unwrap(), before, "the read-only file is untouched");
    assert!(site.join("site.key").exists());
}

#[test]
fn serve_refuses_secrets_that_group_or_others_can_read() {
    let dir = tempfile::tempdir().unwrap();
    let fed = dir.path().join("fed");
    federation_init(&fed);
    let site = dir.path().join("sites/paris");
    let tls = site.join("tls");
    let out =
        clusster(&["site", "init", "paris", "--federation", path(&fed), "--out", path(&tls), "--quic", "127.0.0.1:1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(mode(&tls), 0o700, "the key directory is the owner's");
    assert_eq!(mode(&site), 0o700, "and so are the directories made for it");
    let config = site.join("clusster.toml");
    let federation = fed.join("federation.toml");
    std::fs::write(
        &config,
        format!("[site]\nname = \"paris\"\ndata_dir = \".\"\n\n[federation]\nfile = {:?}\ntls_dir = \"tls\"\nquic_listen = \"127.0.0.1:0\"\n", path(&federation)),
    )
    .unwrap();
    let serve = || {
        clusster(&["serve", "--config", path(&config), "--admin-listen", "127.0.0.1:0", "--s3-listen", "127.0.0.1:0"])
    };
    let refused = |what: &str, fix: &str| {
        let out = serve();
        assert_eq!(out.status.code(), Some(2), "{what}: {}", text(&out.stderr));
        let stderr = text(&out.stderr);
        assert!(stderr.contains(what) && stderr.contains("open to group or others"), "{stderr}");
        assert!(stderr.contains(&format!("chmod {fix}")), "the fix is named: {stderr}");
    };
    let chmod = |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();

    chmod(&site, 0o755);
    refused("the data dir", "700");
    chmod(&site, 0o700);
    chmod(&tls.join("site.key"), 0o640);
    refused("the site's TLS key", "600");
    chmod(&tls.join("site.key"), 0o600);
    chmod(&tls.join("signing.key"), 0o604);
    refused("the site's signing key", "600");
    chmod(&tls.join("signing.key"), 0o600);
    std::fs::write(site.join("admin.token"), "0123\n").unwrap();
    chmod(&site.join("admin.token"), 0o644);
    refused("the admin token", "600");
    assert_eq!(std::fs::read_to_string(site.join("admin.token")).unwrap(), "0123\n", "nothing was changed");

    // A data dir serve creates is the owner's alone.
    std::fs::create_dir_all(dir.path().join("made")).unwrap();
    let daemon = tests::Daemon::start(BIN, &dir.path().join("made/site"), &[]);
    assert_eq!(mode(&dir.path().join("made/site")), 0o700);
    assert_eq!(mode(&dir.path().join("made/site/admin.token")), 0o600);
    assert!(daemon.stop().success());
}
