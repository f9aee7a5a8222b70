//! The thread pool behind the row-parallel products: a fixed set of worker threads that wait for
//! work by spinning briefly, then sleeping, the way ggml's CPU threadpool does.
//!
//! Decode calls a matrix product a few hundred times per token, each a few tens of microseconds of
//! work. A general-purpose pool (rayon) puts its workers to sleep between them and the caller to
//! sleep during them, so every product pays futex wake-ups on both sides; on small boards that was
//! a large share of the time per token. Here the calling thread does a share of the work itself,
//! the workers spin for [`SPIN`] after each job (long enough to catch the next product of the same
//! token, short enough not to hold a core through long pauses), and only then park on a condvar.
//! Rows are handed out in chunks from one atomic counter, so a core that is slowed down by other
//! load takes fewer chunks instead of holding everyone up.

use std::cell::UnsafeCell;
use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::QuantError;
use crate::kernels::{
    GEMM_MIN_ROWS, GEMM_PANEL, Kernels, QuantizedActivations, has_gemm, matmul_rows_with,
};
use crate::types::GgmlType;

/// How long an idle worker spins before it sleeps.
pub const SPIN: Duration = Duration::from_micros(200);

/// A job as the workers see it: called with the worker's index (1..threads; the caller is 0).
type Job = dyn Fn(usize) + Sync;

struct Shared {
    /// The number of the job workers may join, 0 while none is open: the one thing idle workers
    /// watch. Every job gets a new non-zero number, so a worker that ran job `e` (or found it
    /// closed) waits for a value other than `e` and 0, and can never run a job twice. (Watching a
    /// second counter bumped after `open` let a worker that joined through `open` before the
    /// counter moved see the counter "change" afterwards and join the same job again.)
    open: AtomicUsize,
    /// Workers inside (or about to enter) the current job.
    active: AtomicUsize,
    /// The current job. Written only by the thread holding `Pool::gate` while no worker is inside
    /// a job (`active == 0` after the last job was closed), read by workers only after they joined
    /// (`active` raised, then `open` seen non-zero).
    job: UnsafeCell<Option<*const Job>>,
    /// Set when a job panicked in a worker (an ember bug); the caller re-raises it.
    panicked: AtomicBool,
    shutdown: AtomicBool,
    /// Tests only: sleep at the racy points of the protocol (see [`Shared::stagger`]).
    #[cfg(test)]
    staggered: AtomicBool,
    /// Workers asleep on `wake` (changed only under `sleep`).
    sleepers: AtomicUsize,
    sleep: Mutex<()>,
    wake: Condvar,
}

#[cfg(test)]
impl Shared {
    /// In a staggered test pool, sleeps for `d`: called by the caller right after it opens a job
    /// and by a worker between seeing a job and joining it, the two places where a descheduled
    /// thread lets the other side move on.
    fn stagger(&self, d: Duration) {
        if self.staggered.load(Ordering::Relaxed) {
            std::thread::sleep(d);
        }
    }
}

// SAFETY: `job` is the only non-Sync field; the protocol above (one writer, holding the gate, while
// no worker is inside a job; readers only after joining an open job, which the writer cannot
// replace until they leave) makes every access to it race-free. The pointee is `Sync`.
unsafe impl Sync for Shared {}
// SAFETY: as above; the raw pointer is only dereferenced under that protocol.
unsafe impl Send for Shared {}

/// A fixed pool of `threads - 1` workers plus the calling thread.
pub struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// One job at a time: callers from several threads queue here. Holds the last job number.
    gate: Mutex<usize>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("threads", &self.threads())
            .finish()
    }
}

