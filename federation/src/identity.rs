//! The federation CA and site identities, made with rcgen.
//!
//! `federation init` makes an ECDSA P-256 CA key and a self-signed CA certificate,
//! name-constrained to `site.clusster`. `site init NAME` makes the site's TLS key (ECDSA
//! P-256) and a certificate signed by the CA for `NAME.site.clusster`, valid for both TLS
//! client and server use (every connection is mutual), plus a separate Ed25519 signing key
//! for catalog events: one key per purpose, so a signature made for one protocol can never
//! be replayed in the other. Private keys are written 0600 and never replaced without
//! `force`; everything is generated and checked in memory before the first file is written.

use super::file::{self, Federation, SiteEntry};
use super::{FEDERATION_FILE, FederationError, InvalidValue, SITE_NAME_SUFFIX, site_dns_name, validate_site_name};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, GeneralSubtree, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, NameConstraints, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use time::{Duration, OffsetDateTime};

/// The federation CA certificate (PEM).
pub const CA_CERT_FILE: &str = "ca.pem";
/// The federation CA private key (PEM, 0600). Only the federation operator holds it.
pub const CA_KEY_FILE: &str = "ca.key";
/// A site's TLS certificate (PEM).
pub const SITE_CERT_FILE: &str = "site.pem";
/// A site's TLS private key (PKCS#8 PEM, 0600).
pub const SITE_KEY_FILE: &str = "site.key";
/// A site's Ed25519 key for signing catalog events (PKCS#8 PEM, 0600).
pub const SIGNING_KEY_FILE: &str = "signing.key";

/// The CA outlives many site certificates: ten years, after which the federation re-keys.
const CA_VALIDITY_DAYS: i64 = 3650;
/// Site certificates are renewed by running `site init NAME --force` again; two years keeps
/// a stolen key useful for a bounded time without asking operators to renew often.
const SITE_VALIDITY_DAYS: i64 = 730;
/// Certificates start a day in the past so that a peer whose clock lags accepts them.
const CLOCK_SKEW_DAYS: i64 = 1;

/// The files `federation init` wrote.
#[derive(Debug, Clone)]
pub struct FederationInit {
    /// The CA certificate.
    pub ca_cert: PathBuf,
    /// The CA private key.
    pub ca_key: PathBuf,
    /// The federation file.
    pub federation_file: PathBuf,
}

/// What `site init` did.
#[derive(Debug, Clone)]
pub struct SiteInit {
    /// The site's TLS private key.
    pub site_key: PathBuf,
    /// The site's certificate.
    pub site_cert: PathBuf,
    /// The copy of the CA certificate next to them.
    pub ca_cert: PathBuf,
    /// The site's signing key.
    pub signing_key: PathBuf,
    /// The site's entry.
    pub entry: SiteEntry,
    /// True when the federation file was updated; false when it was not writable and the
    /// entry must be added by hand (`entry_text`).
    pub federation_updated: bool,
    /// The entry as TOML, for the federation file.
    pub entry_text: String,
}

/// A site's TLS identity, as the QUIC endpoint presents it.
#[derive(Debug)]
pub struct SiteIdentity {
    /// The site's name.
    pub name: String,
    /// Its certificate chain, leaf first.
    pub cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Clone for SiteIdentity {
    fn clone(&self) -> Self {
        Self { name: self.name.clone(), cert_chain: self.cert_chain.clone(), key: self.key.clone_key() }
    }
}

impl SiteIdentity {
    /// Loads `site.pem` and `site.key` from `tls_dir` and checks that the certificate names
    /// `site_name`.
    pub fn load(tls_dir: &Path, site_name: &str) -> Result<Self, FederationError> {
        validate_site_name(site_name)?;
        let cert_path = tls_dir.join(SITE_CERT_FILE);
        let key_path = tls_dir.join(SITE_KEY_FILE);
        let hint = format!("run `clusster site init {site_name}` and copy its output into {}", tls_dir.display());
        for path in [&cert_path, &key_path] {
            if !path.exists() {
                return Err(FederationError::Missing { path: path.clone(), hint: hint.clone() });
            }
        }
        let cert_chain = CertificateDer::pem_file_iter(&cert_path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| FederationError::Invalid(format!("{}: not a PEM certificate: {e}", cert_path.display())))?;
        if cert_chain.is_empty() {
            return Err(FederationError::Invalid(format!("{} holds no certificate; {hint}", cert_path.display())));
        }
        let key = PrivateKeyDer::from_pem_file(&key_path)
            .map_err(|e| FederationError::Invalid(format!("{}: not a PEM private key: {e}", key_path.display())))?;
        let identity = Self { name: site_name.to_owned(), cert_chain, key };
        identity.check_name().map_err(|e| FederationError::Invalid(format!("{}: {e}; {hint}", cert_path.display())))?;
        Ok(identity)
    }

    /// The private key.
    pub fn key(&self) -> PrivateKeyDer<'static> {
        self.key.clone_key()
    }

