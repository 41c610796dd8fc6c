//! The threads statements run on, kept for the next statement once one
//! ends. Starting a thread with a large stack for every statement cost more
//! than a point query itself does; a thread idle for [`IDLE_EXIT`] ends, so
//! a burst of statements does not keep its threads (nor the stack pages a
//! deep statement touched) for good.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Mutex;
use std::time::Duration;

/// How long a statement thread waits for another statement before it ends.
const IDLE_EXIT: Duration = Duration::from_secs(10);

/// One statement's work.
pub(crate) type Job = Box<dyn FnOnce() + Send>;

/// Threads waiting for a statement, each reached by its own channel.
static IDLE: Mutex<Vec<(u64, Sender<Job>)>> = Mutex::new(Vec::new());

/// Numbers the threads, to find one's entry in [`IDLE`].
static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn idle() -> std::sync::MutexGuard<'static, Vec<(u64, Sender<Job>)>> {
    // Only pushes and pops happen under the lock; a panic cannot leave
    // the list half-changed.
    IDLE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs `job` on an idle statement thread, or on a new one with a stack of
/// `stack` bytes when none is idle.
pub(crate) fn run(mut job: Job, stack: usize) -> std::io::Result<()> {
    loop {
        let Some((_, tx)) = idle().pop() else { break };
        match tx.send(job) {
            Ok(()) => return Ok(()),
            // That thread has just ended: try the next one.
            Err(mpsc::SendError(back)) => job = back,
        }
    }
    let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (tx, rx) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("millrace-statement".to_owned())
        .stack_size(stack)
        .spawn(move || serve(id, job, tx, rx))
        .map(|_| ())
}

/// A statement thread: runs `first`, then whatever it is handed while it is
/// listed as idle, until it has waited [`IDLE_EXIT`] for nothing.
fn serve(id: u64, first: Job, tx: Sender<Job>, rx: Receiver<Job>) {
    first();
    loop {
        idle().push((id, tx.clone()));
        let job = match rx.recv_timeout(IDLE_EXIT) {
            Ok(job) => job,
            Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {
                let mut list = idle();
                match list.iter().position(|(i, _)| *i == id) {
                    Some(at) => {
                        list.swap_remove(at);
                        return;
                    }
                    // Taken off the list by a caller that is about to hand
                    // over a statement: wait for it.
                    None => {
                        drop(list);
                        match rx.recv() {
                            Ok(job) => job,
                            Err(_) => return,
                        }
                    }
                }
            }
        };
        job();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_are_reused_for_the_next_job() {
        let names = std::sync::Arc::new(Mutex::new(Vec::new()));
        for _ in 0..3 {
            let (done_tx, done_rx) = mpsc::channel();
            let names = names.clone();
            run(
                Box::new(move || {
                    names.lock().unwrap().push(std::thread::current().id());
                    done_tx.send(()).unwrap();
                }),
                1 << 20,
            )
            .unwrap();
            done_rx.recv().unwrap();
            // Let the thread list itself as idle again.
            while idle().is_empty() {
                std::thread::yield_now();
            }
        }
        let names = names.lock().unwrap();
        assert_eq!(names.len(), 3);
        assert!(names.iter().all(|n| *n == names[0]), "{names:?}");
    }
}
