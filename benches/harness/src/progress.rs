//! A progress line on stderr for long runs: `label: done/total, elapsed, estimate of what is
//! left`, redrawn in place at most ten times a second (and once at the end).

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One phase of the run.
pub struct Progress {
    label: String,
    total: usize,
    done: AtomicUsize,
    started: Instant,
    last_draw: Mutex<Option<Instant>>,
}

impl Progress {
    /// Starts a phase of `total` steps.
    pub fn new(label: impl Into<String>, total: usize) -> Progress {
        let p = Progress {
            label: label.into(),
            total,
            done: AtomicUsize::new(0),
            started: Instant::now(),
            last_draw: Mutex::new(None),
        };
        p.draw(0);
        p
    }

    /// Counts `n` more steps done (callable from any thread).
    pub fn advance(&self, n: usize) {
        let done = self.done.fetch_add(n, Ordering::Relaxed) + n;
        let mut last = self.last_draw.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_none_or(|t| t.elapsed() >= Duration::from_millis(100)) || done >= self.total {
            *last = Some(Instant::now());
            self.draw(done);
        }
    }

    fn draw(&self, done: usize) {
        let elapsed = self.started.elapsed().as_secs_f64();
        let left = if done > 0 && done < self.total {
            format!(
                ", ~{:.0} s left",
                elapsed / done as f64 * (self.total - done) as f64
            )
        } else {
            String::new()
        };
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[K{}: {done}/{} ({:.0}%), {elapsed:.0} s{left}",
            self.label,
            self.total,
            100.0 * done as f64 / self.total.max(1) as f64
        );
        let _ = err.flush();
    }
}

impl Drop for Progress {
    /// Ends the line, so whatever is printed next starts on its own.
    fn drop(&mut self) {
        eprintln!();
    }
}
