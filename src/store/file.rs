//! The database file as redb sees it: redb's own file backend, with the
//! wait for the disk taken off the writer thread.
//!
//! redb ends each durable commit with `sync_data` (one `fdatasync`) and
//! returns only after it, so the writer could not apply the next batch
//! while the disk worked: it spent about half its time waiting
//! (`docs/PERFORMANCE.md`, "Where a PATCH's time goes"). Here `sync_data`
//! only asks the database sync thread for the `fdatasync` and returns. Most
//! batches are made durable by the write-ahead log instead (`wal.rs`): the
//! log sync thread syncs its files. Every sync asked for, of either kind, is
//! an epoch. Three rules keep every guarantee the synchronous sync gave:
//!
//! 1. **Writes wait for the sync before them.** Every `write` and `set_len`
//!    waits until each sync of the database file asked for so far is done.
//!    On disk there is then
//!    always the last synced commit whole, plus part of at most one commit
//!    after it: what a crash during a synchronous `fdatasync` leaves, which
//!    redb's recovery handles (it falls back to that last synced commit).
//!    Pages the unsynced commit freed are not overwritten before it is on
//!    disk, so the commit recovery falls back to is intact. What overlaps
//!    with the sync is the next batch's work in memory: decoding, checking,
//!    building its pages.
//! 2. **Nobody is answered before the sync** (`Durable::when_synced`): the
//!    writer hands a committed batch's answers to the log sync thread, which
//!    sends them once their epoch is done: the log's `fdatasync` returned,
//!    and, for a commit the log does not hold (a checkpoint of writes it
//!    cannot carry), the database file's too. Epochs are done in order. A
//!    checkpoint whose batch is in the log waits for no database sync, which
//!    runs beside the log's. "2xx means on disk" holds.
//! 3. **No read sees a commit before its sync** (`Durable::wait_visible`,
//!    called by `DbHandle` after it begins every read transaction). redb
//!    publishes a commit after its `sync_data` call, and the writer asks for
//!    a record's sync before the commit that the record holds, so a read
//!    that can see a commit waits for its epoch. The change feed, a list or
//!    a GET therefore never shows what a crash could still take back.
//!
//! Since a read may wait for the sync threads, they must never wait for a
//! reader, nor for redb (whose locks the writer can hold while it
//! waits under rule 1): a read begins its transaction without holding the
//! shared snapshot's slot, which the sync thread takes to install a
//! snapshot, and the snapshots it replaces are dropped by the writer, so
//! the sync thread never ends a read transaction. A test runs point reads
//! beside writes, which hung with the slot held.
//!
//! A failed `fdatasync` fails the batch waiting for it, and every later
//! write and read of this handle: `DbHandle` reopens the file, and redb's
//! recovery goes back to the last commit that was synced.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};

use redb::backends::FileBackend;
use redb::{BackendError, Database, DatabaseError, StorageBackend};

use super::{StoreError, StoreResult};

/// Answers a caller once its commit's outcome is known.
pub(super) type Answer = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// What the file, the sync thread, the writer and the readers share.
#[derive(Default)]
pub(super) struct Durable {
    state: Mutex<State>,
    /// Signalled whenever `State` changes.
    changed: Condvar,
    /// Set by the writer around the commit of a checkpoint whose batch is in
    /// the log too: that commit's sync then holds up no answer (`wal.rs`).
    checkpoint_logged: AtomicBool,
    /// The write-ahead log's files (`wal.rs`), once it is open, and whether
    /// each was written since its last sync.
    logs: OnceLock<[Arc<File>; 2]>,
    log_dirty: [AtomicBool; 2],
}

#[derive(Default)]
struct State {
    /// Syncs asked for (of the database file or of the log) since the file
    /// was opened: each is an epoch.
    requested: u64,
    /// Of those, how many are done: the sync thread sets it to the
    /// `requested` it saw before its `fdatasync`.
    synced: u64,
    /// Syncs of the database file asked for (calls of `sync_data`), and how
    /// many of them the database sync thread has made.
    db_requested: u64,
    db_synced: u64,
    /// Epochs that are done only once the database file's sync of the
    /// ticket (a value of `db_requested`) is: commits not in the log.
    needs_db: VecDeque<(u64, u64)>,
    /// Set for good when an `fdatasync` failed.
    failed: bool,
    /// redb closed the file: the sync thread ends once nothing is left.
    closed: bool,
    /// Answers waiting for the sync that makes their commit durable.
    waiting: VecDeque<(u64, Vec<Answer>)>,
}

