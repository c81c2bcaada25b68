//! The open database, reopened in place after an I/O failure.
//!
//! After a failed write redb may latch the failure and refuse every later
//! operation with `PreviousIo` until the file is opened again. `DbHandle`
//! sees that error, reopens the file (once nothing else holds the old
//! handle) and retries the operation: an operation that met `PreviousIo` had
//! done nothing yet, so the retry cannot apply it twice. While the disk stays
//! full or read-only, writes keep failing with a plain I/O error (503) and
//! reads go on.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use redb::{Database, ReadTransaction, ReadableDatabase, WriteTransaction};

use super::file::Durable;
use super::wal::{self, Wal};
use super::{StoreError, StoreResult};

/// Reopening is tried at most this often while it keeps failing.
const REOPEN_BACKOFF: Duration = Duration::from_millis(200);

pub struct DbHandle {
    path: PathBuf,
    slot: RwLock<Option<Open>>,
    /// Whether commits go through the write-ahead log (`wal.rs`), which a
    /// reopened file then opens too.
    logged: AtomicBool,
    last_failed_reopen: Mutex<Option<Instant>>,
}

/// An open database and what tells when its commits are on disk.
#[derive(Clone)]
struct Open {
    db: Arc<Database>,
    durable: Arc<Durable>,
    /// Only the writer thread locks it.
    wal: Option<Arc<Mutex<Wal>>>,
}

impl Open {
    /// A read transaction, once every commit it can see is on disk.
    fn begin_read(&self) -> StoreResult<ReadTransaction> {
        let txn = self.db.begin_read()?;
        self.durable.wait_visible()?;
        Ok(txn)
    }
}

impl DbHandle {
    /// A handle on a database `file::create` opened.
    pub(super) fn new(path: PathBuf, db: Database, durable: Arc<Durable>) -> DbHandle {
        DbHandle {
            path,
            slot: RwLock::new(Some(Open {
                db: Arc::new(db),
                durable,
                wal: None,
            })),
            logged: AtomicBool::new(false),
            last_failed_reopen: Mutex::new(None),
        }
    }

    /// A handle on a database that syncs its own commits (tests).
    #[cfg(test)]
    pub(super) fn synchronous(path: PathBuf, db: Database) -> DbHandle {
        DbHandle::new(path, db, super::file::synchronous())
    }

    /// From now on, commits go through the write-ahead log: applies what it
    /// holds after the file's last checkpoint first (`wal::open`).
    /// Returns how many logged batches it applied.
    pub(super) fn start_log(&self) -> StoreResult<u64> {
        let mut slot = self.slot.write().unwrap_or_else(|p| p.into_inner());
        let open = slot
            .as_mut()
            .ok_or_else(|| StoreError::Unavailable("the database is being reopened".into()))?;
        let log = wal::open(&self.path, &open.db, &open.durable)?;
        let replayed = log.replayed;
        open.wal = Some(Arc::new(Mutex::new(log)));
        self.logged.store(true, Ordering::Release);
        Ok(replayed)
    }

    /// Whether batches were logged since the last checkpoint (`wal.rs`).
    pub(super) fn log_behind(&self) -> bool {
        let slot = self.slot.read().unwrap_or_else(|p| p.into_inner());
        slot.as_ref()
            .and_then(|open| open.wal.as_ref())
            .is_some_and(|wal| wal.lock().unwrap_or_else(|p| p.into_inner()).behind())
    }

    /// The database file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `op` on the database; after a latched failure, reopens and runs
    /// it once more.
    pub fn run<T>(&self, op: impl Fn(&Database) -> StoreResult<T>) -> StoreResult<T> {
        self.run_open(|open| op(&open.db))
    }

    /// Runs `op` on a read transaction that sees only commits on disk.
    pub fn read<T>(&self, op: impl Fn(&ReadTransaction) -> StoreResult<T>) -> StoreResult<T> {
        self.run_open(|open| op(&open.begin_read()?))
    }

    /// `read`, handing `op` the shared handle and the transaction itself.
    pub fn read_on_handle<T>(
        &self,
        op: impl Fn(&Arc<Database>, ReadTransaction) -> StoreResult<T>,
    ) -> StoreResult<T> {
        self.run_open(|open| op(&open.db, open.begin_read()?))
    }

    /// A read transaction that has shown it can read (`probe`), with the
    /// handle it belongs to: whoever holds the handle keeps the file from
    /// being reopened under the snapshot. It sees only commits on disk.
    pub fn begin_read(
        &self,
        probe: impl Fn(&ReadTransaction) -> StoreResult<()>,
    ) -> StoreResult<(Arc<Database>, ReadTransaction)> {
        self.read_on_handle(|db, txn| {
            probe(&txn)?;
            Ok((db.clone(), txn))
        })
    }

