//! Backups of the redb store (API.md §8) and their restore.
//!
//! A snapshot copies every table from ONE read transaction into a new redb
//! file, so it holds every write committed (acknowledged) before it began and
//! never part of one; writers go on meanwhile (MVCC). The tables built from
//! the devices (the indexes and counts, `DERIVED`) are left out, which
//! halves the copy: opening the snapshot builds them (`restore` opens its
//! copy before it replaces the database). The file is written
//! under a temporary name in the backup folder, synced, renamed to
//! `devicehub-<UTC yyyymmddThhmmssZ>.redb` (mode 0600), and the folder synced.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::time::{Duration, Instant};

use redb::{
    Database, DatabaseError, Durability, Key, ReadOnlyDatabase, ReadTransaction, ReadableDatabase,
    ReadableTable, ReadableTableMetadata, TableDefinition, TableError, TableHandle, Value,
    WriteTransaction,
};

use super::tables::{
    DEVICES, EVENTS, IDEMPOTENCY, IDEMPOTENCY_EXPIRY, INDEXES_OMITTED_KEY, KEY_INDEX, LAST_SEEN,
    LOCATION_INDEX, META, NAME_INDEX, SCHEMA_VERSION, SCHEMA_VERSION_KEY, STATUS_INDEX,
    TENANT_COUNTS, WEBHOOKS, WEBHOOK_DELIVERIES,
};
use super::{indexes, Embedded, StoreError, StoreResult};

/// Snapshot files are `PREFIX` + UTC time + `SUFFIX`.
const PREFIX: &str = "devicehub-";
const SUFFIX: &str = ".redb";

/// Rows copied per destination commit (some 30 MB of pages). The commits
/// are not durable, but each is followed by a sync of the file, so the
/// snapshot reaches the disk in steps of that size: left to one sync at the
/// end, the whole file (1.1 GB at a million devices) was flushed at once and
/// the live database's own commits, whose syncs wait for the same journal,
/// stalled behind it. The file is only renamed into place after the last,
/// durable commit, so the batches are never seen half-done.
const ROWS_PER_COMMIT: u64 = 200_000;

/// The snapshot database's page cache. redb keeps the pages of non-durable
/// commits in memory up to half of it and then writes them to the file, so
/// this bounds what a snapshot holds in memory however large the database
/// (with redb's default of 1 GiB, a snapshot of a million devices could
/// hold half a gigabyte of pages).
const SNAPSHOT_CACHE_BYTES: usize = 128 << 20;

/// What one snapshot wrote.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub path: PathBuf,
    pub devices: u64,
    pub elapsed: Duration,
}

/// What a snapshot file holds, once checked.
#[derive(Debug, Clone)]
pub struct SnapshotInfo {
    pub devices: u64,
    /// The snapshot's layout when older than this build's: `restore`
    /// upgrades its copy before it replaces the database.
    pub older_layout: Option<u64>,
    /// The snapshot leaves out the indexes and counts (as every snapshot
    /// since they were left out does): `restore` builds them in its copy
    /// before it replaces the database.
    pub indexes_omitted: bool,
}

impl Embedded {
    /// Writes a consistent snapshot of the whole store into `dest_dir`
    /// (created 0700 if missing) and returns its path.
    pub fn snapshot(&self, dest_dir: &Path) -> StoreResult<PathBuf> {
        self.snapshot_report(dest_dir).map(|s| s.path)
    }

