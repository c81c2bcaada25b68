//! Group commit. Every write is a job for one writer thread, which takes all
//! the jobs waiting, applies them in arrival order inside one redb write
//! transaction and commits it with one fsync. Each caller is answered only
//! after the commit that holds its change: "2xx means on disk" holds, and
//! concurrent writers share the cost of the fsync.
//!
//! The tables most writes touch (`Hot`) are opened once per batch and shared
//! by its jobs (`Shared`): opening a table costs thousands of instructions on
//! this thread, which every write waits for.
//!
//! A job that is refused (404, 409, 412, quota) changed nothing and does not affect
//! its neighbours. A job that fails midway (an I/O error) may have left part
//! of its change in the transaction, so that batch is dropped uncommitted and
//! every job in it is answered with the error.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redb::{Durability, WriteTransaction};
use tokio::sync::oneshot;

use super::file::Durable;
use super::handle::Writing;
use super::tables::{DEVICES, EVENTS, LAST_SEEN, NAME_INDEX};
use super::wal::{LogTxn, Logged, Wal};
use super::{reads, write_txn, Inner, StoreError, StoreResult};

/// At most this many jobs share one commit.
pub const MAX_BATCH: usize = 512;

/// How often the writer deletes what has expired (`Inner::housekeeping`),
/// between batches or when idle, unless a short `events.retention` asks for
/// more often (`Writer::housekeep_within`).
pub const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(600);

/// When a round of housekeeping found more than it may delete in one commit,
/// the next round comes this soon, so a backlog goes in small commits
/// between the writes instead of one long one.
const HOUSEKEEPING_BACKLOG: Duration = Duration::from_millis(200);

type Job = Box<dyn for<'a, 't> FnOnce(Step<'a, 't>) -> Option<Applied> + Send>;

/// What the writer asks of a job.
enum Step<'a, 't> {
    /// Apply yourself to this transaction.
    Apply(&'a Inner, &'a mut Shared<'t>),
    /// You will not be applied: answer with this error.
    Fail(StoreError),
}

type Keyed<'t, V> = Logged<'t, 't, (&'static str, &'static str), V>;

/// The tables a device's registration or change touches, every time.
pub(super) struct Hot<'t> {
    pub devices: Keyed<'t, &'static [u8]>,
    pub last_seen: Keyed<'t, u64>,
    pub names: Keyed<'t, &'static [u8]>,
    pub events: Keyed<'t, &'static [u8]>,
}

/// A batch's transaction and its `Hot` tables, opened by the first job that
/// asks for them and shared by the jobs after it. Other tables are opened on
/// the transaction beside them; a job that may open one of the hot tables
/// itself takes `exclusive`, which closes them first (the next job that
/// asks opens them again, and sees what that job wrote).
pub(super) struct Shared<'t> {
    txn: &'t LogTxn<'t>,
    hot: Option<Hot<'t>>,
}

impl<'t> Shared<'t> {
    fn new(txn: &'t LogTxn<'t>) -> Shared<'t> {
        Shared { txn, hot: None }
    }

    /// The transaction, for tables other than the hot ones, and the hot ones.
    /// What is written through either is recorded in the write-ahead log.
    pub(super) fn tables(&mut self) -> StoreResult<(&'t LogTxn<'t>, &mut Hot<'t>)> {
        let hot = match self.hot.take() {
            Some(hot) => hot,
            None => Hot {
                devices: self.txn.open_table(DEVICES)?,
                last_seen: self.txn.open_table(LAST_SEEN)?,
                names: self.txn.open_table(NAME_INDEX)?,
                events: self.txn.open_table(EVENTS)?,
            },
        };
        Ok((self.txn, self.hot.insert(hot)))
    }

    /// The transaction alone, the hot tables closed: for a write that opens
    /// whatever tables it needs. Its batch is committed as a checkpoint.
    pub(super) fn exclusive(&mut self) -> &'t WriteTransaction {
        self.hot = None;
        self.txn.raw()
    }
}

use super::file::Answer;

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
    /// Kept to wait for the last commits' syncs on drop.
    inner: Arc<Inner>,
    /// Time between rounds of housekeeping, in milliseconds.
    housekeeping_ms: Arc<AtomicU64>,
}

