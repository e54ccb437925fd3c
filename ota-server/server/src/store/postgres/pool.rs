//! A small blocking connection pool: the server calls the store from `spawn_blocking` threads, each takes a
//! connection for one call. At most `max` connections are open; a connection the server closed (restart,
//! failover) is dropped on return and replaced by a new one on the next call.

use std::sync::{Condvar, Mutex};

use postgres::{Client, Config, NoTls};

use crate::error::StoreError;

/// The pool.
pub struct Pool {
    config: Config,
    max: usize,
    state: Mutex<Idle>,
    returned: Condvar,
}

struct Idle {
    clients: Vec<Client>,
    open: usize,
}

impl Pool {
    /// A pool of at most `max` connections to `config` (none opened yet).
    pub fn new(config: Config, max: usize) -> Pool {
        Pool {
            config,
            max: max.max(1),
            state: Mutex::new(Idle {
                clients: Vec::new(),
                open: 0,
            }),
            returned: Condvar::new(),
        }
    }

    /// A connection: an idle one, a new one while fewer than `max` are open, else the next one returned.
    pub fn get(&self) -> Result<Pooled<'_>, StoreError> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(client) = state.clients.pop() {
                if client.is_closed() {
                    state.open -= 1;
                    continue;
                }
                return Ok(Pooled {
                    pool: self,
                    client: Some(client),
                });
            }
            if state.open < self.max {
                state.open += 1;
                drop(state);
                return match self.config.connect(NoTls) {
                    Ok(client) => Ok(Pooled {
                        pool: self,
                        client: Some(client),
                    }),
                    Err(e) => {
                        self.release(None);
                        Err(e.into())
                    }
                };
            }
            state = self.returned.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// The idle connections, taken out of the pool (to be closed where blocking is allowed).
    pub fn take_idle(&self) -> Vec<Client> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let idle = std::mem::take(&mut state.clients);
        state.open -= idle.len();
        idle
    }

    fn release(&self, client: Option<Client>) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match client {
            Some(c) if !c.is_closed() => state.clients.push(c),
            _ => state.open -= 1,
        }
        self.returned.notify_one();
    }
}

/// A connection taken from the [`Pool`]; goes back on drop.
pub struct Pooled<'a> {
    pool: &'a Pool,
    client: Option<Client>,
}

impl std::ops::Deref for Pooled<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.client.as_ref().expect("present until dropped")
    }
}

impl std::ops::DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        self.client.as_mut().expect("present until dropped")
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        self.pool.release(self.client.take());
    }
}
