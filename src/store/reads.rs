//! One read snapshot shared by the point reads (`get`, `find_by_key`,
//! `stats`) between two commits.
//!
//! A point read used to take the handle, begin a read transaction and open
//! its tables by name (redb looks each up in its table tree and checks the
//! key and value types): about 9,000 of the 55,000 instructions of a GET.
//! Between two commits every read sees the same data, so the first read
//! after a commit makes a snapshot (the transaction, its tables opened on
//! first use) and the reads after it share it until the writer's next
//! commit drops it (`changed`).
//!
//! Reads after a write see it, and no read sees a commit before it is on
//! disk (`file.rs`): the writer makes the snapshot of its commit at once,
//! and the sync thread installs it (`install`) once the commit is synced,
//! before it answers anyone. Until then reads share the snapshot before
//! that commit, without waiting for the disk. A read made after an answer
//! finds the new generation and its snapshot. Nothing keeps an old snapshot
//! alive longer than a read transaction would: the shared slot holds the
//! latest one only until the next commit is installed, and each thread
//! keeps a weak reference, which holds no pages.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use redb::{Database, ReadOnlyTable, ReadTransaction, TableDefinition};

use super::handle::DbHandle;
use super::tables::{DEVICES, KEY_INDEX, LAST_SEEN, TENANT_COUNTS};
use super::StoreResult;

type Devices = ReadOnlyTable<(&'static str, &'static str), &'static [u8]>;
type Seen = ReadOnlyTable<(&'static str, &'static str), u64>;
type Keys = ReadOnlyTable<&'static [u8; 32], (&'static str, &'static str)>;
type Counts = ReadOnlyTable<(&'static str, u8), u64>;

/// The snapshot of one generation: a read transaction and its tables.
pub(super) struct Snapshot {
    /// Held so that the handle is not reopened under the snapshot.
    _db: Arc<Database>,
    txn: ReadTransaction,
    devices: OnceLock<Devices>,
    last_seen: OnceLock<Seen>,
    key_index: OnceLock<Keys>,
    counts: OnceLock<Counts>,
}

impl Snapshot {
    pub(super) fn new(db: Arc<Database>, txn: ReadTransaction) -> Snapshot {
        Snapshot {
            _db: db,
            txn,
            devices: OnceLock::new(),
            last_seen: OnceLock::new(),
            key_index: OnceLock::new(),
            counts: OnceLock::new(),
        }
    }

    fn table<'a, K, V>(
        &self,
        slot: &'a OnceLock<ReadOnlyTable<K, V>>,
        def: TableDefinition<'static, K, V>,
    ) -> StoreResult<&'a ReadOnlyTable<K, V>>
    where
        K: redb::Key + 'static,
        V: redb::Value + 'static,
    {
        if let Some(table) = slot.get() {
            return Ok(table);
        }
        let table = self.txn.open_table(def)?;
        // Another thread may have opened it meanwhile: either is the same.
        Ok(slot.get_or_init(|| table))
    }

    pub(super) fn devices(&self) -> StoreResult<&Devices> {
        self.table(&self.devices, DEVICES)
    }

    pub(super) fn last_seen(&self) -> StoreResult<&Seen> {
        self.table(&self.last_seen, LAST_SEEN)
    }

    pub(super) fn key_index(&self) -> StoreResult<&Keys> {
        self.table(&self.key_index, KEY_INDEX)
    }

    pub(super) fn counts(&self) -> StoreResult<&Counts> {
        self.table(&self.counts, TENANT_COUNTS)
    }
}

/// The generation counter and the latest snapshot of one store.
pub(super) struct Reads {
    /// Tells this store's snapshots from another store's in a thread's
    /// cache (tests run many stores in one process).
    id: u64,
    generation: AtomicU64,
    latest: Mutex<Option<(u64, Arc<Snapshot>)>>,
    /// Commits made so far: a snapshot is installed only if no commit came
    /// after the one it shows.
    commits: AtomicU64,
    /// Snapshots replaced by `install`, dropped by the writer
    /// (`release_retired`): the sync thread never ends a read transaction,
    /// so it never waits on redb while the writer, inside redb, waits for
    /// it.
    retired: Mutex<Vec<Arc<Snapshot>>>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// This thread's last snapshot: (store, generation, snapshot).
    static LOCAL: RefCell<Option<(u64, u64, Weak<Snapshot>)>> = const { RefCell::new(None) };
}

impl Reads {
    pub(super) fn new() -> Reads {
        Reads {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            generation: AtomicU64::new(0),
            latest: Mutex::new(None),
            commits: AtomicU64::new(0),
            retired: Mutex::new(Vec::new()),
        }
    }

