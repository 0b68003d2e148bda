//! One behaviour suite for the store, run on every chunk backend: the local filesystem
//! (durable pack writes) and `object_store`'s in-memory store.

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use hw_offload::{ChunkId, Offload};
use md5::Digest as _;
use object_store::ObjectStore;
use rand::{RngCore, SeedableRng};
use std::sync::Arc;
use store::multipart::MIN_PART_BYTES;

use store::{
    ChunkBackend, IngestOptions, ObjectMeta, Precondition, PutOptions, SiteAccess, Store, StoreConfig, StoreError,
};

/// A store plus a raw view of its chunk backend, to damage packs behind its back.
struct Fixture {
    store: Arc<Store>,
    raw: Arc<dyn ObjectStore>,
    _dir: tempfile::TempDir,
}

async fn local() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig::new(dir.path());
    let store = Store::open(config, Offload::cpu(2)).await.unwrap();
    let raw = Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.path().join("chunks")).unwrap());
    Fixture { store, raw, _dir: dir }
}

async fn memory() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let raw: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let backend = ChunkBackend::from_store(raw.clone());
    let store = Store::open_with_backend(StoreConfig::new(dir.path()), backend, Offload::cpu(2)).await.unwrap();
    Fixture { store, raw, _dir: dir }
}

/// Runs each test body once per backend.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod on_local { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(super::local().await).await } )* }
        mod on_memory { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(super::memory().await).await } )* }
    };
}

conformance!(
    buckets_have_a_lifecycle,
    objects_round_trip_at_every_size,
    ranges_read_only_what_they_cover,
    overwrite_and_delete_release_chunks_to_gc,
    copies_share_chunks,
    listing_follows_prefix_delimiter_and_marker,
    multipart_upload_completes_and_aborts,
    multipart_refuses_bad_completions,
    corrupt_chunk_is_an_error_and_is_quarantined,
    truncated_pack_is_an_error_not_a_panic,
    failed_body_leaves_nothing_behind,
    digest_mismatch_stores_nothing,
    gc_races_with_writers_without_losing_data,
    an_open_read_survives_delete_and_gc,
    upload_ids_lock_whatever_their_case,
    a_write_to_a_bucket_replaced_meanwhile_lands_nowhere,
    a_create_only_write_fails_at_commit_if_the_key_appeared,
    a_damaged_length_in_a_frame_header_is_the_chunks_fault,
    buckets_are_shared_with_sites_only_as_told,
    what_a_site_may_read_follows_the_objects,
);

fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut data = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut data);
    data
}

fn body(data: &[u8]) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    // Odd-sized pieces, as a network body would arrive.
    let pieces: Vec<_> = data.chunks(100_003).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    futures::stream::iter(pieces)
}

async fn put(store: &Store, bucket: &str, key: &str, data: &[u8]) -> store::ObjectInfo {
    store.put_object(bucket, key, ObjectMeta::default(), body(data), &PutOptions::default()).await.unwrap()
}

async fn get(
    store: &Arc<Store>,
    bucket: &str,
    key: &str,
    range: Option<std::ops::Range<u64>>,
) -> Result<Vec<u8>, StoreError> {
    let (_, _, stream) = store.get_object(bucket, key, range)?;
    let pieces: Vec<Bytes> = stream.try_collect().await?;
    Ok(pieces.concat())
}

async fn pack_count(raw: &Arc<dyn ObjectStore>) -> usize {
    raw.list(None)
        .filter(|m| futures::future::ready(m.as_ref().is_ok_and(|m| m.location.as_ref().ends_with(".pack"))))
        .count()
        .await
}

fn assert_consistent(store: &Store) {
    let report = store.check().unwrap();
    assert!(report.is_clean(), "store inconsistent: {report:?}");
}

async fn buckets_have_a_lifecycle(f: Fixture) {
    let s = &f.store;
    s.create_bucket("b1", "proj").await.unwrap();
    assert!(matches!(s.create_bucket("b1", "proj").await, Err(StoreError::BucketExists(_))));
    s.create_bucket("a0", "").await.unwrap();
    let names: Vec<_> = s.list_buckets().unwrap().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["a0", "b1"]);
    assert_eq!(s.bucket("b1").unwrap().owner, "proj");
    put(s, "b1", "k", b"x").await;
    assert!(matches!(s.delete_bucket("b1").await, Err(StoreError::BucketNotEmpty(_))));
    s.delete_object("b1", "k").await.unwrap();
    s.delete_bucket("b1").await.unwrap();
    assert!(matches!(s.bucket("b1"), Err(StoreError::NoSuchBucket(_))));
    assert!(matches!(s.head_object("b1", "k"), Err(StoreError::NoSuchBucket(_))));
}

