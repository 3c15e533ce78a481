//! The host's running sums of a step's gradients, read back on a thread of their own.
//!
//! With the gradients summed on the host, every stage's gradients are read back as backward
//! makes them. Read on the training thread, the device would wait for each readback before it
//! is handed the next stage's work; here a reader thread reads them and adds them in while
//! the training thread queues the next stage (and the next micro-batch's forward pass). The
//! hand-over holds one stage's gradients at most, so the device keeps at most three stages'
//! (being made, waiting, being read: `planner::memory::HOST_SUM_STAGES`). One reader takes them in order, so the sums are the
//! same bits as summed in place. A browser has no threads: there the training thread reads.

use std::sync::{Arc, Mutex, PoisonError};

use burn::optim::GradientsParams;

use crate::dist::add_placed_into;
use crate::dist::flat::{PlacedGrad, flat_grads_at};
use crate::model::MaskedAutoencoder;

/// What the sums hold between steps.
struct Sums {
    /// Every parameter's gradients, flat, summed since the last step.
    acc: Vec<f32>,
    /// Per parameter: nothing of this step summed yet (the next gradient is written).
    fresh: Vec<bool>,
    /// Gradient bytes read back since the last step.
    read: u64,
}

/// The sums of a model with `total` values in `params` parameters.
pub(super) struct GradSums {
    total: usize,
    bucket_bytes: usize,
    sums: Arc<Mutex<Sums>>,
    #[cfg(not(target_family = "wasm"))]
    reader: Reader,
}

impl GradSums {
    pub fn new(total: usize, params: usize, bucket_bytes: usize) -> Self {
        let sums = Arc::new(Mutex::new(Sums {
            acc: vec![0.0; total],
            fresh: vec![true; params],
            read: 0,
        }));
        GradSums {
            total,
            bucket_bytes,
            #[cfg(not(target_family = "wasm"))]
            reader: Reader::start(sums.clone(), total, bucket_bytes),
            sums,
        }
    }

    /// Adds `grads` (a micro-batch's, or one stage's) in; the device's copies are dropped once
    /// read.
    pub fn add(&mut self, model: &MaskedAutoencoder, grads: &GradientsParams) {
        let placed = flat_grads_at(model, grads);
        #[cfg(not(target_family = "wasm"))]
        self.reader.send(Job::Add(placed));
        #[cfg(target_family = "wasm")]
        add(&self.sums, placed, self.total, self.bucket_bytes);
    }

    /// Adds `grads` in on this thread (after every queued gradient): for the step's sums read
    /// back once, where there is nothing to overlap (a second thread's readback only cost
    /// memory there: on lavapipe the pool reserved 6–16 MiB more for `tiny`).
    pub fn add_here(&mut self, model: &MaskedAutoencoder, grads: &GradientsParams) {
        #[cfg(not(target_family = "wasm"))]
        self.reader.wait();
        add(
            &self.sums,
            flat_grads_at(model, grads),
            self.total,
            self.bucket_bytes,
        );
    }

    /// The sums of the step (every queued gradient added) and the bytes read back for them;
    /// the next gradients start new sums.
    pub fn take(&mut self) -> (Vec<f32>, u64) {
        #[cfg(not(target_family = "wasm"))]
        self.reader.wait();
        let mut sums = lock(&self.sums);
        sums.fresh.iter_mut().for_each(|f| *f = true);
        (
            std::mem::take(&mut sums.acc),
            std::mem::take(&mut sums.read),
        )
    }

    /// A taken buffer back for the next step's sums (every value is written before it is
    /// added to).
    pub fn give_back(&mut self, acc: Vec<f32>) {
        if acc.len() == self.total {
            lock(&self.sums).acc = acc;
        }
    }
}

fn lock(sums: &Mutex<Sums>) -> std::sync::MutexGuard<'_, Sums> {
    // A reader that panicked mid-add left sums no step will use: the panic is reported by
    // the next `send`.
    sums.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Reads `placed` back and adds it into the sums.
fn add(sums: &Mutex<Sums>, placed: Vec<PlacedGrad>, total: usize, bucket_bytes: usize) {
    let mut sums = lock(sums);
    let sums = &mut *sums;
    if sums.acc.len() != total {
        // The last step's buffer was not given back (a step not applied).
        sums.acc = vec![0.0; total];
    }
    sums.read += add_placed_into(placed, &mut sums.acc, &mut sums.fresh, bucket_bytes);
}

#[cfg(not(target_family = "wasm"))]
enum Job {
    Add(Vec<PlacedGrad>),
    /// Answered once every earlier job is done.
    Wait(std::sync::mpsc::SyncSender<()>),
}

/// The reader thread and its one-job hand-over.
#[cfg(not(target_family = "wasm"))]
struct Reader {
    jobs: std::sync::mpsc::SyncSender<Job>,
}

#[cfg(not(target_family = "wasm"))]
impl Reader {
    fn start(sums: Arc<Mutex<Sums>>, total: usize, bucket_bytes: usize) -> Self {
        let (jobs, queue) = std::sync::mpsc::sync_channel::<Job>(1);
        std::thread::spawn(move || {
            for job in queue {
                match job {
                    Job::Add(placed) => add(&sums, placed, total, bucket_bytes),
                    Job::Wait(done) => {
                        let _ = done.send(());
                    }
                }
            }
        });
        Reader { jobs }
    }

    fn send(&self, job: Job) {
        self.jobs
            .send(job)
            .expect("the gradient reader stopped: a gradient readback failed");
    }

    fn wait(&self) {
        let (done, finished) = std::sync::mpsc::sync_channel(1);
        self.send(Job::Wait(done));
        finished
            .recv()
            .expect("the gradient reader stopped: a gradient readback failed");
    }
}
