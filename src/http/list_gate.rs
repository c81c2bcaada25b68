//! How many unlimited lists may stream at once. Each holds a snapshot of the
//! store and costs the workers time for as long as its client reads, so a
//! tenant may run only a few at a time and all tenants together a few more;
//! the rest wait their turn (first come, first served) instead of crowding
//! out everyone else's requests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Unlimited lists one tenant may stream at once.
pub const PER_TENANT: usize = 4;
/// Unlimited lists all tenants together may stream at once.
pub const IN_ALL: usize = 16;

pub struct ListGate {
    all: Arc<Semaphore>,
    tenants: Arc<Mutex<HashMap<String, Arc<Semaphore>>>>,
}

impl Default for ListGate {
    fn default() -> Self {
        ListGate {
            all: Arc::new(Semaphore::new(IN_ALL)),
            tenants: Arc::default(),
        }
    }
}

/// A list's place; dropping it lets the next one in.
pub struct ListPass {
    tenant: String,
    tenant_permit: Option<OwnedSemaphorePermit>,
    _all_permit: OwnedSemaphorePermit,
    tenants: Arc<Mutex<HashMap<String, Arc<Semaphore>>>>,
}

impl ListGate {
    /// Waits for a place for one of `tenant`'s lists.
    pub async fn enter(&self, tenant: &str) -> ListPass {
        let tenant_sem = {
            let mut map = self.tenants.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(tenant.to_string())
                .or_insert_with(|| Arc::new(Semaphore::new(PER_TENANT)))
                .clone()
        };
        // Neither semaphore is ever closed, so acquiring cannot fail.
        let tenant_permit = tenant_sem.acquire_owned().await.ok();
        let all_permit = loop {
            if let Ok(permit) = self.all.clone().acquire_owned().await {
                break permit;
            }
        };
        ListPass {
            tenant: tenant.to_string(),
            tenant_permit,
            _all_permit: all_permit,
            tenants: self.tenants.clone(),
        }
    }

    /// Lists of `tenant` streaming now.
    pub fn running(&self, tenant: &str) -> usize {
        let map = self.tenants.lock().unwrap_or_else(|p| p.into_inner());
        map.get(tenant)
            .map_or(0, |sem| PER_TENANT - sem.available_permits())
    }
}

impl Drop for ListPass {
    fn drop(&mut self) {
        let mut map = self.tenants.lock().unwrap_or_else(|p| p.into_inner());
        self.tenant_permit.take();
        // Forget an idle tenant's semaphore: clones are only made under this
        // lock, so a count of one means nobody holds or awaits it.
        if map
            .get(&self.tenant)
            .is_some_and(|sem| Arc::strong_count(sem) == 1)
        {
            map.remove(&self.tenant);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_web::test]
    async fn a_tenant_waits_for_its_own_lists_not_for_others() {
        let gate = ListGate::default();
        let mut held = Vec::new();
        for _ in 0..PER_TENANT {
            held.push(gate.enter("busy").await);
        }
        assert_eq!(gate.running("busy"), PER_TENANT);
        // Another tenant still gets in at once.
        let other = gate.enter("quiet").await;
        assert_eq!(gate.running("quiet"), 1);
        // The busy tenant's next list waits until one of its own ends.
        let mut waiting = std::pin::pin!(gate.enter("busy"));
        assert!(futures_poll_once(waiting.as_mut()).await.is_none());
        held.pop();
        let next = waiting.await;
        assert_eq!(gate.running("busy"), PER_TENANT);
        drop((next, held, other));
        assert_eq!(gate.running("busy"), 0);
        assert!(gate.tenants.lock().unwrap().is_empty());
    }

    async fn futures_poll_once<F: std::future::Future + Unpin>(f: F) -> Option<F::Output> {
        let mut f = f;
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut f).poll(cx) {
                std::task::Poll::Ready(v) => Some(v),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }
}
