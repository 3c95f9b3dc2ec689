//! Running one step over several parts of the work, each part on its own thread.
//!
//! The parts after the first run on helper threads that stay alive between calls, waiting for
//! work: starting a thread for every block cost 50-150 µs on the 2-core machine, a tenth of a
//! small mainnet block's parallel run (docs/benchmarks.md, "Helper threads kept between blocks").
//! One call holds the helpers at a time; a call made while they are busy (another block on
//! another thread, or a call from inside a part) starts scoped threads of its own, as before.

use parking_lot::{Condvar, Mutex};
use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, OnceLock,
    },
    thread::Thread,
    time::{Duration, Instant},
};

/// Applies `step` to every part, the first on the calling thread and each other one on a thread
/// of its own, and returns the results in the order of `parts`. The first error is returned; a
/// panicking thread gives `panicked()`.
pub fn map_on_threads<T: Send, R: Send, E: Send>(
    parts: Vec<T>,
    step: impl Fn(T) -> Result<R, E> + Sync,
    panicked: impl Fn() -> E,
) -> Result<Vec<R>, E> {
    if parts.len() <= 1 {
        return parts.into_iter().map(step).collect();
    }
    match pool().helpers.try_lock() {
        Some(mut helpers) => on_helpers(&mut helpers, parts, step, panicked),
        None => on_scoped_threads(parts, step, panicked),
    }
}

/// [`map_on_threads`] on threads started for this call.
fn on_scoped_threads<T: Send, R: Send, E: Send>(
    parts: Vec<T>,
    step: impl Fn(T) -> Result<R, E> + Sync,
    panicked: impl Fn() -> E,
) -> Result<Vec<R>, E> {
    let mut parts = parts.into_iter();
    let Some(first) = parts.next() else { return Ok(Vec::new()) };
    let step = &step;
    std::thread::scope(|scope| {
        let handles: Vec<_> = parts.map(|part| scope.spawn(move || step(part))).collect();
        let mut results = Vec::with_capacity(handles.len() + 1);
        results.push(step(first));
        for handle in handles {
            results.push(handle.join().unwrap_or_else(|_| Err(panicked())));
        }
        results.into_iter().collect()
    })
}

/// [`map_on_threads`] on the kept helper threads (started on first use, more as needed).
fn on_helpers<T: Send, R: Send, E: Send>(
    helpers: &mut Vec<Arc<Helper>>,
    parts: Vec<T>,
    step: impl Fn(T) -> Result<R, E> + Sync,
    panicked: impl Fn() -> E,
) -> Result<Vec<R>, E> {
    let count = parts.len();
    while helpers.len() < count - 1 {
        match Helper::start(helpers.len()) {
            Some(helper) => helpers.push(helper),
            // No thread could be started: the scoped path reports it the usual way.
            None => return on_scoped_threads(parts, step, panicked),
        }
    }
    let mut parts = parts.into_iter();
    let first = parts.next();
    let rest: Vec<Mutex<Option<T>>> = parts.map(|part| Mutex::new(Some(part))).collect();
    let results: Vec<Mutex<Option<Result<R, E>>>> = (0..rest.len()).map(|_| Mutex::new(None)).collect();
    let latch = Latch { remaining: AtomicUsize::new(rest.len()), panicked: AtomicBool::new(false), waiter: std::thread::current() };
    let run = |index: usize| {
        if let Some(part) = rest[index].lock().take() {
            *results[index].lock() = Some(step(part));
        }
    };
    {
        let run: &(dyn Fn(usize) + Sync) = &run;
        // SAFETY: the helpers use `run` and `latch` only until they count the latch down, and
        // this function does not return (nor unwind: the first part's panic is caught) before
        // the latch reaches zero, so both outlive every use.
        let job = Job { run: unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), &'static (dyn Fn(usize) + Sync)>(run) }, latch: unsafe { &*(&latch as *const Latch) } };
        for (index, helper) in helpers.iter().take(rest.len()).enumerate() {
            helper.give(job, index);
        }
        let first = first.map(|part| std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| step(part))));
        latch.wait();
        let mut out = Vec::with_capacity(count);
        match first {
            Some(Ok(result)) => out.push(result),
            Some(Err(payload)) => std::panic::resume_unwind(payload),
            None => {}
        }
        if latch.panicked.load(Ordering::Acquire) {
            return Err(panicked());
        }
        for result in results {
            out.push(result.into_inner().unwrap_or_else(|| Err(panicked())));
        }
        out.into_iter().collect()
    }
}

/// The kept helper threads.
struct Pool {
    helpers: Mutex<Vec<Arc<Helper>>>,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| Pool { helpers: Mutex::new(Vec::new()) })
}

