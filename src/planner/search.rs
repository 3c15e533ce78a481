//! The batch plan: micro-batch, accumulation and learning rate for one device.
//!
//! Candidates are the divisors of the effective batch (so accumulation reaches it exactly)
//! whose modelled step fits the budget with a margin and whose largest tensor fits the
//! binding limit. The largest few are tried for real and the fastest whole-step throughput
//! wins: on many devices a mid-sized micro-batch beats the largest that fits.

use serde::{Deserialize, Serialize};

use super::levers::Levers;
use super::limits::DeviceLimits;
use super::memory::{StepMemory, fmt_bytes, step_memory};
use super::trial::{Trial, TrialOptions};
use crate::config::{BatchSize, Config, ModelConfig, accumulation_steps};
use crate::error::{Result, SaplingError};
use crate::ops::Precision;
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
    /// The memory levers the step uses at `micro_batch` (absent in plans saved before they
    /// existed, which are then planned again).
    #[serde(default)]
    pub levers: Option<Levers>,
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
        let levers = self.levers.map(|l| format!(", {}", l.describe()));
        format!(
            "micro-batch {} x {} accumulation{ranks} = {} images/step{}, peak lr {:.3e}, predicted {} per step (budget {}), largest buffer {} ({})",
            self.micro_batch,
            self.accum,
            self.effective_batch,
            levers.unwrap_or_default(),
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
    let needed = memory.total
        + if limits.shares_host_memory {
            memory.host
        } else {
            0
        };
    if needed > allowed {
        return Some(format!(
            "a step needs about {}, over {:.0}% of the {} budget ({})",
            fmt_bytes(needed),
            SAFETY_MARGIN * 100.0,
            fmt_bytes(limits.budget),
            limits.budget_source
        ));
    }
    let host = limits.host_memory.filter(|_| !limits.shares_host_memory);
    host.filter(|&h| memory.host as f64 > h as f64 * SAFETY_MARGIN)
        .map(|h| {
            format!(
                "the optimizer's host side needs about {}, over {:.0}% of the host's {} \
                 (a host with more memory, or MPI ranks to shard it over, would fit it)",
                fmt_bytes(memory.host),
                SAFETY_MARGIN * 100.0,
                fmt_bytes(h)
            )
        })
}

/// A micro-batch with the cheapest levers that make it fit, and its modelled step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate {
    pub micro_batch: usize,
    pub levers: Levers,
    pub memory: StepMemory,
}

/// The cheapest of `options` (cheapest first) with which micro-batch `micro` fits, if any.
pub fn fitting(
    model: &ModelConfig,
    options: &[Levers],
    micro: usize,
    accum: usize,
    limits: &DeviceLimits,
) -> Option<Candidate> {
    options.iter().find_map(|&levers| {
        let memory = step_memory(model, micro, accum, levers);
        misfit(&memory, limits).is_none().then_some(Candidate {
            micro_batch: micro,
            levers,
            memory,
        })
    })
}

/// Micro-batches that divide `effective` and fit with one of `options`, largest first, each
/// with the cheapest levers that make it fit.
///
/// Gradients offloaded on one rank are a last resort: they move the weights' bytes across
/// the bus every micro-batch (sapiens-2b: 8 GiB each), which costs more than the larger
/// micro-batch they allow buys, so they are considered only where nothing fits without.
pub fn candidates(
    model: &ModelConfig,
    options: &[Levers],
    effective: usize,
    limits: &DeviceLimits,
) -> Vec<Candidate> {
    let last_resort = |l: &Levers| l.shards == 1 && l.grads_on_host();
    let (usual, resort): (Vec<Levers>, Vec<Levers>) = options.iter().partition(|l| !last_resort(l));
    let of = |options: &[Levers]| -> Vec<Candidate> {
        (1..=effective)
            .rev()
            .filter(|m| effective.is_multiple_of(*m))
            .filter_map(|m| fitting(model, options, m, effective / m, limits))
            .collect()
    };
    match of(&usual) {
        fits if !fits.is_empty() || resort.is_empty() => fits,
        _ => of(&resort),
    }
}

