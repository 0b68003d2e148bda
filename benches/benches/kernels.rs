// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

//! Criterion benches of the CPU kernels, one core each: FastCDC, BLAKE3, the S3
//! digests (MD5 also over several streams at once, the multi-buffer kernel) and zstd. Run: `cargo bench -p benches --bench kernels`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hw_offload::kernels::{cdc, codec, md5};
use hw_offload::{ChecksumAlgo, ChunkId, ChunkerConfig, StreamDigests};
use rand::{RngCore, SeedableRng};

fn random(len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(1).fill_bytes(&mut data);
    data
}

/// Text-like data: a few hundred distinct lines in varying order.
fn text(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut i = 0u64;
    while out.len() < len {
        i = i.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        out.extend_from_slice(
            format!("{} sample {} value={:.3} status=ok\n", i % 977, i % 13, (i % 10007) as f64 / 7.0).as_bytes(),
        );
    }
    out.truncate(len);
    out
}

fn kernels(c: &mut Criterion) {
    let data = random(64 << 20);
    let mut g = c.benchmark_group("kernels");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("fastcdc_64k_avg", |b| b.iter(|| cdc::cut_points(&data, &ChunkerConfig::default(), true)));
    g.bench_function("blake3_1MiB_chunks", |b| b.iter(|| data.chunks(1 << 20).map(ChunkId::of).count()));
    g.bench_function("blake3_64KiB_chunks", |b| b.iter(|| data.chunks(64 << 10).map(ChunkId::of).count()));
    g.bench_function("md5", |b| {
        b.iter(|| {
            let mut s = StreamDigests::new(&[]);
            s.update(&data);
            s.finish()
        })
    });
    // The same 64 MiB as `streams` independent MD5 streams, fed 2 MiB per stream and
    // batch, as the gateway's concurrent uploads are.
    for streams in [1usize, 2, 4, 8, 16] {
        g.bench_with_input(BenchmarkId::new("md5_streams", streams), &streams, |b, &streams| {
            b.iter(|| {
                let per = data.len() / streams;
                let mut states: Vec<md5::Md5State> = (0..streams).map(|_| md5::Md5State::new()).collect();
                for offset in (0..per).step_by(2 << 20) {
                    let pieces: Vec<&[u8]> = (0..streams)
                        .map(|s| &data[s * per + offset..s * per + (offset + (2 << 20)).min(per)])
                        .collect();
                    md5::update_many(&mut states.iter_mut().collect::<Vec<_>>(), &pieces);
                }
                states.into_iter().map(md5::Md5State::finalize).count()
            })
        });
    }
    for algo in ChecksumAlgo::ALL {
        g.bench_with_input(BenchmarkId::new("checksum", algo.name()), &data, |b, d| b.iter(|| algo.checksum(d)));
    }
    g.finish();

    let mut g = c.benchmark_group("zstd");
    g.sample_size(10);
    let text = text(16 << 20);
    let mut comp = zstd::bulk::Compressor::new(1).unwrap();
    let mut decomp = zstd::bulk::Decompressor::new().unwrap();
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function("compress_text_64KiB_chunks_level1", |b| {
        b.iter(|| {
            text.chunks(64 << 10).map(|c| codec::compress(&mut comp, c).unwrap().map_or(0, |v| v.len())).sum::<usize>()
        })
    });
    let packed: Vec<Vec<u8>> = text.chunks(64 << 10).map(|c| codec::compress(&mut comp, c).unwrap().unwrap()).collect();
    g.bench_function("decompress_text_64KiB_chunks", |b| {
        b.iter(|| packed.iter().map(|p| codec::decompress(&mut decomp, p, 64 << 10).unwrap().len()).sum::<usize>())
    });
    let rand16 = &data[..16 << 20];
    g.bench_function("incompressible_check_random_64KiB_chunks", |b| {
        b.iter(|| rand16.chunks(64 << 10).filter(|c| codec::compress(&mut comp, c).unwrap().is_none()).count())
    });
    g.finish();
}

criterion_group!(benches, kernels);
criterion_main!(benches);
