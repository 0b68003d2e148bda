//! Store ingest and read of one large object against `cp` of the same bytes on the
//! same disk, in one run; and peak RSS while writing one object of any size.
//!
//! usage:
//!   store-bench compare DIR SIZE_MIB random|corpus RUNS
//!   store-bench rss DIR SIZE_MIB
//!
//! `compare` prints one markdown row per input kind with medians over RUNS runs.

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use store::{ObjectMeta, PutOptions, Store, StoreConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PIECE: usize = 1 << 20;

async fn open(dir: &Path) -> Arc<Store> {
    let _ = std::fs::remove_dir_all(dir);
    let store = Store::open(StoreConfig::new(dir), hw_offload::Offload::cpu(0)).await.expect("open store");
    store.create_bucket("bench", "").await.expect("bucket");
    store
}

/// Streams a file into the store as one object, 1 MiB at a time.
async fn ingest_file(store: &Store, input: &Path) {
    let file = tokio::fs::File::open(input).await.expect("open input");
    let body = futures::stream::unfold(file, |mut f| async move {
        let mut buf = vec![0u8; PIECE];
        let mut filled = 0;
        while filled < PIECE {
            match f.read(&mut buf[filled..]).await {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) => return Some((Err(e), f)),
            }
        }
        (filled > 0).then(|| {
            buf.truncate(filled);
            (Ok(Bytes::from(buf)), f)
        })
    });
    store.put_object("bench", "obj", ObjectMeta::default(), body, &PutOptions::default()).await.expect("put");
}

async fn read_to_file(store: &Arc<Store>, output: &Path) {
    let (_, _, mut stream) = store.get_object("bench", "obj", None).expect("get");
    let mut out = tokio::fs::File::create(output).await.expect("create output");
    while let Some(piece) = stream.try_next().await.expect("read") {
        out.write_all(&piece).await.expect("write output");
    }
    out.flush().await.expect("flush");
}

fn cp(from: &Path, to: &Path, sync: bool) {
    assert!(Command::new("cp").arg(from).arg(to).status().expect("cp").success());
    if sync {
        assert!(Command::new("sync").arg(to).status().expect("sync").success());
    }
}

async fn compare(dir: &Path, size_mib: u64, kind: &str, runs: usize) {
    std::fs::create_dir_all(dir).expect("bench dir");
    let input = dir.join(format!("input-{kind}-{size_mib}M.bin"));
    benches::write_input(&input, kind, size_mib << 20).expect("write input");
    let mb = (size_mib << 20) as f64 / 1e6;
    let (mut cp_s, mut cp_sync_s, mut ing_s, mut read_s, mut ing_cpu, mut read_cpu) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let mut ratio = 0.0;
    for run in 0..runs {
        let copy = dir.join("cp-out.bin");
        let ((), s) = benches::measure(async { cp(&input, &copy, false) }).await;
        cp_s.push(s.wall_s);
        std::fs::remove_file(&copy).ok();
        let ((), s) = benches::measure(async { cp(&input, &copy, true) }).await;
        cp_sync_s.push(s.wall_s);
        std::fs::remove_file(&copy).ok();

        let store = open(&dir.join("store")).await;
        let ((), s) = benches::measure(ingest_file(&store, &input)).await;
        ing_s.push(s.wall_s);
        ing_cpu.push(s.cpu_s);
        let out = dir.join("get-out.bin");
        let ((), s) = benches::measure(read_to_file(&store, &out)).await;
        read_s.push(s.wall_s);
        read_cpu.push(s.cpu_s);
        if run == 0 {
            assert!(Command::new("cmp").arg(&input).arg(&out).status().expect("cmp").success(), "read back differs");
            let written = store.metrics().bytes_written.load(std::sync::atomic::Ordering::Relaxed) as f64;
            ratio = written / (size_mib << 20) as f64;
        }
        std::fs::remove_file(&out).ok();
        drop(store);
    }
    let (cp_m, cps_m, ing_m, read_m) = (
        benches::median(&mut cp_s),
        benches::median(&mut cp_sync_s),
        benches::median(&mut ing_s),
        benches::median(&mut read_s),
    );
    println!(
        "| {kind} {size_mib} MiB | cp {:.0} MB/s | cp+sync {:.0} MB/s | ingest {:.0} MB/s ({:.2}x cp, {:.2}x cp+sync; cpu {:.2} s) | read {:.0} MB/s ({:.2}x cp; cpu {:.2} s) | stored/plain {:.3} |",
        mb / cp_m,
        mb / cps_m,
        mb / ing_m,
        cp_m / ing_m,
        cps_m / ing_m,
        benches::median(&mut ing_cpu),
        mb / read_m,
        cp_m / read_m,
        benches::median(&mut read_cpu),
        ratio,
    );
}

/// Writes one object of `size_mib` generated on the fly (never held in memory) and
/// reports the process's peak RSS.
async fn rss(dir: &Path, size_mib: u64) {
    let store = open(&dir.join("store")).await;
    let before = benches::peak_rss_mib();
    let pieces = size_mib as usize;
    let body = futures::stream::iter(0..pieces).map(|i| {
        let mut buf = vec![0u8; PIECE];
        let mut x = i as u64 * 0x9E37_79B9_7F4A_7C15 + 1;
        for b in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b.copy_from_slice(&x.to_le_bytes()[..b.len()]);
        }
        Ok::<_, std::io::Error>(Bytes::from(buf))
    });
    let ((), s) = benches::measure(async {
        store.put_object("bench", "big", ObjectMeta::default(), body, &PutOptions::default()).await.expect("put");
    })
    .await;
    println!(
        "| rss {size_mib} MiB object | peak RSS {:.0} MiB (before the write {:.0} MiB) | {:.0} MB/s |",
        benches::peak_rss_mib(),
        before,
        (size_mib << 20) as f64 / 1e6 / s.wall_s
    );
    let _ = std::fs::remove_dir_all(dir.join("store"));
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: store-bench compare DIR SIZE_MIB random|corpus RUNS | store-bench rss DIR SIZE_MIB";
    match args.get(1).map(String::as_str) {
        Some("compare") if args.len() == 6 => {
            let size = args[3].parse().expect(usage);
            let runs = args[5].parse().expect(usage);
            compare(Path::new(&args[2]), size, &args[4], runs).await;
        }
        Some("rss") if args.len() == 4 => rss(Path::new(&args[2]), args[3].parse().expect(usage)).await,
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    }
}
