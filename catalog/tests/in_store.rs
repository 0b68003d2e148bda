//! The catalog in the store's RocksDB database: the storage conformance suite, and
//! publishing a prefix as a version that S3 writes no longer change.

use bytes::Bytes;
use catalog::in_store::InStore;
use catalog::publish::{checkout, publish, resolve};
use catalog::{Catalog, CatalogError, ReplicaState};
use federation::signing::SigningKey;
use std::sync::Arc;
use store::{Store, StoreConfig};

async fn open(dir: &std::path::Path) -> Arc<Store> {
    Store::open(StoreConfig::new(dir), hw_offload::Offload::cpu(1)).await.unwrap()
}

async fn put(store: &Store, bucket: &str, key: &str, data: &[u8]) {
    let body = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::copy_from_slice(data))]);
    store.put_object(bucket, key, Default::default(), body, &Default::default()).await.unwrap();
}

async fn get(store: &Arc<Store>, bucket: &str, key: &str) -> Vec<u8> {
    use futures::TryStreamExt;
    let (_, stream) = store.open_object(bucket, key).unwrap().read(None).unwrap();
    stream.map_ok(|b| b.to_vec()).try_concat().await.unwrap()
}

fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test]
async fn the_store_conforms_as_catalog_storage() {
    let dir = tempfile::tempdir().unwrap();
    catalog::storage::conformance::run(&InStore(open(dir.path()).await));
}

#[tokio::test]
async fn a_published_version_holds_its_files_whatever_s3_does_after() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    store.create_bucket("data", "climate").await.unwrap();
    let big = random(3 << 20, 1);
    let small = b"a small file, kept inline by the store".to_vec();
    put(&store, "data", "run1/big.nc", &big).await;
    put(&store, "data", "run1/notes.txt", &small).await;
    put(&store, "data", "run1/empty", b"").await;
    put(&store, "data", "other/x", b"not published").await;
    let cat = Catalog::new(InStore(store.clone()), "paris", SigningKey::generate().unwrap());

    let v1 = publish(&cat, "data", "run1/", "paris.climate", "era5", Some("v1"), 1_000).await.unwrap();
    assert!(v1.new);
    assert_eq!((v1.files, v1.bytes), (3, (big.len() + small.len()) as u64));
    assert_eq!(resolve(&cat, "paris.climate", "era5", "v1").unwrap(), v1.version);
    assert_eq!(resolve(&cat, "paris.climate", "era5", &v1.version.to_hex()).unwrap(), v1.version);
    assert_eq!(cat.namespace("paris.climate").unwrap().unwrap().project, "climate");
    let replicas = cat.replicas(&v1.version).unwrap();
    assert_eq!(replicas.len(), 1);
    assert_eq!((replicas[0].0.as_str(), replicas[0].1.state), ("paris", ReplicaState::Complete));
    assert_eq!(replicas[0].1.bytes_held, v1.bytes);
    // namespace, version, tag, replica: four events in this site's log.
    assert_eq!(cat.heads().unwrap()["paris"], 4);

    // The same content again is the same version: only the tag moves.
    let again = publish(&cat, "data", "run1/", "paris.climate", "era5", Some("latest"), 2_000).await.unwrap();
    assert_eq!(again.version, v1.version);
    assert!(!again.new);
    assert_eq!(cat.heads().unwrap()["paris"], 5);

    // S3 writes to the prefix, then GC: the version keeps every chunk.
    put(&store, "data", "run1/big.nc", &random(3 << 20, 2)).await;
    store.delete_object("data", "run1/notes.txt").await.unwrap();
    store.gc().await.unwrap();
    let check = store.check().unwrap();
    assert!(check.is_clean(), "{check:?}");
    assert_eq!(check.versions, 1);

    // Checked out elsewhere: the files as published, no data written.
    let written = store.metrics().bytes_written.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(checkout(&cat, &v1.version, "data", "restored/").await.unwrap(), 3);
    assert_eq!(store.metrics().bytes_written.load(std::sync::atomic::Ordering::Relaxed), written);
    assert_eq!(get(&store, "data", "restored/big.nc").await, big);
    assert_eq!(get(&store, "data", "restored/notes.txt").await, small);
    assert!(get(&store, "data", "restored/empty").await.is_empty());
    assert!(store.check().unwrap().is_clean());

    // A new version of the changed prefix.
    let v2 = publish(&cat, "data", "run1/", "paris.climate", "era5", Some("v2"), 3_000).await.unwrap();
    assert_ne!(v2.version, v1.version);
    assert_eq!(cat.versions("paris.climate", "era5").unwrap().len(), 2);
    assert_eq!(resolve(&cat, "paris.climate", "era5", "v1").unwrap(), v1.version, "v1 stays where it was");
}

