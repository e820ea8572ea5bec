//! The threads that answer the requests that may wait, each request on a thread to itself at
//! once, never behind another in a queue: an idle thread when there is one, else a new one. A
//! thread that has answered waits for the next request, up to [`MAX_IDLE`] of them, for
//! [`IDLE_FOR`]: the requests of one container, which come close together, then cost no thread
//! start, and an idle daemon keeps no thread (or its memory) it does not need.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

/// How many answered threads wait for the next request.
const MAX_IDLE: usize = 4;
/// How long an answered thread waits for the next request before it ends.
const IDLE_FOR: Duration = Duration::from_secs(1);

/// A piece of work: answering one request.
pub type Job = Box<dyn FnOnce() + Send>;

/// The threads, and the jobs handed to the idle ones.
pub struct Workers {
    /// Threads waiting for a job and promised to none yet.
    idle: Arc<AtomicUsize>,
    jobs: Sender<Job>,
    waiting: Receiver<Job>,
}

impl Default for Workers {
    fn default() -> Workers {
        let (jobs, waiting) = crossbeam_channel::unbounded();
        Workers {
            idle: Arc::default(),
            jobs,
            waiting,
        }
    }
}

impl Workers {
    /// Runs `job` on a thread of its own, now.
    pub fn run(&self, job: Job) -> io::Result<()> {
        // Promising the job to one idle thread first means a job is only ever sent when a
        // thread that will take it at once is waiting.
        if take_one(&self.idle) {
            return self
                .jobs
                .send(job)
                .map_err(|_| io::Error::other("the request threads are gone"));
        }
        let (idle, waiting) = (Arc::clone(&self.idle), self.waiting.clone());
        std::thread::Builder::new()
            .name("request".into())
            .spawn(move || {
                job();
                while wait_idle(&idle) {
                    let next = match waiting.recv_timeout(IDLE_FOR) {
                        Ok(next) => next,
                        Err(RecvTimeoutError::Disconnected) => return,
                        // No longer idle: unless a job was promised to an idle thread
                        // meanwhile, which then is this one's to take.
                        Err(RecvTimeoutError::Timeout) if take_one(&idle) => return,
                        Err(RecvTimeoutError::Timeout) => match waiting.recv() {
                            Ok(next) => next,
                            Err(_) => return,
                        },
                    };
                    next();
                }
            })
            .map(drop)
    }
}

/// Takes one idle thread's promise, if any (an idle thread that ends takes its own).
fn take_one(idle: &AtomicUsize) -> bool {
    idle.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

/// Counts the calling thread idle, unless [`MAX_IDLE`] already are (it then ends).
fn wait_idle(idle: &AtomicUsize) -> bool {
    idle.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
        (n < MAX_IDLE).then_some(n + 1)
    })
    .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn a_job_never_waits_behind_another_and_threads_are_reused() {
        let workers = Workers::default();
        // Two jobs that hold their threads until released, then one more: all three run at once.
        let (started, starts) = mpsc::channel();
        let (release, gate) = mpsc::channel::<()>();
        let gate = Arc::new(std::sync::Mutex::new(gate));
        for _ in 0..2 {
            let (started, gate) = (started.clone(), Arc::clone(&gate));
            workers
                .run(Box::new(move || {
                    started.send(std::thread::current().id()).unwrap();
                    let _ = gate.lock().unwrap().recv();
                }))
                .unwrap();
        }
        let (done, finished) = mpsc::channel();
        workers
            .run(Box::new(move || {
                done.send(std::thread::current().id()).unwrap()
            }))
            .unwrap();
        let third = finished
            .recv_timeout(Duration::from_secs(5))
            .expect("ran at once");
        let first = starts.recv().unwrap();
        let second = starts.recv().unwrap();
        assert!(first != third && second != third);
        release.send(()).unwrap();
        release.send(()).unwrap();
        // The three threads are idle now (the count settles once each has looked for work).
        while workers.idle.load(Ordering::SeqCst) < 3 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let (again, ran) = mpsc::channel();
        workers
            .run(Box::new(move || {
                again.send(std::thread::current().id()).unwrap()
            }))
            .unwrap();
        let reused = ran.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(
            [first, second, third].contains(&reused),
            "a thread is reused"
        );
    }
}
