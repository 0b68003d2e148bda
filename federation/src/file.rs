//! The federation file: the federation's name, its CA certificate, the sites and the link
//! table. [`Federation::load`] checks everything and names the field at fault;
//! [`upsert_site`] adds or updates one site entry while keeping the file's comments.

use super::{FederationError, InvalidValue, validate_site_name};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// The name `clusster federation init` gives the federation file.
pub const FEDERATION_FILE: &str = "federation.toml";

/// The link assumed between two sites the link table does not list: 1 Gbit/s at 100 ms,
/// a transcontinental research-network path. Windows sized for it do not cap a faster or
/// nearer link below 1 Gbit/s, and cost at most ~25 MB of buffer per connection.
pub const DEFAULT_LINK: Link = Link { bandwidth_mbps: 1000, rtt_ms: 100.0 };

/// The prefix of a site's signing key in the file, naming the algorithm so that another
/// one can be added later without ambiguity.
const SIGNING_KEY_PREFIX: &str = "ed25519:";

/// The prefix of a site's pinned TLS key: the hash that names it.
const TLS_KEY_PREFIX: &str = "sha256:";

/// How to compute a pin by hand, for an operator whose file predates pinning.
const TLS_KEY_HOW: &str = "it is the SHA-256 of the site certificate's public key (SubjectPublicKeyInfo, DER), as \
    `clusster site init` writes it, or by hand: `openssl x509 -in site.pem -pubkey -noout | openssl pkey -pubin \
    -outform der | sha256sum`";

/// A checked federation file.
#[derive(Debug, Clone)]
pub struct Federation {
    /// The federation's name.
    pub name: String,
    /// The federation CA certificate every site certificate must chain to.
    pub ca_cert: CertificateDer<'static>,
    /// The same certificate as PEM text, as the file gave it.
    pub ca_cert_pem: String,
    /// The file this was loaded from (None when parsed from text).
    pub path: Option<PathBuf>,
    sites: BTreeMap<String, Site>,
    links: HashMap<(String, String), Link>,
}

/// One site of the federation.
#[derive(Debug, Clone, PartialEq)]
pub struct Site {
    /// The site's name (a DNS label; its certificate carries `<name>.site.clusster`).
    pub name: String,
    /// Where its QUIC listener is reached: `host:port`.
    pub quic: String,
    /// Its S3 gateway.
    pub s3: url::Url,
    /// Free-form attributes placement rules match on (`country = "fr"`, `tier = "hpc"`).
    pub attributes: BTreeMap<String, String>,
    /// The site's Ed25519 public key, which checks the catalog events it signs.
    pub signing_key: [u8; 32],
    /// The pin of its TLS key: SHA-256 of its certificate's SubjectPublicKeyInfo. A
    /// certificate the CA signed for this name with another key (an identity replaced by
    /// `site init --force`, or stolen with the CA key) is refused.
    pub tls_key: [u8; 32],
}

