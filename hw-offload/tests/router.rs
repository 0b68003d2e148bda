//! The router: routing by size and capability, fallback on crashes and deadlines, spot
//! checks that catch wrong results, and the engine conformance suite through the router.

mod common;

use common::{compressible, random};
use hw_offload::{
    ChunkId, Codec, CpuEngine, Engine, Fault, FaultEngine, Job, JobError, Offload, OpKind, Route, Router, RouterConfig,
    Step,
};
use std::sync::Arc;
use std::time::Duration;

fn router(engine: Arc<FaultEngine>, min_bytes: u64, config: RouterConfig) -> Offload {
    Offload::routed(Router::new(Arc::new(CpuEngine::new(1)), vec![Route::new(engine, min_bytes)], config))
}

fn hash_jobs(n: usize, len: usize) -> (Vec<Job>, Vec<ChunkId>) {
    let data: Vec<_> = (0..n).map(|i| random(len, 1000 + i as u64)).collect();
    let ids = data.iter().map(|d| ChunkId::of(d)).collect();
    let jobs = data
        .into_iter()
        .map(|d| Job::new(d, vec![Step::ChunkId, Step::Compress { codec: Codec::Zstd, level: 1 }]))
        .collect();
    (jobs, ids)
}

#[tokio::test]
async fn every_engine_agrees_with_the_cpu_through_the_router() {
    let engine = Arc::new(FaultEngine::new("good", 0, Fault::None));
    let cpu: Arc<dyn Engine> = Arc::new(CpuEngine::new(1));
    let routed: Arc<dyn Engine> =
        Arc::new(Router::new(cpu.clone(), vec![Route::new(engine.clone(), 0)], RouterConfig::default()));
    common::conformance(routed, cpu.clone(), &common::SIZES).await;
    common::conformance(cpu.clone(), cpu, &common::SIZES).await;
    assert!(engine.jobs_seen() > 0, "the router sent work to the engine");
}

#[tokio::test]
async fn small_jobs_and_unsupported_chains_stay_on_the_cpu() {
    let engine = Arc::new(FaultEngine::new("big-only", 0, Fault::None));
    let offload = router(engine.clone(), 64 << 10, RouterConfig::default());
    let (jobs, ids) = hash_jobs(8, 4096);
    for (r, id) in offload.submit(jobs).await.into_iter().zip(ids) {
        assert_eq!(r.unwrap().chunk_id, Some(id));
    }
    assert_eq!(engine.jobs_seen(), 0, "4 KiB jobs are below the 64 KiB threshold");
    let (jobs, _) = hash_jobs(4, 128 << 10);
    offload.submit(jobs).await;
    assert_eq!(engine.jobs_seen(), 4);
    // Per-operation thresholds: decompression never goes there.
    let engine = Arc::new(FaultEngine::new("no-decompress", 0, Fault::None));
    let route = Route::new(engine.clone(), 0).with_threshold(OpKind::Decompress, u64::MAX);
    let offload = Offload::routed(Router::new(Arc::new(CpuEngine::new(1)), vec![route], RouterConfig::default()));
    let out = offload
        .run(Job::encoded(random(10, 1), Codec::Raw, vec![Step::Decompress { codec: Codec::Raw, plain_len: 10 }]))
        .await;
    assert!(out.is_ok());
    assert_eq!(engine.jobs_seen(), 0);
}

#[tokio::test]
async fn a_wrong_hash_is_caught_on_probation_and_never_returned() {
    let engine = Arc::new(FaultEngine::new("liar", 0, Fault::WrongHash));
    let offload = router(engine.clone(), 0, RouterConfig { spot_check_one_in: 0, ..Default::default() });
    let (jobs, ids) = hash_jobs(16, 100_000);
    for (r, id) in offload.submit(jobs).await.into_iter().zip(&ids) {
        assert_eq!(r.unwrap().chunk_id, Some(*id), "the CPU's answer replaces the wrong one");
    }
    let seen = engine.jobs_seen();
    let (jobs, ids) = hash_jobs(16, 100_000);
    for (r, id) in offload.submit(jobs).await.into_iter().zip(&ids) {
        assert_eq!(r.unwrap().chunk_id, Some(*id));
    }
    assert_eq!(engine.jobs_seen(), seen, "a condemned engine gets no more work");
    assert!(engine.metrics().errors() > 0);
}

