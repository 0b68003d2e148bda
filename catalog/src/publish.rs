//! Publishing a bucket prefix as a dataset version, and making a version's files visible
//! as S3 objects again.

use crate::catalog::{Catalog, CatalogError};
use crate::event::{EventBody, ReplicaState, check_name, check_namespace, home_of};
use crate::in_store::{InStore, writes};
use crate::manifest::{Manifest, VersionId};
use crate::storage::{Op, Table};
use std::collections::HashSet;

/// What [`publish`] did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Published {
    /// the version id
    pub version: VersionId,
    /// files in it
    pub files: u64,
    /// bytes of its files
    pub bytes: u64,
    /// distinct chunks
    pub chunks: u64,
    /// false when the same content was published as this dataset before (the tag, if
    /// any, still moves to it)
    pub new: bool,
}

fn store_error(e: store::StoreError) -> CatalogError {
    match e {
        e @ (store::StoreError::NoSuchBucket(_) | store::StoreError::InvalidName(_)) => {
            CatalogError::Refused(e.to_string())
        }
        e => CatalogError::Data(e.to_string()),
    }
}

/// Publishes the objects of `bucket` under `prefix` as a version of `ns/name` (creating
/// the namespace, owned by the bucket's owner, on its first publication) and moves `tag`
/// to it. The version holds its chunks from then on: later writes to the prefix change
/// nothing in it.
pub async fn publish(
    catalog: &Catalog<InStore>,
    bucket: &str,
    prefix: &str,
    ns: &str,
    name: &str,
    tag: Option<&str>,
    now_ms: u64,
) -> Result<Published, CatalogError> {
    check_namespace(ns).map_err(CatalogError::Refused)?;
    check_name("dataset", name).map_err(CatalogError::Refused)?;
    if let Some(tag) = tag {
        check_name("tag", tag).map_err(CatalogError::Refused)?;
    }
    if home_of(ns) != Some(catalog.site()) {
        return Err(CatalogError::Refused(format!(
            "namespace {ns} is at home at site {}: publish there (a namespace of this site is named {}.something)",
            home_of(ns).unwrap_or("?"),
            catalog.site()
        )));
    }
    let store = &catalog.storage().0;
    let owner = store.bucket(bucket).map_err(store_error)?.owner;
    let existing = catalog.namespace(ns)?;
    if let Some(record) = &existing
        && record.project != owner
    {
        return Err(CatalogError::Refused(format!(
            "namespace {ns} belongs to project {:?}, bucket {bucket} to project {owner:?}",
            record.project
        )));
    }
    let snapshot = store.snapshot(bucket, prefix).await.map_err(store_error)?;
    if snapshot.files.is_empty() {
        return Err(CatalogError::Refused(format!("no object under {bucket}/{prefix}: nothing to publish")));
    }
    let manifest = Manifest::new(snapshot.files.iter().map(crate::copies::file_entry).collect())
        .map_err(|e| CatalogError::Refused(e.to_string()))?;
    let (published, bodies) = publication(catalog, ns, name, tag, &owner, existing.is_none(), &manifest)?;
    let (version, encoded) = (published.version, manifest.encode());
    let owner_checked = existing.as_ref().map(|r| r.project.clone());
    catalog
        .append_with(bodies, now_ms, async |mut ops| {
            // Under the catalog's writer lock: another publication may have created the
            // namespace since it was looked at (the snapshot takes a while).
            match catalog.namespace(ns)? {
                Some(now) if Some(&now.project) != owner_checked.as_ref() => {
                    return Err(CatalogError::Refused(format!(
                        "namespace {ns} was just created for project {:?}; publish again",
                        now.project
                    )));
                }
                _ => {}
            }
            ops.push(Op::Put(Table::Manifests, version.0.to_vec(), encoded));
            store.hold_version(&version.0, snapshot, writes(ops)).await.map_err(store_error)?;
            Ok(())
        })
        .await?;
    Ok(published)
}

/// What publishing `manifest` as a version of `ns/name` says, and the events that say it:
/// the namespace's creation for `project` (when `create`), the version (when new), the tag,
/// and this site's complete replica (unless recorded already).
pub(crate) fn publication(
    catalog: &Catalog<InStore>,
    ns: &str,
    name: &str,
    tag: Option<&str>,
    project: &str,
    create: bool,
    manifest: &Manifest,
) -> Result<(Published, Vec<EventBody>), CatalogError> {
    let version = manifest.id();
    let distinct: HashSet<_> = manifest.files.iter().flat_map(|f| f.chunks.iter().map(|c| c.0)).collect();
    let published = Published {
        version,
        files: manifest.files.len() as u64,
        bytes: manifest.bytes(),
        chunks: distinct.len() as u64,
        new: !catalog.versions(ns, name)?.iter().any(|(v, _)| *v == version),
    };
    let mut bodies = Vec::new();
    if create {
        bodies.push(EventBody::NamespaceCreated { ns: ns.into(), project: project.into() });
    }
    if published.new {
        bodies.push(EventBody::VersionPublished {
            ns: ns.into(),
            name: name.into(),
            version,
            files: published.files,
            bytes: published.bytes,
        });
    }
    if let Some(tag) = tag {
        bodies.push(EventBody::TagMoved { ns: ns.into(), name: name.into(), tag: tag.into(), version: Some(version) });
    }
    let complete_here = catalog.replicas(&version)?.iter().any(|(site, r)| {
        site == catalog.site() && r.state == ReplicaState::Complete && r.bytes_held == published.bytes
    });
    if !complete_here {
        bodies.push(EventBody::ReplicaChanged {
            version,
            state: ReplicaState::Complete,
            bytes_held: published.bytes,
            chunks_held: published.chunks,
        });
    }
    Ok((published, bodies))
}

