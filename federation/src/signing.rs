//! A site's Ed25519 signing key (`signing.key`, written by `site init`) and the checks of
//! its signatures against the public key the federation file lists.
//!
//! Every signature is made over a length-prefixed purpose label and the message, so
//! that bytes signed for one purpose (a catalog event, say) can never be presented as signed
//! for another. A public key is named by a [`KeyId`], so that a site whose key was rotated
//! can keep its old signatures verifiable: the id says which key to check them with.

use super::FederationError;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use rustls::pki_types::PrivatePkcs8KeyDer;
use rustls::pki_types::pem::PemObject;
use std::path::Path;

/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// An Ed25519 signature.
pub type Signature = [u8; SIGNATURE_LEN];

/// A public signing key, as the federation file lists it.
pub type PublicKey = [u8; 32];

/// The id of a public signing key: the first 8 bytes of its SHA-256. Short enough to carry
/// in every signed record, long enough that one site's few keys never collide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 8]);

impl KeyId {
    /// The id of `public`.
    pub fn of(public: &PublicKey) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, public);
        let mut id = [0; 8];
        id.copy_from_slice(&digest.as_ref()[..8]);
        Self(id)
    }
}

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// A signature did not verify: the bytes, the purpose or the key differ from what was signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the signature does not verify with key {key_id} for {purpose:?}")]
pub struct BadSignature {
    /// The key it was checked against.
    pub key_id: KeyId,
    /// The purpose it was checked for.
    pub purpose: &'static str,
}

/// The bytes actually signed: the purpose's length (one byte), the purpose, the message.
/// The length prefix keeps `("ab", "c…")` and `("a", "bc…")` apart.
fn signed_bytes(purpose: &str, message: &[u8]) -> Vec<u8> {
    // A longer label would wrap the length byte and blur it into the message.
    assert!(purpose.len() <= u8::MAX as usize, "purpose labels are short constants");
    let mut bytes = Vec::with_capacity(1 + purpose.len() + message.len());
    bytes.push(purpose.len() as u8);
    bytes.extend_from_slice(purpose.as_bytes());
    bytes.extend_from_slice(message);
    bytes
}

/// A site's private signing key, loaded from `signing.key`.
pub struct SigningKey {
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("key_id", &self.key_id()).finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Loads a PKCS#8 PEM Ed25519 key, as `site init` writes to `signing.key`.
    pub fn load(path: &Path) -> Result<Self, FederationError> {
        let der = PrivatePkcs8KeyDer::from_pem_file(path).map_err(|e| match e {
            rustls::pki_types::pem::Error::Io(source) if source.kind() == std::io::ErrorKind::NotFound => {
                FederationError::Missing {
                    path: path.to_owned(),
                    hint: "`clusster site init` writes the site's signing.key next to site.key".into(),
                }
            }
            e => FederationError::Invalid(format!("{}: not a PKCS#8 PEM private key: {e}", path.display())),
        })?;
        Self::from_pkcs8(der.secret_pkcs8_der())
            .map_err(|e| FederationError::Invalid(format!("{}: {e}", path.display())))
    }