/// A path between two sites, the same both ways.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Link {
    /// Bottleneck bandwidth, megabits per second.
    pub bandwidth_mbps: u64,
    /// Round-trip time, milliseconds.
    pub rtt_ms: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFederation {
    name: String,
    ca_cert: String,
    #[serde(default)]
    site: Vec<RawSite>,
    #[serde(default)]
    link: Vec<RawLink>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSite {
    name: String,
    quic: String,
    s3: String,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
    signing_key: String,
    tls_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLink {
    a: String,
    b: String,
    bandwidth_mbps: u64,
    rtt_ms: f64,
}

fn invalid(message: String) -> FederationError {
    FederationError::Invalid(message)
}

impl Federation {
    /// Reads and checks a federation file. A relative `ca_cert` path is taken from the
    /// file's directory.
    pub fn load(path: &Path) -> Result<Self, FederationError> {
        let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => FederationError::Missing {
                path: path.to_path_buf(),
                hint: "create it with `clusster federation init`, or copy it from the federation's operator".into(),
            },
            _ => FederationError::Io { path: path.to_path_buf(), source: e },
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut federation = Self::parse(&text, base)
            .map_err(|e| invalid(format!("invalid federation file {}: {e}", path.display())))?;
        federation.path = Some(path.to_path_buf());
        Ok(federation)
    }

    /// Checks a federation file's text; `base` resolves a relative `ca_cert` path.
    pub fn parse(text: &str, base: &Path) -> Result<Self, FederationError> {
        let raw: RawFederation = toml::from_str(text).map_err(|e| invalid(e.to_string().trim_end().to_owned()))?;
        if raw.name.trim().is_empty() {
            return Err(invalid("`name` must not be empty: give the federation a name".into()));
        }
        let (ca_cert, ca_cert_pem) = load_ca_cert(&raw.ca_cert, base)?;
        let mut sites = BTreeMap::new();
        for (i, s) in raw.site.into_iter().enumerate() {
            let site = check_site(s).map_err(|e| invalid(format!("[[site]] #{}: {e}", i + 1)))?;
            if let Some(old) = sites.insert(site.name.clone(), site) {
                return Err(invalid(format!(
                    "[[site]] #{}: name {:?} is listed twice; each site needs its own name",
                    i + 1,
                    old.name
                )));
            }
        }
        let mut links = HashMap::new();
        for (i, l) in raw.link.into_iter().enumerate() {
            let at = |e: String| invalid(format!("[[link]] #{}: {e}", i + 1));
            for end in [&l.a, &l.b] {
                if !sites.contains_key(end) {
                    return Err(at(format!("site {end:?} is not listed in a [[site]] entry; add it or fix the name")));
                }
            }
            if l.a == l.b {
                return Err(at(format!("`a` and `b` are both {:?}; a link joins two different sites", l.a)));
            }
            if l.bandwidth_mbps == 0 {
                return Err(at("`bandwidth_mbps` must be at least 1 (megabits per second)".into()));
            }
            if !l.rtt_ms.is_finite() || l.rtt_ms < 0.0 || l.rtt_ms > 60_000.0 {
                return Err(at(format!("`rtt_ms` = {} must be between 0 and 60000 (milliseconds)", l.rtt_ms)));
            }
            let link = Link { bandwidth_mbps: l.bandwidth_mbps, rtt_ms: l.rtt_ms };
            if links.insert(link_key(&l.a, &l.b), link).is_some() {
                return Err(at(format!("the link {} - {} is listed twice; keep one", l.a, l.b)));
            }
        }
        Ok(Self { name: raw.name, ca_cert, ca_cert_pem, path: None, sites, links })
    }

    /// The site of that name, if listed.
    pub fn site(&self, name: &str) -> Option<&Site> {
        self.sites.get(name)
    }

    /// Every listed site, by name.
    pub fn sites(&self) -> impl Iterator<Item = &Site> {
        self.sites.values()
    }

    /// The link between two sites, in either order; [`DEFAULT_LINK`] when the table does
    /// not list it (or when `a == b`).
    pub fn link(&self, a: &str, b: &str) -> Link {
        self.links.get(&link_key(a, b)).copied().unwrap_or(DEFAULT_LINK)
    }

    /// The text `clusster federation init` writes: every field documented.
    pub fn template(name: &str, ca_cert: &str) -> String {
        format!(
            r#"# clusster federation file: the sites that trust one federation CA, and the paths between
# them. Every site keeps a copy; a peer whose certificate the CA did not sign, or whose
# site name is not listed here, is refused during the TLS handshake. Removing a site's
# entry (and handing the new file to every site) shuts it out.

# The federation's name. Keep it as `federation init` wrote it: site certificates are
# issued in its name.
name = "{name}"

# The federation CA certificate (PEM): a path relative to this file, or the PEM text
# itself in a multi-line string ("""-----BEGIN CERTIFICATE----- ...""").
ca_cert = "{ca_cert}"

# One [[site]] entry per site; `clusster site init NAME --federation DIR` adds or updates it.
#
# [[site]]
# # The site's name: lowercase letters, digits and '-', starting with a letter, at most
# # 63 characters. Its certificate carries the DNS name <name>.site.clusster.
# name = "paris"
# # Where the site's QUIC transfer listener is reached: host:port (IPv6 in brackets).
# quic = "transfer.paris.example.org:7444"
# # The site's S3 gateway URL.
# s3 = "https://s3.paris.example.org"
# # The site's Ed25519 public key ("ed25519:" + 64 hex digits), which checks the catalog
# # events it signs. `site init` writes it.
# signing_key = "ed25519:..."
# # The pin of its TLS key ("sha256:" + 64 hex digits of the SHA-256 of its certificate's
# # SubjectPublicKeyInfo): a certificate with another key is refused, even one the CA
# # signed. `site init` writes it.
# tls_key = "sha256:..."
# # Attributes replication rules and placement queries match on.
# attributes = {{ country = "fr", tier = "hpc" }}

# The link table: measured bandwidth and round-trip time between two sites (the same both
# ways). Transfers size their windows from it; a pair not listed is assumed to be
# {default_mbps} Mbit/s at {default_rtt} ms.
#
# [[link]]
# a = "paris"
# b = "julich"
# # Bottleneck bandwidth, megabits per second.
# bandwidth_mbps = 10000
# # Round-trip time, milliseconds.
# rtt_ms = 12.5
"#,
            default_mbps = DEFAULT_LINK.bandwidth_mbps,
            default_rtt = DEFAULT_LINK.rtt_ms,
        )
    }
}

fn link_key(a: &str, b: &str) -> (String, String) {
    if a <= b { (a.to_owned(), b.to_owned()) } else { (b.to_owned(), a.to_owned()) }
}

fn load_ca_cert(value: &str, base: &Path) -> Result<(CertificateDer<'static>, String), FederationError> {
    let (pem, origin) = if value.trim_start().starts_with("-----BEGIN") {
        (value.as_bytes().to_vec(), "the inline `ca_cert`".to_owned())
    } else if value.trim().is_empty() {
        return Err(invalid("`ca_cert` is empty: give the path of the CA certificate (ca.pem)".into()));
    } else {
        let path = base.join(value);
        let pem = std::fs::read(&path).map_err(|e| {
            invalid(format!(
                "`ca_cert`: cannot read {}: {e}; the path is taken from the federation file's directory",
                path.display()
            ))
        })?;
        (pem, path.display().to_string())
    };
    let der = CertificateDer::pem_slice_iter(&pem)
        .next()
        .ok_or_else(|| invalid(format!("`ca_cert`: {origin} holds no PEM certificate")))?
        .map_err(|e| invalid(format!("`ca_cert`: {origin} is not a valid PEM certificate: {e}")))?;
    Ok((der, String::from_utf8_lossy(&pem).into_owned()))
}

fn check_site(raw: RawSite) -> Result<Site, String> {
    validate_site_name(&raw.name).map_err(|e| format!("`name`: {e}"))?;
    validate_quic_address(&raw.quic).map_err(|e| format!("`quic` of site {:?}: {e}", raw.name))?;
    let s3 = validate_s3_url(&raw.s3).map_err(|e| format!("`s3` of site {:?}: {e}", raw.name))?;
    for (key, value) in &raw.attributes {
        validate_attribute(key, value).map_err(|e| format!("`attributes` of site {:?}: {e}", raw.name))?;
    }
    let signing_key =
        parse_signing_key(&raw.signing_key).map_err(|e| format!("`signing_key` of site {:?}: {e}", raw.name))?;
    let tls_key = raw.tls_key.as_deref().ok_or_else(|| {
        format!(
            "site {:?} has no `tls_key`: peers could not tell its certificate from another; {TLS_KEY_HOW}",
            raw.name
        )
    })?;
    let tls_key = parse_tls_key(tls_key).map_err(|e| format!("`tls_key` of site {:?}: {e}", raw.name))?;
    Ok(Site { name: raw.name, quic: raw.quic, s3, attributes: raw.attributes, signing_key, tls_key })
}

/// Checks a `host:port` QUIC address: an IP address (IPv6 in brackets) or a DNS name, and
/// a port from 1 to 65535.
pub fn validate_quic_address(address: &str) -> Result<(), InvalidValue> {
    let example = "write host:port, e.g. \"transfer.example.org:7444\" or \"[2001:db8::1]:7444\"";
    if let Ok(addr) = address.parse::<std::net::SocketAddr>() {
        return if addr.port() == 0 { Err(InvalidValue(format!("{address:?} has port 0; {example}"))) } else { Ok(()) };
    }
    let Some((host, port)) = address.rsplit_once(':') else {
        return Err(InvalidValue(format!("{address:?} has no port; {example}")));
    };
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => return Err(InvalidValue(format!("{address:?} has no valid port (1-65535); {example}"))),
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if host.is_empty() || host.len() > 253 || !host.split('.').all(label_ok) {
        return Err(InvalidValue(format!("{address:?}: {host:?} is neither an IP address nor a DNS name; {example}")));
    }
    Ok(())
}

/// Checks a site's S3 URL: http or https, with a host.
pub fn validate_s3_url(s3: &str) -> Result<url::Url, InvalidValue> {
    let url = url::Url::parse(s3)
        .map_err(|e| InvalidValue(format!("{s3:?} is not a URL ({e}); write e.g. \"https://s3.example.org\"")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(InvalidValue(format!("{s3:?} must be an http:// or https:// URL with a host")));
    }
    Ok(url)
}

/// Checks one attribute: the key is a word (`country`, `tier`, `gpu-model`), the value not
/// empty.
pub fn validate_attribute(key: &str, value: &str) -> Result<(), InvalidValue> {
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        return Err(InvalidValue(format!("attribute name {key:?} may hold only letters, digits, '_' and '-'")));
    }
    if value.trim().is_empty() {
        return Err(InvalidValue(format!("attribute {key:?} has an empty value")));
    }
    Ok(())
}

/// Parses `ed25519:<64 hex digits>`.
pub fn parse_signing_key(text: &str) -> Result<[u8; 32], InvalidValue> {
    let what =
        "must be \"ed25519:\" followed by 64 hex digits (the site's public signing key, as `site init` writes it)";
    let hex_part = text.strip_prefix(SIGNING_KEY_PREFIX).ok_or_else(|| InvalidValue(format!("{text:?} {what}")))?;
    let bytes = hex::decode(hex_part).map_err(|_| InvalidValue(format!("{text:?} {what}")))?;
    bytes.try_into().map_err(|_| InvalidValue(format!("{text:?} {what}")))
}

/// Parses `sha256:<64 hex digits>`, a site's TLS key pin.
pub fn parse_tls_key(text: &str) -> Result<[u8; 32], InvalidValue> {
    let bad = || InvalidValue(format!("{text:?} must be \"sha256:\" followed by 64 hex digits; {TLS_KEY_HOW}"));
    let hex_part = text.strip_prefix(TLS_KEY_PREFIX).ok_or_else(bad)?;
    hex::decode(hex_part).map_err(|_| bad())?.try_into().map_err(|_| bad())
}

/// Formats a TLS key pin as the file writes it.
pub fn format_tls_key(pin: &[u8; 32]) -> String {
    format!("{TLS_KEY_PREFIX}{}", hex::encode(pin))
}

/// Formats a public signing key as the file writes it.
pub fn format_signing_key(key: &[u8; 32]) -> String {
    format!("{SIGNING_KEY_PREFIX}{}", hex::encode(key))
}

/// One `[[site]]` entry as `site init` writes it. `init_site` fills in the name and the
/// keys, so a caller may leave those at their defaults.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SiteEntry {
    /// Site name.
    pub name: String,
    /// QUIC `host:port`; None keeps the entry's value (or the loopback default for a new one).
    pub quic: Option<String>,
    /// S3 URL; None keeps the entry's value (or the loopback default for a new one).
    pub s3: Option<String>,
    /// Attributes to set (added to the entry's, replacing those of the same name).
    pub attributes: BTreeMap<String, String>,
    /// The site's public signing key.
    pub signing_key: [u8; 32],
    /// The pin of the site's TLS key (see [`Site::tls_key`]).
    pub tls_key: [u8; 32],
}

/// The QUIC address a new site entry gets when `--quic` is not given: the daemon's default
/// listener, which suits a federation tried out on one machine.
pub const DEFAULT_SITE_QUIC: &str = "127.0.0.1:7444";
/// The S3 URL a new site entry gets when `--s3` is not given: the daemon's default listener.
pub const DEFAULT_SITE_S3: &str = "http://127.0.0.1:9000";

/// Adds `entry` to the federation file's text, or updates the site of that name; comments
/// and the other entries are kept as written. Returns the new text, already checked with
/// [`Federation::parse`].
pub fn upsert_site(text: &str, base: &Path, entry: &SiteEntry) -> Result<String, FederationError> {
    let mut doc: toml_edit::DocumentMut =
        text.parse().map_err(|e| invalid(format!("the federation file is not valid TOML: {e}")))?;
    if !doc.contains_key("site") {
        doc.insert("site", toml_edit::Item::ArrayOfTables(Default::default()));
    }
    let sites = doc["site"]
        .as_array_of_tables_mut()
        .ok_or_else(|| invalid("`site` in the federation file must be a list of [[site]] tables".into()))?;
    let position = sites.iter().position(|t| t.get("name").and_then(|n| n.as_str()) == Some(entry.name.as_str()));
    let table = match position {
        Some(i) => sites.get_mut(i).expect("index from position"),
        None => {
            let mut table = toml_edit::Table::new();
            table["name"] = toml_edit::value(entry.name.clone());
            table["quic"] = toml_edit::value(DEFAULT_SITE_QUIC);
            table["s3"] = toml_edit::value(DEFAULT_SITE_S3);
            sites.push(table);
            sites.iter_mut().last().expect("just pushed")
        }
    };
    if let Some(quic) = &entry.quic {
        table["quic"] = toml_edit::value(quic.clone());
    }
    if let Some(s3) = &entry.s3 {
        table["s3"] = toml_edit::value(s3.clone());
    }
    table["signing_key"] = toml_edit::value(format_signing_key(&entry.signing_key));
    table["tls_key"] = toml_edit::value(format_tls_key(&entry.tls_key));
    if !entry.attributes.is_empty() {
        let mut attributes = table
            .get("attributes")
            .and_then(|a| a.as_inline_table().cloned().or_else(|| a.as_table().map(|t| t.clone().into_inline_table())))
            .unwrap_or_default();
        for (key, value) in &entry.attributes {
            attributes.insert(key.as_str(), value.clone().into());
        }
        table["attributes"] = toml_edit::value(attributes);
    }
    let text = doc.to_string();
    Federation::parse(&text, base)?;
    Ok(text)
}

/// The `[[site]]` entry as TOML text, for an operator to paste into the federation file.
pub fn site_entry_text(entry: &SiteEntry) -> String {
    let mut table = toml_edit::Table::new();
    table["name"] = toml_edit::value(entry.name.clone());
    table["quic"] = toml_edit::value(entry.quic.clone().unwrap_or_else(|| DEFAULT_SITE_QUIC.into()));
    table["s3"] = toml_edit::value(entry.s3.clone().unwrap_or_else(|| DEFAULT_SITE_S3.into()));
    table["signing_key"] = toml_edit::value(format_signing_key(&entry.signing_key));
    table["tls_key"] = toml_edit::value(format_tls_key(&entry.tls_key));
    if !entry.attributes.is_empty() {
        let attributes: toml_edit::InlineTable =
            entry.attributes.iter().map(|(k, v)| (k.as_str(), toml_edit::Value::from(v.clone()))).collect();
        table["attributes"] = toml_edit::value(attributes);
    }
    let mut sites = toml_edit::ArrayOfTables::new();
    sites.push(table);
    let mut doc = toml_edit::DocumentMut::new();
    doc.insert("site", toml_edit::Item::ArrayOfTables(sites));
    doc.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CA_PEM: &str = "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n";

    fn file(sites_and_links: &str) -> String {
        format!("name = \"eu\"\nca_cert = \"\"\"{CA_PEM}\"\"\"\n{sites_and_links}")
    }

    fn site(name: &str) -> String {
        format!(
            "[[site]]\nname = \"{name}\"\nquic = \"{name}.example.org:7444\"\ns3 = \"https://s3.{name}.example.org\"\n\
             signing_key = \"ed25519:{}\"\ntls_key = \"sha256:{}\"\nattributes = {{ country = \"fr\" }}\n",
            "ab".repeat(32),
            "cd".repeat(32)
        )
    }

    fn error_of(text: &str) -> String {
        Federation::parse(text, Path::new("/")).unwrap_err().to_string()
    }

    #[test]
    fn a_valid_file_loads_with_sites_and_links() {
        let text = file(&format!(
            "{}{}[[link]]\na = \"paris\"\nb = \"julich\"\nbandwidth_mbps = 10000\nrtt_ms = 12.5\n",
            site("paris"),
            site("julich")
        ));
        let fed = Federation::parse(&text, Path::new("/")).unwrap();
        assert_eq!(fed.name, "eu");
        let paris = fed.site("paris").unwrap();
        assert_eq!(paris.quic, "paris.example.org:7444");
        assert_eq!(paris.attributes["country"], "fr");
        assert_eq!(paris.signing_key, [0xab; 32]);
        assert_eq!(paris.tls_key, [0xcd; 32]);
        assert_eq!(fed.link("julich", "paris"), Link { bandwidth_mbps: 10000, rtt_ms: 12.5 });
        assert_eq!(fed.link("paris", "julich"), fed.link("julich", "paris"));
        assert_eq!(fed.link("paris", "nowhere"), DEFAULT_LINK);
        assert!(fed.site("nowhere").is_none());
    }

    #[test]
    fn the_template_parses_once_a_ca_is_given() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), CA_PEM).unwrap();
        let fed = Federation::parse(&Federation::template("eu", "ca.pem"), dir.path()).unwrap();
        assert_eq!(fed.sites().count(), 0);
    }

    #[test]
    fn validation_errors_name_the_field_and_the_fix() {
        let two = format!("{}{}", site("paris"), site("paris"));
        assert!(error_of(&file(&two)).contains("listed twice"), "{}", error_of(&file(&two)));
        let bad_name = site("Paris");
        assert!(error_of(&file(&bad_name)).contains("`name`"));
        let bad_quic = site("paris").replace("paris.example.org:7444", "paris.example.org");
        assert!(error_of(&file(&bad_quic)).contains("has no port"), "{}", error_of(&file(&bad_quic)));
        let zero_port = site("paris").replace("paris.example.org:7444", "10.0.0.1:0");
        assert!(error_of(&file(&zero_port)).contains("port 0"));
        let bad_s3 = site("paris").replace("https://s3.paris.example.org", "ftp://x");
        assert!(error_of(&file(&bad_s3)).contains("`s3`"));
        let bad_key = site("paris").replace("ed25519:", "rsa:");
        assert!(error_of(&file(&bad_key)).contains("`signing_key`"));
        let bad_pin = site("paris").replace("sha256:", "md5:");
        assert!(error_of(&file(&bad_pin)).contains("`tls_key`"));
        // A file from before pinning names the site and says how to compute its pin.
        let unpinned = site("paris").lines().filter(|l| !l.starts_with("tls_key")).collect::<Vec<_>>().join("\n");
        let error = error_of(&file(&unpinned));
        assert!(error.contains("\"paris\" has no `tls_key`") && error.contains("openssl"), "{error}");
        let unknown =
            format!("{}[[link]]\na = \"paris\"\nb = \"mars\"\nbandwidth_mbps = 1\nrtt_ms = 1\n", site("paris"));
        let e = error_of(&file(&unknown));
        assert!(e.contains("[[link]] #1") && e.contains("\"mars\" is not listed"), "{e}");
        let self_link =
            format!("{}[[link]]\na = \"paris\"\nb = \"paris\"\nbandwidth_mbps = 1\nrtt_ms = 1\n", site("paris"));
        assert!(error_of(&file(&self_link)).contains("two different sites"));
        let typo = file(&site("paris").replace("quic =", "quick ="));
        assert!(error_of(&typo).contains("quick"), "{}", error_of(&typo));
        let no_ca = "name = \"eu\"\nca_cert = \"missing.pem\"\n";
        assert!(error_of(no_ca).contains("cannot read"), "{}", error_of(no_ca));
        let not_pem = "name = \"eu\"\nca_cert = \"-----BEGIN nothing\"\n";
        assert!(error_of(not_pem).contains("`ca_cert`"));
    }

    #[test]
    fn quic_addresses_accept_names_and_ips() {
        for good in ["a.example.org:7444", "127.0.0.1:1", "[::1]:7444", "localhost:65535"] {
            assert!(validate_quic_address(good).is_ok(), "{good}");
        }
        for bad in ["a.example.org", ":7444", "a:0", "a:70000", "::1:7444", "a b:1", "-a:1"] {
            assert!(validate_quic_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn upsert_keeps_comments_and_updates_in_place() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), CA_PEM).unwrap();
        let template = Federation::template("eu", "ca.pem");
        let mut entry = SiteEntry {
            name: "paris".into(),
            quic: None,
            s3: None,
            attributes: [("country".to_owned(), "fr".to_owned())].into(),
            signing_key: [1; 32],
            tls_key: [4; 32],
        };
        let once = upsert_site(&template, dir.path(), &entry).unwrap();
        assert!(once.contains("# The federation's name."), "comments kept");
        let fed = Federation::parse(&once, dir.path()).unwrap();
        assert_eq!(fed.site("paris").unwrap().quic, DEFAULT_SITE_QUIC);

        entry.quic = Some("paris.example.org:7000".into());
        entry.attributes = [("tier".to_owned(), "hpc".to_owned())].into();
        entry.signing_key = [2; 32];
        entry.tls_key = [5; 32];
        let twice = upsert_site(&once, dir.path(), &entry).unwrap();
        let fed = Federation::parse(&twice, dir.path()).unwrap();
        assert_eq!(fed.sites().count(), 1);
        let paris = fed.site("paris").unwrap();
        assert_eq!(paris.quic, "paris.example.org:7000");
        assert_eq!(paris.signing_key, [2; 32]);
        assert_eq!(paris.tls_key, [5; 32], "a re-issued site's pin replaces the old one");
        assert_eq!(paris.attributes.len(), 2, "attributes merged: {:?}", paris.attributes);

        let bad = SiteEntry { quic: Some("nowhere".into()), ..entry };
        assert!(upsert_site(&twice, dir.path(), &bad).unwrap_err().to_string().contains("`quic`"));
    }

    #[test]
    fn the_printed_entry_is_valid_toml_for_the_file() {
        let entry = SiteEntry {
            name: "paris".into(),
            quic: None,
            s3: Some("https://s3.paris.example.org".into()),
            attributes: [("country".to_owned(), "fr".to_owned())].into(),
            signing_key: [3; 32],
            tls_key: [6; 32],
        };
        let text = file(&site_entry_text(&entry));
        let fed = Federation::parse(&text, Path::new("/")).unwrap();
        assert_eq!(fed.site("paris").unwrap().s3.as_str(), "https://s3.paris.example.org/");
    }
}
