//! Facts about a clusster federation, shared by every crate that talks to other sites:
//! what sites there are, how to prove who we are and check who a peer is. No tasks of its
//! own and no store; the transfer engine and the catalog build on it.
//!
//! - [`file`](mod@file): the federation file (sites, their addresses and attributes, the link table),
//!   loaded and validated into a [`Federation`](file::Federation), and edited in place.
//! - [`identity`]: the federation CA and site certificates (rcgen), written with private keys
//!   0600 and never overwritten silently; [`SiteIdentity`](identity::SiteIdentity) loads a
//!   site's TLS material.
//! - [`signing`]: the site's Ed25519 signing key (`signing.key`), sign and verify with a
//!   purpose label, key ids.
//! - [`tls`]: rustls verifiers that accept only certificates signed by the federation CA for a
//!   site listed in the federation file, quinn server/client configs, the endpoint, and the
//!   helper that names the authenticated peer of a connection.
//! - [`transport`]: [`TransportSettings`], quinn transport tuning for long fat pipes.
//!
//! How a site name is bound to a certificate: the certificate carries the DNS subject
//! alternative name `<site>.site.clusster` (see [`site_dns_name`]). The CA is name-constrained
//! to `site.clusster`, so even a leaked CA key cannot mint certificates valid for real DNS
//! names, and a peer is accepted only if exactly one listed site matches its certificate.

pub mod file;
pub mod identity;
pub mod signing;
pub mod tls;
pub mod transport;

pub use file::{DEFAULT_LINK, FEDERATION_FILE};
pub use tls::FederationEndpoint;
pub use transport::TransportSettings;

use std::net::SocketAddr;
use std::path::PathBuf;

/// Where a federated site keeps its membership and where it listens: the values the
/// daemon's `[federation]` config settles into, passed down to [`FederationEndpoint::bind`].
#[derive(Debug, Clone, PartialEq)]
pub struct Membership {
    /// The federation file (absolute).
    pub file: PathBuf,
    /// Directory of site.key, site.pem, ca.pem (absolute).
    pub tls_dir: PathBuf,
    /// QUIC listener.
    pub quic_listen: SocketAddr,
}

/// The DNS suffix under which site names are bound in certificates.
pub const SITE_NAME_SUFFIX: &str = "site.clusster";

/// Longest site name: one DNS label.
pub const MAX_SITE_NAME_LEN: usize = 63;

/// The DNS name a site's certificate carries: `<site>.site.clusster`.
pub fn site_dns_name(site: &str) -> String {
    format!("{site}.{SITE_NAME_SUFFIX}")
}

/// The site whose DNS name this is, if it is one (`paris.site.clusster` → `paris`).
pub fn site_from_dns_name(dns_name: &str) -> Option<&str> {
    dns_name.strip_suffix(SITE_NAME_SUFFIX)?.strip_suffix('.').filter(|n| validate_site_name(n).is_ok())
}

/// Checks that `name` can name a site: one DNS label of lowercase letters, digits and
/// hyphens, starting with a letter, not ending with a hyphen. Lowercase only, so that two
/// spellings can never name one site.
pub fn validate_site_name(name: &str) -> Result<(), InvalidValue> {
    if name.is_empty() || name.len() > MAX_SITE_NAME_LEN {
        return Err(InvalidValue(format!("site name {name:?} must be 1 to {MAX_SITE_NAME_LEN} characters long")));
    }
    if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        return Err(InvalidValue(format!("site name {name:?} may hold only lowercase letters a-z, digits and '-'")));
    }
    if !name.as_bytes()[0].is_ascii_lowercase() {
        return Err(InvalidValue(format!("site name {name:?} must start with a letter")));
    }
    if name.ends_with('-') {
        return Err(InvalidValue(format!("site name {name:?} must not end with '-'")));
    }
    Ok(())
}

/// A value that breaks a naming or format rule (a site name, an address, a key); the
/// message names the value, the rule and what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(pub String);

impl From<InvalidValue> for FederationError {
    fn from(e: InvalidValue) -> Self {
        Self::Invalid(e.0)
    }
}

/// What went wrong with federation files, identities or TLS setup.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FederationError {
    /// A file, field or argument holds a value we cannot use; the message says which and what to do.
    #[error("{0}")]
    Invalid(String),
    /// A file we would create exists already.
    #[error("{} exists already; pass --force to replace it (the old key is then lost)", .0.display())]
    AlreadyExists(PathBuf),
    /// A file we need is not there.
    #[error("{} is missing: {hint}", path.display())]
    Missing {
        /// The file.
        path: PathBuf,
        /// What to do about it.
        hint: String,
    },
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Generating a key or certificate failed.
    #[error("cannot generate the certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// rustls refused our configuration (a key that does not match its certificate, ...).
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// A peer is not one we can talk to (unknown site, unauthenticated connection).
    #[error("{0}")]
    Peer(String),
    /// Connecting to a peer failed.
    #[error("cannot connect to site {site}: {reason}")]
    Connect {
        /// The site we tried to reach.
        site: String,
        /// Why it failed.
        reason: String,
    },
}

impl FederationError {
    /// True when the error comes from what the user gave us (bad name, missing or existing
    /// file, invalid federation file): the CLI exits with code 2 for these.
    pub fn is_bad_input(&self) -> bool {
        matches!(self, Self::Invalid(_) | Self::AlreadyExists(_) | Self::Missing { .. })
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_names_are_dns_labels() {
        for good in ["paris", "a", "julich-2", "x1"] {
            assert!(validate_site_name(good).is_ok(), "{good}");
        }
        for bad in ["", "Paris", "1abc", "-a", "a-", "a.b", "a_b", "é", &"a".repeat(64)] {
            assert!(validate_site_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dns_names_round_trip() {
        assert_eq!(site_dns_name("paris"), "paris.site.clusster");
        assert_eq!(site_from_dns_name("paris.site.clusster"), Some("paris"));
        assert_eq!(site_from_dns_name("evil.paris.site.clusster"), None);
        assert_eq!(site_from_dns_name("paris.example.org"), None);
        assert_eq!(site_from_dns_name("site.clusster"), None);
    }
}
