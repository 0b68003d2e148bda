//! Copies of a version at other sites: who may hold one, what a sending site offers, and
//! how a copy that arrived is landed and recorded.
//!
//! The namespace's home decides where its data may go ([`EventBody::NamespaceShared`]):
//! every site holding a copy enforces that decision, read from the home's signed log,
//! before it sends one, and a site takes one only if it may hold it. A landed copy is
//! checked against the version id (the files must hash to it), and its hold on its chunks,
//! its manifest and the replica event commit in one write, so the replica says exactly
//! what is held. A chunk quarantined or repaired later changes this site's replica record
//! in the store's own write ([`ReplicaRecorder`]); the event telling the other sites
//! follows from the outbox ([`publish_outbox`]).

use crate::catalog::{Catalog, CatalogError, ReplicaRecord, decode, encode, replica_key};
use crate::event::{EventBody, ReplicaState, home_of};
use crate::in_store::{InStore, writes};
use crate::manifest::{FileEntry, Manifest, VersionId};
use crate::sites_expr::SitesExpr;
use crate::storage::{Op, Table};
use federation::file::Federation;
use hw_offload::{ChecksumAlgo, ChunkId};
use std::collections::HashSet;
use store::transfer::TransferId;
use store::versions::{Availability, CatalogWrite, ReplicaWatch, SnapshotFile};
use store::{ChunkRef, ObjectHead, ObjectMeta};

fn data_error(e: store::StoreError) -> CatalogError {
    CatalogError::Data(e.to_string())
}

/// The namespace `version` was published in, if this site knows of its publication.
fn namespace_of(catalog: &Catalog<InStore>, version: &VersionId) -> Result<String, CatalogError> {
    match catalog.published_as(version)? {
        Some((ns, _)) => Ok(ns),
        None => Err(CatalogError::NotFound(format!(
            "version {version} is not known at {} (not published, or its publication has not arrived yet)",
            catalog.site()
        ))),
    }
}

/// Refuses unless the home of every namespace that published `version` lets `site` hold
/// a copy: the home itself, or a site matching what the home shared the namespace with.
/// (Every one: another site publishing the same files in a namespace of its own gains no
/// right to the first one's copies.)
pub fn may_hold(
    catalog: &Catalog<InStore>,
    federation: &Federation,
    version: &VersionId,
    site: &str,
) -> Result<(), CatalogError> {
    namespace_of(catalog, version)?;
    for (ns, _) in catalog.publications(version)? {
        namespace_may_hold(catalog, federation, &ns, site)?;
    }
    Ok(())
}

/// Refuses unless the home of `ns` lets `site` hold copies of its versions.
fn namespace_may_hold(
    catalog: &Catalog<InStore>,
    federation: &Federation,
    ns: &str,
    site: &str,
) -> Result<(), CatalogError> {
    let ns = ns.to_owned();
    if home_of(&ns) == Some(site) {
        return Ok(());
    }
    let refused = |why: String| CatalogError::Refused(format!("{site} may not hold copies of namespace {ns}: {why}"));
    let Some(text) = catalog.shared_with(&ns)? else {
        return Err(refused(format!(
            "its home has not shared it (`clusster dataset share {ns} --sites EXPR` at {})",
            home_of(&ns).unwrap_or("its home")
        )));
    };
    // Checked by every site when the event was accepted: a failure here is a corrupt record.
    let sites = SitesExpr::parse(&text)
        .map_err(|e| CatalogError::Corrupt { what: format!("sites of namespace {ns}"), reason: e.to_string() })?;
    let attributes = match federation.site(site) {
        Some(s) => &s.attributes,
        None => return Err(refused("it is not a site of the federation".into())),
    };
    if sites.matches(site, attributes) {
        Ok(())
    } else {
        Err(refused(format!("it does not match {:?}, the sites its home shared it with", sites.text())))
    }
}

