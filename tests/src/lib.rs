//! Helpers shared by the cross-crate integration tests: deterministic data, and the
//! real `clusster` binary started as a daemon.
//!
//! - [`content`]: reproducible object bytes from a seed;
//! - [`Daemon`]: a `clusster serve` child process on loopback ports, stopped on drop
//!   (used by the binary's tests in `transfer-daemon/tests/`);
//! - [`Federation`]: several sites of one federation on loopback (CA, identities,
//!   configs), started as daemons;
//! - [`presign_url`], [`sig_v2`]: request signatures made by hand, for the cases the SDK
//!   refuses to make (presigned URLs past 7 days, SigV2);
//! - [`raise_fd_limit`]: room for tests that open thousands of sockets.

use rand::{RngCore, SeedableRng};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Reproducible bytes: `size` bytes from `seed`, the first 8 replaced by `marker` so
/// that objects from one seed share all chunks but the first.
pub fn content(seed: u64, size: usize, marker: u64) -> Vec<u8> {
    let mut data = vec![0u8; size];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut data);
    let m = marker.to_le_bytes();
    let n = size.min(8);
    data[..n].copy_from_slice(&m[..n]);
    data
}

/// A running `clusster serve`.
pub struct Daemon {
    /// the child process
    pub child: Child,
    /// its data dir
    pub data_dir: PathBuf,
    /// the listeners it reported, as printed on startup
    pub listeners: serde_json::Value,
}

impl Daemon {
    /// Starts `bin` (the `clusster` binary: `env!("CARGO_BIN_EXE_clusster")` in the
    /// daemon's own tests, so cargo rebuilds it first) on `data_dir` with every listener
    /// on a free loopback port, and waits for the line it prints once all are bound.
    /// A `data_dir` that exists (a test's temporary directory: 0755 under the usual umask)
    /// is made the owner's alone first, as `serve` requires of it.
    pub fn start(bin: &str, data_dir: &Path, extra_args: &[&str]) -> Self {
        use std::os::unix::fs::PermissionsExt;
        if data_dir.is_dir() {
            std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700)).expect("chmod the data dir");
        }
        // Free loopback ports unless the caller chose a listener itself.
        let defaults = ["--admin-listen", "--s3-listen"].into_iter().filter(|flag| !extra_args.contains(flag));
        let mut child = Command::new(bin)
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(defaults.flat_map(|flag| [flag, "127.0.0.1:0"]))
            .args(extra_args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn clusster serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut reader = BufReader::new(stdout);
        reader.read_line(&mut line).expect("read the daemon's startup line");
        assert!(Instant::now() < deadline, "daemon took over a minute to start");
        let listeners: serde_json::Value =
            serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("startup line {line:?} is not JSON: {e}"));
        Self { child, data_dir: data_dir.to_path_buf(), listeners }
    }

    /// The admin listener's base URL.
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.listeners["admin"].as_str().expect("admin address"))
    }

    /// The S3 endpoint URL.
    pub fn s3_url(&self) -> String {
        self.listeners["s3"].as_str().expect("s3 address").to_owned()
    }

    /// Creates an access key for `project` with the CLI; returns (id, secret).
    pub fn create_key(&self, bin: &str, project: &str) -> (String, String) {
        let out = Command::new(bin)
            .args(["key", "create", "--project", project, "--json", "--data-dir"])
            .arg(&self.data_dir)
            .output()
            .expect("run clusster key create");
        assert!(out.status.success(), "key create: {}", String::from_utf8_lossy(&out.stderr));
        let key: serde_json::Value = serde_json::from_slice(&out.stdout).expect("key create --json prints JSON");
        (key["access_key_id"].as_str().unwrap().to_owned(), key["secret_access_key"].as_str().unwrap().to_owned())
    }

    /// Creates a bearer token of `project` with `scopes` with the CLI; returns it.
    pub fn create_token(&self, bin: &str, project: &str, scopes: &[&str]) -> String {
        let out = Command::new(bin)
            .args(["token", "create", "--project", project, "--json", "--data-dir"])
            .arg(&self.data_dir)
            .args(scopes.iter().flat_map(|scope| ["--scope", scope]))
            .output()
            .expect("run clusster token create");
        assert!(out.status.success(), "token create: {}", String::from_utf8_lossy(&out.stderr));
        let created: serde_json::Value = serde_json::from_slice(&out.stdout).expect("token create --json prints JSON");
        created["token"].as_str().unwrap().to_owned()
    }

    /// Sends SIGTERM and waits for a clean exit; returns the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id() as i32;
        // SAFETY: kill(2) with a pid we own and a valid signal has no memory effects.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the daemon") {
                return status;
            }
            assert!(Instant::now() < deadline, "daemon did not stop within 30 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A federation of sites in one directory: its CA and federation file, and for each site
/// its identity and a config on free loopback ports, made with the real CLI.
pub struct Federation {
    bin: String,
    root: PathBuf,
}

impl Federation {
    /// Makes the federation under `root`: `sites` are (name, attributes as `KEY=VALUE`);
    /// `transfer_settings` (TOML lines) go into each site's `[transfer]`.
    pub fn new(bin: &str, root: &Path, sites: &[(&str, &[&str])], transfer_settings: &str) -> Self {
        let run = |args: &[&str]| {
            let out = Command::new(bin).args(args).env("RUST_LOG", "warn").output().expect("run clusster");
            assert!(out.status.success(), "clusster {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        let fed = root.join("federation");
        run(&["federation", "init", "--dir", fed.to_str().unwrap(), "--name", "test"]);
        for (name, attributes) in sites {
            // A free UDP port on loopback (bound then released).
            let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let dir = root.join(name);
            let (tls, quic) = (dir.join("tls"), format!("127.0.0.1:{port}"));
            let mut args =
                vec!["site", "init", name, "--federation", fed.to_str().unwrap(), "--out", tls.to_str().unwrap()];
            args.extend(["--quic", &quic]);
            for attribute in *attributes {
                args.extend(["--attr", attribute]);
            }
            run(&args);
            let config = format!(
                "[site]\nname = \"{name}\"\n\n[federation]\nfile = \"{}\"\ntls_dir = \"{}\"\nquic_listen = \"{quic}\"\n\n\
                 # A killed peer is noticed within seconds, not the default minute.\n\
                 [transfer]\nidle_timeout_ms = 3000\nkeep_alive_interval_ms = 500\n{transfer_settings}\n",
                fed.join("federation.toml").display(),
                tls.display(),
            );
            std::fs::write(dir.join("clusster.toml"), config).unwrap();
        }
        Self { bin: bin.to_owned(), root: root.to_path_buf() }
    }

    /// The data dir of site `name`.
    pub fn dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Starts site `name` (again, after a stop: its data dir is kept).
    pub fn start(&self, name: &str) -> Daemon {
        let dir = self.dir(name);
        Daemon::start(&self.bin, &dir, &["--config", dir.join("clusster.toml").to_str().unwrap()])
    }
}

/// A SigV4 presigned GET URL valid for `expires`, whatever its length.
pub fn presign_url(url: &str, id: &str, secret: &str, expires: Duration) -> String {
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign};
    let identity = aws_credential_types::Credentials::new(id, secret, None, None, "test").into();
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(expires);
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("s3")
        .time(std::time::SystemTime::now())
        .settings(settings)
        .build()
        .unwrap()
        .into();
    let signable = SignableRequest::new("GET", url, std::iter::empty(), SignableBody::UnsignedPayload).unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    let mut request = http::Request::builder().uri(url).body(()).unwrap();
    instructions.apply_to_request_http1x(&mut request);
    request.uri().to_string()
}

/// base64(HMAC-SHA1(secret, string_to_sign)), the SigV2 signature.
pub fn sig_v2(secret: &str, string_to_sign: &str) -> String {
    use base64::Engine as _;
    use sha1::{Digest, Sha1};
    let mut key = [0u8; 64];
    key[..secret.len()].copy_from_slice(secret.as_bytes());
    let pad = |byte: u8| key.iter().map(|k| k ^ byte).collect::<Vec<u8>>();
    let inner = Sha1::new().chain_update(pad(0x36)).chain_update(string_to_sign).finalize();
    let outer = Sha1::new().chain_update(pad(0x5c)).chain_update(inner).finalize();
    base64::engine::general_purpose::STANDARD.encode(outer)
}

/// Raises this process's open-file limit to at least `want` (up to the hard limit), for a
/// test that opens thousands of sockets; panics, saying what to do, if the hard limit is
/// lower.
pub fn raise_fd_limit(want: u64) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0, "getrlimit");
        assert!(limit.rlim_max >= want, "this test needs {want} open files; the hard limit is {}", limit.rlim_max);
        if limit.rlim_cur < want {
            limit.rlim_cur = want;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0, "setrlimit");
        }
    }
}

