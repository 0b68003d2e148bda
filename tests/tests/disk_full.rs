//! A full disk is a clear error and harms nothing stored: chunk packs on a small tmpfs
//! filled to the last byte, then space freed and writing resumed.

use bytes::Bytes;
use futures::TryStreamExt;
use std::process::Command;
use store::{ObjectMeta, PutOptions, Store, StoreConfig, StoreError};

/// Unmounts the tmpfs when the test ends, whatever happens.
struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

async fn get(store: &std::sync::Arc<Store>, key: &str) -> Result<Vec<u8>, StoreError> {
    let (_, _, stream) = store.get_object("b", key, None)?;
    Ok(stream.try_collect::<Vec<Bytes>>().await?.concat())
}

async fn put(store: &Store, key: &str, data: Vec<u8>) -> Result<(), StoreError> {
    let body = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from(data))]);
    store.put_object("b", key, ObjectMeta::default(), body, &PutOptions::default()).await.map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_is_a_clear_error_and_harms_nothing() {
    // Mounting a tmpfs needs root (CI and the dev machines run as root).
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "this test mounts a tmpfs and must run as root");
    let dir = tempfile::tempdir().unwrap();
    let chunks = dir.path().join("chunks-tmpfs");
    std::fs::create_dir(&chunks).unwrap();
    let status = Command::new("mount").args(["-t", "tmpfs", "-o", "size=24m", "tmpfs"]).arg(&chunks).status().unwrap();
    assert!(status.success(), "mount tmpfs failed");
    let _mount = Mount(chunks.clone());

    let mut config = StoreConfig::new(dir.path().join("site"));
    config.chunk_store_url = Some(format!("file://{}", chunks.display()));
    config.pack_target_bytes = 4 << 20;
    let store = Store::open(config, hw_offload::Offload::cpu(2)).await.unwrap();
    store.create_bucket("b", "").await.unwrap();

    let mut kept = Vec::new();
    let full = loop {
        let key = format!("o{}", kept.len());
        let data = tests::content(kept.len() as u64, 3 << 20, 0);
        match put(&store, &key, data).await {
            Ok(()) => kept.push(key),
            Err(e) => break e,
        }
        assert!(kept.len() < 20, "24 MiB tmpfs never filled up");
    };
    assert!(matches!(full, StoreError::DiskFull(_)), "{full}");
    assert!(full.to_string().contains("no space left"), "{full}");
    assert!(!kept.is_empty());
    for (i, key) in kept.iter().enumerate() {
        assert_eq!(get(&store, key).await.unwrap(), tests::content(i as u64, 3 << 20, 0), "{key}");
    }
    assert!(matches!(store.head_object("b", &format!("o{}", kept.len())), Err(StoreError::NoSuchKey { .. })));
    assert!(store.check().unwrap().is_clean());

    // Free space: the failed write's partial packs and one object go.
    store.delete_object("b", &kept[0]).await.unwrap();
    store.gc().await.unwrap();
    put(&store, "after", tests::content(99, 3 << 20, 0)).await.unwrap();
    assert_eq!(get(&store, "after").await.unwrap(), tests::content(99, 3 << 20, 0));
    assert!(store.check().unwrap().is_clean());
}