/// Counts the helpers of one call down; the caller sleeps until it reaches zero.
struct Latch {
    remaining: AtomicUsize,
    panicked: AtomicBool,
    waiter: Thread,
}

impl Latch {
    fn count_down(&self) {
        // Clone the handle first: once the count reaches zero the caller may return and free the
        // latch.
        let waiter = self.waiter.clone();
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            waiter.unpark();
        }
    }

    fn wait(&self) {
        let spin_until = Instant::now() + SPIN;
        while self.remaining.load(Ordering::Acquire) != 0 {
            if Instant::now() < spin_until {
                std::hint::spin_loop();
            } else {
                std::thread::park_timeout(Duration::from_millis(1));
            }
        }
    }
}

/// How long a waiting thread spins before it sleeps: a part usually ends within microseconds of
/// the others, and a helper usually gets the next block's work soon after the last one.
const SPIN: Duration = Duration::from_micros(50);

/// One call's work for a helper.
#[derive(Clone, Copy)]
struct Job {
    run: &'static (dyn Fn(usize) + Sync),
    latch: &'static Latch,
}

/// A kept thread and its mailbox.
struct Helper {
    mailbox: Mutex<Option<(Job, usize)>>,
    ready: Condvar,
    posted: AtomicBool,
}

impl Helper {
    fn start(number: usize) -> Option<Arc<Self>> {
        let helper = Arc::new(Helper { mailbox: Mutex::new(None), ready: Condvar::new(), posted: AtomicBool::new(false) });
        let own = helper.clone();
        std::thread::Builder::new().name(format!("pseq-helper-{number}")).spawn(move || own.serve()).ok()?;
        Some(helper)
    }

    fn give(&self, job: Job, index: usize) {
        *self.mailbox.lock() = Some((job, index));
        self.posted.store(true, Ordering::Release);
        self.ready.notify_one();
    }

    fn serve(&self) {
        loop {
            // Spin a little for the next block's work before sleeping.
            let spin_until = Instant::now() + SPIN;
            while !self.posted.load(Ordering::Acquire) && Instant::now() < spin_until {
                std::hint::spin_loop();
            }
            let (job, index) = {
                let mut mailbox = self.mailbox.lock();
                loop {
                    if let Some(work) = mailbox.take() {
                        self.posted.store(false, Ordering::Release);
                        break work;
                    }
                    self.ready.wait(&mut mailbox);
                }
            };
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (job.run)(index))).is_err() {
                job.latch.panicked.store(true, Ordering::Release);
            }
            job.latch.count_down();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::map_on_threads;

    #[test]
    fn results_come_back_in_the_order_of_the_parts_call_after_call() {
        for round in 0..200u64 {
            let parts: Vec<u64> = (0..1 + round % 5).collect();
            let out: Result<Vec<u64>, ()> = map_on_threads(parts.clone(), |p| Ok(p * 10 + round), || ());
            assert_eq!(out, Ok(parts.iter().map(|p| p * 10 + round).collect()));
        }
    }

    #[test]
    fn an_error_or_a_panic_of_a_helper_is_reported_and_the_helpers_stay_usable() {
        let out: Result<Vec<u32>, String> = map_on_threads(vec![1, 2, 3], |p| if p == 3 { Err(format!("part {p}")) } else { Ok(p) }, || "panicked".into());
        assert_eq!(out, Err("part 3".into()));
        let out: Result<Vec<u32>, String> = map_on_threads(vec![1, 2], |p| if p == 2 { panic!("part {p}") } else { Ok(p) }, || "panicked".into());
        assert_eq!(out, Err("panicked".into()));
        let out: Result<Vec<u32>, String> = map_on_threads(vec![1, 2], Ok, || "panicked".into());
        assert_eq!(out, Ok(vec![1, 2]));
    }

    #[test]
    fn calls_from_inside_a_part_and_from_other_threads_run_on_threads_of_their_own() {
        let nested: Result<Vec<u32>, ()> = map_on_threads(vec![1u32, 2], |p| Ok(map_on_threads(vec![p, p], |q| Ok(q * 2), || ())?.iter().sum()), || ());
        assert_eq!(nested, Ok(vec![4, 8]));
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4u32)
                .map(|t| scope.spawn(move || (0..50u32).all(|i| map_on_threads(vec![t, i], |p| Ok::<u32, ()>(p + 1), || ()) == Ok(vec![t + 1, i + 1]))))
                .collect();
            assert!(handles.into_iter().all(|h| h.join().unwrap_or(false)));
        });
    }
}
