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
            Some(MpiWorld {
                _universe: universe,
                world,
            })
        }
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