#[tokio::test]
async fn what_may_not_be_published_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    store.create_bucket("data", "climate").await.unwrap();
    store.create_bucket("theirs", "physics").await.unwrap();
    put(&store, "data", "a", b"x").await;
    put(&store, "theirs", "a", b"y").await;
    let cat = Catalog::new(InStore(store.clone()), "paris", SigningKey::generate().unwrap());
    let refused = |r: Result<_, CatalogError>| match r {
        Err(CatalogError::Refused(reason)) | Err(CatalogError::NotFound(reason)) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    };
    let reason = refused(publish(&cat, "data", "", "julich.climate", "d", None, 1).await);
    assert!(reason.contains("at home at site julich"), "{reason}");
    let reason = refused(publish(&cat, "data", "", "climate", "d", None, 1).await);
    assert!(reason.contains("paris.climate"), "{reason}");
    let reason = refused(publish(&cat, "data", "nothing/", "paris.c", "d", None, 1).await);
    assert!(reason.contains("nothing to publish"), "{reason}");
    let reason = refused(publish(&cat, "nope", "", "paris.c", "d", None, 1).await);
    assert!(reason.contains("nope"), "{reason}");
    let reason = refused(publish(&cat, "data", "", "paris.c", "bad name", None, 1).await);
    assert!(reason.contains("dataset"), "{reason}");
    assert!(cat.heads().unwrap().is_empty(), "nothing was logged");
    assert_eq!(store.check().unwrap().versions, 0);

    publish(&cat, "data", "", "paris.c", "d", None, 1).await.unwrap();
    // The namespace is project climate's: physics cannot publish into it.
    let reason = refused(publish(&cat, "theirs", "", "paris.c", "d", None, 2).await);
    assert!(reason.contains("belongs to project"), "{reason}");
    let missing = resolve(&cat, "paris.c", "d", "v9").unwrap_err();
    assert!(matches!(&missing, CatalogError::NotFound(reason) if reason.contains("no such tag")), "{missing}");
}

#[tokio::test]
async fn a_copy_lands_only_as_the_version_its_files_hash_to() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    store.create_bucket("data", "climate").await.unwrap();
    put(&store, "data", "run1/big.nc", &random(3 << 20, 7)).await;
    put(&store, "data", "run1/other.nc", &random(1 << 20, 8)).await;
    let cat = Catalog::new(InStore(store.clone()), "julich", SigningKey::generate().unwrap());
    // The files a transfer brought (here, chunks the store holds already: none inline).
    let files = store.snapshot("data", "run1/").await.unwrap().files.clone();
    let manifest = catalog::Manifest::new(files.iter().map(catalog::copies::file_entry).collect()).unwrap();
    let version = manifest.id();
    let transfer = [1; 16];

    // Files sent as another version, or altered: refused, nothing held or recorded.
    let other = catalog::VersionId([9; 32]);
    let lie = catalog::copies::land(&cat, transfer, &other, files.clone()).await.unwrap_err();
    assert!(matches!(&lie, CatalogError::Refused(r) if r.contains("are version")), "{lie}");
    let mut altered = files.clone();
    altered[0].head.size += 1;
    assert!(matches!(catalog::copies::land(&cat, transfer, &version, altered).await, Err(CatalogError::Refused(_))));
    assert_eq!(store.version_chunks(&other.0).unwrap(), None);
    assert_eq!(store.version_chunks(&version.0).unwrap(), None);
    assert!(cat.replicas(&version).unwrap().is_empty() && cat.heads().unwrap().is_empty());

    // The true files: held, the manifest kept, the replica complete, in one write.
    catalog::copies::land(&cat, transfer, &version, files).await.unwrap();
    assert!(store.version_chunks(&version.0).unwrap().is_some());
    assert!(catalog::publish::manifest(&cat, &version).unwrap().is_some());
    let replicas = cat.replicas(&version).unwrap();
    assert_eq!((replicas[0].0.as_str(), replicas[0].1.state), ("julich", ReplicaState::Complete));
    assert_eq!(replicas[0].1.bytes_held, manifest.bytes());
    // The bucket's objects go; the copy keeps its chunks through GC.
    store.delete_object("data", "run1/big.nc").await.unwrap();
    store.gc().await.unwrap();
    let report = store.check().unwrap();
    assert!(report.is_clean(), "{report:?}");
}