fn failed_sync() -> io::Error {
    io::Error::other("an earlier sync of the database file failed")
}

impl Durable {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until `done` holds of the state, or a sync failed.
    fn wait_until(&self, done: impl Fn(&State) -> bool) -> io::Result<()> {
        let mut state = self.lock();
        while !done(&state) && !state.failed {
            state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        if state.failed {
            return Err(failed_sync());
        }
        Ok(())
    }

    /// Waits until every sync asked for before this call is done, of the
    /// log and of the database file.
    pub(super) fn wait_for_syncs(&self) -> io::Result<()> {
        let (epoch, ticket) = {
            let state = self.lock();
            (state.requested, state.db_requested)
        };
        self.wait_until(|s| s.synced >= epoch && s.db_synced >= ticket)
    }

    /// Waits until every sync of the database file asked for before this
    /// call is done: what a write to the file waits for.
    fn wait_for_db_syncs(&self) -> io::Result<()> {
        let ticket = self.lock().db_requested;
        self.wait_for_db(ticket)
    }

    /// Waits until the database file's sync `ticket` (a value of
    /// `db_requested`) is done.
    pub(super) fn wait_for_db(&self, ticket: u64) -> io::Result<()> {
        self.wait_until(|s| s.db_synced >= ticket)
    }

    /// How many syncs of the database file were asked for so far: the
    /// ticket of the last one.
    pub(super) fn db_requested(&self) -> u64 {
        self.lock().db_requested
    }

    /// Around the commit of a checkpoint whose batch is also in the log:
    /// its sync of the database file need not hold up any answer.
    pub(super) fn set_checkpoint_logged(&self, logged: bool) {
        self.checkpoint_logged.store(logged, Ordering::Release);
    }

    /// Hands the sync thread the write-ahead log's files.
    pub(super) fn set_logs(&self, files: [Arc<File>; 2]) {
        let _ = self.logs.set(files);
    }

    /// Log file `index` was written: asks for its sync. Called before the
    /// batch's commit, so that a read that sees the commit waits for it.
    pub(super) fn log_written(&self, index: usize) -> io::Result<()> {
        self.log_dirty[index].store(true, Ordering::Release);
        self.request()
    }

    /// Called after a read transaction begins: returns once every commit
    /// it can see is on disk. A failed sync latches the handle, so that it
    /// is reopened on what the disk holds.
    pub(super) fn wait_visible(&self) -> StoreResult<()> {
        let epoch = self.lock().requested;
        self.wait_until(|s| s.synced >= epoch)
            .map_err(|_| StoreError::Latched)
    }

    /// After a commit: `answers` get its outcome once it is on disk (at
    /// once if it already is). Called by the thread that committed, after
    /// the commit returned, so the sync it waits for is already asked for.
    pub(super) fn when_synced(&self, answers: Vec<Answer>) {
        let mut state = self.lock();
        let epoch = state.requested;
        if state.failed {
            drop(state);
            answer_all(answers, Err(sync_error()));
        } else if state.synced >= epoch {
            drop(state);
            answer_all(answers, Ok(()));
        } else {
            state.waiting.push_back((epoch, answers));
        }
    }

    /// redb asks for a sync of the database file: an epoch of its own, done
    /// once that sync is, unless the commit's batch is in the log.
    fn request_db(&self) -> io::Result<()> {
        let mut state = self.lock();
        if state.failed {
            return Err(failed_sync());
        }
        state.db_requested += 1;
        state.requested += 1;
        if !self.checkpoint_logged.load(Ordering::Acquire) {
            let entry = (state.requested, state.db_requested);
            state.needs_db.push_back(entry);
        }
        self.changed.notify_all();
        Ok(())
    }

    /// Asks for a sync; the answer is whether the file is still sound.
    fn request(&self) -> io::Result<()> {
        let mut state = self.lock();
        if state.failed {
            return Err(failed_sync());
        }
        state.requested += 1;
        self.changed.notify_all();
        Ok(())
    }

    /// The sync thread: one `fdatasync` of each log file written for
    /// whatever was asked for by the time it starts, then the answers it
    /// makes durable; until the file is closed or a sync fails.
    fn run(&self) {
        while self.sync_once(|| self.sync_logs()) {}
    }

    /// The database sync thread: one `fdatasync` of the database file for
    /// the syncs redb asked for by the time it starts. A checkpoint's sync
    /// runs here, beside the log's, so it holds up only what needs it.
    fn run_db(&self, file: &FileBackend) {
        while self.db_sync_once(|| file.sync_data()) {}
    }

    /// Waits for a sync of the database file to be asked for and makes it.
    /// Returns false when there is nothing more to do (closed, or failed).
    fn db_sync_once(&self, sync: impl FnOnce() -> io::Result<()>) -> bool {
        let Some(ticket) = self.sync_next(|s| (s.db_synced, s.db_requested), sync) else {
            return false;
        };
        self.lock().db_synced = ticket;
        self.changed.notify_all();
        true
    }

    /// Waits until `counts` (made, asked for) shows a sync asked for and not
    /// made, and makes it with `sync`. Returns how many were asked for by
    /// then, or `None` when there is nothing more to do (closed, or failed).
    fn sync_next(
        &self,
        counts: impl Fn(&State) -> (u64, u64),
        sync: impl FnOnce() -> io::Result<()>,
    ) -> Option<u64> {
        let target = {
            let mut state = self.lock();
            let idle = |s: &State| {
                let (made, asked) = counts(s);
                made == asked
            };
            while idle(&state) && !state.closed && !state.failed {
                state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
            }
            if state.failed || idle(&state) {
                return None;
            }
            counts(&state).1
        };
        if let Err(e) = sync() {
            self.fail(&e);
            return None;
        }
        Some(target)
    }

    /// A sync failed: every answer waiting, and every later write and read
    /// of this handle, fails.
    fn fail(&self, e: &io::Error) {
        log::error!("storage: syncing the database failed: {e}");
        let done: Vec<Answer> = {
            let mut state = self.lock();
            state.failed = true;
            state.waiting.drain(..).flat_map(|(_, a)| a).collect()
        };
        answer_all(done, Err(sync_error()));
        self.changed.notify_all();
    }

    /// The `fdatasync` of each log file written since its last one.
    fn sync_logs(&self) -> io::Result<()> {
        if let Some(logs) = self.logs.get() {
            for (log, dirty) in logs.iter().zip(&self.log_dirty) {
                if dirty.swap(false, Ordering::AcqRel) {
                    log.sync_data()?;
                }
            }
        }
        Ok(())
    }

    /// Waits for a sync to be asked for and makes it with `sync`. Returns
    /// false when there is nothing more to do (closed, or failed).
    fn sync_once(&self, sync: impl FnOnce() -> io::Result<()>) -> bool {
        let Some(target) = self.sync_next(|s| (s.synced, s.requested), sync) else {
            return false;
        };
        // The epochs up to the target that hold a commit not in the log
        // are done once the database file's sync of it is.
        {
            let mut state = self.lock();
            while let Some(&(epoch, ticket)) = state.needs_db.front() {
                if epoch > target {
                    break;
                }
                if state.db_synced >= ticket {
                    state.needs_db.pop_front();
                    continue;
                }
                if state.failed {
                    return false;
                }
                state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
            }
        }
        // The answers run before `synced` moves, so that the writer's next
        // commit is not published before this one's snapshot is installed,
        // and so that whoever waits for the syncs also waits for them. An
        // answer the writer hands in meanwhile is taken in the last round.
        loop {
            let done: Vec<Answer> = {
                let mut state = self.lock();
                let mut done = Vec::new();
                while state.waiting.front().is_some_and(|(e, _)| *e <= target) {
                    if let Some((_, answers)) = state.waiting.pop_front() {
                        done.extend(answers);
                    }
                }
                if done.is_empty() {
                    state.synced = target;
                    break;
                }
                done
            };
            answer_all(done, Ok(()));
        }
        self.changed.notify_all();
        true
    }
}

fn sync_error() -> StoreError {
    StoreError::Unavailable("the commit could not be synced to disk".into())
}

fn answer_all(answers: Vec<Answer>, outcome: Result<(), StoreError>) {
    for answer in answers {
        answer(outcome.clone());
    }
}

/// redb's `FileBackend`, its syncs made by the sync thread.
#[derive(Debug)]
struct SyncedFile {
    inner: Arc<FileBackend>,
    durable: Arc<Durable>,
}

impl std::fmt::Debug for Durable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("Durable")
            .field("requested", &state.requested)
            .field("synced", &state.synced)
            .field("failed", &state.failed)
            .finish()
    }
}