    /// As `snapshot`, with the number of devices and the time it took.
    pub fn snapshot_report(&self, dest_dir: &Path) -> StoreResult<Snapshot> {
        let started = Instant::now();
        let io = |what: &str, e: io::Error| StoreError::Unavailable(format!("backup: {what}: {e}"));
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dest_dir)
            .map_err(|e| io(&format!("cannot create {}", dest_dir.display()), e))?;
        // The read transaction is the snapshot: taken first, before any name
        // or file, so everything acknowledged before this call is in it.
        let (_db, source) = self.inner.db.begin_read(|_| Ok(()))?;
        let now = time::OffsetDateTime::now_utc();
        let stamp = format!(
            "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour(),
            now.minute(),
            now.second()
        );
        let name = format!("{PREFIX}{stamp}{SUFFIX}");
        let final_path = dest_dir.join(&name);
        let temp_path = dest_dir.join(format!(".{name}.{}.tmp", random_suffix()));
        let written = (|| {
            // Kept open: the copy syncs the file through it.
            let file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temp_path)
                .map_err(|e| io(&format!("cannot create {}", temp_path.display()), e))?;
            let devices = {
                let dest = Database::builder()
                    .set_cache_size(SNAPSHOT_CACHE_BYTES)
                    .create(&temp_path)
                    .map_err(|e| {
                        StoreError::Unavailable(format!(
                            "backup: cannot create {}: {e}",
                            temp_path.display()
                        ))
                    })?;
                copy_all(&source, &dest, &file, self.inner.db.path())?
            };
            drop(source);
            file.sync_all()
                .map_err(|e| io("cannot sync the snapshot", e))?;
            fs::rename(&temp_path, &final_path)
                .map_err(|e| io(&format!("cannot rename to {}", final_path.display()), e))?;
            sync_dir(dest_dir).map_err(|e| io("cannot sync the backup folder", e))?;
            Ok(devices)
        })();
        match written {
            Ok(devices) => Ok(Snapshot {
                path: final_path,
                devices,
                elapsed: started.elapsed(),
            }),
            Err(e) => {
                let _ = fs::remove_file(&temp_path);
                Err(e)
            }
        }
    }

    /// A snapshot, then the oldest ones removed so that `keep` remain.
    pub fn backup(&self, dest_dir: &Path, keep: usize) -> StoreResult<Snapshot> {
        let snapshot = self.snapshot_report(dest_dir)?;
        prune(dest_dir, keep).map_err(|e| {
            StoreError::Unavailable(format!("backup: cannot remove old snapshots: {e}"))
        })?;
        Ok(snapshot)
    }

    /// Snapshots leave the indexes out since this layout.
    const OMITTED_SINCE: u64 = 4;

    /// Opens `path` read-only and checks it is a devicehub snapshot this
    /// build can use: a redb file of this layout version, whose indexes
    /// agree with its devices, or which leaves them out (then `restore`
    /// builds them in its copy, reading every device: a device that cannot
    /// be read stops the restore), or of an older layout (taken before an
    /// upgrade), whose indexes are checked once `restore` has upgraded its
    /// copy.
    pub fn check_snapshot(path: &Path) -> Result<SnapshotInfo, String> {
        let db = ReadOnlyDatabase::open(path).map_err(|e| match e {
            DatabaseError::Storage(redb::StorageError::Io(io))
                if io.kind() != io::ErrorKind::InvalidData =>
            {
                format!("cannot read it: {io}")
            }
            other => format!("not a devicehub snapshot ({other})"),
        })?;
        let txn = db
            .begin_read()
            .map_err(|e| format!("cannot be read: {e}"))?;
        let (version, indexes_omitted) = match txn.open_table(META) {
            Ok(meta) => {
                let read = |key| {
                    meta.get(key)
                        .map(|v| v.map(|v| v.value()))
                        .map_err(|e| format!("cannot be read: {e}"))
                };
                (
                    read(SCHEMA_VERSION_KEY)?,
                    read(INDEXES_OMITTED_KEY)?.is_some(),
                )
            }
            Err(TableError::TableDoesNotExist(_)) => (None, false),
            Err(e) => return Err(format!("not a devicehub snapshot ({e})")),
        };
        let older_layout = match version {
            None => return Err("not a devicehub snapshot (no layout version)".into()),
            Some(v) if indexes_omitted && (Self::OMITTED_SINCE..=SCHEMA_VERSION).contains(&v) => {
                for table in txn
                    .list_tables()
                    .map_err(|e| format!("cannot be read: {e}"))?
                {
                    if is_derived(table.name()) {
                        return Err(format!(
                            "damaged: it leaves out the indexes but holds the table {:?}",
                            table.name()
                        ));
                    }
                }
                // An older one is upgraded as it is restored.
                (v < SCHEMA_VERSION).then_some(v)
            }
            Some(SCHEMA_VERSION) => {
                indexes::verify(&txn).map_err(|e| format!("damaged: {e}"))?;
                None
            }
            Some(older) if indexes_omitted => {
                return Err(format!(
                    "damaged: a layout {older} snapshot cannot leave out the indexes"
                ))
            }
            Some(older) if (1..SCHEMA_VERSION).contains(&older) => Some(older),
            Some(other) => {
                return Err(format!(
                    "layout version {other}, this build reads up to version {SCHEMA_VERSION}"
                ))
            }
        };
        let devices = txn
            .open_table(DEVICES)
            .map_err(|e| format!("damaged: {e}"))?
            .len()
            .map_err(|e| format!("damaged: {e}"))?;
        Ok(SnapshotInfo {
            devices,
            older_layout,
            indexes_omitted,
        })
    }

    /// Checks `snapshot`, then replaces the database at `target` with it:
    /// copied to a temporary file in the same folder, synced, given mode
    /// 0600 and renamed over the target. Refuses while a process (a running
    /// server) holds the target database.
    pub fn restore(snapshot: &Path, target: &Path) -> Result<SnapshotInfo, String> {
        let info = Embedded::check_snapshot(snapshot)
            .map_err(|e| format!("{}: {e}", snapshot.display()))?;
        let dir = match target.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| {
                format!(
                    "storage.path: cannot create the folder {}: {e}",
                    dir.display()
                )
            })?;
        // Holding the target open (its lock) keeps a server from starting
        // on it until the new file is in place.
        let _held = match Database::builder().open(target) {
            Ok(db) => Some(db),
            Err(DatabaseError::DatabaseAlreadyOpen) => {
                return Err(format!(
                    "storage.path: {} is held by a running devicehub server: stop it first",
                    target.display()
                ))
            }
            // Missing or unreadable (a lost disk): it is replaced anyway.
            Err(_) => None,
        };
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "devicehub.redb".into());
        let temp = dir.join(format!(".{name}.restore.{}.tmp", random_suffix()));
        let replaced = (|| -> Result<(), String> {
            let cannot =
                |e: io::Error| format!("storage.path: cannot replace {}: {e}", target.display());
            let mut out = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temp)
                .map_err(cannot)?;
            let opened = info.older_layout.is_some() || info.indexes_omitted;
            (|| {
                io::copy(&mut File::open(snapshot)?, &mut out)?;
                out.flush()?;
                out.set_permissions(fs::Permissions::from_mode(0o600))?;
                // A copy that is opened next is synced by the durable commit
                // of its upgrade or index build (an fsync covers the whole
                // file); syncing it here too cost half a second a million
                // devices.
                if opened {
                    Ok(())
                } else {
                    out.sync_all()
                }
            })()
            .map_err(cannot)?;
            if opened {
                // Opening the copy upgrades it in place, or builds its
                // indexes from its devices, as a server's start would. A
                // device that cannot be read fails it: nothing is replaced.
                let opening = || {
                    Embedded::open(&temp)
                        .map_err(|e| format!("{}: damaged: {e}", snapshot.display()))
                };
                drop(write_back_while(&out, opening)?);
                // Closing the copy made a checkpoint: its log holds nothing
                // the file lacks.
                super::wal::remove_files(&temp);
            }
            drop(out);
            if info.older_layout.is_some() && !info.indexes_omitted {
                // An upgraded copy must then pass the full check. (Indexes
                // just built from the devices, as for a layout 4 snapshot
                // that left them out, agree with them by making.)
                Embedded::check_snapshot(&temp)
                    .map_err(|e| format!("{}: after the upgrade: {e}", snapshot.display()))?;
            }
            fs::rename(&temp, target).map_err(cannot)?;
            sync_dir(&dir).map_err(cannot)
        })();
        if let Err(e) = replaced {
            let _ = fs::remove_file(&temp);
            return Err(e);
        }
        Ok(info)
    }
}