    /// The database changed (a commit, or a batch given up): reads from now
    /// on take a new snapshot, and the old one goes once the reads holding
    /// it finish.
    pub(super) fn changed(&self) {
        self.commits.fetch_add(1, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
        let old = self.latest.lock().unwrap_or_else(|p| p.into_inner()).take();
        drop(old);
    }

    /// The writer committed a batch, which is not on disk yet: reads go on
    /// with the snapshot they have. Returns the commit's number, for
    /// `install`.
    pub(super) fn committed(&self) -> u64 {
        self.commits.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Commit `commit` is on disk: `snapshot` (made right after it) is the
    /// one reads use from now on. If another commit came since, the
    /// snapshot is stale: reads take a new one instead.
    pub(super) fn install(&self, commit: u64, snapshot: Snapshot) {
        let mut latest = self.latest.lock().unwrap_or_else(|p| p.into_inner());
        let (new, old) = if self.commits.load(Ordering::SeqCst) == commit {
            let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
            let snapshot = Arc::new(snapshot);
            (None, latest.replace((generation, snapshot)))
        } else {
            self.generation.fetch_add(1, Ordering::SeqCst);
            (Some(Arc::new(snapshot)), latest.take())
        };
        drop(latest);
        let mut retired = self.retired.lock().unwrap_or_else(|p| p.into_inner());
        retired.extend(new);
        retired.extend(old.map(|(_, snapshot)| snapshot));
    }

    /// Drops the snapshots `install` replaced (on the writer thread).
    pub(super) fn release_retired(&self) {
        let retired = std::mem::take(&mut *self.retired.lock().unwrap_or_else(|p| p.into_inner()));
        drop(retired);
    }

    /// The snapshot of the current generation, made if there is none yet.
    pub(super) fn snapshot(&self, db: &DbHandle) -> StoreResult<Arc<Snapshot>> {
        let generation = self.generation.load(Ordering::SeqCst);
        let cached = LOCAL.with(|local| match &*local.borrow() {
            Some((id, at, weak)) if *id == self.id && *at == generation => weak.upgrade(),
            _ => None,
        });
        if let Some(snapshot) = cached {
            return Ok(snapshot);
        }
        let shared = match &*self.latest.lock().unwrap_or_else(|p| p.into_inner()) {
            Some((at, snapshot)) if *at == generation => Some(snapshot.clone()),
            _ => None,
        };
        let snapshot = match shared {
            Some(snapshot) => snapshot,
            None => {
                // Begun after `generation` was read: it holds at least
                // every commit that generation stands for. Begun without
                // the lock: beginning may wait for the sync of the latest
                // commit, and the sync thread takes the lock to install
                // that commit's snapshot before it moves on.
                let (db, txn) = db.begin_read(|_| Ok(()))?;
                let snapshot = Arc::new(Snapshot::new(db, txn));
                let mut latest = self.latest.lock().unwrap_or_else(|p| p.into_inner());
                let old = if self.generation.load(Ordering::SeqCst) == generation {
                    latest.replace((generation, snapshot.clone()))
                } else {
                    None
                };
                drop(latest);
                drop(old);
                snapshot
            }
        };
        LOCAL.with(|local| {
            *local.borrow_mut() = Some((self.id, generation, Arc::downgrade(&snapshot)));
        });
        Ok(snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(db: &DbHandle, name: &str, value: u64) {
        db.run(|db| {
            let txn = db.begin_write()?;
            txn.open_table(LAST_SEEN)?.insert(("t", name), value)?;
            txn.commit()?;
            Ok(())
        })
        .unwrap();
    }

    fn seen(snapshot: &Snapshot, name: &str) -> Option<u64> {
        let table = snapshot.last_seen().unwrap();
        table.get(("t", name)).unwrap().map(|v| v.value())
    }

    #[test]
    fn reads_share_a_snapshot_until_a_change_and_then_see_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let db = DbHandle::synchronous(path.clone(), Database::create(&path).unwrap());
        put(&db, "a", 1);
        let reads = Reads::new();
        let first = reads.snapshot(&db).unwrap();
        assert_eq!(seen(&first, "a"), Some(1));
        let again = reads.snapshot(&db).unwrap();
        assert!(Arc::ptr_eq(&first, &again), "one snapshot per generation");
        // Another thread shares it too.
        let elsewhere = std::thread::scope(|s| s.spawn(|| reads.snapshot(&db).unwrap()).join());
        assert!(Arc::ptr_eq(&first, &elsewhere.unwrap()));

        // A commit the reads are not told of is not seen.
        put(&db, "a", 2);
        assert_eq!(seen(&reads.snapshot(&db).unwrap(), "a"), Some(1));
        // Once told, a read sees it, and the old snapshot is let go as soon
        // as its last reader drops it: nothing else holds it.
        reads.changed();
        let weak = Arc::downgrade(&first);
        drop((first, again));
        assert!(weak.upgrade().is_none(), "the old snapshot still held");
        let second = reads.snapshot(&db).unwrap();
        assert_eq!(seen(&second, "a"), Some(2));

        // Two stores in one thread do not share their snapshots.
        let other_path = dir.path().join("other.redb");
        let other_db =
            DbHandle::synchronous(other_path.clone(), Database::create(&other_path).unwrap());
        put(&other_db, "a", 7);
        let other = Reads::new();
        assert_eq!(seen(&other.snapshot(&other_db).unwrap(), "a"), Some(7));
        assert_eq!(seen(&reads.snapshot(&db).unwrap(), "a"), Some(2));
    }
}