impl StorageBackend for SyncedFile {
    fn len(&self) -> Result<u64, io::Error> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        self.durable.wait_for_db_syncs()?;
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        self.durable.request_db()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.durable.wait_for_db_syncs()?;
        self.inner.write(offset, data)
    }

    fn close(&self) -> Result<(), io::Error> {
        let synced = self.durable.wait_for_syncs();
        self.durable.lock().closed = true;
        self.durable.changed.notify_all();
        self.inner.close()?;
        synced
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}

/// Opens (or creates) the database file at `path` for the server to write,
/// as `redb::Builder::create` does, with its syncs on a thread of their own.
pub(super) fn create(path: &Path) -> Result<(Database, Arc<Durable>), DatabaseError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    let inner = Arc::new(FileBackend::new(file)?);
    let durable = Arc::new(Durable::default());
    let shared = durable.clone();
    std::thread::Builder::new()
        .name("devicehub-sync".into())
        .spawn(move || shared.run())?;
    let (file, shared) = (inner.clone(), durable.clone());
    std::thread::Builder::new()
        .name("devicehub-dbsync".into())
        .spawn(move || shared.run_db(&file))?;
    let backend = SyncedFile {
        inner,
        durable: durable.clone(),
    };
    let db = Database::builder().create_with_backend(backend)?;
    Ok((db, durable))
}