/// Copies every devicehub table but the `DERIVED` ones; a table in the
/// source that neither list names stops the snapshot rather than being left
/// out. Marks the snapshot `INDEXES_OMITTED_KEY`. Returns the number of
/// devices.
///
/// Two threads share the work: one writes the snapshot while the other
/// reads the source and hands it rows in chunks (a bounded channel, so at
/// most `CHUNKS_IN_FLIGHT` chunks are held). Reading a million-device store
/// took a third of the time of copying it on one thread. Both run at the
/// lowest CPU priority, so that a snapshot takes the cores only while the
/// server's own threads leave them idle.
fn copy_all(
    source: &ReadTransaction,
    dest: &Database,
    file: &File,
    source_path: &Path,
) -> StoreResult<u64> {
    for table in source.list_tables()? {
        let named =
            COPIED.iter().any(|c| c.table_name() == table.name()) || is_derived(table.name());
        if !named {
            return Err(StoreError::Internal(format!(
                "backup: the table {:?} is not copied by snapshots",
                table.name()
            )));
        }
    }
    if source.list_multimap_tables()?.next().is_some() {
        return Err(StoreError::Internal(
            "backup: the database has a multimap table snapshots do not copy".into(),
        ));
    }
    // Each thread owns its end of the channel, so either one's failure ends
    // the other: it finds the channel closed.
    let (send, receive) = mpsc::sync_channel::<Chunk>(CHUNKS_IN_FLIGHT);
    std::thread::scope(|scope| {
        let reader = scope.spawn(move || -> StoreResult<()> {
            yield_to_requests();
            warm_page_cache(source_path, available_memory());
            for table in COPIED {
                table.read(source, &send)?;
            }
            Ok(())
        });
        let writer = scope.spawn(move || -> StoreResult<u64> {
            yield_to_requests();
            let mut batch = Batch::start(dest, file)?;
            let mut devices = 0;
            for table in COPIED {
                let rows = table.write(&mut batch, &receive)?;
                if table.table_name() == TableHandle::name(&DEVICES) {
                    devices = rows;
                }
            }
            let mut meta = batch.txn()?.open_table(META)?;
            meta.insert(INDEXES_OMITTED_KEY, 1)?;
            // The write-ahead log of the database copied is not the
            // snapshot's: opening the snapshot must not apply it.
            meta.remove(super::wal::GENERATION_KEY)?;
            meta.remove(super::wal::SEQUENCE_KEY)?;
            drop(meta);
            batch.finish()?;
            Ok(devices)
        });
        let written = writer.join().unwrap_or_else(panicked);
        let read = reader.join().unwrap_or_else(panicked);
        match (read, written) {
            // The reader's own error explains a writer that found the
            // channel closed early, and the other way round.
            (Err(read), Err(StoreError::Internal(m))) if m == READER_STOPPED => Err(read),
            (_, Err(written)) => Err(written),
            (read, Ok(devices)) => read.map(|()| devices),
        }
    })
}

const READER_STOPPED: &str = "backup: the snapshot reader stopped";

fn panicked<T>(_: Box<dyn std::any::Any + Send>) -> StoreResult<T> {
    Err(StoreError::Internal(
        "backup: a snapshot thread panicked".into(),
    ))
}

