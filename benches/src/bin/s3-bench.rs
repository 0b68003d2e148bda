//! Drives an S3 endpoint with aws-sdk-s3 at a chosen concurrency: PUT and GET of
//! 16 x 64 MiB (random, then compressible) and of 2,000 x 4 KiB, every downloaded byte
//! verified; prints MB/s, objects/s, p50/p99 latency of small PUT/GET and, given the
//! server's pid, its peak RSS and CPU seconds.
//!
//! usage: `s3-bench ENDPOINT ACCESS_KEY SECRET CONCURRENCY [SERVER_PID]`

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Region};
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use futures::StreamExt;
use rand::{RngCore, SeedableRng};
use std::sync::Arc;
use std::time::Instant;

fn random(len: usize, seed: u64) -> Bytes {
    let mut data = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut data);
    Bytes::from(data)
}

/// Log-like text that zstd shrinks about 4x, different per object.
fn compressible(len: usize, seed: u64) -> Bytes {
    let mut out = Vec::with_capacity(len + 100);
    let mut i = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    while out.len() < len {
        i = i.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        out.extend_from_slice(
            format!("{} node{:03} job {} state=RUNNING t={}\n", i >> 40, i % 97, i % 100_003, i % 3600).as_bytes(),
        );
    }
    out.truncate(len);
    Bytes::from(out)
}

fn server_stats(pid: Option<u32>) -> (f64, f64) {
    let Some(pid) = pid else { return (0.0, 0.0) };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (hwm, (ticks(11) + ticks(12)) / 100.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Runs `n` requests with `concurrency` in flight; returns wall seconds and latencies.
async fn phase<F, Fut>(n: usize, concurrency: usize, op: F) -> (f64, Vec<f64>)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let t0 = Instant::now();
    let mut latencies: Vec<f64> = futures::stream::iter(0..n)
        .map(|i| {
            let fut = op(i);
            async move {
                let t = Instant::now();
                fut.await;
                t.elapsed().as_secs_f64() * 1000.0
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    latencies.sort_by(f64::total_cmp);
    (t0.elapsed().as_secs_f64(), latencies)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        eprintln!("usage: s3-bench ENDPOINT ACCESS_KEY SECRET CONCURRENCY [SERVER_PID]");
        std::process::exit(2);
    }
    let concurrency: usize = args[4].parse().expect("CONCURRENCY is a number");
    let pid: Option<u32> = args.get(5).and_then(|p| p.parse().ok());
    let creds = aws_credential_types::Credentials::new(&args[2], &args[3], None, None, "s3-bench");
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(&args[1])
        .credentials_provider(creds)
        .force_path_style(true)
        .build();
    let client = Arc::new(Client::from_conf(config));
    let bucket = format!("s3bench-{}", std::process::id());
    client.create_bucket().bucket(&bucket).send().await.expect("create bucket");
    let row = |name: &str, bytes: usize, n: usize, wall: f64, lat: &[f64], cpu: f64| {
        println!(
            "| {name} | {:.0} MB/s | {:.0} obj/s | p50 {:.2} ms | p99 {:.2} ms | server cpu {:.1} s |",
            bytes as f64 / wall / 1e6,
            n as f64 / wall,
            percentile(lat, 0.5),
            percentile(lat, 0.99),
            cpu
        );
    };
    for (kind, make) in [("random", random as fn(usize, u64) -> Bytes), ("compressible", compressible)] {
        let objects: Vec<Bytes> = (0..16).map(|i| make(64 << 20, i)).collect();
        let total = 16 * (64 << 20);
        let (_, c0) = server_stats(pid);
        let (wall, lat) = phase(16, concurrency, |i| {
            let (c, b, body) = (client.clone(), bucket.clone(), objects[i].clone());
            async move {
                c.put_object()
                    .bucket(b)
                    .key(format!("{kind}/{i}"))
                    .body(ByteStream::from(body))
                    .send()
                    .await
                    .expect("put");
            }
        })
        .await;
        let (_, c1) = server_stats(pid);
        row(&format!("PUT 16 x 64 MiB {kind}"), total, 16, wall, &lat, c1 - c0);
        let (wall, lat) = phase(16, concurrency, |i| {
            let (c, b, want) = (client.clone(), bucket.clone(), objects[i].clone());
            async move {
                let got = c.get_object().bucket(b).key(format!("{kind}/{i}")).send().await.expect("get");
                let got = got.body.collect().await.expect("body").into_bytes();
                assert!(got == want, "object {i} read back differs");
            }
        })
        .await;
        let (_, c2) = server_stats(pid);
        row(&format!("GET 16 x 64 MiB {kind}"), total, 16, wall, &lat, c2 - c1);
    }
    let small: Vec<Bytes> = (0..2000).map(|i| random(4096, 1000 + i)).collect();
    let (_, c0) = server_stats(pid);
    let (wall, lat) = phase(2000, concurrency, |i| {
        let (c, b, body) = (client.clone(), bucket.clone(), small[i].clone());
        async move {
            c.put_object()
                .bucket(b)
                .key(format!("small/{i:05}"))
                .body(ByteStream::from(body))
                .send()
                .await
                .expect("put");
        }
    })
    .await;
    let (_, c1) = server_stats(pid);
    row("PUT 2000 x 4 KiB", 2000 * 4096, 2000, wall, &lat, c1 - c0);
    let (wall, lat) = phase(2000, concurrency, |i| {
        let (c, b, want) = (client.clone(), bucket.clone(), small[i].clone());
        async move {
            let got = c.get_object().bucket(b).key(format!("small/{i:05}")).send().await.expect("get");
            assert!(got.body.collect().await.expect("body").into_bytes() == want, "small object {i} differs");
        }
    })
    .await;
    let (hwm, c2) = server_stats(pid);
    row("GET 2000 x 4 KiB", 2000 * 4096, 2000, wall, &lat, c2 - c1);
    if pid.is_some() {
        println!("| server peak RSS | {hwm:.0} MiB |");
    }
}
