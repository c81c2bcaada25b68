//! The write-ahead log: what makes a batch durable between checkpoints.
//!
//! A durable redb commit writes every page a batch touched (a leaf of
//! `devices`, of `name_index`, of `events`, and their branch pages: about
//! 200 KB a batch, `docs/PERFORMANCE.md`) and syncs them. Most batches
//! instead:
//!
//! 1. write their changes to the log, as the bytes of each key and value
//!    they inserted or removed (a few KB), at the end of the active log
//!    file, and ask the sync thread for its `fdatasync` (`file.rs`);
//! 2. commit to redb with `Durability::None`: redb keeps the pages in
//!    memory, and a later batch that rewrites the same page rewrites it
//!    there, not on disk;
//! 3. are answered once the log's sync is done, like any commit.
//!
//! A **checkpoint** is a durable redb commit: it writes the pages the
//! batches since the last one left in memory, and records in `meta` the log's
//! generation and the sequence number of the last batch it holds. It comes
//! once a second while writes go on, when a record would not fit in the log
//! file, for a write the log does not carry (webhooks, housekeeping: they open
//! tables of their own), when the writer goes idle and when the store closes.
//! A checkpoint's batch is logged too (when the record fits), so its answers
//! wait only for the log's sync: the database file's sync runs on a thread
//! of its own (`file.rs`) and holds up only writes to the file and the
//! answers of commits the log does not hold.
//!
//! The log is two files beside the database (`<file>.wal0`, `<file>.wal1`).
//! After each checkpoint the next records go to the other file, from its
//! start; it is reused only once the checkpoint before is on disk, so a file
//! overwritten never holds a batch the database file lacks.
//!
//! **Recovery** (`open`, at every open of the file): the records of the
//! generation in `meta` with a sequence number after the one there are
//! applied in order, from the one after it for as long as they follow one
//! another, in one durable commit; the same commit starts a new random
//! generation, so records left from before can never be applied again.
//! Applying a record twice gives the same result as once (each is a list
//! of absolute inserts and removes). A record torn by a crash fails its
//! checksum, and the chain ends before it: it was never answered.
//!
//! Each record starts on a 4 KiB boundary, so a record's write never
//! rewrites the page of one already synced.

use std::borrow::Borrow;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Deref;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::{
    AccessGuard, Database, Durability, Key, ReadableDatabase, Table, TableDefinition, TableError,
    TableHandle, Value, WriteTransaction,
};

use super::file::Durable;
use super::tables::{
    DEVICES, EVENTS, IDEMPOTENCY, IDEMPOTENCY_EXPIRY, KEY_INDEX, LAST_SEEN, LOCATION_INDEX, META,
    NAME_INDEX, SCHEMA_VERSION, SCHEMA_VERSION_KEY, STATUS_INDEX, TENANT_COUNTS,
};
use super::{StoreError, StoreResult};

/// A log file is not written past this size: a record that would end
/// after it makes its batch a checkpoint instead.
pub(super) const FILE_SIZE: u64 = 16 << 20;

/// While writes go on, a checkpoint comes at least this often.
pub(super) const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// `meta` keys: the log's generation, and the last batch the file holds.
pub(super) const GENERATION_KEY: &str = "wal_generation";
pub(super) const SEQUENCE_KEY: &str = "wal_sequence";

const PAGE: u64 = 4096;
const MAGIC: [u8; 4] = *b"DHW1";
/// Magic, generation, sequence number, payload length, CRC-32.
const HEADER: usize = 4 + 8 + 8 + 4 + 4;
/// A value length that marks a remove.
const REMOVED: u32 = u32::MAX;

/// The tables whose writes a record can carry, each with its id in a
/// record. A write to any other table makes its batch a checkpoint.
macro_rules! logged_tables {
    ($($id:literal => $def:expr),* $(,)?) => {
        fn table_id(name: &str) -> Option<u8> {
            $(if name == $def.name() {
                return Some($id);
            })*
            None
        }

        fn apply(txn: &WriteTransaction, id: u8, key: &[u8], value: Option<&[u8]>) -> StoreResult<()> {
            match id {
                $($id => put(txn, $def, key, value),)*
                other => Err(corrupt(format!("unknown table {other}"))),
            }
        }
    };
}