/// Lowers the calling thread's CPU priority to the lowest (nice 19); best
/// effort.
fn yield_to_requests() {
    // SAFETY: no pointers; on Linux, PRIO_PROCESS with 0 names the calling
    // thread alone.
    #[cfg(target_os = "linux")]
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 19);
    }
}

/// Runs `work` while another thread asks the kernel, every
/// `WRITE_BACK_EVERY`, to start writing `file`'s dirty pages to the disk
/// (`sync_file_range`, which does not wait for them). The disk is otherwise
/// idle while a restore builds the indexes, and the durable commit at its
/// end then has little left to flush: that commit's sync took 1.5 s of a
/// million-device restore when everything waited for it.
fn write_back_while<T>(file: &File, work: impl FnOnce() -> T) -> T {
    /// Stops the pacer when dropped: after `work`, or as a panic in it
    /// unwinds (the scope joins the pacer before it goes on).
    struct Stop<'a>(&'a std::sync::Mutex<bool>, &'a std::sync::Condvar);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            *self.0.lock().unwrap_or_else(|p| p.into_inner()) = true;
            self.1.notify_all();
        }
    }
    let done = std::sync::Mutex::new(false);
    let wake = std::sync::Condvar::new();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut finished = done.lock().unwrap_or_else(|p| p.into_inner());
            while !*finished {
                start_write_back(file);
                finished = wake
                    .wait_timeout(finished, WRITE_BACK_EVERY)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        });
        let _stop = Stop(&done, &wake);
        work()
    })
}

/// How often `write_back_while` starts the write-back.
const WRITE_BACK_EVERY: Duration = Duration::from_millis(250);

/// Starts writing `file`'s dirty pages to the disk, without waiting; best
/// effort (the durable commit after it syncs whatever is left).
fn start_write_back(file: &File) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a plain call on a descriptor `file` owns; no pointers.
        unsafe {
            libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = file;
}

/// Asks the kernel to read the database file into the page cache, from
/// start to end, when it fits in half of the memory the kernel reports
/// available, so that the copy finds its pages there. The copy reads in key
/// order, and the pages of a database that has taken writes for a while lie
/// scattered in the file: read from the disk one at a time, they made a
/// million-device snapshot take 10.9-16.9 s, against 1.2-2.7 s to read the
/// whole 2.3 GB file in order. Pages already cached cost next to nothing
/// (14 ms for that file). A file that does not fit is left alone, so that a
/// snapshot never pushes the working set out of a small box's memory. Best
/// effort: whether it was asked.
fn warm_page_cache(path: &Path, available: Option<u64>) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    let size = match (file.metadata(), available) {
        (Ok(meta), Some(available)) if meta.len() <= available / 2 => meta.len(),
        _ => return false,
    };
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // One window per call: the kernel reads at most a few megabytes
        // for each (8 MB here for a whole-file call), and blocks while its
        // queue is full, so the loop runs about as fast as the disk.
        let mut offset = 0u64;
        while offset < size {
            let (Ok(start), Ok(len)) = (
                libc::off_t::try_from(offset),
                libc::off_t::try_from(WARM_WINDOW_BYTES),
            ) else {
                break;
            };
            // SAFETY: a plain advice call on a descriptor `file` owns for
            // the whole loop; no pointers.
            unsafe {
                libc::posix_fadvise(file.as_raw_fd(), start, len, libc::POSIX_FADV_WILLNEED);
            }
            offset += WARM_WINDOW_BYTES;
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = size;
    true
}

/// Bytes asked for per call while warming the page cache.
const WARM_WINDOW_BYTES: u64 = 8 << 20;

