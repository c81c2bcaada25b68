//! Point reads (a device, a key's owner, a tenant's counts) on one
//! connection per thread, shared by every request that thread serves.
//!
//! A request that borrows a pooled connection for one short read costs two
//! thread wake-ups per query on each side: the server's worker wakes the
//! database backend, which wakes the worker again (and, when the connection's
//! task runs on another thread, that thread too). Under load that switching
//! was most of the server's CPU for a GET. Here each worker thread keeps its
//! own connection, whose task runs on that same thread, and the reads of all
//! its requests are pipelined on it: what is queued goes out in one write
//! and the answers come back in one read.
//!
//! The reads are single statements outside any transaction, so they see
//! exactly what a pooled connection would: every commit made before they
//! start, on any instance. A closed connection (the database restarted) is
//! replaced at the next read; until one can be made, reads answer 503 like
//! the pool does.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio_postgres::{Client, Statement};

use super::{pg_error, prefixed_columns, tls, DEVICE_COLUMNS, WAIT};
use crate::store::{StoreError, StoreResult};

/// The statements a reader prepares once per connection.
pub(super) struct Reader {
    pub client: Client,
    pub device: Statement,
    pub key_owner: Statement,
    pub counts: Statement,
}

/// Opens connections of their own (outside the pool), each with its task
/// on the runtime of the thread that opened it.
pub(super) struct Dialer {
    config: tokio_postgres::Config,
    tls: tls::Connector,
}

impl Dialer {
    pub fn new(config: tokio_postgres::Config, tls: tls::Connector) -> Dialer {
        Dialer { config, tls }
    }

    /// A new connection, or 503 when none is made within the pool's wait.
    pub async fn connect(&self) -> StoreResult<Client> {
        let (client, connection) = within_wait(self.config.connect(self.tls.clone())).await?;
        tokio::spawn(connection);
        Ok(client)
    }
}

/// `work`'s result, or 503 when it takes longer than the pool's wait.
async fn within_wait<T>(
    work: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
) -> StoreResult<T> {
    match tokio::time::timeout(WAIT, work).await {
        Ok(done) => done.map_err(pg_error),
        Err(_) => Err(StoreError::Unavailable(
            "PostgreSQL: no answer within the wait".into(),
        )),
    }
}

/// This store's readers, one per thread that reads.
pub(super) struct Readers {
    /// Which store a thread's slot belongs to (tests open many).
    id: u64,
    dialer: Arc<Dialer>,
}

#[derive(Default)]
struct Slot {
    current: Mutex<Option<Arc<Reader>>>,
    /// Held while connecting, so that the requests waiting for a new
    /// connection share one attempt.
    connecting: tokio::sync::Mutex<()>,
}

impl Slot {
    fn open(&self) -> Option<Arc<Reader>> {
        let current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        current.as_ref().filter(|r| !r.client.is_closed()).cloned()
    }
}

thread_local! {
    static SLOTS: std::cell::RefCell<HashMap<u64, Arc<Slot>>> = Default::default();
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

impl Readers {
    pub fn new(dialer: Arc<Dialer>) -> Readers {
        Readers {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            dialer,
        }
    }

    /// This thread's reader, connected first when it has none open.
    pub async fn get(&self) -> StoreResult<Arc<Reader>> {
        let slot = SLOTS.with(|slots| slots.borrow_mut().entry(self.id).or_default().clone());
        if let Some(reader) = slot.open() {
            return Ok(reader);
        }
        let _connecting = slot.connecting.lock().await;
        if let Some(reader) = slot.open() {
            return Ok(reader);
        }
        let reader = Arc::new(self.connect().await?);
        *slot.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(reader.clone());
        Ok(reader)
    }

    async fn connect(&self) -> StoreResult<Reader> {
        // The connection's task runs on this thread: the answers wake the
        // thread that waits for them, and nothing else.
        let client = self.dialer.connect().await?;
        let device =
            format!("SELECT {DEVICE_COLUMNS} FROM devicehub_devices WHERE tenant = $1 AND id = $2");
        let key_owner = format!(
            "SELECT k.tenant, d.key_hash, d.prev_key_hash, d.prev_key_expires_ms, {} \
             FROM devicehub_keys k JOIN devicehub_devices d \
             ON d.tenant = k.tenant AND d.id = k.device_id WHERE k.key_hash = $1",
            prefixed_columns("d.")
        );
        let counts = "SELECT active, inactive, revoked FROM devicehub_tenants WHERE tenant = $1";
        within_wait(async {
            Ok(Reader {
                device: client.prepare(&device).await?,
                key_owner: client.prepare(&key_owner).await?,
                counts: client.prepare(counts).await?,
                client,
            })
        })
        .await
    }
}