logged_tables! {
    0 => DEVICES,
    1 => LAST_SEEN,
    2 => NAME_INDEX,
    3 => EVENTS,
    4 => STATUS_INDEX,
    5 => LOCATION_INDEX,
    6 => TENANT_COUNTS,
    7 => KEY_INDEX,
    8 => IDEMPOTENCY,
    9 => IDEMPOTENCY_EXPIRY,
}

fn put<K: Key + 'static, V: Value + 'static>(
    txn: &WriteTransaction,
    def: TableDefinition<K, V>,
    key: &[u8],
    value: Option<&[u8]>,
) -> StoreResult<()> {
    let mut table = txn.open_table(def)?;
    match value {
        Some(value) => table.insert(K::from_bytes(key), V::from_bytes(value))?,
        None => table.remove(K::from_bytes(key))?,
    };
    Ok(())
}

fn corrupt(what: String) -> StoreError {
    StoreError::Internal(format!("write-ahead log: {what}"))
}

/// A batch's write transaction, which records every insert and remove made
/// through it. It hands out no `&WriteTransaction`, except through `raw`,
/// which makes the batch a checkpoint: a write cannot bypass the log.
pub(super) struct LogTxn<'t> {
    txn: &'t WriteTransaction,
    ops: RefCell<Vec<u8>>,
    unlogged: Cell<bool>,
}

impl<'t> LogTxn<'t> {
    pub(super) fn new(txn: &'t WriteTransaction) -> LogTxn<'t> {
        LogTxn {
            txn,
            ops: RefCell::new(Vec::new()),
            unlogged: Cell::new(false),
        }
    }

    /// Opens a table whose writes are recorded.
    pub(super) fn open_table<K: Key + 'static, V: Value + 'static>(
        &self,
        def: TableDefinition<K, V>,
    ) -> Result<Logged<'_, 't, K, V>, TableError> {
        let table = self.txn.open_table(def)?;
        let id = table_id(def.name()).unwrap_or_else(|| {
            self.unlogged.set(true);
            u8::MAX
        });
        Ok(Logged {
            table,
            id,
            ops: &self.ops,
        })
    }

    /// The transaction itself, for a write the log does not carry: the
    /// batch is committed as a checkpoint.
    pub(super) fn raw(&self) -> &'t WriteTransaction {
        self.unlogged.set(true);
        self.txn
    }

    /// The recorded writes, and whether the log can carry them.
    pub(super) fn finish(self) -> (Vec<u8>, bool) {
        (self.ops.into_inner(), !self.unlogged.get())
    }
}

/// A table whose inserts and removes go into the batch's record. Reads go
/// to the table itself.
pub(super) struct Logged<'a, 't, K: Key + 'static, V: Value + 'static> {
    table: Table<'t, K, V>,
    id: u8,
    ops: &'a RefCell<Vec<u8>>,
}

impl<K: Key + 'static, V: Value + 'static> Logged<'_, '_, K, V> {
    pub(super) fn insert<'k, 'v>(
        &mut self,
        key: impl Borrow<K::SelfType<'k>>,
        value: impl Borrow<V::SelfType<'v>>,
    ) -> Result<Option<AccessGuard<'_, V>>, redb::StorageError> {
        self.note(
            K::as_bytes(key.borrow()).as_ref(),
            Some(V::as_bytes(value.borrow()).as_ref()),
        );
        self.table.insert(key, value)
    }

    pub(super) fn remove<'k>(
        &mut self,
        key: impl Borrow<K::SelfType<'k>>,
    ) -> Result<Option<AccessGuard<'_, V>>, redb::StorageError> {
        self.note(K::as_bytes(key.borrow()).as_ref(), None);
        self.table.remove(key)
    }

    /// Adds a write to the batch's record.
    fn note(&self, key: &[u8], value: Option<&[u8]>) {
        record_op(&mut self.ops.borrow_mut(), self.id, key, value);
    }
}

