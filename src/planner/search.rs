//! The batch plan: micro-batch, accumulation and learning rate for one device.
//!
//! Candidates are the divisors of the effective batch (so accumulation reaches it exactly)
//! whose modelled step fits the budget with a margin and whose largest tensor fits the
//! binding limit. The largest few are tried for real and the fastest whole-step throughput
//! wins: on many devices a mid-sized micro-batch beats the largest that fits.

use serde::{Deserialize, Serialize};

use super::limits::DeviceLimits;
use super::memory::{StepMemory, fmt_bytes, step_memory};
use super::trial::{Trial, TrialOptions};
use crate::config::{BatchSize, Config, ModelConfig, accumulation_steps};
use crate::error::{Result, SaplingError};
use crate::ops::Kernels;
use crate::optim::scaled_lr;

/// Share of the budget a planned step may use: the model is an estimate, and allocators
/// round sizes up.
pub const SAFETY_MARGIN: f64 = 0.85;
/// Trials within this share of the best throughput count as ties, won by the larger size
/// (fewer accumulation passes, less launch overhead).
pub const THROUGHPUT_TIE: f64 = 0.05;

/// A trial this much slower than the best so far ends the search.
pub const PAST_PEAK: f64 = 0.10;

/// How a plan was arrived at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PlanSource {
    /// Memory model, then trial steps (`probed` in checkpoints written before 2026-12).
    #[serde(alias = "probed")]
    Measured,
    /// Memory model only (no trials asked for).
    Modelled,
    /// `batch_size` was given; checked against the memory model.
    Given,
    /// Taken from the checkpoint of a run on the same device.
    Reused,
}

/// What `sapling probe` prints and a checkpoint keeps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchPlan {
    pub micro_batch: usize,
    pub accum: usize,
    /// Images per optimizer step over all ranks: `world_size · micro_batch · accum`.
    pub effective_batch: usize,
    /// MPI ranks training together.
    #[serde(default = "one")]
    pub world_size: usize,
    /// Peak learning rate after scaling from the effective batch.
    pub lr: f64,
    /// The modelled step at `micro_batch`.
    pub predicted: StepMemory,
    pub limits: DeviceLimits,
    pub source: PlanSource,
    /// The sizes tried, largest first.
    pub trials: Vec<Trial>,
}

impl BatchPlan {
    /// One line for logs.
    pub fn summary(&self) -> String {
        let ranks = if self.world_size > 1 {
            format!(" x {} ranks", self.world_size)
        } else {
            String::new()
        };
        format!(
            "micro-batch {} x {} accumulation{ranks} = {} images/step, peak lr {:.3e}, predicted {} per step (budget {}), largest buffer {} ({})",
            self.micro_batch,
            self.accum,
            self.effective_batch,
            self.lr,
            fmt_bytes(self.predicted.total),
            fmt_bytes(self.limits.budget),
            fmt_bytes(self.predicted.largest.bytes),
            self.predicted.largest.name,
        )
    }
}

fn one() -> usize {
    1
}

/// Why a modelled step does not fit, or `None` when it does.
pub fn misfit(memory: &StepMemory, limits: &DeviceLimits) -> Option<String> {
    if let Some(binding) = limits.max_storage_buffer_binding_size
        && memory.largest.bytes > binding
    {
        return Some(format!(
            "its largest tensor ({}, {}) exceeds the adapter's storage-binding limit of {}",
            memory.largest.name,
            fmt_bytes(memory.largest.bytes),
            fmt_bytes(binding)
        ));
    }
    let allowed = (limits.budget as f64 * SAFETY_MARGIN) as u64;
    (memory.total > allowed).then(|| {
        format!(
            "a step needs about {}, over {:.0}% of the {} budget ({})",
            fmt_bytes(memory.total),
            SAFETY_MARGIN * 100.0,
            fmt_bytes(limits.budget),
            limits.budget_source
        )
    })
}