/// The manifest's files as the store and the transfer engine see them.
pub fn snapshot_files(manifest: Manifest) -> Vec<SnapshotFile> {
    manifest
        .files
        .into_iter()
        .map(|f| SnapshotFile {
            path: f.path,
            head: ObjectHead {
                size: f.size,
                etag: f.etag,
                checksums: f
                    .checksums
                    .iter()
                    .filter_map(|(name, sum)| {
                        ChecksumAlgo::ALL.into_iter().find(|a| a.name() == name).map(|a| (a, sum.clone()))
                    })
                    .collect(),
                mtime_ms: f.mtime_ms as i64,
                meta: ObjectMeta::default(),
                part_sizes: Vec::new(),
            },
            chunks: f.chunks.into_iter().map(|(id, len)| ChunkRef { id, len }).collect(),
        })
        .collect()
}

/// A file as a manifest lists it.
pub fn file_entry(file: &SnapshotFile) -> FileEntry {
    FileEntry {
        path: file.path.clone(),
        size: file.head.size,
        mtime_ms: file.head.mtime_ms.max(0) as u64,
        etag: file.head.etag.clone(),
        checksums: file.head.checksums.iter().map(|(algo, sum)| (algo.name().to_owned(), sum.clone())).collect(),
        chunks: file.chunks.iter().map(|c| (c.id, c.len)).collect(),
    }
}

/// The files of `version` to send: its manifest, which this site must hold whole.
pub fn files_to_send(catalog: &Catalog<InStore>, version: &VersionId) -> Result<Vec<SnapshotFile>, CatalogError> {
    let manifest = crate::publish::manifest(catalog, version)?;
    let held = catalog.storage().0.version_chunks(&version.0).map_err(data_error)?;
    let complete =
        catalog.replicas(version)?.iter().any(|(site, r)| site == catalog.site() && r.state == ReplicaState::Complete);
    match (manifest, held) {
        (Some(manifest), Some(_)) if complete => {
            if manifest
                .files
                .iter()
                .any(|f| f.checksums.iter().any(|(name, _)| ChecksumAlgo::ALL.iter().all(|a| a.name() != name)))
            {
                return Err(CatalogError::Refused(format!(
                    "version {version} has a checksum this build does not know: send it from an up-to-date site"
                )));
            }
            Ok(snapshot_files(manifest))
        }
        _ => Err(CatalogError::NotFound(format!("version {version} has no complete copy at {}", catalog.site()))),
    }
}

/// The most files and bytes `version`'s publications say it has (files, bytes). Any home
/// publishing the same id names the same manifest, so they agree unless one lies; the
/// largest claim bounds what a receiver holds, and the manifest's id checks the rest.
pub fn published_size(catalog: &Catalog<InStore>, version: &VersionId) -> Result<(u64, u64), CatalogError> {
    let mut most: Option<(u64, u64)> = None;
    for (ns, name) in catalog.publications(version)? {
        if let Some((_, record)) = catalog.versions(&ns, &name)?.into_iter().find(|(v, _)| v == version) {
            let (files, bytes) = most.unwrap_or_default();
            most = Some((files.max(record.files), bytes.max(record.bytes)));
        }
    }
    most.ok_or_else(|| {
        CatalogError::NotFound(format!("version {version} was not published, as far as this site knows"))
    })
}

/// The chunks of the other versions of `version`'s dataset held here: a site that sends
/// `version` may be told they are here (it may hold those versions too), so that a new
/// version moves only what changed.
pub fn known_chunks(catalog: &Catalog<InStore>, version: &VersionId) -> Result<HashSet<ChunkId>, CatalogError> {
    let Some((ns, name)) = catalog.published_as(version)? else { return Ok(HashSet::new()) };
    let store = &catalog.storage().0;
    let mut known = HashSet::new();
    for (other, _) in catalog.versions(&ns, &name)? {
        if let Some(chunks) = store.version_chunks(&other.0).map_err(data_error)? {
            known.extend(chunks.into_iter().map(|c| c.id));
        }
    }
    Ok(known)
}