    fn check_name(&self) -> Result<(), String> {
        let leaf = self.cert_chain.first().ok_or("no certificate")?;
        let parsed =
            rustls::server::ParsedCertificate::try_from(leaf).map_err(|e| format!("unreadable certificate: {e}"))?;
        let dns = ServerName::try_from(site_dns_name(&self.name)).map_err(|e| e.to_string())?;
        rustls::client::verify_server_name(&parsed, &dns)
            .map_err(|_| format!("the certificate is not for site {:?} ({})", self.name, site_dns_name(&self.name)))
    }
}

/// The pin of a certificate's key: SHA-256 of its SubjectPublicKeyInfo, what the
/// federation file lists as a site's `tls_key`.
pub fn key_pin(cert: &CertificateDer<'_>) -> Result<[u8; 32], FederationError> {
    let parsed = rustls::server::ParsedCertificate::try_from(cert)?;
    let digest = ring::digest::digest(&ring::digest::SHA256, parsed.subject_public_key_info().as_ref());
    Ok(digest.as_ref().try_into().expect("SHA-256 is 32 bytes"))
}

/// Checks a federation name: 1 to 64 letters, digits, '.', '_' or '-'.
pub fn validate_federation_name(name: &str) -> Result<(), InvalidValue> {
    if name.is_empty()
        || name.len() > 64
        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(InvalidValue(format!("federation name {name:?} must be 1 to 64 letters, digits, '.', '_' or '-'")));
    }
    Ok(())
}

fn ca_params(federation: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::OrganizationName, "clusster");
    params.distinguished_name.push(DnType::CommonName, format!("{federation} federation CA"));
    // Path length 0: the CA signs site certificates only, never another CA.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.name_constraints = Some(NameConstraints {
        permitted_subtrees: vec![GeneralSubtree::DnsName(SITE_NAME_SUFFIX.into())],
        excluded_subtrees: vec![],
    });
    params
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f; // a positive DER integer
    SerialNumber::from_slice(&bytes)
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::days(CLOCK_SKEW_DAYS);
    params.not_after = now + Duration::days(days);
}

/// `clusster federation init`: writes `ca.key` (0600), `ca.pem` and a documented
/// `federation.toml` into `dir`. Refuses to replace an existing CA key or federation file
/// unless `force`.
pub fn init_federation(dir: &Path, name: &str, force: bool) -> Result<FederationInit, FederationError> {
    validate_federation_name(name)?;
    let ca_key_path = dir.join(CA_KEY_FILE);
    let ca_cert_path = dir.join(CA_CERT_FILE);
    let federation_path = dir.join(FEDERATION_FILE);
    if !force {
        for path in [&ca_key_path, &federation_path] {
            if path.exists() {
                return Err(FederationError::AlreadyExists(path.clone()));
            }
        }
    }
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = ca_params(name);
    params.serial_number = Some(random_serial());
    validity(&mut params, CA_VALIDITY_DAYS);
    let cert = params.self_signed(&key)?;

    create_private_dir(dir)?;
    write_private(&ca_key_path, key.serialize_pem().as_bytes(), force)?;
    write_public(&ca_cert_path, cert.pem().as_bytes())?;
    write_public(&federation_path, Federation::template(name, CA_CERT_FILE).as_bytes())?;
    Ok(FederationInit { ca_cert: ca_cert_path, ca_key: ca_key_path, federation_file: federation_path })
}

/// The federation file `--federation` names: the file itself, or `federation.toml` in a
/// directory.
pub fn federation_file_path(dir_or_file: &Path) -> PathBuf {
    if dir_or_file.is_dir() { dir_or_file.join(FEDERATION_FILE) } else { dir_or_file.to_path_buf() }
}

