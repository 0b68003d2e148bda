//! Prometheus text exposition of the store's, the transfers', the catalog sync's and the
//! offload engines' counters.

use std::fmt::Write;
use store::Store;
use transfer_engine::manager::Transfers;

/// Renders every counter in the Prometheus text format.
pub fn render(store: &Store, transfers: Option<&Transfers>, sync: Option<&catalog::quic::CatalogSync>) -> String {
    let mut out = String::new();
    let transfer_counters = transfers.map(|t| t.counters().counters()).into_iter().flatten();
    for (name, help, value) in store.metrics().counters().into_iter().chain(transfer_counters) {
        let _ = writeln!(out, "# HELP clusster_{name} {help}\n# TYPE clusster_{name} counter\nclusster_{name} {value}");
    }
    // Names with labels share one HELP and TYPE per family.
    let mut family = String::new();
    for (name, help, value) in sync.map(|s| s.counters.counters()).unwrap_or_default() {
        let this = name.split('{').next().unwrap_or(&name).to_owned();
        if this != family {
            let _ = writeln!(out, "# HELP clusster_{this} {help}\n# TYPE clusster_{this} counter");
            family = this;
        }
        let _ = writeln!(out, "clusster_{name} {value}");
    }
    let engines = store.offload().engines();
    for (metric, help) in [
        ("offload_jobs_total", "Offload steps run"),
        ("offload_bytes_total", "Input bytes of offload steps"),
        ("offload_busy_seconds_total", "Engine thread time spent in offload steps"),
        ("offload_host_cpu_seconds_total", "Host CPU time spent handing steps to an engine and taking results back"),
        ("offload_fallbacks_total", "Steps meant for an engine that ran on the CPU instead"),
        ("offload_op_errors_total", "Failed offload steps per operation"),
    ] {
        let _ = writeln!(out, "# HELP clusster_{metric} {help}\n# TYPE clusster_{metric} counter");
        for engine in &engines {
            for op in hw_offload::OpKind::ALL {
                let s = engine.metrics().op(op);
                let value = match metric {
                    "offload_jobs_total" => s.jobs.to_string(),
                    "offload_bytes_total" => s.bytes.to_string(),
                    "offload_host_cpu_seconds_total" => format!("{:.6}", s.host_cpu_ns as f64 / 1e9),
                    "offload_fallbacks_total" => s.fallbacks.to_string(),
                    "offload_op_errors_total" => s.errors.to_string(),
                    _ => format!("{:.6}", s.busy_ns as f64 / 1e9),
                };
                let _ = writeln!(out, "clusster_{metric}{{engine=\"{}\",op=\"{}\"}} {value}", engine.name(), op.name());
            }
        }
    }
    let _ = writeln!(
        out,
        "# HELP clusster_offload_errors_total Failed offload jobs\n# TYPE clusster_offload_errors_total counter"
    );
    for engine in &engines {
        let _ = writeln!(
            out,
            "clusster_offload_errors_total{{engine=\"{}\"}} {}",
            engine.name(),
            engine.metrics().errors()
        );
    }
    out
}
