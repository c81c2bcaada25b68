//! Group commit. Every write is a job for one writer thread, which takes all
//! the jobs waiting, applies them in arrival order inside one redb write
//! transaction and commits it with one fsync. Each caller is answered only
//! after the commit that holds its change: "2xx means on disk" holds, and
//! concurrent writers share the cost of the fsync.
//!
//! A job that is refused (404, 409, 412, quota) changed nothing and does not affect
//! its neighbours. A job that fails midway (an I/O error) may have left part
//! of its change in the transaction, so that batch is dropped uncommitted and
//! every job in it is answered with the error.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redb::WriteTransaction;
use tokio::sync::oneshot;

use super::{write_txn, Inner, StoreError, StoreResult};

/// At most this many jobs share one commit.
pub const MAX_BATCH: usize = 512;

/// How often the writer deletes what has expired (`Inner::housekeeping`),
/// between batches or when idle.
pub const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(600);

type Job = Box<dyn FnOnce(Step<'_>) -> Option<Applied> + Send>;

/// What the writer asks of a job.
enum Step<'a> {
    /// Apply yourself to this transaction.
    Apply(&'a Inner, &'a WriteTransaction),
    /// You will not be applied: answer with this error.
    Fail(StoreError),
}

type Answer = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// What applying a job did to the transaction.
enum Applied {
    /// Done or refused; either way the transaction is sound. The callback
    /// answers the caller once the commit's outcome is known.
    Sound(Answer),
    /// Failed midway: the transaction must not be committed.
    Broken(StoreError, Answer),
}

pub(super) struct Writer {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    pub(super) fn start(inner: Arc<Inner>) -> std::io::Result<Writer> {
        let (tx, rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("devicehub-writer".into())
            .spawn(move || {
                let mut housekeeping_at = Instant::now() + HOUSEKEEPING_EVERY;
                loop {
                    let wait = housekeeping_at.saturating_duration_since(Instant::now());
                    match rx.recv_timeout(wait) {
                        Ok(first) => {
                            let mut batch = vec![first];
                            while batch.len() < MAX_BATCH {
                                match rx.try_recv() {
                                    Ok(job) => batch.push(job),
                                    Err(_) => break,
                                }
                            }
                            commit_batch(&inner, batch);
                        }
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                    if Instant::now() >= housekeeping_at {
                        commit_batch(&inner, vec![housekeeping_job()]);
                        housekeeping_at = Instant::now() + HOUSEKEEPING_EVERY;
                    }
                }
            })?;
        Ok(Writer {
            jobs: Some(tx),
            thread: Some(thread),
        })
    }

    /// Queues `op` and waits for the commit that holds it.
    pub(super) async fn submit<R, F>(&self, op: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&Inner, &WriteTransaction) -> StoreResult<R> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.enqueue(op, move |result| {
            let _ = reply.send(result);
        })?;
        answer
            .await
            .unwrap_or_else(|_| Err(StoreError::Internal("the writer stopped".into())))
    }

    /// Queues `op` without waiting; `done` gets its outcome after the commit.
    pub(super) fn enqueue<R, F, D>(&self, op: F, done: D) -> StoreResult<()>
    where
        R: Send + 'static,
        F: FnOnce(&Inner, &WriteTransaction) -> StoreResult<R> + Send + 'static,
        D: FnOnce(StoreResult<R>) + Send + 'static,
    {
        let job: Job = Box::new(move |step| {
            let (inner, txn) = match step {
                Step::Apply(inner, txn) => (inner, txn),
                Step::Fail(e) => {
                    done(Err(e));
                    return None;
                }
            };
            Some(match op(inner, txn) {
                Ok(value) => {
                    Applied::Sound(Box::new(move |committed| done(committed.map(|()| value))))
                }
                Err(
                    refused @ (StoreError::NotFound
                    | StoreError::Revoked
                    | StoreError::PreconditionFailed
                    | StoreError::QuotaExceeded(_)),
                ) => Applied::Sound(Box::new(move |_| done(Err(refused)))),
                Err(broken) => {
                    let answer = broken.clone();
                    Applied::Broken(broken, Box::new(move |_| done(Err(answer))))
                }
            })
        });
        self.jobs
            .as_ref()
            .ok_or_else(|| StoreError::Internal("the writer stopped".into()))?
            .send(job)
            .map_err(|_| StoreError::Internal("the writer stopped".into()))
    }
}

/// A job of the writer's own: delete what has expired, as one commit.
fn housekeeping_job() -> Job {
    Box::new(|step| {
        let Step::Apply(inner, txn) = step else {
            return None;
        };
        Some(
            match inner.housekeeping(txn, crate::devices::Millis::now()) {
                Ok(pruned) => {
                    if pruned > 0 {
                        log::info!("housekeeping: deleted {pruned} expired records");
                    }
                    Applied::Sound(Box::new(|_| {}))
                }
                Err(e) => {
                    log::warn!("housekeeping failed: {e}");
                    Applied::Broken(e, Box::new(|_| {}))
                }
            },
        )
    })
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the queue ends the thread once it has committed what it holds.
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn commit_batch(inner: &Inner, batch: Vec<Job>) {
    let txn = match inner.db.run(write_txn) {
        Ok(txn) => txn,
        Err(e) => {
            log::warn!("cannot start a write transaction: {e}");
            for job in batch {
                job(Step::Fail(e.clone()));
            }
            return;
        }
    };
    let mut answers = Vec::with_capacity(batch.len());
    let mut broken: Option<StoreError> = None;
    for job in batch {
        match &broken {
            Some(e) => {
                job(Step::Fail(e.clone()));
            }
            None => match job(Step::Apply(inner, &txn)) {
                Some(Applied::Sound(answer)) => answers.push(answer),
                Some(Applied::Broken(e, answer)) => {
                    answers.push(answer);
                    broken = Some(e);
                }
                None => {}
            },
        }
    }
    let outcome = match broken {
        Some(e) => {
            drop(txn);
            Err(e)
        }
        None => {
            let started = std::time::Instant::now();
            let committed = txn.commit().map_err(StoreError::from);
            crate::metrics::record_commit(answers.len(), started.elapsed());
            committed
        }
    };
    if let Err(e) = &outcome {
        log::warn!("a batch of {} writes was not committed: {e}", answers.len());
    }
    for answer in answers {
        answer(outcome.clone());
    }
}