/// Lands a copy of `version` whose files `transfer` brought: checks that they are the
/// version, then holds their chunks, stores the manifest and records the replica
/// complete, in one write that releases the transfer.
pub async fn land(
    catalog: &Catalog<InStore>,
    transfer: TransferId,
    version: &VersionId,
    files: Vec<SnapshotFile>,
) -> Result<(), CatalogError> {
    let manifest = Manifest::new(files.iter().map(file_entry).collect())
        .map_err(|e| CatalogError::Refused(format!("the files sent as version {version}: {e}")))?;
    if manifest.id() != *version {
        return Err(CatalogError::Refused(format!(
            "the files sent as version {version} are version {}: refused",
            manifest.id()
        )));
    }
    let encoded = manifest.encode();
    let bytes = manifest.bytes();
    let chunks: Vec<ChunkRef> = files.into_iter().flat_map(|f| f.chunks).collect();
    let distinct = chunks.iter().map(|c| c.id).collect::<HashSet<_>>().len() as u64;
    let body = EventBody::ReplicaChanged {
        version: *version,
        state: ReplicaState::Complete,
        bytes_held: bytes,
        chunks_held: distinct,
    };
    let store = &catalog.storage().0;
    let complete_here = catalog
        .replicas(version)?
        .iter()
        .any(|(site, r)| site == catalog.site() && r.state == ReplicaState::Complete && r.bytes_held == bytes);
    let bodies = if complete_here { Vec::new() } else { vec![body] };
    catalog
        .append_with(bodies, crate::now_ms(), async |mut ops| {
            ops.push(Op::Put(Table::Manifests, version.0.to_vec(), encoded));
            store.commit_transfer_version(transfer, &version.0, chunks, writes(ops)).await.map_err(data_error)?;
            Ok(())
        })
        .await?;
    Ok(())
}

/// Records what a quarantine or a repair does to this site's replicas, in the store's
/// write that does it: the replica record, and an outbox entry for its event.
pub struct ReplicaRecorder {
    /// this site
    pub site: String,
}

impl ReplicaWatch for ReplicaRecorder {
    fn record(&self, changed: &[Availability]) -> Vec<CatalogWrite> {
        let now = crate::now_ms();
        let mut writes = Vec::with_capacity(changed.len() * 2);
        for a in changed {
            let version = VersionId(a.version);
            let record = ReplicaRecord {
                state: if a.complete { ReplicaState::Complete } else { ReplicaState::Partial },
                bytes_held: a.bytes_held,
                chunks_held: a.chunks_held,
                since_ms: now,
            };
            writes.push(CatalogWrite::Put(Table::Replicas.name(), replica_key(&version, &self.site), encode(&record)));
            writes.push(CatalogWrite::Put(Table::Outbox.name(), version.0.to_vec(), Vec::new()));
        }
        writes
    }
}

/// Appends the events of the replica changes in the outbox, each as its record now
/// stands; returns how many. An event is appended, and its entry cleared, only if the
/// record has not changed again meanwhile (else the next call publishes the newer one).
pub async fn publish_outbox(catalog: &Catalog<InStore>) -> Result<usize, CatalogError> {
    let store = &catalog.storage().0;
    let site = catalog.site().to_owned();
    let mut published = 0;
    for (key, _) in crate::storage::CatalogStorage::scan(catalog.storage(), Table::Outbox, b"", None, 1024)? {
        let Ok(id) = <[u8; 32]>::try_from(key.as_slice()) else { continue };
        let version = VersionId(id);
        let record_key = replica_key(&version, &site);
        let Some(raw) = crate::storage::CatalogStorage::get(catalog.storage(), Table::Replicas, &record_key)? else {
            catalog
                .storage()
                .0
                .catalog_write(vec![CatalogWrite::Delete(Table::Outbox.name(), key)])
                .map_err(data_error)?;
            continue;
        };
        let record: ReplicaRecord = decode(|| format!("replica of {version} here"), &raw)?;
        let body = EventBody::ReplicaChanged {
            version,
            state: record.state,
            bytes_held: record.bytes_held,
            chunks_held: record.chunks_held,
        };
        let mut unchanged = true;
        let appended = catalog
            .append_with(vec![body], crate::now_ms(), async |mut ops| {
                ops.push(Op::Delete(Table::Outbox, key.clone()));
                unchanged = store
                    .catalog_write_if(Table::Replicas.name(), &record_key, Some(&raw), writes(ops))
                    .await
                    .map_err(data_error)?;
                if unchanged { Ok(()) } else { Err(CatalogError::NotFound("changed meanwhile".into())) }
            })
            .await;
        match appended {
            Ok(_) => published += 1,
            Err(_) if !unchanged => {}
            Err(e) => return Err(e),
        }
    }
    Ok(published)
}