async fn objects_round_trip_at_every_size(f: Fixture) {
    let s = &f.store;
    s.create_bucket("b", "").await.unwrap();
    let inline_max = s.config().inline_max_bytes as usize;
    // Log-like lines that differ (identical lines would mostly dedup, not compress).
    let text: Vec<u8> = (0..60_000u64)
        .flat_map(|i| {
            format!("2026-11-21T12:00:{:02} node{:03} job {} state=RUNNING\n", i % 60, i % 97, i * 7919 % 100_003)
                .into_bytes()
        })
        .collect();
    let cases: Vec<(String, Vec<u8>)> = vec![
        ("empty".into(), Vec::new()),
        ("one".into(), vec![7]),
        ("inline-max".into(), random(inline_max, 1)),
        ("inline-max+1".into(), random(inline_max + 1, 2)),
        ("random-3M".into(), random(3 << 20, 3)),
        ("text".into(), text),
    ];
    for (key, data) in &cases {
        let info = put(s, "b", key, data).await;
        assert_eq!(info.head.size, data.len() as u64);
        assert_eq!(info.head.etag, hex::encode(md5::Md5::digest(data)), "{key}");
        assert_eq!(&get(s, "b", key, None).await.unwrap(), data, "{key}");
        assert_eq!(s.head_object("b", key).unwrap().head.size, data.len() as u64);
    }
    assert!(matches!(s.head_object("b", "nope"), Err(StoreError::NoSuchKey { .. })));
    let m = s.metrics();
    let saved = m.compression_saved.load(std::sync::atomic::Ordering::Relaxed);
    assert!(saved > 2_000_000, "the text object compresses (saved {saved} bytes)");
    assert_consistent(s);
}

async fn ranges_read_only_what_they_cover(f: Fixture) {
    let s = &f.store;
    s.create_bucket("b", "").await.unwrap();
    let data = random(2 << 20, 9);
    put(s, "b", "r", &data).await;
    for (a, b) in [(0u64, 1u64), (100, 70_000), (1 << 20, 2 << 20), ((2 << 20) - 1, 2 << 20), (5, (4 << 20) + 5)] {
        let got = get(s, "b", "r", Some(a..b)).await.unwrap();
        assert_eq!(got, &data[a as usize..(b as usize).min(data.len())], "range {a}..{b}");
    }
    assert!(matches!(get(s, "b", "r", Some((2 << 20)..(3 << 20))).await, Err(StoreError::InvalidRange { .. })));
    let read_before = s.metrics().bytes_read.load(std::sync::atomic::Ordering::Relaxed);
    get(s, "b", "r", Some(0..10)).await.unwrap();
    let read = s.metrics().bytes_read.load(std::sync::atomic::Ordering::Relaxed) - read_before;
    assert_eq!(read, 10);
}

async fn overwrite_and_delete_release_chunks_to_gc(f: Fixture) {
    let s = &f.store;
    s.create_bucket("b", "").await.unwrap();
    // A few chunks (their list kept in the object's record) and many (in a manifest).
    for size in [256 << 10, 4 << 20] {
        put(s, "b", "k", &random(size, 1)).await;
        put(s, "b", "k", &random(size, 2)).await;
        let report = s.gc().await.unwrap();
        assert!(report.chunks_deleted > 0, "{size}: {report:?}");
        assert_eq!(report.packs_deleted, 1, "{size}: {report:?}");
        assert_eq!(get(s, "b", "k", None).await.unwrap(), random(size, 2));
        assert_consistent(s);
        s.delete_object("b", "k").await.unwrap();
        s.delete_object("b", "k").await.unwrap(); // deleting again is fine, as in S3
        s.gc().await.unwrap();
        assert_eq!(pack_count(&f.raw).await, 0, "{size}");
        assert_consistent(s);
    }
}