#[tokio::test]
async fn a_lie_after_probation_is_caught_by_sampling() {
    // Behaves for its probation, then lies on every job; one job in 4 is checked, drawn at
    // random, so a few lying batches may pass unchecked before one is caught. Those lies
    // were delivered, and the recheck at condemnation names every one of them.
    let engine = Arc::new(FaultEngine::new("late-liar", 8, Fault::WrongHash));
    let config = RouterConfig { probation_jobs: 8, spot_check_one_in: 4, ..Default::default() };
    let offload = router(engine.clone(), 0, config);
    let (jobs, ids) = hash_jobs(8, 50_000);
    for (r, id) in offload.submit(jobs).await.into_iter().zip(&ids) {
        assert_eq!(r.unwrap().chunk_id, Some(*id), "every probation answer is checked");
    }
    let mut delivered_lies = Vec::new();
    // (3/4)^8 that a lying batch goes unchecked: 100 batches make a miss impossible in practice.
    for _ in 0..100 {
        if engine.metrics().errors() > 0 {
            break;
        }
        let (jobs, ids) = hash_jobs(8, 50_000);
        for (r, id) in offload.submit(jobs).await.into_iter().zip(&ids) {
            let got = r.unwrap().chunk_id.expect("a chunk id");
            if got != *id {
                delivered_lies.push(got);
            }
        }
    }
    assert!(engine.metrics().errors() > 0, "sampling caught the lie");
    let seen = engine.jobs_seen();
    let (jobs, ids) = hash_jobs(8, 50_000);
    for (r, id) in offload.submit(jobs).await.into_iter().zip(&ids) {
        assert_eq!(r.unwrap().chunk_id, Some(*id));
    }
    assert_eq!(engine.jobs_seen(), seen, "a condemned engine gets no more work");
    let mut wrong = offload.wrong_chunks();
    wrong.sort_by_key(|id| id.0);
    delivered_lies.sort_by_key(|id| id.0);
    assert_eq!(wrong, delivered_lies, "the unchecked lies, and only those, are named for the store");
}

#[tokio::test]
async fn jobs_sent_before_the_probation_answers_are_back_are_checked_too() {
    // Right for its first 8 jobs, then lies. Three batches of 8 are in flight before any
    // answer is back: the probation (8 right answers) has not ended when the lies are
    // sent, so they are checked, caught, and the CPU's answers replace them.
    let engine = Arc::new(FaultEngine::new("liar", 8, Fault::WrongHash));
    let config = RouterConfig { probation_jobs: 8, spot_check_one_in: 0, ..Default::default() };
    let offload = router(engine.clone(), 0, config);
    let batches: Vec<_> = (0..3).map(|_| hash_jobs(8, 50_000)).collect();
    let pending: Vec<_> = batches.iter().map(|(jobs, _)| offload.submit(jobs.clone())).collect();
    for (done, (_, ids)) in pending.into_iter().zip(&batches) {
        for (r, id) in done.await.into_iter().zip(ids) {
            assert_eq!(r.unwrap().chunk_id, Some(*id));
        }
    }
    assert!(engine.metrics().errors() > 0, "the lie was caught");
}

