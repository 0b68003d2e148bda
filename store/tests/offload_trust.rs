//! The store against an offload engine that lies (issue 12, item 14): chunk ids an
//! engine computed are confirmed on the host before they decide what is stored, and a
//! body holding a payload that a recheck found wrong is not committed.

use bytes::Bytes;
use futures::TryStreamExt;
use hw_offload::{ChunkId, CpuEngine, Fault, FaultEngine, Offload, Route, Router, RouterConfig};
use rand::{RngCore, SeedableRng};
use std::sync::Arc;
use store::{ObjectMeta, PutOptions, Store, StoreConfig, StoreError};

/// Below the smallest chunk (16 KiB), above the inline limit set below: one chunk.
const ONE_CHUNK: usize = 10_000;

fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut data = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut data);
    data
}

/// A store whose every job goes to `engine` through a router that never samples, so
/// that only the store's own confirmation stands between a lie and the index.
async fn store(dir: &std::path::Path, engine: Arc<FaultEngine>, config: RouterConfig) -> Arc<Store> {
    let router = Router::new(Arc::new(CpuEngine::new(1)), vec![Route::new(engine, 0)], config);
    let mut config = StoreConfig::new(dir);
    config.inline_max_bytes = 1024;
    let store = Store::open(config, Offload::routed(router)).await.unwrap();
    store.create_bucket("b", "test").await.unwrap();
    store
}

fn unsampled() -> RouterConfig {
    RouterConfig { probation_jobs: 0, spot_check_one_in: 0, ..Default::default() }
}

async fn put(store: &Store, key: &str, data: &[u8]) -> Result<store::ObjectInfo, StoreError> {
    let body = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::copy_from_slice(data))]);
    store.put_object("b", key, ObjectMeta::default(), body, &PutOptions::default()).await
}

async fn get(store: &Arc<Store>, key: &str) -> Result<Vec<u8>, StoreError> {
    let (_, _, stream) = store.get_object("b", key, None)?;
    let pieces: Vec<Bytes> = stream.try_collect().await?;
    Ok(pieces.concat())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_chunk_id_never_makes_an_object_point_at_another_objects_data() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(FaultEngine::new("liar", u64::MAX, Fault::None));
    let store = store(dir.path(), engine.clone(), unsampled()).await;
    let a = random(ONE_CHUNK, 1);
    put(&store, "a", &a).await.unwrap();
    // From now on the engine answers every chunk id with the id of a's chunk: b's chunk
    // would be a dedup hit on a's data.
    engine.set_fault(0, Fault::ChunkIdOf(ChunkId::of(&a)));
    let b = random(ONE_CHUNK, 2);
    put(&store, "b", &b).await.unwrap();
    assert_eq!(get(&store, "b").await.unwrap(), b, "b holds its own bytes, not a's");
    assert_eq!(get(&store, "a").await.unwrap(), a);
    let seen = engine.jobs_seen();
    put(&store, "c", &random(ONE_CHUNK, 3)).await.unwrap();
    assert_eq!(engine.jobs_seen(), seen, "the engine was condemned: no more work");
    assert!(store.check().unwrap().is_clean());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_is_never_written_under_an_id_the_host_did_not_confirm() {
    // Confirming dedup hits alone would not do: b's chunk written under c's id would
    // later be a (rightly confirmed) dedup hit for c, which would then serve b's bytes
    // (or, as reads verify, fail).
    let dir = tempfile::tempdir().unwrap();
    let c = random(ONE_CHUNK, 3);
    let engine = Arc::new(FaultEngine::new("liar", 0, Fault::ChunkIdOf(ChunkId::of(&c))));
    let store = store(dir.path(), engine.clone(), unsampled()).await;
    let b = random(ONE_CHUNK, 2);
    put(&store, "b", &b).await.unwrap();
    engine.set_fault(0, Fault::None);
    put(&store, "c", &c).await.unwrap();
    assert_eq!(get(&store, "b").await.unwrap(), b);
    assert_eq!(get(&store, "c").await.unwrap(), c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_with_a_payload_found_wrong_on_a_recheck_is_not_committed() {
    // The engine corrupts its compressed payloads from its first job; one job in four
    // is checked. Chunk answers delivered before the first failed check are checked again
    // when it fails: the body that holds them is refused, never stored corrupt.
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(FaultEngine::new("liar", 0, Fault::CorruptPayload));
    let config = RouterConfig { probation_jobs: 0, spot_check_one_in: 4, ..Default::default() };
    let store = store(dir.path(), engine.clone(), config).await;
    // Text-like, so chunks compress (a corrupt payload is a compressed one).
    let words: [&[u8]; 4] = [b"chunk ", b"replica ", b"site ", b"dataset\n"];
    let mut text = Vec::new();
    let mut x = 7u64;
    while text.len() < 4 << 20 {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        text.extend_from_slice(words[(x >> 62) as usize]);
    }
    match put(&store, "t", &text).await {
        Err(StoreError::Offload(_)) => assert!(get(&store, "t").await.is_err(), "nothing committed"),
        Ok(_) => assert_eq!(get(&store, "t").await.unwrap(), text, "committed only if every chunk is right"),
        Err(e) => panic!("{e}"),
    }
    // Written again, now on the CPU: stored right.
    put(&store, "t", &text).await.unwrap();
    assert_eq!(get(&store, "t").await.unwrap(), text);
}