/// Micro-batches that divide `effective` and fit, largest first, with their modelled steps.
pub fn candidates(
    model: &ModelConfig,
    kernels: Kernels,
    effective: usize,
    limits: &DeviceLimits,
) -> Vec<(usize, StepMemory)> {
    (1..=effective)
        .rev()
        .filter(|m| effective.is_multiple_of(*m))
        .map(|m| (m, step_memory(model, m, effective / m, kernels)))
        .filter(|(_, mem)| misfit(mem, limits).is_none())
        .collect()
}

/// Plans the batch of `config` for a device with `limits` whose operations are `kernels`.
///
/// A given `batch_size` is checked against the memory model and kept; `auto` asks `trial` to
/// run the largest `options.sizes` candidates for real (micro-batch, accumulation → what it
/// measured) and keeps the fastest.
pub async fn search(
    config: &Config,
    kernels: Kernels,
    limits: &DeviceLimits,
    options: TrialOptions,
    mut trial: impl AsyncFnMut(usize, usize) -> Trial,
) -> Result<BatchPlan> {
    let mut search = match Search::start(config, kernels, limits, options)? {
        Start::Planned(plan) => return Ok(*plan),
        Start::Trials(search) => search,
    };
    while let Some(micro) = search.next_size() {
        search.record(trial(micro, search.accum(micro)).await);
    }
    search.finish()
}

/// Where planning stands before any trial step.
enum Start<'a> {
    /// Decided by the memory model alone.
    Planned(Box<BatchPlan>),
    /// Trials are needed.
    Trials(Search<'a>),
}

/// The walk over fitting micro-batches, largest first.
struct Search<'a> {
    config: &'a Config,
    kernels: Kernels,
    limits: &'a DeviceLimits,
    fitting: Vec<(usize, StepMemory)>,
    sizes: usize,
    trials: Vec<Trial>,
}

impl<'a> Search<'a> {
    fn start(
        config: &'a Config,
        kernels: Kernels,
        limits: &'a DeviceLimits,
        options: TrialOptions,
    ) -> Result<Start<'a>> {
        let model = &config.model;
        let effective = config.train.effective_batch;
        let search = Search {
            config,
            kernels,
            limits,
            fitting: candidates(model, kernels, effective, limits),
            sizes: options.sizes,
            trials: Vec::new(),
        };
        if let BatchSize::Fixed(micro) = config.train.batch_size {
            let memory = step_memory(model, micro, effective / micro, kernels);
            if let Some(why) = misfit(&memory, limits) {
                return Err(does_not_fit(micro, why, &search.fitting, effective, limits));
            }
            return Ok(Start::Planned(Box::new(
                search.make(micro, PlanSource::Given),
            )));
        }
        let Some(&(largest, _)) = search.fitting.first() else {
            let why =
                misfit(&step_memory(model, 1, effective, kernels), limits).unwrap_or_default();
            return Err(does_not_fit(1, why, &search.fitting, effective, limits));
        };
        if options.sizes == 0 {
            return Ok(Start::Planned(Box::new(
                search.make(largest, PlanSource::Modelled),
            )));
        }
        Ok(Start::Trials(search))
    }

    fn accum(&self, micro: usize) -> usize {
        self.config.train.effective_batch / micro
    }

    /// The next size to try, or `None` when the search is over.
    fn next_size(&self) -> Option<usize> {
        let ok: Vec<&Trial> = self.trials.iter().filter(|t| t.ok()).collect();
        if ok.len() == self.sizes {
            return None;
        }
        // Smaller sizes are tried while they keep up: stop once the last one fell clearly
        // behind the best so far (past the peak, smaller only gets slower).
        let best = ok.iter().map(|t| t.images_per_sec).fold(0.0, f64::max);
        if ok.len() >= 2
            && ok
                .last()
                .is_some_and(|t| t.images_per_sec < best * (1.0 - PAST_PEAK))
        {
            return None;
        }
        let micro = self.fitting.get(self.trials.len())?.0;
        tracing::info!("batch plan: trying micro-batch {micro}");
        Some(micro)
    }

    /// Keeps a trial with the memory model's prediction beside what it measured, rejecting it
    /// when its measured peak is over the budget.
    fn record(&mut self, mut trial: Trial) {
        let micro = trial.micro_batch;
        trial.predicted_peak =
            step_memory(&self.config.model, micro, self.accum(micro), self.kernels).total;
        if trial.ok()
            && let Some(peak) = trial.measured_peak
            && peak > self.limits.budget
        {
            trial.error = Some(format!(
                "measured peak {} is over the {} budget",
                fmt_bytes(peak),
                fmt_bytes(self.limits.budget)
            ));
        }
        if let Some(e) = &trial.error {
            tracing::warn!("batch plan: micro-batch {} failed: {e}", trial.micro_batch);
        }
        self.trials.push(trial);
    }

    fn finish(mut self) -> Result<BatchPlan> {
        let effective = self.config.train.effective_batch;
        let Some(best) = choose(&self.trials) else {
            let why = self
                .trials
                .iter()
                .find_map(|t| t.error.clone())
                .unwrap_or_default();
            return Err(does_not_fit(
                self.fitting.last().map_or(1, |c| c.0),
                format!("every trial step failed ({why})"),
                &[],
                effective,
                self.limits,
            ));
        };
        let trials = std::mem::take(&mut self.trials);
        let mut plan = self.make(best, PlanSource::Measured);
        plan.trials = trials;
        Ok(plan)
    }

    fn make(&self, micro: usize, source: PlanSource) -> BatchPlan {
        let (config, effective) = (self.config, self.config.train.effective_batch);
        BatchPlan {
            micro_batch: micro,
            accum: effective / micro,
            effective_batch: effective,
            world_size: 1,
            lr: scaled_lr(config.optim.base_lr, effective, config.optim.lr_base_batch),
            predicted: step_memory(&config.model, micro, effective / micro, self.kernels),
            limits: self.limits.clone(),
            source,
            trials: Vec::new(),
        }
    }
}

