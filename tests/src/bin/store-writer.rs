//! Writes, overwrites and deletes objects in a store forever, printing each operation
//! before it starts (`BEGIN ...`) and once it returned (`ACK ...`). The crash test kills
//! it with SIGKILL at a random moment and checks that every acknowledged operation holds.
//!
//! usage: store-writer DATA_DIR SEED

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use std::io::Write;
use store::{ObjectMeta, PutOptions, Store, StoreConfig};

/// Object sizes: inline, one chunk, many chunks, and more than one pack.
const SIZES: [usize; 5] = [100, 20_000, 300_000, 2_500_000, 17_000_000];
/// Keys are drawn from a small set so that overwrites and deletes are frequent.
const KEYS: u64 = 12;
/// Contents come from a few seeds so that chunks are shared across objects.
const CONTENT_SEEDS: u64 = 5;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().expect("usage: store-writer DATA_DIR SEED");
    let seed: u64 = args.next().and_then(|s| s.parse().ok()).expect("usage: store-writer DATA_DIR SEED");
    let mut config = StoreConfig::new(&dir);
    // Small packs so that a kill often lands between pack writes of one object.
    config.pack_target_bytes = 1 << 20;
    let store = Store::open(config, hw_offload::Offload::cpu(2)).await.expect("open store");
    if store.bucket("crash").is_err() {
        store.create_bucket("crash", "").await.expect("create bucket");
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = std::io::stdout().lock();
    for op in 0u64.. {
        let key = format!("k{}", rng.gen_range(0..KEYS));
        match rng.gen_range(0..10) {
            0..=6 => {
                let content_seed = rng.gen_range(0..CONTENT_SEEDS);
                let size = SIZES[rng.gen_range(0..SIZES.len())];
                let marker = seed * 1_000_000 + op;
                writeln!(out, "BEGIN PUT {key} {content_seed} {size} {marker}").unwrap();
                out.flush().unwrap();
                let data = Bytes::from(tests::content(content_seed, size, marker));
                let pieces: Vec<Result<Bytes, std::io::Error>> = (0..data.len())
                    .step_by(1 << 20)
                    .map(|i| Ok(data.slice(i..(i + (1 << 20)).min(data.len()))))
                    .collect();
                store
                    .put_object(
                        "crash",
                        &key,
                        ObjectMeta::default(),
                        futures::stream::iter(pieces),
                        &PutOptions::default(),
                    )
                    .await
                    .expect("put");
            }
            7..=8 => {
                writeln!(out, "BEGIN DEL {key}").unwrap();
                out.flush().unwrap();
                store.delete_object("crash", &key).await.expect("delete");
            }
            _ => {
                writeln!(out, "BEGIN GC").unwrap();
                out.flush().unwrap();
                store.gc().await.expect("gc");
            }
        }
        writeln!(out, "ACK").unwrap();
        out.flush().unwrap();
    }
}
