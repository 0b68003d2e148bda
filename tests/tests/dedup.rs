//! Dedup targets of the foundation issue, on 1 GiB of random data in a real store:
//! the same bytes again add < 1 %; a copy with 16 scattered 4 KiB edits, half of them
//! insertions that shift everything after them, adds < 3 %.

use bytes::Bytes;
use rand::{Rng, RngCore, SeedableRng};
use store::{ObjectMeta, PutOptions, Store, StoreConfig};

const GIB: usize = 1 << 30;

fn stored_bytes(dir: &std::path::Path) -> u64 {
    fn walk(p: &std::path::Path) -> u64 {
        std::fs::read_dir(p).map_or(0, |entries| {
            entries
                .flatten()
                .map(|e| {
                    let m = e.metadata().unwrap();
                    if m.is_dir() { walk(&e.path()) } else { m.len() }
                })
                .sum()
        })
    }
    walk(&dir.join("chunks"))
}

async fn put(store: &Store, key: &str, data: &Bytes) {
    let pieces: Vec<Result<Bytes, std::io::Error>> =
        (0..data.len()).step_by(1 << 20).map(|i| Ok(data.slice(i..(i + (1 << 20)).min(data.len())))).collect();
    store
        .put_object("d", key, ObjectMeta::default(), futures::stream::iter(pieces), &PutOptions::default())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedup_of_identical_and_edited_gigabyte() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig::new(dir.path()), hw_offload::Offload::cpu(2)).await.unwrap();
    store.create_bucket("d", "").await.unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(2026);
    let mut data = vec![0u8; GIB];
    rng.fill_bytes(&mut data);
    let original = Bytes::from(data.clone());

    put(&store, "original", &original).await;
    let first = stored_bytes(dir.path());
    assert!(first >= GIB as u64, "random data is stored whole ({first} bytes)");

    put(&store, "same", &original).await;
    let same = stored_bytes(dir.path()) - first;

    // 16 edits of 4 KiB at scattered places: 8 overwrites, 8 insertions (which shift
    // every later byte: fixed-size blocks would store everything after them again).
    let mut edited = data;
    let mut places: Vec<usize> = (0..16).map(|_| rng.gen_range(0..GIB - 8192)).collect();
    places.sort_unstable();
    let mut inserted = 0;
    for (i, at) in places.into_iter().enumerate() {
        let mut patch = vec![0u8; 4096];
        rng.fill_bytes(&mut patch);
        let at = at + inserted;
        if i % 2 == 0 {
            edited[at..at + 4096].copy_from_slice(&patch);
        } else {
            edited.splice(at..at, patch);
            inserted += 4096;
        }
    }
    let before_edit = stored_bytes(dir.path());
    put(&store, "edited", &Bytes::from(edited)).await;
    let edit = stored_bytes(dir.path()) - before_edit;

    let pct = |n: u64| n as f64 * 100.0 / GIB as f64;
    eprintln!(
        "dedup figures: first copy {first} bytes; identical copy +{same} bytes ({:.4} %); 16 x 4 KiB edits +{edit} bytes ({:.3} %)",
        pct(same),
        pct(edit)
    );
    assert!(pct(same) < 1.0, "identical copy added {:.3} %", pct(same));
    assert!(pct(edit) < 3.0, "edited copy added {:.3} %", pct(edit));
    let report = store.check().unwrap();
    assert!(report.is_clean(), "{report:?}");
}