/// The fastest successful trial; near-ties go to the larger micro-batch.
pub fn choose(trials: &[Trial]) -> Option<usize> {
    let best = trials
        .iter()
        .filter(|t| t.ok())
        .map(|t| t.images_per_sec)
        .fold(f64::NAN, f64::max);
    trials
        .iter()
        .filter(|t| t.ok() && t.images_per_sec >= best * (1.0 - THROUGHPUT_TIE))
        .map(|t| t.micro_batch)
        .max()
}

/// `previous` (a checkpoint's plan) as this run's plan, when it was made on the same device
/// for the same effective batch and the micro-batch is `auto`; otherwise `None`: plan afresh.
pub fn reusable(
    config: &Config,
    limits: &DeviceLimits,
    previous: Option<&BatchPlan>,
) -> Option<BatchPlan> {
    let p = previous.filter(|_| config.train.batch_size == BatchSize::Auto)?;
    if p.limits.key == limits.key && p.effective_batch == config.train.effective_batch {
        let mut reused = p.clone();
        reused.source = PlanSource::Reused;
        reused.limits = limits.clone();
        return Some(reused);
    }
    tracing::info!(
        "the checkpoint's batch plan was made on {}; planning for {} again, keeping the effective batch {}",
        p.limits.adapter,
        limits.adapter,
        config.train.effective_batch
    );
    None
}

fn does_not_fit(
    requested: usize,
    why: String,
    fitting: &[(usize, StepMemory)],
    effective: usize,
    limits: &DeviceLimits,
) -> SaplingError {
    let advice = match fitting.first() {
        Some(&(m, _)) => format!(
            "The largest micro-batch that fits is {m}: use --batch-size {m} ({} to keep the effective batch of {effective}), or --batch-size auto",
            accumulation_steps(effective / m)
        ),
        None => "Not even a micro-batch of 1 fits: lower model.img_size, pick a smaller preset, or raise --memory-budget if the device has more memory".to_string(),
    };
    SaplingError::BatchDoesNotFit {
        requested,
        adapter: limits.adapter.clone(),
        why,
        advice,
    }
}
