//! Who this process is among its peers, and the collectives sapling needs.

use std::rc::Rc;

/// The collectives data-parallel training uses. Every rank calls them in the same order.
pub trait Collective {
    fn rank(&self) -> usize;
    fn size(&self) -> usize;
    /// Element-wise sum over ranks, in place.
    fn all_reduce_sum(&self, buf: &mut [f32]);
    /// The smallest value any rank passed.
    fn all_reduce_min(&self, value: u64) -> u64;
    /// Rank `root`'s buffer, copied into every rank's.
    fn broadcast(&self, buf: &mut [f32], root: usize);
    /// `send` holds one block per rank (rank order, `recv.len()` each); `recv` gets the
    /// element-wise sum over ranks of block `rank`.
    fn reduce_scatter_sum(&self, send: &[f32], recv: &mut [f32]);
    /// Every rank's `send` (all the same length), in rank order, into `recv`.
    fn all_gather(&self, send: &[f32], recv: &mut [f32]);
    /// Every rank's `value`, in rank order.
    fn all_gather_u64(&self, value: u64) -> Vec<u64>;
    /// Returns once every rank has called it.
    fn barrier(&self);
    /// A name for logs.
    fn describe(&self) -> String;
    /// Ends every process of the world with `code`, for an error on one rank that the others,
    /// waiting in a collective, would never hear of. A world of one has no others: it returns
    /// and the caller ends as usual.
    fn abort(&self, _code: i32) {}
}

/// A world of one: every collective is the identity.
#[derive(Debug, Default, Clone, Copy)]
pub struct Solo;

impl Collective for Solo {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn all_reduce_sum(&self, _: &mut [f32]) {}
    fn all_reduce_min(&self, value: u64) -> u64 {
        value
    }
    fn broadcast(&self, _: &mut [f32], _: usize) {}
    fn reduce_scatter_sum(&self, send: &[f32], recv: &mut [f32]) {
        recv.copy_from_slice(send);
    }
    fn all_gather(&self, send: &[f32], recv: &mut [f32]) {
        recv.copy_from_slice(send);
    }
    fn all_gather_u64(&self, value: u64) -> Vec<u64> {
        vec![value]
    }
    fn barrier(&self) {}
    fn describe(&self) -> String {
        "a single process".to_string()
    }
}

/// The process group a run belongs to.
pub type World = Rc<dyn Collective>;

/// Callers inside [`catching_panics`] now. Process-wide, not per thread: a panic in a pool
/// thread reaches the caller that joins it.
static CATCHING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Runs `work`, whose panics the caller catches and handles: MPI's panic hook then does not
/// abort the job for them (see `abort_on_panic`).
pub fn catching_panics<R>(work: impl FnOnce() -> R) -> R {
    use std::sync::atomic::Ordering;
    CATCHING.fetch_add(1, Ordering::SeqCst);
    struct Done;
    impl Drop for Done {
        fn drop(&mut self) {
            CATCHING.fetch_sub(1, Ordering::SeqCst);
        }
    }
    let _done = Done;
    work()
}

/// MPI's world when sapling is built with `--features mpi` (a world of one without `mpirun`),
/// otherwise [`Solo`].
pub fn init() -> World {
    #[cfg(feature = "mpi")]
    {
        if let Some(w) = mpi_world::MpiWorld::init() {
            return Rc::new(w);
        }
    }
    Rc::new(Solo)
}

#[cfg(feature = "mpi")]
mod mpi_world {
    use mpi::collective::{CommunicatorCollectives, Root, SystemOperation};
    use mpi::environment::Universe;
    use mpi::topology::{Communicator, SimpleCommunicator};

    use super::Collective;

    /// `MPI_COMM_WORLD`; the universe is kept so MPI is finalised when the world is dropped.
    pub struct MpiWorld {
        _universe: Universe,
        world: SimpleCommunicator,
    }

    impl MpiWorld {
        pub fn init() -> Option<Self> {
            let universe = mpi::initialize()?;
            let world = universe.world();
            if world.size() > 1 {
                abort_on_panic(world.rank());
            }
            Some(MpiWorld {
                _universe: universe,
                world,
            })
        }
    }

    /// A panic on one rank (a bug, not an error, which the binary reports and aborts on) would
    /// leave the other ranks waiting in their next collective for ever: after the usual report
    /// the whole job is aborted. A panic a caller expects and catches (a trial step that runs
    /// the device out of memory, see [`super::catching_panics`]) is left to it.
    fn abort_on_panic(rank: i32) {
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            report(info);
            if super::CATCHING.load(std::sync::atomic::Ordering::SeqCst) > 0 {
                return;
            }
            eprintln!("sapling: panic on MPI rank {rank}; aborting every rank of the job");
            // SAFETY: MPI was initialised (this hook is installed after it) and MPI_Abort may be
            // called from any thread; it does not return.
            unsafe {
                mpi::ffi::MPI_Abort(mpi::ffi::RSMPI_COMM_WORLD, 101);
            }
        }));
    }

    impl Collective for MpiWorld {
        fn rank(&self) -> usize {
            self.world.rank() as usize
        }
        fn size(&self) -> usize {
            self.world.size() as usize
        }
        fn all_reduce_sum(&self, buf: &mut [f32]) {
            let send = buf.to_vec();
            self.world
                .all_reduce_into(&send[..], buf, SystemOperation::sum());
        }
        fn all_reduce_min(&self, value: u64) -> u64 {
            let mut out = 0u64;
            self.world
                .all_reduce_into(&value, &mut out, SystemOperation::min());
            out
        }
        fn broadcast(&self, buf: &mut [f32], root: usize) {
            self.world.process_at_rank(root as i32).broadcast_into(buf);
        }
        fn reduce_scatter_sum(&self, send: &[f32], recv: &mut [f32]) {
            self.world
                .reduce_scatter_block_into(send, recv, SystemOperation::sum());
        }
        fn all_gather(&self, send: &[f32], recv: &mut [f32]) {
            self.world.all_gather_into(send, recv);
        }
        fn all_gather_u64(&self, value: u64) -> Vec<u64> {
            let mut out = vec![0u64; self.size()];
            self.world.all_gather_into(&value, &mut out[..]);
            out
        }
        fn barrier(&self) {
            self.world.barrier();
        }
        fn describe(&self) -> String {
            format!("MPI rank {} of {}", self.rank(), self.size())
        }
        fn abort(&self, code: i32) {
            if self.size() > 1 {
                self.world.abort(code);
            }
        }
    }
}
