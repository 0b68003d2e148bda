//! How much of a changed data set FastCDC stores again, per chunk size: the figure that
//! chooses the store's default chunk size.
//!
//! usage: chunk-dedup ORIGINAL_DIR CHANGED_DIR
//! (make them with ../shared/bench/lib/mkdata.py: `tree ORIG 64 16M 1`, copy, `mutate COPY 1`)

use hw_offload::kernels::cdc::cut_points;
use hw_offload::{ChunkId, ChunkerConfig};
use std::collections::HashSet;
use std::path::Path;

fn files(dir: &Path) -> Vec<Vec<u8>> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .expect("read dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| !n.to_string_lossy().starts_with('.')))
        .collect();
    names.sort();
    names.iter().map(|p| std::fs::read(p).expect("read file")).collect()
}

fn chunks(data: &[u8], config: &ChunkerConfig) -> Vec<(ChunkId, usize)> {
    let mut out = Vec::new();
    let mut offset = 0;
    for len in cut_points(data, config, true) {
        let piece = &data[offset..offset + len as usize];
        out.push((ChunkId::of(piece), piece.len()));
        offset += len as usize;
    }
    out
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    assert!(args.len() == 3, "usage: chunk-dedup ORIGINAL_DIR CHANGED_DIR");
    let (original, changed) = (files(Path::new(&args[1])), files(Path::new(&args[2])));
    let total: usize = changed.iter().map(Vec::len).sum();
    println!("| avg chunk | min / max | chunks per GiB | bytes stored again | share of data |");
    println!("| --- | --- | --- | --- | --- |");
    for avg_kib in [16u32, 32, 64, 128, 256] {
        let config = ChunkerConfig { min_bytes: avg_kib << 8, avg_bytes: avg_kib << 10, max_bytes: avg_kib << 12 };
        let known: HashSet<ChunkId> = original.iter().flat_map(|f| chunks(f, &config)).map(|(id, _)| id).collect();
        let mut count = 0usize;
        let mut again = 0usize;
        for file in &changed {
            for (id, len) in chunks(file, &config) {
                count += 1;
                if !known.contains(&id) {
                    again += len;
                }
            }
        }
        println!(
            "| {avg_kib} KiB | {} / {} KiB | {:.0} | {:.1} MB | {:.2} % |",
            avg_kib / 4,
            avg_kib * 4,
            count as f64 * (1u64 << 30) as f64 / total as f64,
            again as f64 / 1e6,
            again as f64 * 100.0 / total as f64
        );
    }
}