async fn copies_share_chunks(f: Fixture) {
    let s = &f.store;
    s.create_bucket("b", "").await.unwrap();
    s.create_bucket("c", "").await.unwrap();
    let data = random(3 << 20, 4);
    put(s, "b", "src", &data).await;
    let written = s.metrics().bytes_written.load(std::sync::atomic::Ordering::Relaxed);
    let meta = ObjectMeta { content_type: Some("text/csv".into()), ..Default::default() };
    let info = s.copy_object("b", "src", "c", "dst", Some(meta)).await.unwrap();
    assert_eq!(info.head.meta.content_type.as_deref(), Some("text/csv"));
    assert_eq!(s.metrics().bytes_written.load(std::sync::atomic::Ordering::Relaxed), written, "no data copied");
    // Copy onto itself replacing metadata, as rclone does to set mtimes.
    let mut meta = ObjectMeta::default();
    meta.user.insert("mtime".into(), "1700000000".into());
    s.copy_object("b", "src", "b", "src", Some(meta)).await.unwrap();
    assert_eq!(s.head_object("b", "src").unwrap().head.meta.user["mtime"], "1700000000");
    s.delete_object("b", "src").await.unwrap();
    s.gc().await.unwrap();
    assert_eq!(get(s, "c", "dst", None).await.unwrap(), data);
    assert_consistent(s);
    // The same for an object whose chunk list is in its record.
    let small = random(200 << 10, 5);
    put(s, "b", "small", &small).await;
    s.copy_object("b", "small", "c", "small", None).await.unwrap();
    s.delete_object("b", "small").await.unwrap();
    s.gc().await.unwrap();
    assert_eq!(get(s, "c", "small", None).await.unwrap(), small);
    assert_consistent(s);
}

async fn listing_follows_prefix_delimiter_and_marker(f: Fixture) {
    let s = &f.store;
    s.create_bucket("b", "").await.unwrap();
    for key in ["a", "d/1", "d/2", "d/e/3", "f", "g/4"] {
        put(s, "b", key, key.as_bytes()).await;
    }
    let keys = |p: &store::ListPage| p.objects.iter().map(|o| o.key.clone()).collect::<Vec<_>>();
    let all = s.list_objects("b", "", None, "", 1000).unwrap();
    assert_eq!(keys(&all), ["a", "d/1", "d/2", "d/e/3", "f", "g/4"]);
    assert!(!all.truncated);
    let top = s.list_objects("b", "", Some("/"), "", 1000).unwrap();
    assert_eq!(keys(&top), ["a", "f"]);
    assert_eq!(top.common_prefixes, ["d/", "g/"]);
    let d = s.list_objects("b", "d/", Some("/"), "", 1000).unwrap();
    assert_eq!(keys(&d), ["d/1", "d/2"]);
    assert_eq!(d.common_prefixes, ["d/e/"]);
    // Paging: two entries at a time, continuing after the marker.
    let mut seen = Vec::new();
    let mut marker = String::new();
    loop {
        let page = s.list_objects("b", "", Some("/"), &marker, 2).unwrap();
        seen.extend(keys(&page));
        seen.extend(page.common_prefixes.clone());
        if !page.truncated {
            break;
        }
        marker = page.next_marker.unwrap();
    }
    seen.sort();
    assert_eq!(seen, ["a", "d/", "f", "g/"]);
    let empty = s.list_objects("b", "zzz", None, "", 1000).unwrap();
    assert!(empty.objects.is_empty() && !empty.truncated);
}