#[tokio::test]
async fn a_replaced_engine_is_on_probation_again() {
    // Passes its probation, then is replaced (an agent restarted, maybe another build)
    // by one that lies from its first job; sampling alone would miss the lies.
    let engine = Arc::new(FaultEngine::new("replaced", 0, Fault::None));
    let config = RouterConfig { probation_jobs: 8, spot_check_one_in: 0, ..Default::default() };
    let offload = router(engine.clone(), 0, config);
    let (jobs, _) = hash_jobs(8, 50_000);
    offload.submit(jobs).await;
    engine.restart(Fault::WrongHash);
    let (jobs, ids) = hash_jobs(8, 50_000);
    for (r, id) in offload.submit(jobs).await.into_iter().zip(&ids) {
        assert_eq!(r.unwrap().chunk_id, Some(*id));
    }
    assert!(engine.metrics().errors() > 0, "the new incarnation's lie was caught");
}

#[tokio::test]
async fn corrupt_compressed_payloads_are_caught() {
    let engine = Arc::new(FaultEngine::new("corrupter", 0, Fault::CorruptPayload));
    let offload = router(engine.clone(), 0, RouterConfig::default());
    let data = compressible(200_000, 3);
    let out = offload
        .run(Job::new(data.clone(), vec![Step::ChunkId, Step::Compress { codec: Codec::Lz4, level: 1 }]))
        .await
        .unwrap();
    let back = offload
        .run(Job::encoded(
            out.data,
            out.codec,
            vec![Step::Decompress { codec: out.codec, plain_len: data.len() as u32 }],
        ))
        .await
        .unwrap();
    assert_eq!(back.data, data);
}

#[tokio::test]
async fn a_crashed_engine_falls_back_then_comes_back() {
    let engine = Arc::new(FaultEngine::new("crasher", 4, Fault::Crash));
    let config = RouterConfig { disable_for: Duration::from_millis(100), probation_jobs: 0, ..Default::default() };
    let offload = router(engine.clone(), 0, config);
    for _ in 0..3 {
        let (jobs, ids) = hash_jobs(4, 10_000);
        for (r, id) in offload.submit(jobs).await.into_iter().zip(&ids) {
            assert_eq!(r.unwrap().chunk_id, Some(*id), "a crash costs nothing but time");
        }
    }
    assert_eq!(engine.jobs_seen(), 8, "unavailable after the crash");
    assert!(engine.metrics().op(OpKind::Compress).fallbacks >= 4);
    engine.revive();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let (jobs, _) = hash_jobs(4, 10_000);
    offload.submit(jobs).await;
    assert_eq!(engine.jobs_seen(), 12, "used again once revived and the pause is over");
}

#[tokio::test]
async fn a_slow_engine_is_given_up_on_at_the_deadline() {
    let engine = Arc::new(FaultEngine::new("slow", 0, Fault::Delay(Duration::from_secs(30))));
    let config = RouterConfig { deadline: Duration::from_millis(50), ..Default::default() };
    let offload = router(engine.clone(), 0, config);
    let started = std::time::Instant::now();
    let (jobs, ids) = hash_jobs(2, 10_000);
    for (r, id) in offload.submit(jobs).await.into_iter().zip(&ids) {
        assert_eq!(r.unwrap().chunk_id, Some(*id));
    }
    assert!(started.elapsed() < Duration::from_secs(20), "no hang");
    let (jobs, _) = hash_jobs(2, 10_000);
    offload.submit(jobs).await;
    assert_eq!(engine.jobs_seen(), 2, "disabled after missing the deadline");
}

#[tokio::test]
async fn real_corruption_is_still_reported() {
    let engine = Arc::new(FaultEngine::new("good", 0, Fault::None));
    let offload = router(engine, 0, RouterConfig::default());
    let err = offload.run(Job::new(random(1000, 9), vec![Step::Verify(ChunkId::of(b"other"))])).await.unwrap_err();
    assert!(matches!(err, JobError::Corrupt { .. }), "{err}");
}

