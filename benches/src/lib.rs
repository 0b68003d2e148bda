//! Shared helpers for the benchmark programs in `src/bin/`: timing with CPU time, peak
//! RSS, and deterministic inputs.
//!
//! - [`Sample`]: wall and CPU time of one measured step;
//! - [`measure`]: runs a step and takes its [`Sample`];
//! - [`peak_rss_mib`]: the process's peak resident set;
//! - [`write_input`]: random or compressible (files from /usr) input files;
//! - [`link`]: the socket-free parts of the `linkem` WAN link emulator.

pub mod link;

use rand::{RngCore, SeedableRng};
use std::io::Write;
use std::path::Path;
use std::time::Instant;

/// Wall time and CPU time (user + system, whole process) of one step.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// seconds of wall time
    pub wall_s: f64,
    /// seconds of CPU time of this process
    pub cpu_s: f64,
}

fn process_cpu_s() -> f64 {
    // SAFETY: getrusage writes into the struct we pass and has no other effect.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// CPU time of waited-for children (for `cp`).
pub fn children_cpu_s() -> f64 {
    // SAFETY: as above.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Runs `step` and measures it.
pub async fn measure<F, T>(step: F) -> (T, Sample)
where
    F: std::future::Future<Output = T>,
{
    let (c0, k0, t0) = (process_cpu_s(), children_cpu_s(), Instant::now());
    let out = step.await;
    let wall_s = t0.elapsed().as_secs_f64();
    let cpu_s = process_cpu_s() - c0 + children_cpu_s() - k0;
    (out, Sample { wall_s, cpu_s })
}

/// Peak resident set of this process (VmHWM), MiB.
pub fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Median of a non-empty list.
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Writes `bytes` of input: `random`, or `corpus` (files under /usr concatenated, the
/// mix of text and binaries a site holds). Reuses an existing file of the right size.
pub fn write_input(path: &Path, kind: &str, bytes: u64) -> std::io::Result<()> {
    if std::fs::metadata(path).is_ok_and(|m| m.len() == bytes) {
        return Ok(());
    }
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut written = 0u64;
    match kind {
        "random" => {
            let mut rng = rand::rngs::StdRng::seed_from_u64(42);
            let mut buf = vec![0u8; 1 << 20];
            while written < bytes {
                rng.fill_bytes(&mut buf);
                let n = buf.len().min((bytes - written) as usize);
                out.write_all(&buf[..n])?;
                written += n as u64;
            }
        }
        "corpus" => {
            let mut stack = vec![std::path::PathBuf::from("/usr")];
            'walk: while let Some(dir) = stack.pop() {
                let Ok(entries) = std::fs::read_dir(&dir) else { continue };
                let mut entries: Vec<_> = entries.flatten().collect();
                entries.sort_by_key(|e| e.file_name());
                for e in entries {
                    let Ok(ft) = e.file_type() else { continue };
                    if ft.is_dir() {
                        stack.push(e.path());
                    } else if ft.is_file() {
                        let Ok(data) = std::fs::read(e.path()) else { continue };
                        let n = data.len().min((bytes - written) as usize);
                        out.write_all(&data[..n])?;
                        written += n as u64;
                        if written == bytes {
                            break 'walk;
                        }
                    }
                }
            }
            if written < bytes {
                return Err(std::io::Error::other(format!("/usr holds only {written} bytes of files")));
            }
        }
        other => return Err(std::io::Error::other(format!("unknown input kind {other:?}: use random or corpus"))),
    }
    out.flush()?;
    out.into_inner().map_err(|e| e.into_error())?.sync_all()
}