/// `clusster site init`: makes the site's keys and CA-signed certificate in `out`, copies
/// the CA certificate there, and adds or updates the site's entry in the federation file
/// (which must sit next to `ca.key`). When the federation file is not writable, the entry is
/// returned for the operator to add by hand.
pub fn init_site(
    federation_dir_or_file: &Path,
    name: &str,
    out: &Path,
    mut entry: SiteEntry,
    force: bool,
) -> Result<SiteInit, FederationError> {
    validate_site_name(name)?;
    if let Some(quic) = &entry.quic {
        file::validate_quic_address(quic).map_err(|e| FederationError::Invalid(format!("--quic: {e}")))?;
    }
    if let Some(s3) = &entry.s3 {
        file::validate_s3_url(s3).map_err(|e| FederationError::Invalid(format!("--s3: {e}")))?;
    }
    for (key, value) in &entry.attributes {
        file::validate_attribute(key, value).map_err(|e| FederationError::Invalid(format!("--attr: {e}")))?;
    }
    let federation_path = federation_file_path(federation_dir_or_file);
    let federation = Federation::load(&federation_path)?;
    let federation_dir = federation_path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let ca_key_path = federation_dir.join(CA_KEY_FILE);
    let ca_key_pem = std::fs::read_to_string(&ca_key_path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => FederationError::Missing {
            path: ca_key_path.clone(),
            hint: "site init signs with the federation CA key: run it where `clusster federation init` wrote ca.key"
                .into(),
        },
        _ => FederationError::Io { path: ca_key_path.clone(), source: e },
    })?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(|e| {
        FederationError::Invalid(format!("{}: not a usable CA private key: {e}", ca_key_path.display()))
    })?;

    let site_key_path = out.join(SITE_KEY_FILE);
    let signing_key_path = out.join(SIGNING_KEY_FILE);
    if !force {
        for path in [&site_key_path, &signing_key_path] {
            if path.exists() {
                return Err(FederationError::AlreadyExists(path.clone()));
            }
        }
    }

    let site_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::new(vec![site_dns_name(name)])?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::OrganizationName, federation.name.clone());
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial());
    validity(&mut params, SITE_VALIDITY_DAYS);
    // The issuer is rebuilt from the federation name: the CA's subject is derived from it
    // alone, so the signature chains to ca.pem, which the check below confirms.
    let issuer = Issuer::new(ca_params(&federation.name), &ca_key);
    let site_cert = params.signed_by(&site_key, &issuer)?;
    check_chain(site_cert.der(), &federation.ca_cert, name).map_err(|e| {
        FederationError::Invalid(format!(
            "the new certificate does not verify against the federation's CA ({e}); ca.key, ca.pem and the \
             federation `name` must be the ones `federation init` wrote"
        ))
    })?;
    let signing = KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
    entry.name = name.to_owned();
    entry.tls_key = key_pin(site_cert.der())?;
    entry.signing_key = signing
        .public_key_raw()
        .try_into()
        .map_err(|_| FederationError::Invalid("Ed25519 public key is not 32 bytes".into()))?;

    // The entry is checked against the file before any key is written, so a bad
    // --quic/--s3 never leaves keys behind that the file does not list.
    let federation_text = std::fs::read_to_string(&federation_path).map_err(FederationError::io(&federation_path))?;
    let updated_text = file::upsert_site(&federation_text, &federation_dir, &entry)?;

    create_private_dir(out)?;
    write_private(&site_key_path, site_key.serialize_pem().as_bytes(), force)?;
    write_private(&signing_key_path, signing.serialize_pem().as_bytes(), force)?;
    let site_cert_path = out.join(SITE_CERT_FILE);
    write_public(&site_cert_path, site_cert.pem().as_bytes())?;
    let ca_copy = out.join(CA_CERT_FILE);
    write_public(&ca_copy, federation.ca_cert_pem.as_bytes())?;

    // A read-only federation file is the operator saying "not here" (and root could write
    // it anyway): print the entry instead.
    let read_only = std::fs::metadata(&federation_path).map(|m| m.permissions().readonly()).unwrap_or(true);
    let federation_updated = !read_only
        && match write_public(&federation_path, updated_text.as_bytes()) {
            Ok(()) => true,
            Err(FederationError::Io { source, .. }) if source.kind() == std::io::ErrorKind::PermissionDenied => false,
            Err(e) => return Err(e),
        };
    let entry_text = file::site_entry_text(&entry);
    Ok(SiteInit {
        site_key: site_key_path,
        site_cert: site_cert_path,
        ca_cert: ca_copy,
        signing_key: signing_key_path,
        entry,
        federation_updated,
        entry_text,
    })
}

/// Checks that `cert` chains to `ca` and names `site`, as a peer's verifier will.
fn check_chain(cert: &CertificateDer<'_>, ca: &CertificateDer<'static>, site: &str) -> Result<(), String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).map_err(|e| e.to_string())?;
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(site_dns_name(site)).map_err(|e| e.to_string())?;
    use rustls::client::danger::ServerCertVerifier;
    verifier
        .verify_server_cert(cert, &[], &name, &[], rustls::pki_types::UnixTime::now())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Writes a private key with mode 0600. Without `force` the file must not exist; with it,
/// the new key replaces the old atomically (temp file, fsync, rename).
/// Creates `dir` and its missing parents for the owner only: they hold private keys.
fn create_private_dir(dir: &Path) -> Result<(), FederationError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(FederationError::io(dir))
}

pub(crate) fn write_private(path: &Path, bytes: &[u8], force: bool) -> Result<(), FederationError> {
    if !force {
        let mut file =
            std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(|e| {
                match e.kind() {
                    std::io::ErrorKind::AlreadyExists => FederationError::AlreadyExists(path.to_path_buf()),
                    _ => FederationError::Io { path: path.to_path_buf(), source: e },
                }
            })?;
        file.write_all(bytes).and_then(|()| file.sync_all()).map_err(FederationError::io(path))?;
        return sync_parent(path);
    }
    write_atomically(path, bytes, 0o600)
}

/// Writes a public file (certificate, federation file) atomically, mode 0644.
fn write_public(path: &Path, bytes: &[u8]) -> Result<(), FederationError> {
    write_atomically(path, bytes, 0o644)
}

fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<(), FederationError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&temp);
        return Err(FederationError::Io { path: path.to_path_buf(), source: e });
    }
    sync_parent(path)
}

fn sync_parent(path: &Path) -> Result<(), FederationError> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(FederationError::io(dir))
}