impl<'t, K: Key + 'static, V: Value + 'static> Deref for Logged<'_, 't, K, V> {
    type Target = Table<'t, K, V>;

    fn deref(&self) -> &Table<'t, K, V> {
        &self.table
    }
}

/// One write: the table's id, the key's length and bytes, then the value's
/// length and bytes (or `REMOVED`).
fn record_op(ops: &mut Vec<u8>, id: u8, key: &[u8], value: Option<&[u8]>) {
    ops.push(id);
    ops.extend_from_slice(&(key.len() as u32).to_le_bytes());
    ops.extend_from_slice(key);
    match value {
        Some(value) => {
            ops.extend_from_slice(&(value.len() as u32).to_le_bytes());
            ops.extend_from_slice(value);
        }
        None => ops.extend_from_slice(&REMOVED.to_le_bytes()),
    }
}

/// Applies a record's writes, in the order they were made.
fn apply_ops(txn: &WriteTransaction, mut ops: &[u8]) -> StoreResult<()> {
    fn take<'a>(ops: &mut &'a [u8], n: usize) -> StoreResult<&'a [u8]> {
        if ops.len() < n {
            return Err(corrupt("a record ends inside a write".into()));
        }
        let (head, rest) = ops.split_at(n);
        *ops = rest;
        Ok(head)
    }
    fn length(ops: &mut &[u8]) -> StoreResult<u32> {
        let bytes = take(ops, 4)?;
        Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }
    while !ops.is_empty() {
        let id = take(&mut ops, 1)?[0];
        let key_len = length(&mut ops)? as usize;
        let key = take(&mut ops, key_len)?;
        let value = match length(&mut ops)? {
            REMOVED => None,
            n => Some(take(&mut ops, n as usize)?),
        };
        apply(txn, id, key, value)?;
    }
    Ok(())
}

/// A record: header, then the writes, padded to the next 4 KiB.
fn encode(out: &mut Vec<u8>, generation: u64, seq: u64, ops: &[u8]) {
    out.clear();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&generation.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&(ops.len() as u32).to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&out[4..]);
    crc.update(ops);
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(ops);
    let padded = (out.len() as u64).div_ceil(PAGE) * PAGE;
    out.resize(padded as usize, 0);
}

/// The records of `generation` after `after` in one log file, by sequence
/// number. Reading ends at the first page that does not start a whole,
/// intact record.
fn scan(file: &File, generation: u64, after: u64, into: &mut BTreeMap<u64, Vec<u8>>) {
    let mut offset = 0u64;
    let mut header = [0u8; HEADER];
    while offset + HEADER as u64 <= FILE_SIZE {
        if file.read_exact_at(&mut header, offset).is_err() || header[..4] != MAGIC {
            return;
        }
        let word = |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().unwrap_or([0; 8]));
        let (record_generation, seq) = (word(4), word(12));
        let len = u32::from_le_bytes(header[20..24].try_into().unwrap_or([0; 4])) as u64;
        let crc = u32::from_le_bytes(header[24..28].try_into().unwrap_or([0; 4]));
        if offset + HEADER as u64 + len > FILE_SIZE {
            return;
        }
        let mut ops = vec![0u8; len as usize];
        if file
            .read_exact_at(&mut ops, offset + HEADER as u64)
            .is_err()
        {
            return;
        }
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&header[4..24]);
        hasher.update(&ops);
        if hasher.finalize() != crc {
            return;
        }
        if record_generation == generation && seq > after {
            into.insert(seq, ops);
        }
        offset += (HEADER as u64 + len).div_ceil(PAGE) * PAGE;
    }
}