impl Pool {
    /// A pool that runs jobs on `threads` threads in all (at least 1): the caller and
    /// `threads - 1` workers. If the OS refuses to start a worker, the pool keeps the ones it has
    /// ([`Pool::threads`] tells).
    pub fn new(threads: usize) -> Pool {
        let shared = Arc::new(Shared {
            open: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            job: UnsafeCell::new(None),
            panicked: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            #[cfg(test)]
            staggered: AtomicBool::new(false),
            sleepers: AtomicUsize::new(0),
            sleep: Mutex::new(()),
            wake: Condvar::new(),
        });
        let workers = (1..threads.max(1))
            .map_while(|index| {
                let shared = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("ember-worker-{index}"))
                    .spawn(move || worker(&shared, index))
                    .ok()
            })
            .collect();
        Pool {
            shared,
            workers,
            gate: Mutex::new(0),
        }
    }

    /// Threads a job runs on, the caller included.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `f(0)` on the calling thread and `f(i)` on each worker `i` (`1..threads()`) that joins
    /// while the caller is still inside `f(0)`, each at most once, and returns when every call has
    /// returned. Workers that are busy elsewhere or descheduled (a loaded machine) are not waited
    /// for: `f` must hand out its work dynamically (as [`Pool::matmul`] does with an atomic chunk
    /// counter), so the caller alone can do all of it. Panics if `f` panicked on any thread.
    pub fn run(&self, f: &(dyn Fn(usize) + Sync)) {
        if self.workers.is_empty() {
            f(0);
            return;
        }
        let mut gate = self.gate.lock().unwrap_or_else(|e| e.into_inner());
        let s = &*self.shared;
        // SAFETY: we hold the gate and the previous job was closed with no worker left inside it
        // (`Close` waited for `active == 0`; late workers find it closed and never read `job`), so
        // nothing reads `job` now. The lifetime is erased: workers use the pointer only while
        // joined, and `Close` below (on return and on unwinding alike) closes the job and waits
        // for every joined worker to leave before `f` can go out of scope.
        unsafe {
            let f: *const (dyn Fn(usize) + Sync + '_) = f;
            *s.job.get() = Some(std::mem::transmute::<
                *const (dyn Fn(usize) + Sync + '_),
                *const Job,
            >(f));
        }
        s.panicked.store(false, Ordering::Relaxed);
        *gate = gate.wrapping_add(1).max(1);
        s.open.store(*gate, Ordering::SeqCst);
        #[cfg(test)]
        s.stagger(Duration::from_millis(1));
        if s.sleepers.load(Ordering::SeqCst) > 0 {
            let _lock = s.sleep.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        struct Close<'a>(&'a Shared);
        impl Drop for Close<'_> {
            fn drop(&mut self) {
                self.0.open.store(0, Ordering::SeqCst);
                let start = Instant::now();
                let mut spins = 0u32;
                while self.0.active.load(Ordering::SeqCst) != 0 {
                    spins = spins.wrapping_add(1);
                    if spins.is_multiple_of(64) && start.elapsed() > SPIN {
                        std::thread::yield_now();
                    } else {
                        std::hint::spin_loop();
                    }
                }
            }
        }
        let close = Close(s);
        f(0);
        drop(close);
        if s.panicked.load(Ordering::Relaxed) {
            panic!("a pool job panicked on a worker thread");
        }
    }

    /// `out = x · Wᵀ` for the weight rows of `k` values of `weight_ty` in `weight` (GGUF layout,
    /// `n` whole rows) and the activation rows `xq` (`m` of them): `out[i * n + r]` is row `i`
    /// dotted with weight row `r`. Rows are split across the pool in chunks. Errors as
    /// [`crate::matmul_rows`]; `out` must hold `m * n` values.
    pub fn matmul(
        &self,
        kernels: Kernels,
        weight_ty: GgmlType,
        weight: &[u8],
        k: usize,
        xq: &QuantizedActivations,
        out: &mut [f32],
    ) -> Result<(), QuantError> {
        let row_bytes = weight_ty
            .bytes_for(k as u64)
            .and_then(|b| usize::try_from(b).ok())
            .unwrap_or(0);
        let n = weight.len().checked_div(row_bytes).unwrap_or(0);
        let m = xq.rows();
        if m.checked_mul(n) != Some(out.len()) {
            return Err(QuantError::SizeMismatch {
                ty: GgmlType::F32,
                values: m.saturating_mul(n),
                expected_bytes: (m as u64).saturating_mul(n as u64).saturating_mul(4),
                got_bytes: out.len().saturating_mul(4),
            });
        }
        // Validate once, up front, on an empty range: every chunk below then only repeats checks
        // that pass.
        matmul_rows_with(kernels, weight_ty, weight, k, xq, 0..0, &mut [])?;
        if n == 0 || m == 0 {
            return Ok(());
        }
        // Small chunks balance the load; even sizes keep the 2×2 tiles whole, multiples of the
        // GEMM's panel its panels.
        let chunk = (n / (self.threads() * 8)).clamp(16, 256);
        let chunk = if m >= GEMM_MIN_ROWS && has_gemm(kernels, weight_ty) {
            chunk.next_multiple_of(GEMM_PANEL)
        } else {
            chunk & !1
        };
        let chunks = n.div_ceil(chunk);
        let next = AtomicUsize::new(0);
        let error: Mutex<Option<QuantError>> = Mutex::new(None);
        let dst = DisjointOut::new(out);
        self.run(&|_| {
            let mut part = Vec::new();
            loop {
                let c = next.fetch_add(1, Ordering::Relaxed);
                if c >= chunks {
                    break;
                }
                let rows: Range<usize> = c * chunk..((c + 1) * chunk).min(n);
                let nr = rows.len();
                part.clear();
                part.resize(m * nr, 0.0);
                match matmul_rows_with(kernels, weight_ty, weight, k, xq, rows.clone(), &mut part) {
                    Ok(()) => {
                        for (i, row) in part.chunks_exact(nr).enumerate() {
                            // SAFETY: chunks are disjoint row ranges, so every thread writes a
                            // disjoint set of `out` indices.
                            unsafe { dst.write(i * n + rows.start, row) };
                        }
                    }
                    Err(e) => {
                        let mut slot = error.lock().unwrap_or_else(|e| e.into_inner());
                        slot.get_or_insert(e);
                    }
                }
            }
        });
        match error.into_inner().unwrap_or_else(|e| e.into_inner()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        {
            let _lock = self.shared.sleep.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        for handle in self.workers.drain(..) {
            let _ = handle.join();
        }
    }
}

/// An `f32` output buffer shared by the threads of one pool job, each writing its own disjoint
/// indices (a product's row chunks, an attention task's head range). Borrows the buffer for as long
/// as it exists.
#[derive(Debug)]
pub struct DisjointOut<'a> {
    ptr: *mut f32,
    len: usize,
    _buffer: std::marker::PhantomData<&'a mut [f32]>,
}

// SAFETY: the buffer is exclusively borrowed for `'a`, and `write`'s contract keeps threads on
// disjoint indices.
unsafe impl Sync for DisjointOut<'_> {}

impl<'a> DisjointOut<'a> {
    pub fn new(out: &'a mut [f32]) -> Self {
        DisjointOut {
            ptr: out.as_mut_ptr(),
            len: out.len(),
            _buffer: std::marker::PhantomData,
        }
    }

    /// Copies `values` to `start..start + values.len()`; a range past the end writes nothing.
    ///
    /// # Safety
    /// No other thread reads or writes those indices while this `DisjointOut` exists.
    pub unsafe fn write(&self, start: usize, values: &[f32]) {
        if start
            .checked_add(values.len())
            .is_some_and(|end| end <= self.len)
        {
            // SAFETY: in bounds (checked), disjoint from other threads' writes (caller's contract).
            unsafe {
                std::ptr::copy_nonoverlapping(values.as_ptr(), self.ptr.add(start), values.len());
            }
        }
    }
}

fn worker(s: &Shared, index: usize) {
    // The last job this worker ran or found closed.
    let mut seen = 0usize;
    let fresh = |open: usize, seen: usize| open != 0 && open != seen;
    loop {
        let start = Instant::now();
        let mut spins = 0u32;
        while !fresh(s.open.load(Ordering::SeqCst), seen) {
            if s.shutdown.load(Ordering::Relaxed) {
                return;
            }
            spins = spins.wrapping_add(1);
            if !spins.is_multiple_of(64) || start.elapsed() < SPIN {
                std::hint::spin_loop();
                continue;
            }
            let mut lock = s.sleep.lock().unwrap_or_else(|e| e.into_inner());
            s.sleepers.fetch_add(1, Ordering::SeqCst);
            while !fresh(s.open.load(Ordering::SeqCst), seen) && !s.shutdown.load(Ordering::SeqCst)
            {
                lock = s.wake.wait(lock).unwrap_or_else(|e| e.into_inner());
            }
            s.sleepers.fetch_sub(1, Ordering::SeqCst);
        }
        #[cfg(test)]
        s.stagger(Duration::from_micros(200));
        // Join: announce ourselves, then check which job is open. The caller closes a job before
        // waiting for `active` to drop to 0 (both SeqCst), so either it sees us and waits, or we
        // see it closed (0, or already the next job) and never touch the closed job.
        s.active.fetch_add(1, Ordering::SeqCst);
        let open = s.open.load(Ordering::SeqCst);
        if fresh(open, seen) {
            seen = open;
            // SAFETY: joined an open job: the caller published `job` before opening it and will
            // not replace or drop it until `active` is back to 0, after this call returns.
            if let Some(job) = unsafe { *s.job.get() } {
                // SAFETY: as above, the pointee outlives this call.
                let f = unsafe { &*job };
                if catch_unwind(AssertUnwindSafe(|| f(index))).is_err() {
                    s.panicked.store(true, Ordering::Relaxed);
                }
            }
        }
        s.active.fetch_sub(1, Ordering::SeqCst);
    }
}

static GLOBAL: OnceLock<Pool> = OnceLock::new();
static GLOBAL_THREADS: AtomicUsize = AtomicUsize::new(0);

/// Sets the number of threads of the [`global`] pool; effective only before its first use.
/// Returns false if the pool already exists.
pub fn set_global_threads(threads: usize) -> bool {
    GLOBAL_THREADS.store(threads.max(1), Ordering::SeqCst);
    GLOBAL.get().is_none()
}

/// The process-wide pool: [`set_global_threads`] threads, by default [`default_threads`].
pub fn global() -> &'static Pool {
    GLOBAL.get_or_init(|| {
        Pool::new(match GLOBAL_THREADS.load(Ordering::SeqCst) {
            0 => default_threads(),
            n => n,
        })
    })
}

