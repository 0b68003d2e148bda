//! The S3 protocol over the store, built on `s3s` (routing, XML, SigV4, aws-chunked):
//! this crate is the backend.
//!
//! Modules:
//! - [`config`]: limits and addressing ([`GatewayConfig`]);
//! - [`access`]: access keys (SigV4 secrets from the store), per-project bucket access,
//!   refusal of SigV2 and of presigned URLs valid for more than 7 days;
//! - `error`: store errors to S3 error codes, in one place;
//! - `checksum`: Content-MD5 and `x-amz-checksum-*` in headers and trailers;
//! - `buckets`, `objects`, `list`, `multipart`: the operations, by group;
//! - `acl`, `cors`, `policy`: canned ACLs of buckets and objects, CORS rules, bucket
//!   policies;
//! - `ops`: the `s3s::S3` trait, delegating to the groups;
//! - `front`: around s3s: request ids, presigned URL expiries out of range, CORS preflights;
//! - [`server`]: the HTTP(S) accept loop with graceful shutdown.

pub mod access;
mod acl;
mod buckets;
mod checksum;
pub mod config;
mod cors;
mod error;
mod front;
mod list;
mod multipart;
mod objects;
mod ops;
mod policy;
pub mod server;

pub use config::GatewayConfig;
pub use front::Front;

use std::sync::Arc;
use store::Store;

/// The backend behind `s3s`.
pub(crate) struct Gateway {
    pub(crate) store: Arc<Store>,
    pub(crate) config: GatewayConfig,
}

/// Why the gateway cannot be set up as configured.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// `[s3] domain` is not a name virtual-hosted-style requests can be routed under.
    #[error("[s3] domain {domain:?} is not usable for virtual-hosted-style requests: {reason}")]
    Domain {
        /// The configured domain.
        domain: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A TLS certificate or key file cannot be read.
    #[error("cannot read {what} {}: {source}", path.display())]
    TlsFile {
        /// "certificate" or "private key".
        what: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        source: rustls::pki_types::pem::Error,
    },
    /// A TLS certificate or key file holds something that is not one.
    #[error("invalid {what} {}: {source}", path.display())]
    TlsPem {
        /// "certificate" or "private key".
        what: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        source: rustls::pki_types::pem::Error,
    },
    /// The certificate and key do not make a usable TLS configuration.
    #[error("certificate and key do not form a usable pair: {0}")]
    Tls(#[from] rustls::Error),
}

/// The largest file a browser form upload (POST Object) takes; larger files go by PUT.
pub const MAX_FORM_FILE_BYTES: u64 = 64 << 20;

/// Builds the S3 service for `store`.
pub fn service(store: Arc<Store>, config: GatewayConfig) -> Result<Front, SetupError> {
    let mut builder = s3s::service::S3ServiceBuilder::new(Gateway { store: store.clone(), config: config.clone() });
    builder.set_auth(access::KeyAuth::new(store.clone()));
    builder.set_access(access::ProjectAccess::new(store.clone(), &config));
    if let Some(domain) = &config.domain {
        let host = s3s::host::SingleDomain::new(domain)
            .map_err(|e| SetupError::Domain { domain: domain.clone(), reason: e.to_string() })?;
        builder.set_host(host);
    }
    let mut s3_config = s3s::config::S3Config::default();
    s3_config.xml_max_body_size = config.xml_max_body_bytes;
    // s3s holds a form upload's file in memory to check the form's policy before the
    // upload runs: bound it below PutObject's limit.
    s3_config.post_object_max_file_size = config.max_object_bytes.min(MAX_FORM_FILE_BYTES);
    builder.set_config(Arc::new(s3s::config::StaticConfigProvider::new(Arc::new(s3_config))));
    Ok(Front::new(builder.build(), store, config.domain.map(|d| d.to_ascii_lowercase())))
}