    /// Loads the key at `path`, or makes one there (owner-only) if there is none: a site
    /// that is not federated still signs its catalog. (Its events do not verify under the
    /// key `site init` makes later: a site that published alone cannot yet bring that log
    /// into a federation.)
    pub fn load_or_create(path: &Path) -> Result<Self, FederationError> {
        if !path.exists() {
            let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
            match crate::identity::write_private(path, pair.serialize_pem().as_bytes(), false) {
                // Another process made it first: use that one.
                Ok(()) | Err(FederationError::AlreadyExists(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Self::load(path)
    }

    /// A key from its PKCS#8 DER encoding.
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, FederationError> {
        // v1 documents (no public key inside) are accepted too: other tools write them.
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map_err(|e| FederationError::Invalid(format!("not an Ed25519 private key: {e}")))?;
        Ok(Self { pair })
    }

    /// A new random key (tests, and keys made in memory).
    pub fn generate() -> Result<Self, FederationError> {
        let rng = ring::rand::SystemRandom::new();
        let der = Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| FederationError::Invalid("the system random generator failed".into()))?;
        Self::from_pkcs8(der.as_ref())
    }

    /// The public half, as the federation file lists it.
    pub fn public_key(&self) -> PublicKey {
        let mut public = [0; 32];
        public.copy_from_slice(self.pair.public_key().as_ref());
        public
    }

    /// The id of [`Self::public_key`].
    pub fn key_id(&self) -> KeyId {
        KeyId::of(&self.public_key())
    }

    /// Signs `message` for `purpose` (a short constant naming what the bytes are).
    pub fn sign(&self, purpose: &'static str, message: &[u8]) -> Signature {
        let mut signature = [0; SIGNATURE_LEN];
        signature.copy_from_slice(self.pair.sign(&signed_bytes(purpose, message)).as_ref());
        signature
    }
}

/// Checks that `signature` was made by the key `public` over `message` for `purpose`.
pub fn verify(
    public: &PublicKey,
    purpose: &'static str,
    message: &[u8],
    signature: &Signature,
) -> Result<(), BadSignature> {
    UnparsedPublicKey::new(&ED25519, public)
        .verify(&signed_bytes(purpose, message), signature)
        .map_err(|_| BadSignature { key_id: KeyId::of(public), purpose })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file::{Federation, SiteEntry};
    use crate::identity::{SIGNING_KEY_FILE, init_federation, init_site};

    #[test]
    fn a_signature_verifies_only_for_its_key_purpose_and_bytes() {
        let key = SigningKey::generate().unwrap();
        let other = SigningKey::generate().unwrap();
        let signature = key.sign("catalog-event", b"dataset published");
        verify(&key.public_key(), "catalog-event", b"dataset published", &signature).unwrap();

        let refused = verify(&other.public_key(), "catalog-event", b"dataset published", &signature).unwrap_err();
        assert_eq!(refused.key_id, other.key_id());
        assert!(verify(&key.public_key(), "catalog-rule", b"dataset published", &signature).is_err());
        assert!(verify(&key.public_key(), "catalog-event", b"dataset published!", &signature).is_err());
        // The purpose is length-prefixed: moving bytes between it and the message fails.
        assert!(verify(&key.public_key(), "catalog-even", b"tdataset published", &signature).is_err());
        let mut flipped = signature;
        flipped[10] ^= 1;
        assert!(verify(&key.public_key(), "catalog-event", b"dataset published", &flipped).is_err());
    }

    #[test]
    fn the_key_site_init_writes_matches_the_federation_file() {
        let dir = tempfile::tempdir().unwrap();
        init_federation(dir.path(), "eu", false).unwrap();
        let entry = SiteEntry { quic: Some("127.0.0.1:7444".into()), ..SiteEntry::default() };
        let out = dir.path().join("paris");
        init_site(dir.path(), "paris", &out, entry, false).unwrap();
        let federation = Federation::load(&dir.path().join("federation.toml")).unwrap();
        let key = SigningKey::load(&out.join(SIGNING_KEY_FILE)).unwrap();
        let listed = federation.site("paris").unwrap().signing_key;
        assert_eq!(key.public_key(), listed);
        verify(&listed, "catalog-event", b"x", &key.sign("catalog-event", b"x")).unwrap();
    }

    #[test]
    fn unusable_key_files_say_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let missing = SigningKey::load(&dir.path().join("signing.key")).unwrap_err();
        assert!(matches!(missing, FederationError::Missing { .. }), "{missing}");
        let garbage = dir.path().join("garbage.key");
        std::fs::write(&garbage, "not a key").unwrap();
        let invalid = SigningKey::load(&garbage).unwrap_err();
        assert!(matches!(invalid, FederationError::Invalid(_)), "{invalid}");
        assert!(invalid.is_bad_input());
    }
}
