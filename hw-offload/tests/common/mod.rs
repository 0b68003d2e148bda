//! Shared test data and the conformance suite every engine must pass.
#![allow(dead_code)]

use bytes::Bytes;
use hw_offload::{ChunkId, Codec, Engine, Job, Step, SumAlgo};
use rand::{RngCore, SeedableRng};
use std::sync::Arc;

/// Sizes from empty to one past the largest chunk.
pub const SIZES: [usize; 9] = [0, 1, 511, 4096, 65_536, 65_537, 1 << 20, 4 << 20, (16 << 20) + 1];

pub fn random(len: usize, seed: u64) -> Bytes {
    let mut data = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut data);
    data.into()
}

/// Text-like data that compresses about 4:1.
pub fn compressible(len: usize, seed: u64) -> Bytes {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let words: [&[u8]; 8] =
        [b"chunk ", b"dataset ", b"replica ", b"site ", b"federation ", b"transfer ", b"42 ", b"\n"];
    let mut data = Vec::with_capacity(len + 16);
    while data.len() < len {
        data.extend_from_slice(words[(rng.next_u32() % 8) as usize]);
    }
    data.truncate(len);
    data.into()
}

/// Runs hash, sums and both codecs on `engine` over every size, and checks each result
/// against the kernels and each payload against the CPU engine's decoder (and the
/// CPU's payloads against `engine`'s decoder).
pub async fn conformance(engine: Arc<dyn Engine>, cpu: Arc<dyn Engine>, sizes: &[usize]) {
    for (i, &len) in sizes.iter().enumerate() {
        for data in [random(len, i as u64), compressible(len, i as u64)] {
            let id = ChunkId::of(&data);
            let mut jobs = vec![Job::new(data.clone(), vec![Step::ChunkId])];
            for algo in SumAlgo::ALL {
                jobs.push(Job::new(data.clone(), vec![Step::Sum(algo)]));
            }
            for codec in [Codec::Zstd, Codec::Lz4] {
                jobs.push(Job::new(data.clone(), vec![Step::ChunkId, Step::Compress { codec, level: 1 }]));
            }
            let results = engine.submit(jobs).await;
            let mut results = results.into_iter().map(|r| r.expect("job runs"));
            assert_eq!(results.next().unwrap().chunk_id, Some(id), "{} bytes", len);
            for algo in SumAlgo::ALL {
                let out = results.next().unwrap();
                assert_eq!(out.sums, vec![(algo, algo.compute(&data))], "{algo:?} of {len} bytes on {}", engine.name());
            }
            for codec in [Codec::Zstd, Codec::Lz4] {
                let out = results.next().unwrap();
                assert_eq!(out.chunk_id, Some(id));
                assert!(out.codec == codec || out.codec == Codec::Raw, "{:?}", out.codec);
                // Decode the engine's payload on the CPU, and the CPU's on the engine.
                let cpu_out = cpu
                    .submit(vec![Job::new(data.clone(), vec![Step::Compress { codec, level: 1 }])])
                    .await
                    .pop()
                    .unwrap()
                    .unwrap();
                for (decoder, payload) in [(&cpu, &out), (&engine, &cpu_out)] {
                    let back = decoder
                        .submit(vec![Job::encoded(
                            payload.data.clone(),
                            payload.codec,
                            vec![Step::Decompress { codec: payload.codec, plain_len: len as u32 }, Step::Verify(id)],
                        )])
                        .await
                        .pop()
                        .unwrap()
                        .unwrap_or_else(|e| panic!("{codec:?} {len} bytes on {}: {e}", decoder.name()));
                    assert_eq!(back.data, data);
                }
            }
        }
    }
}