/// The log files of the database at `path`.
pub(super) fn paths(path: &Path) -> [PathBuf; 2] {
    let with = |suffix: &str| {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    [with(".wal0"), with(".wal1")]
}

/// The log generation the file's `meta` names (none: no log applies to
/// it), and the last batch the file holds. A file of a newer layout is
/// refused: its log may not be this build's.
fn position(db: &impl ReadableDatabase) -> StoreResult<(Option<u64>, u64)> {
    let txn = db.begin_read()?;
    let meta = match txn.open_table(META) {
        Ok(meta) => meta,
        Err(TableError::TableDoesNotExist(_)) => return Ok((None, 0)),
        Err(e) => return Err(e.into()),
    };
    let value = |key: &str| -> StoreResult<Option<u64>> { Ok(meta.get(key)?.map(|v| v.value())) };
    if let Some(version) = value(SCHEMA_VERSION_KEY)?.filter(|v| *v > SCHEMA_VERSION) {
        return Err(StoreError::Unavailable(format!(
            "layout version {version} is newer than this build's {SCHEMA_VERSION}"
        )));
    }
    Ok((value(GENERATION_KEY)?, value(SEQUENCE_KEY)?.unwrap_or(0)))
}

/// Removes the log files of a database file that was closed (its last
/// checkpoint holds everything they do).
pub(super) fn remove_files(path: &Path) {
    for file in paths(path) {
        let _ = std::fs::remove_file(file);
    }
}

/// Whether the log of the database at `path` holds batches that `db` (the
/// file, opened read-only) lacks: a server stopped without its last
/// checkpoint.
pub(super) fn pending(path: &Path, db: &impl ReadableDatabase) -> StoreResult<bool> {
    let (generation, after) = position(db)?;
    let Some(generation) = generation else {
        return Ok(false);
    };
    let mut records = BTreeMap::new();
    for path in paths(path) {
        if let Ok(file) = File::open(path) {
            scan(&file, generation, after, &mut records);
        }
    }
    Ok(records.contains_key(&(after + 1)))
}

fn open_file(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// The writer's side of the log.
pub(super) struct Wal {
    /// How many batches opening the log applied to the file.
    pub(super) replayed: u64,
    files: [Arc<File>; 2],
    /// The file records go to, and where the next one starts.
    active: usize,
    offset: u64,
    generation: u64,
    /// The last sequence number given to a batch, logged or checkpoint.
    seq: u64,
    /// The sequence number of the last checkpoint.
    checkpointed: u64,
    last_checkpoint: Instant,
    /// The last checkpoint's sync of the database file (a ticket of
    /// `Durable::db_requested`): the other file is reused only once it is done.
    checkpoint_ticket: u64,
    buf: Vec<u8>,
}

/// A record written and not yet counted: its batch's commit comes next.
pub(super) struct Pending {
    len: u64,
}

impl Wal {
    /// Whether the next batch must be a checkpoint, whatever it holds.
    pub(super) fn checkpoint_due(&self) -> bool {
        self.last_checkpoint.elapsed() >= CHECKPOINT_EVERY
    }

    /// Whether batches were logged since the last checkpoint.
    pub(super) fn behind(&self) -> bool {
        self.seq > self.checkpointed
    }

    /// Writes the next batch's record and asks for its sync. `None`: it
    /// does not fit in the active file, and the batch must be a checkpoint.
    /// A failed write leaves the offset where it was, so the next record
    /// overwrites what it left.
    pub(super) fn append(&mut self, ops: &[u8], durable: &Durable) -> StoreResult<Option<Pending>> {
        encode(&mut self.buf, self.generation, self.seq + 1, ops);
        let len = self.buf.len() as u64;
        if self.offset + len > FILE_SIZE {
            return Ok(None);
        }
        self.files[self.active]
            .write_all_at(&self.buf, self.offset)
            .map_err(|e| {
                log::error!("storage: writing the write-ahead log failed: {e}");
                StoreError::Unavailable("the write-ahead log could not be written".into())
            })?;
        if let Err(e) = durable.log_written(self.active) {
            self.spoil();
            return Err(StoreError::Unavailable(e.to_string()));
        }
        Ok(Some(Pending { len }))
    }

    /// After the commit of the batch whose record `append` wrote.
    pub(super) fn appended(&mut self, pending: Pending) {
        self.seq += 1;
        self.offset += pending.len;
    }

    /// After the commit of a checkpoint whose batch is not in the log.
    pub(super) fn unlogged(&mut self) {
        self.seq += 1;
    }

    /// After a failed commit of the batch whose record `append` wrote: its
    /// callers get the error, so the record is spoilt (its magic zeroed)
    /// and never applied, even by a reopen right after. The next record
    /// takes its place.
    pub(super) fn discard(&mut self, _pending: Pending) {
        self.spoil();
    }

    /// Zeroes the magic of the record at the offset: reading stops there.
    fn spoil(&self) {
        if let Err(e) = self.files[self.active].write_all_at(&[0u8; 4], self.offset) {
            log::error!("storage: spoiling a record of the write-ahead log failed: {e}");
        }
    }

    /// Makes `txn` a checkpoint: `meta` records that the file holds every
    /// batch up to this one.
    pub(super) fn mark_checkpoint(&self, txn: &WriteTransaction) -> StoreResult<()> {
        let mut meta = txn.open_table(META)?;
        meta.insert(GENERATION_KEY, self.generation)?;
        meta.insert(SEQUENCE_KEY, self.seq + 1)?;
        Ok(())
    }

    /// After a checkpoint's commit (and `appended` or `unlogged`): the next
    /// records go to the other file, once the checkpoint before this one
    /// (which holds everything in that file) is on disk.
    pub(super) fn checkpointed(&mut self, durable: &Durable) {
        self.checkpointed = self.seq;
        self.last_checkpoint = Instant::now();
        if durable.wait_for_db(self.checkpoint_ticket).is_err() {
            // The file failed: nothing more is written through this handle.
            return;
        }
        self.checkpoint_ticket = durable.db_requested();
        self.active ^= 1;
        self.offset = 0;
    }
}

/// Opens the log of the database `db` at `path`: applies what it holds after
/// the file's last checkpoint, and starts a new generation. Returns once that
/// is on disk.
pub(super) fn open(path: &Path, db: &Database, durable: &Durable) -> StoreResult<Wal> {
    let [first, second] = paths(path);
    let cannot =
        |e: io::Error| StoreError::Unavailable(format!("cannot open the write-ahead log: {e}"));
    let files = [
        Arc::new(open_file(&first).map_err(cannot)?),
        Arc::new(open_file(&second).map_err(cannot)?),
    ];
    // The files' names must last as long as what is synced into them.
    if let Some(dir) = first.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir).and_then(|d| d.sync_all()).map_err(cannot)?;
    }
    let (generation, after) = position(db)?;
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    let mut replayed = 0u64;
    if let Some(generation) = generation {
        let mut records = BTreeMap::new();
        for file in &files {
            scan(file, generation, after, &mut records);
        }
        let mut next = after + 1;
        while let Some(ops) = records.get(&next) {
            apply_ops(&txn, ops)?;
            replayed += 1;
            next += 1;
        }
    }
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| StoreError::Internal(e.to_string()))?;
    let fresh = u64::from_le_bytes(bytes);
    {
        let mut meta = txn.open_table(META)?;
        meta.insert(GENERATION_KEY, fresh)?;
        meta.insert(SEQUENCE_KEY, 0)?;
    }
    txn.commit()?;
    durable
        .wait_for_syncs()
        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
    if replayed > 0 {
        log::info!("storage: applied {replayed} logged batches from the write-ahead log");
    }
    durable.set_logs(files.clone());
    Ok(Wal {
        replayed,
        files,
        active: 0,
        offset: 0,
        generation: fresh,
        seq: 0,
        checkpointed: 0,
        last_checkpoint: Instant::now(),
        checkpoint_ticket: durable.db_requested(),
        buf: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_logged_table_has_its_own_id() {
        let names = [
            DEVICES.name(),
            LAST_SEEN.name(),
            NAME_INDEX.name(),
            EVENTS.name(),
            STATUS_INDEX.name(),
            LOCATION_INDEX.name(),
            TENANT_COUNTS.name(),
            KEY_INDEX.name(),
            IDEMPOTENCY.name(),
            IDEMPOTENCY_EXPIRY.name(),
        ];
        for (i, name) in names.iter().enumerate() {
            assert_eq!(table_id(name), Some(i as u8), "{name}");
        }
        assert_eq!(table_id(META.name()), None);
    }

    /// The writes of a record that adds the device `name` of tenant `t`.
    fn adding(name: &str) -> Vec<u8> {
        let mut ops = Vec::new();
        let key = <(&str, &str) as Value>::as_bytes(&("t", name));
        record_op(&mut ops, 0, &key, Some(b"record"));
        ops
    }

    #[test]
    fn opening_applies_what_follows_the_checkpoint_up_to_a_gap_and_never_a_spoilt_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("devicehub.redb");
        {
            let (db, durable) = super::super::file::create(&path).unwrap();
            let mut wal = open(&path, &db, &durable).unwrap();
            assert_eq!(wal.replayed, 0);
            let pending = wal.append(&adding("a"), &durable).unwrap().unwrap();
            wal.appended(pending);
            // A batch whose commit failed: its record is spoilt at once.
            let pending = wal.append(&adding("b"), &durable).unwrap().unwrap();
            wal.discard(pending);
            let mut found = BTreeMap::new();
            scan(&wal.files[0], wal.generation, 0, &mut found);
            assert_eq!(found.keys().copied().collect::<Vec<_>>(), vec![1]);
            // The next record takes its place.
            let pending = wal.append(&adding("c"), &durable).unwrap().unwrap();
            wal.appended(pending);
            // Sequence number 3 never written: 4 does not follow 2.
            wal.seq += 1;
            let pending = wal.append(&adding("d"), &durable).unwrap().unwrap();
            wal.appended(pending);
            durable.wait_for_syncs().unwrap();
        }
        let names = |db: &Database| -> Vec<String> {
            let txn = db.begin_read().unwrap();
            let table = txn.open_table(DEVICES).unwrap();
            redb::ReadableTable::iter(&table)
                .unwrap()
                .map(|e| e.unwrap().0.value().1.to_string())
                .collect()
        };
        let (db, durable) = super::super::file::create(&path).unwrap();
        let wal = open(&path, &db, &durable).unwrap();
        assert_eq!(wal.replayed, 2);
        assert_eq!(names(&db), vec!["a", "c"]);
        drop((wal, db));
        // A new generation: the same records are not applied again.
        let (db, durable) = super::super::file::create(&path).unwrap();
        assert_eq!(open(&path, &db, &durable).unwrap().replayed, 0);
        assert_eq!(names(&db), vec!["a", "c"]);
    }

    #[test]
    fn a_record_is_read_back_and_a_damaged_one_ends_the_scan() {
        let dir = tempfile::tempdir().unwrap();
        let file = open_file(&dir.path().join("log")).unwrap();
        let mut buf = Vec::new();
        let mut offset = 0;
        for seq in 1..=3u64 {
            let mut ops = Vec::new();
            record_op(&mut ops, 0, format!("key{seq}").as_bytes(), Some(b"value"));
            encode(&mut buf, 7, seq, &ops);
            assert_eq!(buf.len() as u64 % PAGE, 0);
            file.write_all_at(&buf, offset).unwrap();
            offset += buf.len() as u64;
        }
        // A record of another generation is not this log's.
        encode(&mut buf, 8, 4, &[]);
        file.write_all_at(&buf, offset).unwrap();
        let mut found = BTreeMap::new();
        scan(&file, 7, 1, &mut found);
        assert_eq!(found.keys().copied().collect::<Vec<_>>(), vec![2, 3]);

        // A flipped byte in the second record: the scan stops before it.
        let mut byte = [0u8; 1];
        file.read_exact_at(&mut byte, PAGE + HEADER as u64 + 2)
            .unwrap();
        file.write_all_at(&[byte[0] ^ 1], PAGE + HEADER as u64 + 2)
            .unwrap();
        let mut found = BTreeMap::new();
        scan(&file, 7, 0, &mut found);
        assert_eq!(found.keys().copied().collect::<Vec<_>>(), vec![1]);
    }
}