#[tokio::test]
async fn a_busy_engine_is_bypassed_but_not_disabled() {
    let engine = Arc::new(FaultEngine::new("full", 0, Fault::Busy));
    let offload =
        router(engine.clone(), 0, RouterConfig { disable_for: Duration::from_secs(3600), ..Default::default() });
    let (jobs, ids) = hash_jobs(4, 10_000);
    for (r, id) in offload.submit(jobs).await.into_iter().zip(&ids) {
        assert_eq!(r.unwrap().chunk_id, Some(*id), "busy jobs run on the CPU");
    }
    engine.set_fault(0, Fault::None);
    let (jobs, _) = hash_jobs(4, 10_000);
    offload.submit(jobs).await;
    assert_eq!(engine.jobs_seen(), 8, "still in use after being busy");
    assert!(engine.metrics().op(OpKind::Compress).fallbacks >= 4);
}

/// One hash-and-compress job over compressible data (so the payload is encoded).
fn compress_job(seed: u64) -> (Job, ChunkId) {
    let data = compressible(50_000, seed);
    let id = ChunkId::of(&data);
    (Job::new(data, vec![Step::ChunkId, Step::Compress { codec: Codec::Zstd, level: 1 }]), id)
}

#[tokio::test]
async fn a_condemned_engines_unchecked_answers_are_checked_again() {
    // Issue 12, item 14. Probation of 8 (every answer checked), then no sampling. Right
    // until its 12th job, then corrupt payloads; the caller finds it out. The recheck names
    // exactly the lies: the right answers kept with them are not blamed.
    let engine = Arc::new(FaultEngine::new("late-liar", 12, Fault::CorruptPayload));
    let config = RouterConfig { probation_jobs: 8, spot_check_one_in: 0, ..Default::default() };
    let offload = router(engine.clone(), 0, config);
    let mut ids = Vec::new();
    for seed in 0..16 {
        let (job, id) = compress_job(seed);
        offload.run(job).await.unwrap();
        ids.push(id);
    }
    assert_eq!(engine.jobs_seen(), 16);
    offload.distrust("late-liar", "a wrong payload found by a reader").await;
    let mut wrong = offload.wrong_chunks();
    wrong.sort_by_key(|id| id.0);
    let mut expected = ids[12..16].to_vec();
    expected.sort_by_key(|id| id.0);
    assert_eq!(wrong, expected, "the lies, and only those");
}

#[tokio::test]
async fn a_caller_that_finds_an_answer_wrong_condemns_the_engine_and_gets_a_recheck() {
    // Nothing sampled: only the caller (the store, confirming a chunk id) notices.
    let engine = Arc::new(FaultEngine::new("liar", 0, Fault::CorruptPayload));
    let offload =
        router(engine.clone(), 0, RouterConfig { probation_jobs: 0, spot_check_one_in: 0, ..Default::default() });
    let (job, id) = compress_job(1);
    offload.run(job).await.unwrap();
    offload.distrust("liar", "a wrong chunk id").await;
    assert_eq!(offload.wrong_chunks(), vec![id]);
    let (job, id) = compress_job(2);
    assert_eq!(offload.run(job).await.unwrap().chunk_id, Some(id));
    assert_eq!(engine.jobs_seen(), 1, "condemned: no more work");
}

#[tokio::test]
async fn unchecked_answers_kept_for_a_recheck_are_bounded() {
    // No sampling, and room for one answer's payload: only the latest lie is rechecked.
    let engine = Arc::new(FaultEngine::new("liar", 0, Fault::CorruptPayload));
    let config = RouterConfig { probation_jobs: 0, spot_check_one_in: 0, recheck_bytes: 1, ..Default::default() };
    let offload = router(engine.clone(), 0, config);
    let mut last = None;
    for seed in 0..4 {
        let (job, id) = compress_job(seed);
        offload.run(job).await.unwrap();
        last = Some(id);
    }
    offload.distrust("liar", "a wrong payload").await;
    assert_eq!(offload.wrong_chunks(), vec![last.unwrap()]);
}