async fn multipart_upload_completes_and_aborts(f: Fixture) {
    let s = &f.store;
    s.create_bucket("b", "").await.unwrap();
    let meta = ObjectMeta { content_type: Some("application/x-hdf5".into()), ..Default::default() };
    let id = s.create_upload("b", "big", meta, None).await.unwrap();
    let p1 = random(MIN_PART_BYTES as usize, 11);
    let p2 = random(1 << 20, 12);
    // Upload part 2 first, and part 1 twice: the second replaces the first.
    let i2 = s.upload_part("b", "big", &id, 2, body(&p2), &PutOptions::default()).await.unwrap();
    s.upload_part("b", "big", &id, 1, body(&random(MIN_PART_BYTES as usize, 99)), &PutOptions::default())
        .await
        .unwrap();
    let i1 = s.upload_part("b", "big", &id, 1, body(&p1), &PutOptions::default()).await.unwrap();
    let (parts, truncated) = s.list_parts("b", "big", &id, 0, 1000).unwrap();
    assert_eq!(parts.iter().map(|p| p.part).collect::<Vec<_>>(), [1, 2]);
    assert!(!truncated);
    let (uploads, _) = s.list_uploads("b", "", "", "", 1000).unwrap();
    assert_eq!(uploads.len(), 1);
    let info = s
        .complete_upload("b", "big", &id, &[(1, i1.etag.clone()), (2, format!("\"{}\"", i2.etag))], Vec::new())
        .await
        .unwrap();
    let mut md5s = md5::Md5::new();
    md5s.update(md5::Md5::digest(&p1));
    md5s.update(md5::Md5::digest(&p2));
    assert_eq!(info.head.etag, format!("{}-2", hex::encode(md5s.finalize())));
    assert_eq!(info.head.meta.content_type.as_deref(), Some("application/x-hdf5"));
    assert_eq!(info.head.part_sizes, [p1.len() as u64, p2.len() as u64]);
    assert_eq!(get(s, "b", "big", None).await.unwrap(), [p1, p2].concat());
    assert!(matches!(s.list_parts("b", "big", &id, 0, 10), Err(StoreError::NoSuchUpload(_))));

    let id = s.create_upload("b", "gone", ObjectMeta::default(), None).await.unwrap();
    s.upload_part("b", "gone", &id, 1, body(&random(1 << 20, 13)), &PutOptions::default()).await.unwrap();
    s.abort_upload("b", "gone", &id).await.unwrap();
    assert!(matches!(s.abort_upload("b", "gone", &id).await, Err(StoreError::NoSuchUpload(_))));
    s.gc().await.unwrap();
    assert_consistent(s);
    assert!(s.list_uploads("b", "", "", "", 1000).unwrap().0.is_empty());
}

async fn multipart_refuses_bad_completions(f: Fixture) {
    let s = &f.store;
    s.create_bucket("b", "").await.unwrap();
    let id = s.create_upload("b", "k", ObjectMeta::default(), None).await.unwrap();
    let small = s.upload_part("b", "k", &id, 1, body(&random(1000, 1)), &PutOptions::default()).await.unwrap();
    let last = s.upload_part("b", "k", &id, 2, body(&random(1000, 2)), &PutOptions::default()).await.unwrap();
    let err = s.complete_upload("b", "k", &id, &[(1, small.etag.clone()), (2, last.etag.clone())], vec![]).await;
    assert!(matches!(err, Err(StoreError::PartTooSmall { part: 1, .. })), "{err:?}");
    let err = s.complete_upload("b", "k", &id, &[(2, last.etag.clone()), (1, small.etag.clone())], vec![]).await;
    assert!(matches!(err, Err(StoreError::InvalidPartOrder)), "{err:?}");
    let err = s.complete_upload("b", "k", &id, &[(1, "0123".into())], vec![]).await;
    assert!(matches!(err, Err(StoreError::InvalidPart { part: 1 })), "{err:?}");
    let err = s.complete_upload("b", "k", "not-an-id", &[(1, small.etag.clone())], vec![]).await;
    assert!(matches!(err, Err(StoreError::NoSuchUpload(_))), "{err:?}");
    // The failed completions changed nothing: completing with one part still works.
    s.complete_upload("b", "k", &id, &[(2, last.etag)], vec![]).await.unwrap();
    assert_eq!(get(s, "b", "k", None).await.unwrap(), random(1000, 2));
    s.gc().await.unwrap();
    assert_consistent(s);
}

/// Flips one byte of every pack's payload area.
async fn damage_packs(raw: &Arc<dyn ObjectStore>, mutate: impl Fn(&mut Vec<u8>)) {
    let packs: Vec<_> = raw.list(None).try_collect().await.unwrap();
    for meta in packs.into_iter().filter(|m| m.location.as_ref().ends_with(".pack")) {
        let mut data = raw.get(&meta.location).await.unwrap().bytes().await.unwrap().to_vec();
        mutate(&mut data);
        raw.put(&meta.location, data.into()).await.unwrap();
    }
}