impl Writer {
    pub(super) fn start(inner: Arc<Inner>) -> std::io::Result<Writer> {
        let (tx, rx) = mpsc::channel::<Job>();
        let kept = inner.clone();
        let housekeeping_ms = Arc::new(AtomicU64::new(HOUSEKEEPING_EVERY.as_millis() as u64));
        let every = housekeeping_ms.clone();
        let period = move || Duration::from_millis(every.load(Ordering::Relaxed));
        let thread = std::thread::Builder::new()
            .name("devicehub-writer".into())
            .spawn(move || {
                let mut last_round = Instant::now();
                let mut backlog = false;
                loop {
                    // The period is read each time round, so a change to it
                    // counts from the last round; an idle writer looks at
                    // least once a second.
                    let next = if backlog {
                        HOUSEKEEPING_BACKLOG
                    } else {
                        period()
                    };
                    let due = last_round + next;
                    let wait = due.saturating_duration_since(Instant::now());
                    match rx.recv_timeout(wait.min(Duration::from_secs(1))) {
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
                        // Idle: what the last commits' snapshots held goes,
                        // and the file catches up with the log.
                        Err(RecvTimeoutError::Timeout) => {
                            inner.reads.release_retired();
                            checkpoint_if_behind(&inner);
                        }
                        Err(RecvTimeoutError::Disconnected) => {
                            checkpoint_if_behind(&inner);
                            break;
                        }
                    }
                    if Instant::now() >= due {
                        backlog = housekeep(&inner);
                        last_round = Instant::now();
                    }
                }
            })?;
        Ok(Writer {
            jobs: Some(tx),
            thread: Some(thread),
            inner: kept,
            housekeeping_ms,
        })
    }

    /// Housekeeping comes at least this often from the next round on (never
    /// more often than once a second).
    pub(super) fn housekeep_within(&self, period: Duration) {
        let period = period.clamp(Duration::from_secs(1), HOUSEKEEPING_EVERY);
        self.housekeeping_ms
            .store(period.as_millis() as u64, Ordering::Relaxed);
    }

    /// Queues `op`, which opens the tables it needs, and waits for the
    /// commit that holds it.
    pub(super) async fn submit<R, F>(&self, op: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&Inner, &WriteTransaction) -> StoreResult<R> + Send + 'static,
    {
        self.submit_shared(move |inner, shared| op(inner, shared.exclusive()))
            .await
    }