/// Plans the batch of `config` for a device with `limits`, with any of the lever sets
/// `options` (cheapest first, see [`super::levers::options`]).
///
/// A given `batch_size` is checked against the memory model and kept; `auto` asks `trial` to
/// run the largest `trial_options.sizes` candidates for real (micro-batch, accumulation and
/// levers → what it measured) and keeps the fastest, so a lever that costs time is used only
/// for a size that needs it, and only when that size is still faster.
pub async fn search(
    config: &Config,
    options: &[Levers],
    limits: &DeviceLimits,
    trial_options: TrialOptions,
    mut trial: impl AsyncFnMut(usize, usize, Levers) -> Trial,
) -> Result<BatchPlan> {
    let mut search = match Search::start(config, options, limits, trial_options)? {
        Start::Planned(plan) => return Ok(*plan),
        Start::Trials(search) => search,
    };
    while let Some(next) = search.next_size() {
        let (micro, levers) = (next.micro_batch, next.levers);
        search.record(trial(micro, search.accum(micro), levers).await);
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
    options: &'a [Levers],
    limits: &'a DeviceLimits,
    fitting: Vec<Candidate>,
    sizes: usize,
    trials: Vec<Trial>,
}

impl<'a> Search<'a> {
    fn start(
        config: &'a Config,
        options: &'a [Levers],
        limits: &'a DeviceLimits,
        trial_options: TrialOptions,
    ) -> Result<Start<'a>> {
        let model = &config.model;
        let effective = config.train.effective_batch;
        let search = Search {
            config,
            options,
            limits,
            fitting: candidates(model, options, effective, limits),
            sizes: trial_options.sizes,
            trials: Vec::new(),
        };
        if let BatchSize::Fixed(micro) = config.train.batch_size {
            let Some(given) = fitting(model, options, micro, effective / micro, limits) else {
                let why = search.why_not(micro);
                return Err(does_not_fit(micro, why, &search.fitting, effective, limits));
            };
            return Ok(Start::Planned(Box::new(
                search.make(&given, PlanSource::Given),
            )));
        }
        let Some(largest) = search.fitting.first() else {
            let why = search.why_not(1);
            return Err(does_not_fit(1, why, &search.fitting, effective, limits));
        };
        if trial_options.sizes == 0 {
            return Ok(Start::Planned(Box::new(
                search.make(largest, PlanSource::Modelled),
            )));
        }
        Ok(Start::Trials(search))
    }

    /// Why `micro` does not fit even with the levers that save the most memory.
    fn why_not(&self, micro: usize) -> String {
        let levers = *self.options.last().expect("at least one set of levers");
        let memory = step_memory(&self.config.model, micro, self.accum(micro), levers);
        misfit(&memory, self.limits).unwrap_or_default()
    }

    fn accum(&self, micro: usize) -> usize {
        self.config.train.effective_batch / micro
    }

    /// The next size to try, or `None` when the search is over.
    fn next_size(&self) -> Option<Candidate> {
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
        let next = self.fitting.get(self.trials.len())?.clone();
        tracing::info!(
            "batch plan: trying micro-batch {} ({})",
            next.micro_batch,
            next.levers.describe()
        );
        Some(next)
    }

    /// Keeps a trial with the memory model's prediction beside what it measured, rejecting it
    /// when its measured peak is over the budget.
    fn record(&mut self, mut trial: Trial) {
        let micro = trial.micro_batch;
        if let Some(c) = self.fitting.iter().find(|c| c.micro_batch == micro) {
            let host = if self.limits.peak_holds_host() {
                c.memory.host
            } else {
                0
            };
            trial.predicted_peak = c.memory.total + host;
            trial.levers = Some(c.levers);
        }
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
                self.fitting.last().map_or(1, |c| c.micro_batch),
                format!("every trial step failed ({why})"),
                &[],
                effective,
                self.limits,
            ));
        };
        let trials = std::mem::take(&mut self.trials);
        let chosen = self
            .fitting
            .iter()
            .find(|c| c.micro_batch == best)
            .expect("trials are of fitting sizes");
        let mut plan = self.make(chosen, PlanSource::Measured);
        plan.trials = trials;
        Ok(plan)
    }

    fn make(&self, chosen: &Candidate, source: PlanSource) -> BatchPlan {
        let (config, effective) = (self.config, self.config.train.effective_batch);
        let micro = chosen.micro_batch;
        BatchPlan {
            micro_batch: micro,
            accum: effective / micro,
            effective_batch: effective,
            world_size: 1,
            lr: scaled_lr(config.optim.base_lr, effective, config.optim.lr_base_batch),
            levers: Some(chosen.levers),
            predicted: chosen.memory.clone(),
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
/// for the same effective batch in the same `precision`, with levers among those the run
/// allows (`allowed`), and the micro-batch is `auto`; otherwise `None`: plan afresh (a run
/// may resume in the other precision, or with the optimizer offloaded or not).
pub fn reusable(
    config: &Config,
    limits: &DeviceLimits,
    previous: Option<&BatchPlan>,
    precision: Precision,
    allowed: &[Levers],
) -> Option<BatchPlan> {
    let p = previous.filter(|_| config.train.batch_size == BatchSize::Auto)?;
    // Levers the run's switches now rule out (`--offload-optimizer false` on resume) plan anew.
    if p.limits.key == limits.key
        && p.effective_batch == config.train.effective_batch
        && p.levers
            .is_some_and(|l| l.precision == precision && allowed.contains(&l))
    {
        let mut reused = p.clone();
        reused.source = PlanSource::Reused;
        reused.limits = limits.clone();
        return Some(reused);
    }
    tracing::info!(
        "the checkpoint's batch plan was made on {} ({}); planning for {} in {precision} again, keeping the effective batch {}",
        p.limits.adapter,
        p.levers.map_or("f32", |l| l.precision.name()),
        limits.adapter,
        config.train.effective_batch
    );
    None
}

fn does_not_fit(
    requested: usize,
    why: String,
    fitting: &[Candidate],
    effective: usize,
    limits: &DeviceLimits,
) -> SaplingError {
    let advice = match fitting.first().map(|c| c.micro_batch) {
        Some(m) => format!(
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
