//! The catalog's sync between real daemons on loopback: how long a publication at one
//! site takes to be applied at every other, and how long a site back from a stop takes
//! to catch up on the events it missed.
//!
//! usage: `catalog-sync --bin target/release/clusster [--sites 5] [--publications 100]
//! [--missed 100000] [--workers 8]`; prints a JSON summary on stdout.
//!
//! A publication is a real one (an object written over S3, then published): it is
//! visible at a site once that site's catalog holds the publishing site's log up to it
//! (`GET /catalog/sync`). The missed events are tag moves at the first site, the cheapest
//! event to make in bulk, made while the last site is stopped.

use anyhow::{Context, bail};
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use clap::Parser;
use std::time::{Duration, Instant};
use tests::{Daemon, Federation};

#[derive(Parser)]
struct Args {
    /// the `clusster` binary
    #[arg(long)]
    bin: String,
    /// sites in the federation
    #[arg(long, default_value_t = 5)]
    sites: usize,
    /// publications timed
    #[arg(long, default_value_t = 100)]
    publications: usize,
    /// events the stopped site misses
    #[arg(long, default_value_t = 100_000)]
    missed: usize,
    /// requests in flight while making the missed events
    #[arg(long, default_value_t = 8)]
    workers: usize,
}

/// A daemon's catalog routes, with its admin token.
struct Site {
    name: String,
    url: String,
    token: String,
    http: reqwest::Client,
}

impl Site {
    fn of(name: &str, daemon: &Daemon) -> anyhow::Result<Self> {
        let token = std::fs::read_to_string(daemon.data_dir.join("admin.token"))?.trim().to_owned();
        Ok(Self { name: name.to_owned(), url: daemon.admin_url(), token, http: reqwest::Client::new() })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<serde_json::Value> {
        let mut request = self.http.request(method, format!("{}{path}", self.url)).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer = request.send().await?;
        let status = answer.status();
        let json: serde_json::Value = answer.json().await.unwrap_or_default();
        if !status.is_success() {
            bail!("{} {path}: {status}: {json}", self.name);
        }
        Ok(json)
    }

    /// How far this site holds `origin`'s log.
    async fn head_of(&self, origin: &str) -> anyhow::Result<u64> {
        let sync = self.call(reqwest::Method::GET, "/catalog/sync", None).await?;
        Ok(sync["heads"][origin].as_u64().unwrap_or(0))
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Waits until every one of `sites` holds `origin`'s log up to `seq`; the seconds each took.
async fn applied_at(sites: &[Site], origin: &str, seq: u64, since: Instant) -> anyhow::Result<Vec<f64>> {
    let mut took = vec![None; sites.len()];
    let deadline = since + Duration::from_secs(120);
    while took.iter().any(Option::is_none) {
        for (site, took) in sites.iter().zip(took.iter_mut()) {
            if took.is_none() && site.head_of(origin).await? >= seq {
                *took = Some(since.elapsed().as_secs_f64());
            }
        }
        if Instant::now() > deadline {
            bail!("{origin}#{seq} not applied everywhere within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(took.into_iter().flatten().collect())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.sites >= 2, "--sites: at least 2");
    let root = tempfile::tempdir()?;
    let names: Vec<String> = (1..=args.sites).map(|i| format!("s{i}")).collect();
    let specs: Vec<(&str, &[&str])> = names.iter().map(|n| (n.as_str(), &[][..])).collect();
    let federation = Federation::new(&args.bin, root.path(), &specs, "");
    let mut daemons: Vec<Daemon> = names.iter().map(|n| federation.start(n)).collect();
    let sites: Vec<Site> = names.iter().zip(&daemons).map(|(n, d)| Site::of(n, d)).collect::<anyhow::Result<_>>()?;
    let (home, others) = sites.split_first().expect("two sites or more");

    // The publishing site's bucket, over S3.
    let (id, secret) = daemons[0].create_key(&args.bin, "bench");
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(daemons[0].s3_url())
        .credentials_provider(Credentials::new(id, secret, None, None, "bench"))
        .force_path_style(true)
        .build();
    let s3 = aws_sdk_s3::Client::from_conf(config);
    s3.create_bucket().bucket("bench").send().await?;

    // Publication to visibility everywhere.
    let mut latencies = Vec::with_capacity(args.publications * others.len());
    for i in 0..args.publications {
        let body = format!("publication {i}\n").repeat(64);
        s3.put_object().bucket("bench").key("d/file").body(ByteStream::from(body.into_bytes())).send().await?;
        let start = Instant::now();
        let request = serde_json::json!({ "bucket": "bench", "prefix": "d/", "tag": "latest" });
        home.call(reqwest::Method::POST, "/catalog/datasets/s1.bench/d/versions", Some(request)).await?;
        let seq = home.head_of(&home.name).await?;
        latencies.extend(applied_at(others, &home.name, seq, start).await?);
    }
    latencies.sort_by(f64::total_cmp);
    eprintln!(
        "publish→visible over {} (publication, site) pairs: p50 {:.3} s, p99 {:.3} s",
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99)
    );

    // The last site stops; the first makes `missed` events; the others keep up.
    let last = daemons.pop().expect("two sites or more");
    let last_name = names.last().expect("a last site").clone();
    last.stop();
    let version =
        home.call(reqwest::Method::GET, "/catalog/datasets/s1.bench/d", None).await?["versions"][0]["version"]
            .as_str()
            .context("a version to tag")?
            .to_owned();
    let made = Instant::now();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let workers = (0..args.workers).map(|_| async {
        loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if i >= args.missed {
                return Ok::<_, anyhow::Error>(());
            }
            let path = format!("/catalog/datasets/s1.bench/d/tags/t{}", i % 1000);
            home.call(reqwest::Method::PUT, &path, Some(serde_json::json!({ "version": version }))).await?;
        }
    });
    for result in futures::future::join_all(workers).await {
        result?;
    }
    let making_secs = made.elapsed().as_secs_f64();
    let target = home.head_of(&home.name).await?;
    eprintln!("made {} events at s1 in {making_secs:.1} s ({:.0}/s)", args.missed, args.missed as f64 / making_secs);
    applied_at(&others[..others.len() - 1], &home.name, target, Instant::now()).await?;

    // Back: from its start until it holds all it missed.
    let restarted = Instant::now();
    let back = federation.start(&last_name);
    let ready_secs = restarted.elapsed().as_secs_f64();
    let site = Site::of(&last_name, &back)?;
    let caught_up = applied_at(std::slice::from_ref(&site), &home.name, target, restarted).await?[0];
    eprintln!("{last_name} back: ready in {ready_secs:.1} s, caught up on {} events in {caught_up:.1} s", args.missed);
    // Whether it caught up from snapshots (the others compacted s1's log at its
    // checkpoints) or from the whole log.
    let metrics = site.http.get(format!("{}/metrics", site.url)).send().await?.text().await?;
    let snapshots: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("clusster_catalog_snapshots_installed_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    eprintln!("{last_name} installed {snapshots} snapshot(s) on its way");
    let summary = serde_json::json!({
        "sites": args.sites,
        "publications": args.publications,
        "publish_to_visible_s": { "p50": percentile(&latencies, 0.5), "p99": percentile(&latencies, 0.99), "max": latencies[latencies.len() - 1] },
        "missed_events": args.missed,
        "events_made_per_s": args.missed as f64 / making_secs,
        "catch_up": { "ready_s": ready_secs, "caught_up_s": caught_up, "snapshots_installed": snapshots },
    });
    println!("{summary}");
    Ok(())
}