/// Physical cores available to this process: decode is bound by memory bandwidth and SMT siblings
/// share a core's load units, so one thread per physical core is what llama.cpp defaults to too.
/// Reads the CPU topology from sysfs; falls back to the available parallelism.
pub fn default_threads() -> usize {
    let logical = std::thread::available_parallelism().map_or(1, |n| n.get());
    physical_cores().map_or(logical, |p| p.clamp(1, logical))
}

/// Distinct (package, core) pairs among the CPUs this process may run on, from
/// `/sys/devices/system/cpu/cpu*/topology`.
fn physical_cores() -> Option<usize> {
    let allowed = allowed_cpus();
    let mut cores = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir("/sys/devices/system/cpu").ok()?.flatten() {
        let name = entry.file_name();
        let Some(id) = name
            .to_str()
            .and_then(|n| n.strip_prefix("cpu"))
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        if allowed.as_ref().is_some_and(|a| !a.contains(&id)) {
            continue;
        }
        let read = |f: &str| {
            std::fs::read_to_string(entry.path().join("topology").join(f))
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
        };
        if let (Some(pkg), Some(core)) = (read("physical_package_id"), read("core_id")) {
            cores.insert((pkg, core));
        }
    }
    (!cores.is_empty()).then_some(cores.len())
}