/// Only for a handle on a file opened some other way (tests): redb syncs it
/// itself, so nothing ever waits.
#[cfg(test)]
pub(super) fn synchronous() -> Arc<Durable> {
    Arc::new(Durable::default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc;
    use std::time::Duration;

    /// A thread blocked in `wait_for_syncs`, and whether it has returned.
    fn waiter(
        durable: &Arc<Durable>,
    ) -> (Arc<AtomicBool>, std::thread::JoinHandle<io::Result<()>>) {
        let done = Arc::new(AtomicBool::new(false));
        let (durable, flag) = (durable.clone(), done.clone());
        let thread = std::thread::spawn(move || {
            let result = durable.wait_for_syncs();
            flag.store(true, Ordering::SeqCst);
            result
        });
        (done, thread)
    }

    fn answer_into(tx: &mpsc::Sender<Result<(), StoreError>>) -> Answer {
        let tx = tx.clone();
        Box::new(move |outcome| tx.send(outcome).unwrap())
    }

    #[test]
    fn writes_wait_for_the_sync_asked_for_before_them() {
        let durable = Arc::new(Durable::default());
        // Nothing asked for: nothing to wait for.
        durable.wait_for_syncs().unwrap();
        durable.request().unwrap();
        let (returned, thread) = waiter(&durable);
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !returned.load(Ordering::SeqCst),
            "a write went ahead of the sync"
        );
        let mut synced = false;
        assert!(durable.sync_once(|| {
            synced = true;
            Ok(())
        }));
        assert!(synced);
        thread.join().unwrap().unwrap();
        // A read that begins now sees only synced commits: no wait.
        durable.wait_visible().unwrap();
    }

    #[test]
    fn the_file_takes_no_write_or_new_length_before_the_sync_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"old!").unwrap();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        // No sync thread: the test makes the syncs itself.
        let durable = Arc::new(Durable::default());
        let backend = Arc::new(SyncedFile {
            inner: Arc::new(FileBackend::new(file).unwrap()),
            durable: durable.clone(),
        });
        backend.sync_data().unwrap();
        // A read may begin meanwhile: the database file's sync is not the
        // log's.
        let writer = backend.clone();
        let thread = std::thread::spawn(move || {
            writer.write(0, b"new!").unwrap();
            writer.set_len(8).unwrap();
        });
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"old!",
            "written before the sync"
        );
        assert!(durable.db_sync_once(|| Ok(())));
        thread.join().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new!\0\0\0\0");
        assert_eq!(backend.len().unwrap(), 8);
    }

    #[test]
    fn answers_wait_for_their_sync_and_a_later_commit_waits_for_its_own() {
        let durable = Arc::new(Durable::default());
        let (tx, rx) = mpsc::channel();
        durable.request().unwrap();
        durable.when_synced(vec![answer_into(&tx), answer_into(&tx)]);
        assert!(rx.try_recv().is_err(), "answered before the sync");
        assert!(durable.sync_once(|| Ok(())));
        assert!(rx.try_recv().unwrap().is_ok());
        assert!(rx.try_recv().unwrap().is_ok());
        // A commit whose sync is done (nothing asked since) is answered at once.
        durable.when_synced(vec![answer_into(&tx)]);
        assert!(rx.try_recv().unwrap().is_ok());
        // Two syncs asked for; the answers of the second wait for a sync
        // that starts after it was asked for.
        durable.request().unwrap();
        durable.when_synced(vec![answer_into(&tx)]);
        durable.request().unwrap();
        durable.when_synced(vec![answer_into(&tx)]);
        assert!(durable.sync_once(|| Ok(())));
        assert!(rx.try_recv().unwrap().is_ok());
        assert!(rx.try_recv().unwrap().is_ok());
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn the_database_files_sync_holds_up_only_what_the_log_does_not_hold() {
        let durable = Arc::new(Durable::default());
        let (tx, rx) = mpsc::channel();
        // A checkpoint whose batch is in the log: its record, then its commit.
        durable.request().unwrap();
        durable.set_checkpoint_logged(true);
        durable.request_db().unwrap();
        durable.set_checkpoint_logged(false);
        durable.when_synced(vec![answer_into(&tx)]);
        assert!(durable.sync_once(|| Ok(())));
        assert!(
            rx.try_recv().unwrap().is_ok(),
            "the answer waited for the database file's sync"
        );
        durable.wait_visible().unwrap();
        // The next write to the file waits for that sync all the same.
        let (gate, flag) = (durable.clone(), Arc::new(AtomicBool::new(false)));
        let passed = flag.clone();
        let write = std::thread::spawn(move || {
            gate.wait_for_db_syncs().unwrap();
            passed.store(true, Ordering::SeqCst);
        });
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !flag.load(Ordering::SeqCst),
            "a write went ahead of the sync"
        );
        assert!(durable.db_sync_once(|| Ok(())));
        write.join().unwrap();

        // A commit the log does not hold (housekeeping, a webhook): its
        // answer waits for the database file's sync.
        durable.request_db().unwrap();
        durable.when_synced(vec![answer_into(&tx)]);
        let logs = durable.clone();
        let log_sync = std::thread::spawn(move || logs.sync_once(|| Ok(())));
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            rx.try_recv().is_err(),
            "answered before the database file's sync"
        );
        assert!(durable.db_sync_once(|| Ok(())));
        assert!(log_sync.join().unwrap());
        assert!(rx.recv_timeout(Duration::from_secs(10)).unwrap().is_ok());
        durable.wait_for_syncs().unwrap();
    }

    #[test]
    fn a_failed_sync_fails_its_answers_and_every_later_write_and_read() {
        let durable = Arc::new(Durable::default());
        let (tx, rx) = mpsc::channel();
        durable.request().unwrap();
        durable.when_synced(vec![answer_into(&tx)]);
        let (_, thread) = waiter(&durable);
        assert!(!durable.sync_once(|| Err(io::Error::other("disk gone"))));
        assert!(matches!(
            rx.try_recv().unwrap(),
            Err(StoreError::Unavailable(_))
        ));
        assert!(
            thread.join().unwrap().is_err(),
            "a write went ahead after a failed sync"
        );
        assert!(durable.request().is_err());
        assert!(durable.wait_for_syncs().is_err());
        assert!(matches!(durable.wait_visible(), Err(StoreError::Latched)));
        durable.when_synced(vec![answer_into(&tx)]);
        assert!(matches!(
            rx.try_recv().unwrap(),
            Err(StoreError::Unavailable(_))
        ));
    }

    #[test]
    fn the_file_refuses_a_second_opener_and_keeps_what_was_committed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let def: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("t");
        let (db, durable) = create(&path).unwrap();
        assert!(matches!(
            create(&path),
            Err(DatabaseError::DatabaseAlreadyOpen)
        ));
        let txn = db.begin_write().unwrap();
        txn.open_table(def).unwrap().insert("a", 1).unwrap();
        txn.commit().unwrap();
        let (tx, rx) = mpsc::channel();
        durable.when_synced(vec![answer_into(&tx)]);
        assert!(rx.recv_timeout(Duration::from_secs(10)).unwrap().is_ok());
        drop(db);
        let db = redb::Database::open(&path).unwrap();
        let txn = redb::ReadableDatabase::begin_read(&db).unwrap();
        assert_eq!(
            txn.open_table(def)
                .unwrap()
                .get("a")
                .unwrap()
                .unwrap()
                .value(),
            1
        );
    }
}