async fn corrupt_chunk_is_an_error_and_is_quarantined(f: Fixture) {
    let s = &f.store;
    s.create_bucket("b", "").await.unwrap();
    let data = random(200_000, 5);
    put(s, "b", "bad", &data).await;
    put(s, "b", "small", b"inline objects live in metadata").await;
    damage_packs(&f.raw, |d| {
        let at = store::frame::HEADER_LEN + 10;
        d[at] ^= 0xff;
    })
    .await;
    let err = get(s, "b", "bad", None).await.unwrap_err();
    assert!(matches!(err, StoreError::CorruptChunk { .. }), "{err}");
    assert!(err.to_string().contains("quarantined"), "{err}");
    assert_eq!(get(s, "b", "small", None).await.unwrap(), b"inline objects live in metadata");
    let err = get(s, "b", "bad", None).await.unwrap_err();
    assert!(matches!(err, StoreError::MissingChunk(_)), "a quarantined chunk stays out of service: {err}");
    let scrub = s.scrub().await.unwrap();
    assert!(scrub.corrupt.is_empty(), "already quarantined: {scrub:?}");
    assert_eq!(s.check().unwrap().missing_chunks.len(), 1);
    // Writing the same bytes again repairs the object.
    put(s, "b", "again", &data).await;
    assert_eq!(get(s, "b", "bad", None).await.unwrap(), data);
    assert_consistent(s);
}

async fn truncated_pack_is_an_error_not_a_panic(f: Fixture) {
    let s = &f.store;
    s.create_bucket("b", "").await.unwrap();
    put(s, "b", "t", &random(300_000, 6)).await;
    damage_packs(&f.raw, |d| d.truncate(d.len() / 2)).await;
    let scrub = s.scrub().await.unwrap();
    assert!(!scrub.corrupt.is_empty(), "{scrub:?}");
    assert!(get(s, "b", "t", None).await.is_err());
}

async fn failed_body_leaves_nothing_behind(f: Fixture) {
    let s = &f.store;
    s.create_bucket("b", "").await.unwrap();
    put(s, "b", "kept", &random(1 << 20, 7)).await;
    let packs_before = pack_count(&f.raw).await;
    // A client that disconnects after 40 MiB: packs were sealed, nothing committed.
    let good = futures::stream::iter((0..40).map(|i| Ok(Bytes::from(random(1 << 20, 100 + i)))));
    let broken = good.chain(futures::stream::once(async { Err(std::io::Error::other("connection reset")) }));
    let err = s.put_object("b", "lost", ObjectMeta::default(), broken, &PutOptions::default()).await.unwrap_err();
    assert!(matches!(err, StoreError::Body(_)), "{err}");
    assert!(pack_count(&f.raw).await > packs_before);
    assert!(matches!(s.head_object("b", "lost"), Err(StoreError::NoSuchKey { .. })));
    let report = s.gc().await.unwrap();
    assert!(report.orphan_packs_deleted > 0, "{report:?}");
    assert_eq!(pack_count(&f.raw).await, packs_before);
    assert_eq!(get(s, "b", "kept", None).await.unwrap(), random(1 << 20, 7));
    assert_consistent(s);
}

async fn digest_mismatch_stores_nothing(f: Fixture) {
    let s = &f.store;
    s.create_bucket("b", "").await.unwrap();
    put(s, "b", "k", b"original").await;
    let opts = PutOptions { expected_md5: Some([0; 16]), ..Default::default() };
    let err = s.put_object("b", "k", ObjectMeta::default(), body(&random(100_000, 1)), &opts).await.unwrap_err();
    assert!(matches!(err, StoreError::DigestMismatch { algo: "md5", .. }), "{err}");
    let opts = PutOptions {
        expected_checksums: vec![(hw_offload::ChecksumAlgo::Crc32c, vec![1, 2, 3, 4])],
        ..Default::default()
    };
    let err = s.put_object("b", "k", ObjectMeta::default(), body(b"other"), &opts).await.unwrap_err();
    assert!(matches!(err, StoreError::DigestMismatch { algo: "crc32c", .. }), "{err}");
    assert_eq!(get(s, "b", "k", None).await.unwrap(), b"original");
    s.gc().await.unwrap();
    assert_consistent(s);
}