/// Lets the sites matching `sites` (a [`crate::sites_expr`] expression) hold copies of
/// the versions of `ns`, a namespace of this site; replaces what it was shared with.
pub async fn share(catalog: &Catalog<InStore>, ns: &str, sites: &str, now_ms: u64) -> Result<String, CatalogError> {
    if home_of(ns) != Some(catalog.site()) {
        return Err(CatalogError::Refused(format!(
            "namespace {ns} is at home at site {}: only its home shares it",
            home_of(ns).unwrap_or("?")
        )));
    }
    if catalog.namespace(ns)?.is_none() {
        return Err(CatalogError::NotFound(format!("no namespace {ns}: publish a version in it first")));
    }
    let parsed = crate::sites_expr::SitesExpr::parse(sites).map_err(|e| CatalogError::Refused(e.to_string()))?;
    let sites = parsed.text();
    catalog.append(EventBody::NamespaceShared { ns: ns.into(), sites: sites.clone() }, now_ms).await?;
    Ok(sites)
}

/// Moves `tag` of `ns/name` to the version `reference` names; only the namespace's home
/// site does.
pub async fn tag(
    catalog: &Catalog<InStore>,
    ns: &str,
    name: &str,
    tag: &str,
    reference: &str,
    now_ms: u64,
) -> Result<VersionId, CatalogError> {
    check_name("tag", tag).map_err(CatalogError::Refused)?;
    if home_of(ns) != Some(catalog.site()) {
        return Err(CatalogError::Refused(format!(
            "namespace {ns} is at home at site {}: only its home moves its tags",
            home_of(ns).unwrap_or("?")
        )));
    }
    let version = resolve(catalog, ns, name, reference)?;
    let body = EventBody::TagMoved { ns: ns.into(), name: name.into(), tag: tag.into(), version: Some(version) };
    catalog.append(body, now_ms).await?;
    Ok(version)
}

/// Replaces the metadata of `ns/name` (empty removes it); only the namespace's home does,
/// and only for a dataset with a version.
pub async fn describe(
    catalog: &Catalog<InStore>,
    ns: &str,
    name: &str,
    metadata: std::collections::BTreeMap<String, String>,
    now_ms: u64,
) -> Result<(), CatalogError> {
    crate::event::check_metadata(&metadata).map_err(CatalogError::Refused)?;
    if home_of(ns) != Some(catalog.site()) {
        return Err(CatalogError::Refused(format!(
            "namespace {ns} is at home at site {}: only its home describes its datasets",
            home_of(ns).unwrap_or("?")
        )));
    }
    if catalog.versions(ns, name)?.is_empty() {
        return Err(CatalogError::NotFound(format!("no dataset {ns}/{name}: publish a version of it first")));
    }
    catalog.append(EventBody::DatasetDescribed { ns: ns.into(), name: name.into(), metadata }, now_ms).await?;
    Ok(())
}

/// The version `reference` names in `ns/name`: a tag, or a version id in hex.
pub fn resolve(catalog: &Catalog<InStore>, ns: &str, name: &str, reference: &str) -> Result<VersionId, CatalogError> {
    if let Some(version) = catalog.tag(ns, name, reference)? {
        return Ok(version);
    }
    match VersionId::from_hex(reference) {
        Some(v) if catalog.versions(ns, name)?.iter().any(|(id, _)| *id == v) => Ok(v),
        _ => Err(CatalogError::NotFound(format!("{ns}/{name}@{reference}: no such tag or version"))),
    }
}

/// The canonical bytes of `version`'s manifest, if this site has them.
pub fn manifest_bytes(catalog: &Catalog<InStore>, version: &VersionId) -> Result<Option<Vec<u8>>, CatalogError> {
    catalog.storage().0.catalog_get(Table::Manifests.name(), &version.0).map_err(store_error)
}

/// The manifest of `version`, if this site has it (verified by its id).
pub fn manifest(catalog: &Catalog<InStore>, version: &VersionId) -> Result<Option<Manifest>, CatalogError> {
    match manifest_bytes(catalog, version)? {
        Some(bytes) => Manifest::decode_verified(&bytes, version)
            .map(Some)
            .map_err(|e| CatalogError::Corrupt { what: format!("manifest of {version}"), reason: e.to_string() }),
        None => Ok(None),
    }
}

/// Makes the files of `version` objects of `bucket` under `prefix` again, sharing the
/// chunks the version holds here (no data is copied). Returns how many.
pub async fn checkout(
    catalog: &Catalog<InStore>,
    version: &VersionId,
    bucket: &str,
    prefix: &str,
) -> Result<u64, CatalogError> {
    let manifest = manifest(catalog, version)?
        .ok_or_else(|| CatalogError::NotFound(format!("version {version} has no replica here: copy it here first")))?;
    let files = crate::copies::snapshot_files(manifest);
    catalog.storage().0.checkout(&version.0, bucket, prefix, files).await.map_err(store_error)
}
