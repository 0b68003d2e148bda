//! `kill -9` during a stream of writes, overwrites, deletes and GC passes, then restart:
//! every acknowledged operation holds, reference counts equal a full recount, and no
//! referenced chunk is missing.

use futures::TryStreamExt;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use store::{Store, StoreConfig, StoreError};

/// What a key should hold: None = absent; Some((content seed, size, marker)).
type Expected = Option<(u64, usize, u64)>;

#[derive(Debug)]
enum Op {
    Put(String, (u64, usize, u64)),
    Del(String),
    Gc,
}

fn parse(line: &str) -> Op {
    let f: Vec<&str> = line.split_whitespace().collect();
    match f[..] {
        ["BEGIN", "PUT", key, seed, size, marker] => {
            Op::Put(key.into(), (seed.parse().unwrap(), size.parse().unwrap(), marker.parse().unwrap()))
        }
        ["BEGIN", "DEL", key] => Op::Del(key.into()),
        ["BEGIN", "GC"] => Op::Gc,
        _ => panic!("unexpected writer line {line:?}"),
    }
}

/// Runs the writer until it has acknowledged `acks` operations, then SIGKILLs it.
/// Returns the acknowledged ops and the one in flight, if any.
fn run_and_kill(dir: &std::path::Path, seed: u64, acks: usize) -> (Vec<Op>, Option<Op>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_store-writer"))
        .arg(dir)
        .arg(seed.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut done = Vec::new();
    let mut pending = None;
    let deadline = Instant::now() + Duration::from_secs(300);
    let follow = |line: String, done: &mut Vec<Op>, pending: &mut Option<Op>| {
        if line == "ACK" {
            done.push(pending.take().expect("ACK follows BEGIN"));
        } else {
            *pending = Some(parse(&line));
        }
    };
    while done.len() < acks {
        let line = lines.next().expect("writer exited early").unwrap();
        follow(line, &mut done, &mut pending);
        assert!(Instant::now() < deadline, "writer too slow");
    }
    // Let the next operation get under way, then kill it mid-flight.
    std::thread::sleep(Duration::from_millis(seed * 7 % 40));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // Whatever it printed before dying tells which operation was cut.
    for line in lines {
        follow(line.unwrap(), &mut done, &mut pending);
    }
    (done, pending)
}

async fn read_all(store: &std::sync::Arc<Store>, key: &str) -> Result<Vec<u8>, StoreError> {
    let (_, _, stream) = store.get_object("crash", key, None)?;
    let pieces: Vec<bytes::Bytes> = stream.try_collect().await?;
    Ok(pieces.concat())
}

/// Temp files of packs being written, anywhere under `dir`.
fn temp_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(temp_files(&path));
        } else if path.to_string_lossy().contains(".tmp.") {
            found.push(path);
        }
    }
    found
}

fn expected_bytes(e: &Expected) -> Option<Vec<u8>> {
    e.map(|(seed, size, marker)| tests::content(seed, size, marker))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut state: HashMap<String, Expected> = HashMap::new();
    for (round, acks) in [(1u64, 25usize), (2, 40), (3, 15), (4, 30)] {
        let (done, in_flight) = run_and_kill(dir.path(), round, acks);
        for op in done {
            match op {
                Op::Put(key, v) => drop(state.insert(key, Some(v))),
                Op::Del(key) => drop(state.insert(key, None)),
                Op::Gc => {}
            }
        }
        let store = Store::open(StoreConfig::new(dir.path()), hw_offload::Offload::cpu(2)).await.unwrap();
        let report = store.check().unwrap();
        assert!(report.is_clean(), "round {round}: after kill -9: {report:?}");
        // The operation cut by the kill may or may not have landed, but nothing between.
        let (cut_key, cut_value) = match &in_flight {
            Some(Op::Put(k, v)) => (Some(k.clone()), Some(Some(*v))),
            Some(Op::Del(k)) => (Some(k.clone()), Some(None)),
            _ => (None, None),
        };
        let mut keys: Vec<_> = state.keys().cloned().collect();
        keys.extend(cut_key.clone());
        keys.sort();
        keys.dedup();
        for key in &keys {
            let got = read_all(&store, key).await.ok();
            let acked = state.get(key).cloned().flatten();
            let mut allowed = vec![expected_bytes(&acked)];
            if cut_key.as_deref() == Some(key) {
                let landed = cut_value.unwrap();
                allowed.push(expected_bytes(&landed));
                if got == allowed[1] {
                    state.insert(key.clone(), landed);
                }
            }
            assert!(
                allowed.contains(&got),
                "round {round}: key {key} holds {:?} bytes, expected one of {:?}",
                got.as_ref().map(Vec::len),
                allowed.iter().map(|a| a.as_ref().map(Vec::len)).collect::<Vec<_>>()
            );
        }
        eprintln!("round {round}: {} keys verified after kill -9; cut operation: {in_flight:?}", keys.len());
        // GC after the crash removes what the killed writer left half-done, and only that.
        store.gc().await.unwrap();
        let report = store.check().unwrap();
        assert!(report.is_clean(), "round {round}: after gc: {report:?}");
        let leftovers = temp_files(&dir.path().join("chunks"));
        assert!(leftovers.is_empty(), "round {round}: gc left temp files of unsealed packs: {leftovers:?}");
        for key in &keys {
            let want = expected_bytes(state.get(key).unwrap_or(&None));
            assert_eq!(read_all(&store, key).await.ok(), want, "round {round}: {key} after gc");
        }
        drop(store);
    }
}