async fn gc_races_with_writers_without_losing_data(f: Fixture) {
    let s = &f.store;
    s.create_bucket("b", "").await.unwrap();
    // The same few contents written, overwritten and deleted while GC runs, so GC keeps
    // finding chunks at zero that writers are about to dedup against.
    let contents: Vec<Vec<u8>> = (0..3).map(|i| random(400_000, 50 + i)).collect();
    let gc = {
        let s = s.clone();
        tokio::spawn(async move {
            for _ in 0..30 {
                s.gc().await.unwrap();
                tokio::task::yield_now().await;
            }
        })
    };
    let mut writers = Vec::new();
    for w in 0..3usize {
        let s = s.clone();
        let contents = contents.clone();
        writers.push(tokio::spawn(async move {
            for round in 0..13usize {
                let key = format!("w{w}");
                let data = &contents[(w + round) % contents.len()];
                s.put_object("b", &key, ObjectMeta::default(), body(data), &PutOptions::default()).await.unwrap();
                assert_eq!(&get(&s, "b", &key, None).await.unwrap(), data);
                if round % 4 == 3 {
                    s.delete_object("b", &key).await.unwrap();
                }
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    gc.await.unwrap();
    s.gc().await.unwrap();
    for w in 0..3usize {
        let data = &contents[(w + 12) % contents.len()];
        assert_eq!(&get(s, "b", &format!("w{w}"), None).await.unwrap(), data);
    }
    assert_consistent(s);
}

async fn an_open_read_survives_delete_and_gc(f: Fixture) {
    let s = &f.store;
    s.create_bucket("b", "").await.unwrap();
    let data = random(3 << 20, 21);
    put(s, "b", "k", &data).await;
    let open = s.open_object("b", "k").unwrap();
    s.delete_object("b", "k").await.unwrap();
    s.gc().await.unwrap();
    // The object is gone for new readers, but the reader that opened it gets every byte.
    assert!(matches!(s.head_object("b", "k"), Err(StoreError::NoSuchKey { .. })));
    let (_, stream) = open.read(None).unwrap();
    let got: Vec<Bytes> = stream.try_collect().await.unwrap();
    assert_eq!(got.concat(), data);
    drop(open);
    // Once the reader is done, GC takes the chunks.
    let report = s.gc().await.unwrap();
    assert!(report.chunks_deleted > 0, "{report:?}");
    assert_eq!(pack_count(&f.raw).await, 0);
    assert_consistent(s);
}

async fn upload_ids_lock_whatever_their_case(f: Fixture) {
    let s = &f.store;
    s.create_bucket("b", "").await.unwrap();
    let id = s.create_upload("b", "k", ObjectMeta::default(), None).await.unwrap();
    s.upload_part("b", "k", &id, 1, body(&random(1 << 20, 22)), &PutOptions::default()).await.unwrap();
    let upper = id.to_ascii_uppercase();
    let (a, b) = tokio::join!(s.abort_upload("b", "k", &upper), s.abort_upload("b", "k", &id));
    // Exactly one abort finds the upload; the references are released once.
    assert!(a.is_ok() != b.is_ok(), "{a:?} {b:?}");
    s.gc().await.unwrap();
    assert_consistent(s);
    assert_eq!(pack_count(&f.raw).await, 0);
}

/// An ingested body, not yet committed: what a PUT holds while its client uploads.
async fn ingested(s: &Store, data: &[u8]) -> store::Ingested {
    let opts = IngestOptions { checksums: Vec::new(), allow_inline: true, max_bytes: u64::MAX };
    s.ingest(body(data), &opts).await.unwrap()
}

async fn a_write_to_a_bucket_replaced_meanwhile_lands_nowhere(f: Fixture) {
    let s = &f.store;
    s.create_bucket("b", "physics").await.unwrap();
    put(s, "b", "kept", b"physics data").await;
    let seen = s.bucket("b").unwrap();
    let same_bucket = Precondition { bucket: Some(seen), absent: false, ..Default::default() };
    let upload = ingested(s, &random(300_000, 7)).await;
    // While the body was read, physics deleted the bucket and biology took the name.
    s.delete_object("b", "kept").await.unwrap();
    s.delete_bucket("b").await.unwrap();
    s.create_bucket("b", "biology").await.unwrap();
    put(s, "b", "theirs", b"biology data").await;

    let refused = s.commit_object("b", "k", ObjectMeta::default(), upload, "e".into(), Vec::new(), &same_bucket).await;
    assert!(matches!(refused, Err(StoreError::NoSuchBucket(_))), "{refused:?}");
    assert!(matches!(s.head_object("b", "k"), Err(StoreError::NoSuchKey { .. })));
    // A multi-delete checked against the old bucket deletes nothing in the new one.
    let refused = s.delete_object_if("b", "theirs", &same_bucket).await;
    assert!(matches!(refused, Err(StoreError::NoSuchBucket(_))), "{refused:?}");
    assert_eq!(get(s, "b", "theirs", None).await.unwrap(), b"biology data");
    assert!(s.check().unwrap().is_clean(), "the refused write left no references");
}

async fn a_create_only_write_fails_at_commit_if_the_key_appeared(f: Fixture) {
    let s = &f.store;
    s.create_bucket("b", "p").await.unwrap();
    let create_only = Precondition { bucket: Some(s.bucket("b").unwrap()), absent: true, ..Default::default() };
    // Two creates of one key whose bodies were read at the same time.
    let first = ingested(s, &random(200_000, 1)).await;
    let second = ingested(s, &random(200_000, 2)).await;
    s.commit_object("b", "k", ObjectMeta::default(), first, "1".into(), Vec::new(), &create_only).await.unwrap();
    let lost = s.commit_object("b", "k", ObjectMeta::default(), second, "2".into(), Vec::new(), &create_only).await;
    assert!(matches!(lost, Err(StoreError::ObjectExists { .. })), "{lost:?}");
    assert_eq!(get(s, "b", "k", None).await.unwrap(), random(200_000, 1));
    assert!(s.check().unwrap().is_clean());
}

async fn a_damaged_length_in_a_frame_header_is_the_chunks_fault(f: Fixture) {
    let s = &f.store;
    s.create_bucket("b", "").await.unwrap();
    // Compressible, so that its frames are zstd and a header's plain length is not tied
    // to its payload length: the damage decodes, and only the index can tell.
    let text: Vec<u8> = (0..20_000).flat_map(|i| format!("line {i} of a compressible file\n").into_bytes()).collect();
    put(s, "b", "text", &text).await;
    // The first frame of each pack: the low byte of its plain length (header bytes 8..12).
    damage_packs(&f.raw, |d| d[11] ^= 0x01).await;
    let scrub = s.scrub().await.unwrap();
    assert_eq!(scrub.corrupt.len(), 1, "the damaged frame is quarantined, the scrub goes on: {scrub:?}");
    let err = get(s, "b", "text", None).await.unwrap_err();
    assert!(matches!(err, StoreError::MissingChunk(_)), "out of service until repaired: {err}");
    put(s, "b", "again", &text).await;
    assert_eq!(get(s, "b", "text", None).await.unwrap(), text, "writing the bytes again repairs it");
}

async fn buckets_are_shared_with_sites_only_as_told(f: Fixture) {
    let s = &f.store;
    s.create_bucket("b", "proj").await.unwrap();
    s.create_bucket("other", "proj").await.unwrap();
    // Shared with no site by default.
    assert!(!s.site_may("b", "julich", SiteAccess::Read).unwrap());
    assert!(!s.site_may("b", "julich", SiteAccess::Write).unwrap());
    assert!(matches!(s.site_may("nope", "julich", SiteAccess::Read), Err(StoreError::NoSuchBucket(_))));

    s.share_bucket("b", "julich", true, false).await.unwrap();
    s.share_bucket("other", "julich", false, true).await.unwrap();
    assert!(s.site_may("b", "julich", SiteAccess::Read).unwrap());
    assert!(!s.site_may("b", "julich", SiteAccess::Write).unwrap());
    assert!(!s.site_may("b", "cern", SiteAccess::Read).unwrap());
    assert_eq!(s.buckets_shared_with("julich", SiteAccess::Read).unwrap(), ["b"]);
    assert_eq!(s.buckets_shared_with("julich", SiteAccess::Write).unwrap(), ["other"]);
    // Sharing again replaces the rights.
    s.share_bucket("b", "julich", false, true).await.unwrap();
    assert!(!s.site_may("b", "julich", SiteAccess::Read).unwrap());
    let shares = s.bucket_shares("b").unwrap();
    assert_eq!(shares.len(), 1);
    assert_eq!((shares[0].0.as_str(), shares[0].1.read, shares[0].1.write), ("julich", false, true));

    // Bad requests change nothing.
    assert!(matches!(s.share_bucket("b", "julich", false, false).await, Err(StoreError::InvalidName(_))));
    assert!(matches!(s.share_bucket("b", "bad/site", true, true).await, Err(StoreError::InvalidName(_))));
    assert!(matches!(s.share_bucket("nope", "julich", true, true).await, Err(StoreError::NoSuchBucket(_))));
    assert!(s.site_may("b", "julich", SiteAccess::Write).unwrap());

    assert!(s.unshare_bucket("b", "julich").await.unwrap());
    assert!(!s.unshare_bucket("b", "julich").await.unwrap());
    assert!(!s.site_may("b", "julich", SiteAccess::Write).unwrap());

    // A bucket deleted and created again by anyone starts unshared.
    s.share_bucket("b", "julich", true, true).await.unwrap();
    s.delete_bucket("b").await.unwrap();
    s.create_bucket("b", "someone-else").await.unwrap();
    assert!(s.bucket_shares("b").unwrap().is_empty());
    assert!(!s.site_may("b", "julich", SiteAccess::Read).unwrap());
}

/// The chunk ids of `bucket/key`.
fn chunk_ids(s: &Store, bucket: &str, key: &str) -> Vec<ChunkId> {
    s.export_object(&mut s.transfer_pin(), bucket, key).unwrap().chunks.iter().map(|c| c.id).collect()
}

async fn what_a_site_may_read_follows_the_objects(f: Fixture) {
    // Issue 12, item 1: the chunks a peer may be told of, or sent, are those of the objects
    // of the buckets shared with it for reading, as they are now.
    let s = &f.store;
    s.create_bucket("b", "proj").await.unwrap();
    s.create_bucket("c", "proj").await.unwrap();
    s.share_bucket("b", "julich", true, false).await.unwrap();
    let readable = |ids: &[ChunkId]| s.chunks_readable_by("julich", ids).unwrap();
    put(s, "b", "x", &random(300 << 10, 21)).await;
    let first = chunk_ids(s, "b", "x");
    put(s, "c", "z", &random(300 << 10, 22)).await;
    let other = chunk_ids(s, "c", "z");
    assert!(readable(&first).iter().all(|r| *r));
    assert!(readable(&other).iter().all(|r| !r), "c is not shared");
    // A copy into c, then an overwrite in b: the first version stays only in c.
    s.copy_object("b", "x", "c", "y", None).await.unwrap();
    put(s, "b", "x", &random(300 << 10, 23)).await;
    let second = chunk_ids(s, "b", "x");
    assert!(readable(&first).iter().all(|r| !r));
    assert!(readable(&second).iter().all(|r| *r));
    assert_consistent(s);
    // Parts are not readable; the completed object is.
    let upload = s.create_upload("b", "mp", ObjectMeta::default(), None).await.unwrap();
    let part = random(1 << 20, 24);
    let info = s.upload_part("b", "mp", &upload, 1, body(&part), &PutOptions::default()).await.unwrap();
    // The same bytes in c (chunking depends on content only) name the part's chunks.
    put(s, "c", "part", &part).await;
    let part_ids = chunk_ids(s, "c", "part");
    assert!(readable(&part_ids).iter().all(|r| !r));
    assert_consistent(s);
    s.complete_upload("b", "mp", &upload, &[(1, info.etag)], Vec::new()).await.unwrap();
    assert_eq!(chunk_ids(s, "b", "mp"), part_ids);
    assert!(readable(&part_ids).iter().all(|r| *r));
    assert_consistent(s);
    // Deleted, the bucket's chunks are no one's; a bucket of the same name starts empty.
    let mp = chunk_ids(s, "b", "mp");
    for key in ["x", "mp"] {
        s.delete_object("b", key).await.unwrap();
    }
    assert!(readable(&second).iter().chain(&readable(&mp)).all(|r| !r));
    assert_consistent(s);
    s.delete_bucket("b").await.unwrap();
    s.create_bucket("b", "proj").await.unwrap();
    s.share_bucket("b", "julich", true, false).await.unwrap();
    assert!(readable(&first).iter().chain(&readable(&second)).all(|r| !r));
    assert_consistent(s);
}