/// `MemAvailable` from `/proc/meminfo`, in bytes.
fn available_memory() -> Option<u64> {
    let meminfo = fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line
        .trim_start_matches("MemAvailable:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

/// Rows handed from the reading thread to the writing one in each chunk.
const ROWS_PER_CHUNK: usize = 4_096;

/// Chunks on their way at once.
const CHUNKS_IN_FLIGHT: usize = 8;

/// Rows of one table as stored bytes: each row's key then its value, with
/// their lengths. `last` ends the table, and says whether the source has
/// it (an empty table is copied as an empty table, a missing one not at all).
#[derive(Default)]
struct Chunk {
    bytes: Vec<u8>,
    lengths: Vec<(usize, usize)>,
    last: Option<Exists>,
}

#[derive(Clone, Copy, PartialEq)]
enum Exists {
    Yes,
    No,
}

/// Every table a snapshot copies, in order.
const COPIED: [&dyn Copied; 8] = [
    &META,
    &DEVICES,
    &LAST_SEEN,
    &IDEMPOTENCY,
    &IDEMPOTENCY_EXPIRY,
    &EVENTS,
    &WEBHOOKS,
    &WEBHOOK_DELIVERIES,
];

/// The tables a snapshot leaves out: `indexes::rebuild` makes them from
/// `DEVICES` alone. They were half of the rows copied (a million-device
/// snapshot took 6.9 s with them).
const DERIVED: [&dyn TableHandle; 5] = [
    &KEY_INDEX,
    &STATUS_INDEX,
    &LOCATION_INDEX,
    &NAME_INDEX,
    &TENANT_COUNTS,
];

/// Whether `name` is one of the `DERIVED` tables.
fn is_derived(name: &str) -> bool {
    DERIVED.iter().any(|table| table.name() == name)
}

/// One table's two halves of a copy, whatever its key and value types.
trait Copied: Sync {
    fn table_name(&self) -> &str;
    /// Sends the table's rows, then a `last` chunk (also for no table).
    fn read(&self, source: &ReadTransaction, to: &SyncSender<Chunk>) -> StoreResult<()>;
    /// Inserts the rows `read` sends until its `last` chunk; how many.
    fn write(&self, batch: &mut Batch, from: &Receiver<Chunk>) -> StoreResult<u64>;
}

impl<K: Key + Sync + 'static, V: Value + Sync + 'static> Copied for TableDefinition<'static, K, V> {
    fn table_name(&self) -> &str {
        TableHandle::name(self)
    }

    fn read(&self, source: &ReadTransaction, to: &SyncSender<Chunk>) -> StoreResult<()> {
        let closed = || StoreError::Internal("backup: the snapshot writer stopped".into());
        let from = match source.open_table(*self) {
            Ok(table) => Some(table),
            Err(TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(e.into()),
        };
        let mut chunk = Chunk::default();
        let exists = if from.is_some() {
            Exists::Yes
        } else {
            Exists::No
        };
        if let Some(from) = from {
            for entry in from.iter()? {
                let (k, v) = entry?;
                let (k, v) = (k.value(), v.value());
                let (k, v) = (K::as_bytes(&k), V::as_bytes(&v));
                let (k, v) = (k.as_ref(), v.as_ref());
                chunk.bytes.extend_from_slice(k);
                chunk.bytes.extend_from_slice(v);
                chunk.lengths.push((k.len(), v.len()));
                if chunk.lengths.len() == ROWS_PER_CHUNK {
                    to.send(std::mem::take(&mut chunk)).map_err(|_| closed())?;
                }
            }
        }
        chunk.last = Some(exists);
        to.send(chunk).map_err(|_| closed())
    }

    fn write(&self, batch: &mut Batch, from: &Receiver<Chunk>) -> StoreResult<u64> {
        let mut copied = 0;
        loop {
            let chunk = from
                .recv()
                .map_err(|_| StoreError::Internal(READER_STOPPED.into()))?;
            let mut at = 0;
            let mut rows = chunk.lengths.iter().peekable();
            while rows.peek().is_some() {
                let mut written = batch.rows;
                {
                    let mut to = batch.txn()?.open_table(*self)?;
                    for &(k_len, v_len) in rows.by_ref() {
                        let key = &chunk.bytes[at..at + k_len];
                        let value = &chunk.bytes[at + k_len..at + k_len + v_len];
                        at += k_len + v_len;
                        to.insert(K::from_bytes(key), V::from_bytes(value))?;
                        written += 1;
                        if written.is_multiple_of(ROWS_PER_COMMIT) {
                            break;
                        }
                    }
                }
                copied += written - batch.rows;
                batch.rows = written;
                if written.is_multiple_of(ROWS_PER_COMMIT) {
                    batch.commit_step()?;
                }
            }
            if let Some(exists) = chunk.last {
                if exists == Exists::Yes {
                    batch.txn()?.open_table(*self)?;
                }
                return Ok(copied);
            }
        }
    }
}

/// The destination's write transaction, committed every `ROWS_PER_COMMIT`
/// rows without durability but followed by a sync of the file, and once
/// more, durably, at the end.
struct Batch<'a> {
    db: &'a Database,
    file: &'a File,
    txn: Option<WriteTransaction>,
    rows: u64,
}

impl<'a> Batch<'a> {
    fn start(db: &'a Database, file: &'a File) -> StoreResult<Batch<'a>> {
        Ok(Batch {
            db,
            file,
            txn: Some(Batch::begin(db)?),
            rows: 0,
        })
    }

    fn begin(db: &Database) -> StoreResult<WriteTransaction> {
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::None)?;
        Ok(txn)
    }

    fn txn(&self) -> StoreResult<&WriteTransaction> {
        self.txn
            .as_ref()
            .ok_or_else(|| StoreError::Internal("backup: no open destination transaction".into()))
    }

    /// Commits what is written so far (not durably), syncs the file, and
    /// begins the next transaction.
    fn commit_step(&mut self) -> StoreResult<()> {
        if let Some(txn) = self.txn.take() {
            txn.commit()?;
        }
        self.file.sync_data().map_err(|e| {
            StoreError::Unavailable(format!("backup: cannot sync the snapshot: {e}"))
        })?;
        self.txn = Some(Batch::begin(self.db)?);
        Ok(())
    }

    fn finish(mut self) -> StoreResult<()> {
        let mut txn = self.txn.take().ok_or_else(|| {
            StoreError::Internal("backup: no open destination transaction".into())
        })?;
        txn.set_durability(Durability::Immediate)?;
        txn.commit()?;
        Ok(())
    }
}

