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
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use redb::{Database, ReadTransaction, ReadableDatabase};

use super::{StoreError, StoreResult};

/// Reopening is tried at most this often while it keeps failing.
const REOPEN_BACKOFF: Duration = Duration::from_millis(200);

pub struct DbHandle {
    path: PathBuf,
    slot: RwLock<Option<Arc<Database>>>,
    last_failed_reopen: Mutex<Option<Instant>>,
}

impl DbHandle {
    pub fn new(path: PathBuf, db: Database) -> DbHandle {
        DbHandle {
            path,
            slot: RwLock::new(Some(Arc::new(db))),
            last_failed_reopen: Mutex::new(None),
        }
    }

    /// The database file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `op` on the database; after a latched failure, reopens and runs
    /// it once more.
    pub fn run<T>(&self, op: impl Fn(&Database) -> StoreResult<T>) -> StoreResult<T> {
        self.run_on_handle(|db| op(db))
    }

    /// A read transaction that has shown it can read (`probe`), with the
    /// handle it belongs to: whoever holds the handle keeps the file from
    /// being reopened under the snapshot.
    pub fn begin_read(
        &self,
        probe: impl Fn(&ReadTransaction) -> StoreResult<()>,
    ) -> StoreResult<(Arc<Database>, ReadTransaction)> {
        self.run_on_handle(|db| {
            let txn = db.begin_read()?;
            probe(&txn)?;
            Ok((db.clone(), txn))
        })
    }

    /// `run`, handing `op` the shared handle itself.
    pub fn run_on_handle<T>(
        &self,
        op: impl Fn(&Arc<Database>) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let db = self.current()?;
        match op(&db) {
            Err(StoreError::Latched) => {
                self.reopen(db)?;
                op(&self.current()?)
            }
            other => other,
        }
    }

    fn current(&self) -> StoreResult<Arc<Database>> {
        if let Some(db) = self.slot.read().unwrap_or_else(|p| p.into_inner()).as_ref() {
            return Ok(db.clone());
        }
        self.open_into_empty_slot()
    }

    /// Drops the failed handle and opens the file again.
    fn reopen(&self, failed: Arc<Database>) -> StoreResult<()> {
        {
            let mut slot = self.slot.write().unwrap_or_else(|p| p.into_inner());
            let same = slot.as_ref().is_some_and(|db| Arc::ptr_eq(db, &failed));
            drop(failed);
            if same {
                // Every other user must let go before the file can be opened
                // again; until then, answer "unavailable" and let a later
                // operation finish the job.
                if slot.as_ref().is_some_and(|db| Arc::strong_count(db) > 1) {
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

    fn open_into_empty_slot(&self) -> StoreResult<Arc<Database>> {
        let mut slot = self.slot.write().unwrap_or_else(|p| p.into_inner());
        if let Some(db) = slot.as_ref() {
            return Ok(db.clone());
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
        match Database::builder().create(&self.path) {
            Ok(db) => {
                *last = None;
                log::info!("storage: database reopened");
                let db = Arc::new(db);
                *slot = Some(db.clone());
                Ok(db)
            }
            Err(e) => {
                *last = Some(Instant::now());
                Err(StoreError::Unavailable(format!("reopening failed: {e}")))
            }
        }
    }
}