/// Writes `data` to `path` (making its directories) with the modification time `mtime_ms`.
pub fn write_file(path: &Path, data: &[u8], mtime_ms: u64) {
    std::fs::create_dir_all(path.parent().expect("a file in a directory")).unwrap();
    let file = std::fs::File::create(path).unwrap();
    (&file).write_all(data).unwrap();
    file.set_modified(std::time::UNIX_EPOCH + Duration::from_millis(mtime_ms)).unwrap();
}

/// The modification time of `path`, in ms since the epoch.
pub fn mtime_ms(path: &Path) -> u64 {
    let meta = std::fs::metadata(path).unwrap();
    meta.modified().unwrap().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// Every file under `root`: relative path, bytes, mtime in ms, sorted by path.
pub fn tree(root: &Path) -> Vec<(String, Vec<u8>, u64)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>, u64)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).unwrap().to_str().unwrap().to_owned();
                out.push((rel, std::fs::read(&path).unwrap(), mtime_ms(&path)));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// `bin` (the `clusster` CLI) as a batch job runs it: the endpoint and token from the
/// environment, `home` as HOME, and nothing else of this process's that the CLI reads (a
/// client config, a CA file, a scheduler's job id).
pub fn job_command(bin: &str, endpoint: &str, token: &str, home: &Path) -> Command {
    let mut command = Command::new(bin);
    command
        .env("RUST_LOG", "warn")
        .env("CLUSSTER_ENDPOINT", endpoint)
        .env("CLUSSTER_TOKEN", token)
        .env("HOME", home)
        .env_remove("CLUSSTER_CLIENT_CONFIG")
        .env_remove("CLUSSTER_CA_FILE")
        .env_remove("SLURM_JOB_ID")
        .env_remove("FLUX_JOB_ID");
    command
}