/// Removes the oldest snapshots in `dir` so that the newest `keep` remain.
/// Only files named like snapshots are touched.
pub fn prune(dir: &Path, keep: usize) -> io::Result<Vec<PathBuf>> {
    let mut found: BTreeMap<String, PathBuf> = BTreeMap::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_snapshot_name(&name) && entry.file_type()?.is_file() {
            found.insert(name, entry.path());
        }
    }
    let excess = found.len().saturating_sub(keep.max(1));
    let mut removed = Vec::new();
    for (_, path) in found.into_iter().take(excess) {
        fs::remove_file(&path)?;
        removed.push(path);
    }
    if !removed.is_empty() {
        sync_dir(dir)?;
    }
    Ok(removed)
}

/// `devicehub-yyyymmddThhmmssZ.redb`.
pub fn is_snapshot_name(name: &str) -> bool {
    let Some(stamp) = name
        .strip_prefix(PREFIX)
        .and_then(|rest| rest.strip_suffix(SUFFIX))
    else {
        return false;
    };
    let b = stamp.as_bytes();
    b.len() == 16
        && b[8] == b'T'
        && b[15] == b'Z'
        && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit)
}

fn random_suffix() -> String {
    let mut bytes = [0u8; 8];
    let _ = getrandom::fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::device_key::NewDeviceKey;
    use crate::devices::{Millis, NewDevice};
    use serde_json::json;

    fn names_in_tables_rs() -> Vec<String> {
        let source = include_str!("tables.rs");
        source
            .split("TableDefinition::new(\"")
            .skip(1)
            .map(|rest| rest.split('"').next().unwrap().to_string())
            .collect()
    }

    #[test]
    fn every_table_in_tables_rs_is_copied_or_built_from_the_devices() {
        let names = names_in_tables_rs();
        assert!(names.len() >= 9, "{names:?}");
        let copied: Vec<&str> = COPIED.iter().map(|table| table.table_name()).collect();
        let derived: Vec<&str> = DERIVED.iter().map(|table| table.name()).collect();
        for name in &names {
            let (c, d) = (
                copied.contains(&name.as_str()),
                derived.contains(&name.as_str()),
            );
            assert!(c != d, "{name}: copied {c}, built {d}");
        }
        assert_eq!(names.len(), copied.len() + derived.len());
    }

    #[test]
    fn the_page_cache_is_warmed_only_for_a_file_that_fits_in_half_the_free_memory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        fs::write(&path, vec![7u8; 3 * (WARM_WINDOW_BYTES as usize) + 5]).unwrap();
        let size = fs::metadata(&path).unwrap().len();
        assert!(warm_page_cache(&path, Some(2 * size)));
        assert!(!warm_page_cache(&path, Some(2 * size - 1)));
        assert!(!warm_page_cache(&path, None));
        assert!(!warm_page_cache(
            &dir.path().join("missing"),
            Some(u64::MAX)
        ));
        #[cfg(target_os = "linux")]
        assert!(available_memory().is_some_and(|bytes| bytes > 0));
    }

    #[test]
    fn work_run_under_write_back_returns_its_result_and_the_pacer_stops() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("copy");
        let file = File::create(&path).unwrap();
        // The scope joins the pacer: a pacer that never stopped would hang.
        let written = write_back_while(&file, || {
            (&file).write_all(&[1u8; 1 << 20])?;
            std::thread::sleep(WRITE_BACK_EVERY * 2);
            io::Result::Ok(7)
        });
        assert_eq!(written.unwrap(), 7);
        assert_eq!(fs::read(&path).unwrap(), vec![1u8; 1 << 20]);
        // A panic in the work reaches the caller; the pacer stops all the same.
        let panicked = std::panic::catch_unwind(|| write_back_while(&file, || panic!("work")));
        assert!(panicked.is_err());
    }

    #[test]
    fn snapshot_names_are_recognised() {
        assert!(is_snapshot_name("devicehub-20261128T184800Z.redb"));
        for bad in [
            "devicehub-20261128T184800Z.redb.tmp",
            ".devicehub-20261128T184800Z.redb.ab.tmp",
            "devicehub-2026112xT184800Z.redb",
            "devicehub.redb",
            "other-20261128T184800Z.redb",
        ] {
            assert!(!is_snapshot_name(bad), "{bad}");
        }
    }

    fn table_lengths(path: &Path) -> BTreeMap<String, u64> {
        let db = ReadOnlyDatabase::open(path).unwrap();
        let txn = db.begin_read().unwrap();
        txn.list_tables()
            .unwrap()
            .map(|h| {
                let len = txn.open_untyped_table(h.clone()).unwrap().len().unwrap();
                (h.name().to_string(), len)
            })
            .collect()
    }

    /// A store of 5 devices in two tenants (two statuses, a rotated key in
    /// its grace, idempotency records): every kind of row a snapshot copies
    /// or builds.
    async fn five_devices(db_path: &Path) -> Embedded {
        let store = Embedded::open(db_path).unwrap();
        for i in 0..5u8 {
            let key = NewDeviceKey::generate().unwrap();
            let new = NewDevice::parse(
                json!({"name": format!("D{i}"), "locationIds": ["l1", format!("l{i}")]})
                    .as_object()
                    .unwrap(),
            )
            .unwrap();
            let remember = crate::store::Remember {
                id: [i; 32],
                fingerprint: [0; 32],
                seal: Box::new(|_, _| Ok(b"sealed".to_vec())),
            };
            let tenant = if i < 3 { "t" } else { "u" };
            let device = store
                .create(tenant, new, key.hash, Millis(1_000), None, Some(remember))
                .await
                .unwrap();
            match i {
                1 => {
                    store
                        .revoke(tenant, &device.id, Millis(2_000))
                        .await
                        .unwrap();
                }
                2 => {
                    let rotated = NewDeviceKey::generate().unwrap();
                    store
                        .rotate_key(tenant, &device.id, rotated.hash, 3_600, Millis(2_000), None)
                        .await
                        .unwrap();
                }
                _ => {}
            }
        }
        store
    }

    #[actix_web::test]
    async fn a_snapshot_holds_every_copied_table_row_for_row_and_restores_whole() {
        let dir = tempfile::tempdir().unwrap();
        let db_path = dir.path().join("db/devicehub.redb");
        let store = five_devices(&db_path).await;
        let snap_dir = dir.path().join("backups");
        let snapshot = store.snapshot_report(&snap_dir).unwrap();
        assert_eq!(snapshot.devices, 5);
        let mode = fs::metadata(&snapshot.path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let name = snapshot.path.file_name().unwrap().to_str().unwrap();
        assert!(is_snapshot_name(name), "{name}");
        // Nothing but the snapshot is left in the folder.
        assert_eq!(fs::read_dir(&snap_dir).unwrap().count(), 1);
        let owners = store.key_index_entries().unwrap();
        assert_eq!(owners.len(), 6, "five keys and one in its grace");
        drop(store);
        let source = table_lengths(&db_path);
        let copy = table_lengths(&snapshot.path);
        assert!(source.len() >= 13, "{source:?}");
        assert!(source["idempotency"] == 5 && source["devices"] == 5);
        for (table, rows) in &source {
            let built = is_derived(table);
            match table.as_str() {
                // The mark that the indexes are left out, and not the
                // position of the source's write-ahead log.
                "meta" => assert_eq!(copy[table], rows - 2 + 1),
                _ if built => assert!(!copy.contains_key(table), "{table} copied"),
                _ => assert_eq!(copy[table], *rows, "{table}"),
            }
        }
        let info = Embedded::check_snapshot(&snapshot.path).unwrap();
        assert_eq!(info.devices, 5);
        assert!(info.indexes_omitted && info.older_layout.is_none());

        // Restored: every table as it was, row for row, and the indexes
        // agree with the devices.
        let target = dir.path().join("restored/devicehub.redb");
        let before = fs::read(&snapshot.path).unwrap();
        Embedded::restore(&snapshot.path, &target).unwrap();
        assert_eq!(
            fs::read(&snapshot.path).unwrap(),
            before,
            "snapshot untouched"
        );
        assert_eq!(table_lengths(&target), source);
        // The copy's write-ahead log went with its checkpoint at close.
        let left: Vec<_> = fs::read_dir(target.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("devicehub.redb")]);
        let restored = Embedded::open(&target).unwrap();
        restored.verify_indexes().unwrap();
        let mut restored_owners = restored.key_index_entries().unwrap();
        let mut owners = owners;
        restored_owners.sort();
        owners.sort();
        assert_eq!(restored_owners, owners);
        let stats = restored.all_stats().unwrap();
        assert_eq!((stats.active, stats.revoked), (4, 1));
    }

    #[actix_web::test]
    async fn a_snapshot_with_an_unreadable_device_is_refused_and_nothing_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let db_path = dir.path().join("db/devicehub.redb");
        let store = five_devices(&db_path).await;
        let snapshot = store.snapshot(&dir.path().join("backups")).unwrap();
        drop(store);
        {
            let db = Database::open(&snapshot).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut devices = txn.open_table(DEVICES).unwrap();
                let key = {
                    let (first, _) = devices.first().unwrap().unwrap();
                    let (tenant, id) = first.value();
                    (tenant.to_string(), id.to_string())
                };
                devices
                    .insert((key.0.as_str(), key.1.as_str()), b"{not json".as_slice())
                    .unwrap();
            }
            txn.commit().unwrap();
        }
        let target = dir.path().join("data/devicehub.redb");
        fs::create_dir_all(target.parent().unwrap()).unwrap();
        fs::copy(&db_path, &target).unwrap();
        let held = table_lengths(&target);
        let err = Embedded::restore(&snapshot, &target).unwrap_err();
        assert!(err.contains("damaged"), "{err}");
        assert!(err.contains(&snapshot.display().to_string()), "{err}");
        let left: Vec<_> = fs::read_dir(target.parent().unwrap()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file is left");
        // The database is the one that was there, every device readable.
        assert_eq!(table_lengths(&target), held);
        let kept = Embedded::open(&target).unwrap();
        kept.verify_indexes().unwrap();
        assert_eq!(kept.all_stats().unwrap().total(), 5);

        // A snapshot that says it leaves the indexes out but holds one.
        let other = dir.path().join("other.redb");
        fs::copy(&db_path, &other).unwrap();
        {
            let db = Database::open(&other).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META)
                .unwrap()
                .insert(INDEXES_OMITTED_KEY, 1)
                .unwrap();
            txn.commit().unwrap();
        }
        let err = Embedded::check_snapshot(&other).unwrap_err();
        assert!(err.contains("holds the table"), "{err}");
    }

    #[test]
    fn prune_keeps_the_newest_and_ignores_other_files() {
        let dir = tempfile::tempdir().unwrap();
        for stamp in [
            "20260101T000000Z",
            "20260102T000000Z",
            "20251231T235959Z",
            "20260103T000000Z",
        ] {
            fs::write(dir.path().join(format!("devicehub-{stamp}.redb")), b"x").unwrap();
        }
        fs::write(dir.path().join("notes.txt"), b"x").unwrap();
        fs::write(
            dir.path().join(".devicehub-20200101T000000Z.redb.1.tmp"),
            b"x",
        )
        .unwrap();
        let removed = prune(dir.path(), 2).unwrap();
        assert_eq!(removed.len(), 2);
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                ".devicehub-20200101T000000Z.redb.1.tmp",
                "devicehub-20260102T000000Z.redb",
                "devicehub-20260103T000000Z.redb",
                "notes.txt"
            ]
        );
    }

    /// A snapshot taken before an upgrade (here the first release's layout,
    /// `tests/fixtures/v1`) restores: its copy is upgraded, checked, and
    /// then replaces the database, and the snapshot itself is untouched.
    #[test]
    fn a_snapshot_of_an_older_layout_is_upgraded_as_it_is_restored() {
        let fixture =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1/devicehub.redb");
        let dir = tempfile::tempdir().unwrap();
        let snapshot = dir.path().join("old-snapshot.redb");
        fs::copy(&fixture, &snapshot).unwrap();
        let before = fs::read(&snapshot).unwrap();
        let checked = Embedded::check_snapshot(&snapshot).unwrap();
        assert_eq!(checked.older_layout, Some(1));

        let target = dir.path().join("data/devicehub.redb");
        let info = Embedded::restore(&snapshot, &target).unwrap();
        assert_eq!(info.devices, checked.devices);
        assert!(info.devices > 0);
        assert_eq!(
            fs::read(&snapshot).unwrap(),
            before,
            "the snapshot is left as it was"
        );
        let now_current = Embedded::check_snapshot(&target).unwrap();
        assert_eq!(
            now_current.older_layout, None,
            "restored at this build's layout"
        );
        let store = Embedded::open(&target).unwrap();
        store.verify_indexes().unwrap();
        let owners = store.key_index_entries().unwrap();
        assert!(!owners.is_empty());
        for (tenant, id, _) in owners {
            assert_eq!(store.get(&tenant, &id).unwrap().id, id);
        }
    }

    /// A snapshot taken by a layout 4 build: indexes left out, and device
    /// records as JSON. It restores, upgraded, and every record still reads.
    #[actix_web::test]
    async fn a_layout_4_snapshot_without_its_indexes_restores_upgraded() {
        let dir = tempfile::tempdir().unwrap();
        let db_path = dir.path().join("db/devicehub.redb");
        let store = five_devices(&db_path).await;
        let expected = store.list("t", &Default::default()).unwrap().devices;
        let snapshot = store.snapshot_report(&dir.path().join("backups")).unwrap();
        drop(store);
        {
            // What a layout 4 build wrote: the same rows, records as JSON.
            let db = Database::open(&snapshot.path).unwrap();
            let txn = db.begin_write().unwrap();
            assert_eq!(crate::store::record::as_layout_4(&txn).unwrap(), 5);
            txn.commit().unwrap();
        }
        let checked = Embedded::check_snapshot(&snapshot.path).unwrap();
        assert_eq!(checked.older_layout, Some(4));
        assert!(checked.indexes_omitted);

        let target = dir.path().join("restored/devicehub.redb");
        Embedded::restore(&snapshot.path, &target).unwrap();
        let now = Embedded::check_snapshot(&target).unwrap();
        assert_eq!(now.older_layout, None, "restored at this build's layout");
        let restored = Embedded::open(&target).unwrap();
        restored.verify_indexes().unwrap();
        let listed = restored.list("t", &Default::default()).unwrap().devices;
        assert_eq!(listed.len(), 3);
        assert_eq!(listed, expected);
        assert_eq!(restored.all_stats().unwrap().revoked, 1);
    }

    #[test]
    fn a_file_that_is_not_a_snapshot_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.redb");
        fs::write(&junk, vec![7u8; 8192]).unwrap();
        let err = Embedded::check_snapshot(&junk).unwrap_err();
        assert!(err.contains("not a devicehub snapshot"), "{err}");
        // A redb file without devicehub's layout version.
        let other = dir.path().join("other.redb");
        {
            let db = Database::create(&other).unwrap();
            let txn = db.begin_write().unwrap();
            let def: TableDefinition<&str, u64> = TableDefinition::new("x");
            txn.open_table(def).unwrap().insert("a", 1).unwrap();
            txn.commit().unwrap();
        }
        let err = Embedded::check_snapshot(&other).unwrap_err();
        assert!(err.contains("no layout version"), "{err}");
    }
}
