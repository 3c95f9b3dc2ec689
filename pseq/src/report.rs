//! Counting outcomes of a conformance run and printing its closing line.

use std::{collections::BTreeMap, fmt, time::Instant};

/// Outcomes of a conformance run.
#[derive(Debug, Default, Clone)]
pub struct Counts {
    /// Cases that passed.
    pub passed: usize,
    /// Cases that failed, with a message naming file and test.
    pub failures: Vec<String>,
    /// Skipped cases per reason.
    pub skipped: BTreeMap<String, usize>,
}

impl Counts {
    /// Records a pass.
    pub fn pass(&mut self) {
        self.passed += 1;
    }

    /// Records a failure.
    pub fn fail(&mut self, message: String) {
        self.failures.push(message);
    }

    /// Records `n` skipped cases for `reason`.
    pub fn skip(&mut self, reason: &str, n: usize) {
        *self.skipped.entry(reason.to_string()).or_default() += n;
    }

    /// Number of failures.
    pub fn failed(&self) -> usize {
        self.failures.len()
    }

    /// Number of skipped cases.
    pub fn skipped_total(&self) -> usize {
        self.skipped.values().sum()
    }

    /// Adds another run's counts to these.
    pub fn merge(&mut self, other: Counts) {
        self.passed += other.passed;
        self.failures.extend(other.failures);
        for (reason, n) in other.skipped {
            *self.skipped.entry(reason).or_default() += n;
        }
    }

    /// Prints failures (at most `max_failures`), the skip reasons and the closing line.
    pub fn print_summary(&self, max_failures: usize) {
        for failure in self.failures.iter().take(max_failures) {
            println!("FAIL {failure}");
        }
        if self.failures.len() > max_failures {
            println!("... and {} more failures", self.failures.len() - max_failures);
        }
        for (reason, n) in &self.skipped {
            println!("skipped {n}: {reason}");
        }
        println!("{self}");
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} passed, {} failed, {} skipped", self.passed, self.failed(), self.skipped_total())
    }
}

/// Prints a progress line to stderr at most every two seconds.
pub struct Progress {
    label: &'static str,
    total: usize,
    done: usize,
    started: Instant,
    last: Instant,
}

impl Progress {
    /// A progress reporter for `total` items.
    pub fn new(label: &'static str, total: usize) -> Self {
        let now = Instant::now();
        Self { label, total, done: 0, started: now, last: now }
    }

    /// Marks one item done, printing progress when due.
    pub fn tick(&mut self, counts: &Counts) {
        self.done += 1;
        if self.last.elapsed().as_secs_f64() >= 2.0 || self.done == self.total {
            self.last = Instant::now();
            eprintln!(
                "[{}] {}/{} files, {:.1}s: {}",
                self.label,
                self.done,
                self.total,
                self.started.elapsed().as_secs_f64(),
                counts
            );
        }
    }
}