    /// Waits until every commit made so far is on disk and its callers are
    /// answered; an error if a sync failed. Never opens the file: a handle
    /// let go after a failure has nothing left to sync.
    pub(super) fn wait_synced(&self) -> StoreResult<()> {
        let open = self
            .slot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| {
                StoreError::Unavailable("the database was let go after a failure".into())
            })?;
        open.durable
            .wait_for_syncs()
            .map_err(|e| StoreError::Unavailable(e.to_string()))
    }

    /// For the writer, right after its commit: a read transaction that sees
    /// that commit before it is on disk. Nobody may read from it before
    /// `Durable::when_synced` answers (`Reads::install`).
    pub(super) fn begin_read_unsynced(&self) -> StoreResult<(Arc<Database>, ReadTransaction)> {
        let open = self.current()?;
        let txn = open.db.begin_read()?;
        Ok((open.db, txn))
    }

    /// A write transaction, and what answers its callers once its commit
    /// is on disk (`Durable::when_synced`).
    pub(super) fn begin_write(
        &self,
        op: impl Fn(&Database) -> StoreResult<WriteTransaction>,
    ) -> StoreResult<Writing> {
        self.run_open(|open| {
            Ok(Writing {
                txn: op(&open.db)?,
                durable: open.durable.clone(),
                wal: open.wal.clone(),
            })
        })
    }

    fn run_open<T>(&self, op: impl Fn(&Open) -> StoreResult<T>) -> StoreResult<T> {
        let open = self.current()?;
        match op(&open) {
            Err(StoreError::Latched) => {
                self.reopen(open.db)?;
                op(&self.current()?)
            }
            other => other,
        }
    }

    fn current(&self) -> StoreResult<Open> {
        if let Some(open) = self.slot.read().unwrap_or_else(|p| p.into_inner()).as_ref() {
            return Ok(open.clone());
        }
        self.open_into_empty_slot()
    }

    /// Drops the failed handle and opens the file again.
    fn reopen(&self, failed: Arc<Database>) -> StoreResult<()> {
        {
            let mut slot = self.slot.write().unwrap_or_else(|p| p.into_inner());
            let same = slot
                .as_ref()
                .is_some_and(|open| Arc::ptr_eq(&open.db, &failed));
            drop(failed);
            if same {
                // Every other user must let go before the file can be opened
                // again; until then, answer "unavailable" and let a later
                // operation finish the job.
                if slot
                    .as_ref()
                    .is_some_and(|open| Arc::strong_count(&open.db) > 1)
                {
                    return Err(StoreError::Unavailable(
                        "the database is being reopened".into(),
                    ));
                }
                *slot = None;
                log::warn!("storage: reopening the database after an I/O failure");
            }
        }
        self.open_into_empty_slot().map(|_| ())
    }

    fn open_into_empty_slot(&self) -> StoreResult<Open> {
        let mut slot = self.slot.write().unwrap_or_else(|p| p.into_inner());
        if let Some(open) = slot.as_ref() {
            return Ok(open.clone());
        }
        let mut last = self
            .last_failed_reopen
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|at| at.elapsed() < REOPEN_BACKOFF) {
            return Err(StoreError::Unavailable(
                "the database is being reopened".into(),
            ));
        }
        let opened = super::file::create(&self.path)
            .map_err(|e| StoreError::Unavailable(format!("reopening failed: {e}")))
            .and_then(|(db, durable)| {
                let wal = match self.logged.load(Ordering::Acquire) {
                    true => Some(Arc::new(Mutex::new(wal::open(&self.path, &db, &durable)?))),
                    false => None,
                };
                Ok((db, durable, wal))
            });
        match opened {
            Ok((db, durable, wal)) => {
                *last = None;
                log::info!("storage: database reopened");
                let open = Open {
                    db: Arc::new(db),
                    durable,
                    wal,
                };
                *slot = Some(open.clone());
                Ok(open)
            }
            Err(e) => {
                *last = Some(Instant::now());
                Err(e)
            }
        }
    }
}

/// A write transaction, what answers its callers once its commit is on disk
/// (`Durable::when_synced`), and the write-ahead log it commits through.
pub(super) struct Writing {
    pub txn: WriteTransaction,
    pub durable: Arc<Durable>,
    pub wal: Option<Arc<Mutex<Wal>>>,
}