    /// Queues `op`, which works on the batch's shared tables, and waits for
    /// the commit that holds it.
    pub(super) async fn submit_shared<R, F>(&self, op: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: for<'t> FnOnce(&Inner, &mut Shared<'t>) -> StoreResult<R> + Send + 'static,
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
        F: for<'t> FnOnce(&Inner, &mut Shared<'t>) -> StoreResult<R> + Send + 'static,
        D: FnOnce(StoreResult<R>) + Send + 'static,
    {
        let job: Job = Box::new(move |step| {
            let (inner, shared) = match step {
                Step::Apply(inner, shared) => (inner, shared),
                Step::Fail(e) => {
                    done(Err(e));
                    return None;
                }
            };
            Some(match op(inner, shared) {
                Ok(value) => {
                    Applied::Sound(Box::new(move |committed| done(committed.map(|()| value))))
                }
                Err(
                    refused @ (StoreError::NotFound
                    | StoreError::Revoked
                    | StoreError::PreconditionFailed
                    | StoreError::QuotaExceeded(_)
                    | StoreError::WebhookQuotaExceeded(_)),
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

/// The writer's own work: deletes what has expired, as one commit. Returns
/// whether more is left than one commit may delete.
fn housekeep(inner: &Inner) -> bool {
    inner.reads.release_retired();
    let pruned = inner.db.begin_write(write_txn).and_then(|writing| {
        let pruned = inner.housekeeping(&writing.txn, crate::devices::Millis::now())?;
        checkpoint(writing.txn, &writing.durable, writing.wal.as_deref())?;
        Ok(pruned)
    });
    inner.reads.changed();
    match pruned {
        Ok(0) => false,
        Ok(pruned) => {
            log::info!("housekeeping: deleted {pruned} expired records");
            pruned >= super::PRUNE_BATCH
        }
        Err(e) => {
            log::warn!("housekeeping failed: {e}");
            false
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the queue ends the thread once it has committed what it holds.
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        // Answers wait for their sync holding the store: once they are
        // sent, dropping the store closes the file.
        let _ = self.inner.db.wait_synced();
        self.inner.reads.release_retired();
    }
}

fn commit_batch(inner: &Arc<Inner>, batch: Vec<Job>) {
    inner.reads.release_retired();
    let Writing { txn, durable, wal } = match inner.db.begin_write(write_txn) {
        Ok(begun) => begun,
        Err(e) => {
            log::warn!("cannot start a write transaction: {e}");
            // The shared read snapshot holds the handle: let it go, so that
            // a handle latched by a failure can be reopened.
            inner.reads.changed();
            for job in batch {
                job(Step::Fail(e.clone()));
            }
            return;
        }
    };
    let mut answers = Vec::with_capacity(batch.len());
    let mut broken: Option<StoreError> = None;
    let logging = LogTxn::new(&txn);
    let mut shared = Shared::new(&logging);
    for job in batch {
        match &broken {
            Some(e) => {
                job(Step::Fail(e.clone()));
            }
            None => match job(Step::Apply(inner, &mut shared)) {
                Some(Applied::Sound(answer)) => answers.push(answer),
                Some(Applied::Broken(e, answer)) => {
                    answers.push(answer);
                    broken = Some(e);
                }
                None => {}
            },
        }
    }
    // The hot tables are closed before the commit (or the drop).
    drop(shared);
    let (ops, loggable) = logging.finish();
    let outcome = match broken {
        Some(e) => {
            drop(txn);
            Err(e)
        }
        None => {
            let started = std::time::Instant::now();
            let writes = answers.len();
            let committed = match loggable {
                true => commit(txn, &durable, wal.as_deref(), &ops),
                false => checkpoint(txn, &durable, wal.as_deref()),
            };
            // The commit's time runs until it is on disk.
            answers.insert(
                0,
                Box::new(move |_| crate::metrics::record_commit(writes, started.elapsed())),
            );
            committed
        }
    };
    match outcome {
        // Answered by the sync thread once the commit is on disk, and the
        // next batch is applied meanwhile (`file.rs`). Before any answer,
        // reads move to this commit's snapshot: a read made after an answer
        // sees its write.
        Ok(()) => {
            let commit = inner.reads.committed();
            let snapshot = inner.db.begin_read_unsynced();
            let owner = inner.clone();
            answers.insert(
                0,
                Box::new(move |synced| match (synced, snapshot) {
                    (Ok(()), Ok((db, txn))) => {
                        owner.reads.install(commit, reads::Snapshot::new(db, txn))
                    }
                    _ => owner.reads.changed(),
                }),
            );
            durable.when_synced(answers);
        }
        Err(e) => {
            // The shared read snapshot holds the handle: let it go, so that
            // a handle latched by the failure can be reopened.
            inner.reads.changed();
            log::warn!("a batch of writes was not committed: {e}");
            for answer in answers {
                answer(Err(e.clone()));
            }
        }
    }
}

/// Commits a batch whose writes the log carries: its record goes to the log
/// and redb keeps its pages in memory until the next checkpoint (`wal.rs`).
/// When a checkpoint is due, the batch is one too, and its record is still
/// written: its answers then wait for the log's sync, not the database
/// file's, which runs beside it. A record that does not fit in the log
/// file makes an unlogged checkpoint.
fn commit(
    mut txn: WriteTransaction,
    durable: &Durable,
    wal: Option<&Mutex<Wal>>,
    ops: &[u8],
) -> StoreResult<()> {
    let Some(wal) = wal else {
        return Ok(txn.commit()?);
    };
    let mut log = wal.lock().unwrap_or_else(|p| p.into_inner());
    let due = log.checkpoint_due();
    if ops.is_empty() && !due {
        // Nothing was written (every job refused, or a no-op): nothing to
        // make durable either.
        txn.set_durability(Durability::None)?;
        return Ok(txn.commit()?);
    }
    let Some(pending) = log.append(ops, durable)? else {
        return checkpoint_locked(txn, durable, &mut log);
    };
    let committed = if due {
        log.mark_checkpoint(&txn).and_then(|()| {
            durable.set_checkpoint_logged(true);
            let committed = txn.commit();
            durable.set_checkpoint_logged(false);
            Ok(committed?)
        })
    } else {
        txn.set_durability(Durability::None)
            .map_err(StoreError::from)
            .and_then(|()| Ok(txn.commit()?))
    };
    match committed {
        Ok(()) => {
            log.appended(pending);
            if due {
                log.checkpointed(durable);
            }
        }
        Err(_) => log.discard(pending),
    }
    committed
}

/// Commits `txn` durably, as a checkpoint of the log if there is one: the
/// file then holds every batch logged so far. Its answers wait for the
/// database file's sync.
fn checkpoint(
    txn: WriteTransaction,
    durable: &Durable,
    wal: Option<&Mutex<Wal>>,
) -> StoreResult<()> {
    let Some(wal) = wal else {
        return Ok(txn.commit()?);
    };
    checkpoint_locked(
        txn,
        durable,
        &mut wal.lock().unwrap_or_else(|p| p.into_inner()),
    )
}

fn checkpoint_locked(txn: WriteTransaction, durable: &Durable, log: &mut Wal) -> StoreResult<()> {
    log.mark_checkpoint(&txn)?;
    txn.commit()?;
    log.unlogged();
    log.checkpointed(durable);
    Ok(())
}

/// When batches were logged since the last checkpoint, makes one.
fn checkpoint_if_behind(inner: &Inner) {
    if !inner.db.log_behind() {
        return;
    }
    let Ok(writing) = inner.db.begin_write(write_txn) else {
        return;
    };
    if let Err(e) = checkpoint(writing.txn, &writing.durable, writing.wal.as_deref()) {
        log::warn!("storage: a checkpoint of the write-ahead log failed: {e}");
    }
}
