//! The plan as `sapling probe` prints it.

use std::fmt;

use super::memory::fmt_bytes;
use super::search::BatchPlan;

impl fmt::Display for BatchPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = &self.limits;
        let opt = |v: Option<u64>| v.map_or("-".to_string(), fmt_bytes);
        writeln!(f, "adapter    {}", l.adapter)?;
        writeln!(
            f,
            "limits     max buffer {}, max storage-buffer binding {}, workgroup storage {}",
            opt(l.max_buffer_size),
            opt(l.max_storage_buffer_binding_size),
            opt(l.max_compute_workgroup_storage_size.map(u64::from)),
        )?;
        writeln!(
            f,
            "memory     device reports {}; budget {} ({})",
            l.device_memory.map_or("nothing".to_string(), |m| format!(
                "{} available",
                fmt_bytes(m)
            )),
            fmt_bytes(l.budget),
            l.budget_source
        )?;
        let p = &self.predicted;
        writeln!(
            f,
            "model      per step at micro-batch {}: params {}, grads {}, AdamW {}, activations {}, temporaries {}",
            p.micro_batch,
            fmt_bytes(p.params),
            fmt_bytes(p.grads),
            fmt_bytes(p.optim_state),
            fmt_bytes(p.activations),
            fmt_bytes(p.transient)
        )?;
        if !self.trials.is_empty() {
            writeln!(
                f,
                "trials     {:>6} {:>12} {:>10} {:>10} {:>12} {:>12}  levers",
                "micro", "fwd+bwd ms", "optim ms", "img/s", "predicted", "measured"
            )?;
            for t in &self.trials {
                match &t.error {
                    None => writeln!(
                        f,
                        "           {:>6} {:>12.1} {:>10.1} {:>10.1} {:>12} {:>12}  {}",
                        t.micro_batch,
                        t.forward_backward_ms,
                        t.optimizer_ms,
                        t.images_per_sec,
                        fmt_bytes(t.predicted_peak),
                        opt(t.measured_peak),
                        t.levers.map(|l| l.describe()).unwrap_or_default()
                    )?,
                    Some(e) => writeln!(f, "           {:>6} failed: {e}", t.micro_batch)?,
                }
            }
        }
        write!(f, "plan       {} [{:?}]", self.summary(), self.source)
    }
}