/// The CPUs in this process's affinity mask (`Cpus_allowed_list` in `/proc/self/status`).
fn allowed_cpus() -> Option<std::collections::BTreeSet<usize>> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?
        .trim();
    let mut set = std::collections::BTreeSet::new();
    for part in list.split(',') {
        match part.split_once('-') {
            Some((a, b)) => set.extend(a.trim().parse::<usize>().ok()?..=b.trim().parse().ok()?),
            None => {
                set.insert(part.trim().parse().ok()?);
            }
        }
    }
    Some(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a job of `items` dynamically claimed items and returns how many each thread did.
    fn claim(pool: &Pool, items: usize) -> Vec<usize> {
        let next = AtomicUsize::new(0);
        let hits: Vec<AtomicUsize> = (0..pool.threads()).map(|_| AtomicUsize::new(0)).collect();
        let calls: Vec<AtomicUsize> = (0..pool.threads()).map(|_| AtomicUsize::new(0)).collect();
        pool.run(&|i| {
            calls[i].fetch_add(1, Ordering::Relaxed);
            while next.fetch_add(1, Ordering::Relaxed) < items {
                hits[i].fetch_add(1, Ordering::Relaxed);
                std::hint::black_box((0..100).sum::<u64>());
            }
        });
        assert_eq!(
            calls[0].load(Ordering::Relaxed),
            1,
            "the caller always runs"
        );
        assert!(calls.iter().all(|c| c.load(Ordering::Relaxed) <= 1));
        hits.iter().map(|h| h.load(Ordering::Relaxed)).collect()
    }

    #[test]
    fn every_item_is_done_exactly_once() {
        for threads in [1, 2, 3, 5] {
            let pool = Pool::new(threads);
            assert_eq!(pool.threads(), threads);
            for _ in 0..200 {
                assert_eq!(claim(&pool, 1000).iter().sum::<usize>(), 1000);
            }
        }
    }

    /// The caller descheduled right after opening a job while a worker that was late for the
    /// previous job joins this one: the worker must still run it once (CI once caught a worker
    /// joining the same job twice in exactly this window).
    #[test]
    fn a_late_worker_never_runs_a_job_twice() {
        for threads in [2, 3] {
            let pool = Pool::new(threads);
            pool.shared.staggered.store(true, Ordering::Relaxed);
            for _ in 0..100 {
                claim(&pool, 0);
            }
        }
    }

    #[test]
    fn spinning_workers_share_the_work() {
        let pool = Pool::new(2);
        // Warm the worker up so it is spinning, then give it something long enough to join.
        claim(&pool, 1);
        let helped = (0..50).any(|_| claim(&pool, 100_000)[1] > 0);
        assert!(helped, "the worker never joined a job");
    }

    #[test]
    fn workers_wake_after_sleeping() {
        let pool = Pool::new(3);
        for _ in 0..3 {
            // Long enough for the workers to park on the condvar.
            std::thread::sleep(SPIN * 20);
            let helped = (0..50).any(|_| claim(&pool, 100_000)[1..].iter().any(|&h| h > 0));
            assert!(helped, "no parked worker woke up to join");
        }
    }

    #[test]
    fn a_worker_panic_reaches_the_caller_and_the_pool_survives() {
        let pool = Pool::new(2);
        let panicked = (0..1000).any(|_| {
            catch_unwind(AssertUnwindSafe(|| {
                pool.run(&|i| {
                    if i == 1 {
                        panic!("boom");
                    }
                    std::thread::sleep(Duration::from_micros(50));
                })
            }))
            .is_err()
        });
        assert!(panicked, "the worker never joined");
        assert_eq!(claim(&pool, 1000).iter().sum::<usize>(), 1000);
    }

    #[test]
    fn concurrent_callers_are_serialised() {
        let pool = Arc::new(Pool::new(2));
        let total = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let (pool, total) = (Arc::clone(&pool), Arc::clone(&total));
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        assert_eq!(claim(&pool, 100).iter().sum::<usize>(), 100);
                        total.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("caller thread");
        }
        assert_eq!(total.load(Ordering::Relaxed), 4 * 100);
    }

    #[test]
    fn default_threads_is_within_the_available_parallelism() {
        let logical = std::thread::available_parallelism().map_or(1, |n| n.get());
        let d = default_threads();
        assert!((1..=logical).contains(&d), "{d} of {logical}");
    }
}
