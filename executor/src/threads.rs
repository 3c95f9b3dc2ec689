//! Running one step over several parts of the work, each part on its own scoped thread.

/// Applies `step` to every part, the first on the calling thread and each other one on a scoped
/// thread of its own, and returns the results in the order of `parts`. The first error is
/// returned; a panicking thread gives `panicked()`.
pub fn map_on_threads<T: Send, R: Send, E: Send>(
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
