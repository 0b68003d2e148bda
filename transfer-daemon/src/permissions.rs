//! What `serve` refuses to start on: a data dir, admin token or private key that group or
//! others can read. The data dir holds the S3 secret keys (in RocksDB) and every object;
//! the token and the keys are credentials. Everything `clusster` creates is the owner's
//! alone (directories 0700, secrets 0600), so a looser mode means someone else made or
//! changed it.

use crate::admin::TOKEN_FILE;
use crate::commands::UsageError;
use crate::config::Settings;
use federation::identity::{SIGNING_KEY_FILE, SITE_KEY_FILE};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Creates `dir` and its missing parents for the owner only (0700).
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// The paths whose modes are checked, each with what it is.
fn secrets(settings: &Settings) -> Vec<(PathBuf, &'static str)> {
    let mut paths =
        vec![(settings.data_dir.clone(), "the data dir"), (settings.data_dir.join(TOKEN_FILE), "the admin token")];
    if let Some(membership) = &settings.federation {
        paths.push((membership.tls_dir.join(SITE_KEY_FILE), "the site's TLS key"));
        paths.push((membership.tls_dir.join(SIGNING_KEY_FILE), "the site's signing key"));
    }
    if let Some((_, key)) = &settings.s3_tls {
        paths.push((key.clone(), "the S3 TLS key"));
    }
    paths
}

/// Refuses a secret that group or others may use, naming the command that fixes it.
/// A file that does not exist yet is left to the code that creates it (0600).
pub fn refuse_exposed_secrets(settings: &Settings) -> Result<(), UsageError> {
    for (path, what) in secrets(settings) {
        let meta = match std::fs::metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(UsageError(format!("cannot read the mode of {what} {}: {e}", path.display()))),
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            let fix = if meta.is_dir() { "700" } else { "600" };
            return Err(UsageError(format!(
                "{what} {} is open to group or others (mode {mode:03o}); it holds secrets: run `chmod {fix} {}` \
                 and start again",
                path.display(),
                path.display()
            )));
        }
    }
    Ok(())
}
