//! The session store: each session's message count, kept for `SESSION_TTL`
//! after its last activity.
//!
//! [`SessionStore`] is the seam between the connection code and where counts
//! live. [`MemorySessionStore`] keeps them in this process; the Redis store
//! keeps them where every instance and colour can see them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use uuid::Uuid;

use super::channel::ChannelLayer;

/// A session as a connection finds it when it opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenedSession {
    /// Messages counted so far (0 for a new session).
    pub count: u64,
    /// The session was known and had not expired.
    pub resumed: bool,
}

/// The store could not be reached; the message was not counted.
#[derive(Debug, thiserror::Error)]
#[error("session store unavailable: {0}")]
pub struct StoreUnavailable(pub String);

#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Finds the session (refreshing its TTL) or starts it at 0.
    async fn open(&self, session: Uuid) -> Result<OpenedSession, StoreUnavailable>;
    /// Counts one accepted message, exactly once, and returns the new count.
    async fn increment(&self, session: Uuid) -> Result<u64, StoreUnavailable>;
    /// The session's count now (0 when it is unknown).
    async fn count(&self, session: Uuid) -> Result<u64, StoreUnavailable>;

    /// Counts a `broadcast` and publishes its frame. A store that can do
    /// both at once (Redis, in one script) overrides this, so that a
    /// broadcast is never counted without being sent or sent uncounted.
    async fn increment_and_broadcast(
        &self,
        session: Uuid,
        frame: String,
        channel: &dyn ChannelLayer,
    ) -> Result<u64, StoreUnavailable> {
        let count = self.increment(session).await?;
        channel.publish(frame).await?;
        Ok(count)
    }
}

/// Counts in this process, behind one mutex (each operation is a hash-map
/// lookup, far shorter than the I/O around it).
pub struct MemorySessionStore {
    ttl: Duration,
    sessions: Mutex<HashMap<Uuid, Entry>>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    count: u64,
    expires_at: Instant,
}

impl MemorySessionStore {
    pub fn new(ttl: Duration) -> Self {
        MemorySessionStore {
            ttl,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    fn with_sessions<T>(&self, f: impl FnOnce(&mut HashMap<Uuid, Entry>) -> T) -> T {
        // A panic while holding the lock cannot leave an entry half-written
        // (each closure does one insert or field update), so a poisoned lock
        // is still consistent.
        let mut sessions = self
            .sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut sessions)
    }

    /// Drops every expired session; the server calls this periodically so
    /// that memory stays bounded by the sessions active within one TTL.
    pub fn evict_expired(&self, now: Instant) -> usize {
        self.with_sessions(|sessions| {
            let before = sessions.len();
            sessions.retain(|_, entry| entry.expires_at > now);
            before - sessions.len()
        })
    }

    /// Sessions held now, expired ones not yet evicted included.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.with_sessions(|sessions| sessions.len())
    }

    fn open_at(&self, session: Uuid, now: Instant) -> OpenedSession {
        let expires_at = now + self.ttl;
        self.with_sessions(|sessions| match sessions.get_mut(&session) {
            Some(entry) if entry.expires_at > now => {
                entry.expires_at = expires_at;
                OpenedSession {
                    count: entry.count,
                    resumed: true,
                }
            }
            _ => {
                sessions.insert(
                    session,
                    Entry {
                        count: 0,
                        expires_at,
                    },
                );
                OpenedSession {
                    count: 0,
                    resumed: false,
                }
            }
        })
    }

    fn increment_at(&self, session: Uuid, now: Instant) -> u64 {
        let expires_at = now + self.ttl;
        self.with_sessions(|sessions| {
            let entry = sessions.entry(session).or_insert(Entry {
                count: 0,
                expires_at,
            });
            if entry.expires_at <= now {
                entry.count = 0;
            }
            entry.count += 1;
            entry.expires_at = expires_at;
            entry.count
        })
    }
}

#[async_trait]
impl SessionStore for MemorySessionStore {
    async fn open(&self, session: Uuid) -> Result<OpenedSession, StoreUnavailable> {
        Ok(self.open_at(session, Instant::now()))
    }

    async fn increment(&self, session: Uuid) -> Result<u64, StoreUnavailable> {
        Ok(self.increment_at(session, Instant::now()))
    }

    async fn count(&self, session: Uuid) -> Result<u64, StoreUnavailable> {
        let now = Instant::now();
        Ok(self.with_sessions(|sessions| {
            sessions
                .get(&session)
                .filter(|entry| entry.expires_at > now)
                .map_or(0, |entry| entry.count)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_session_starts_at_zero_and_resumes_with_its_count() {
        let store = MemorySessionStore::new(Duration::from_secs(60));
        let id = Uuid::new_v4();
        let now = Instant::now();
        assert_eq!(
            store.open_at(id, now),
            OpenedSession {
                count: 0,
                resumed: false
            }
        );
        assert_eq!(store.increment_at(id, now), 1);
        assert_eq!(store.increment_at(id, now), 2);
        assert_eq!(
            store.open_at(id, now),
            OpenedSession {
                count: 2,
                resumed: true
            }
        );
    }

    #[test]
    fn an_expired_session_starts_again() {
        let store = MemorySessionStore::new(Duration::from_secs(60));
        let id = Uuid::new_v4();
        let now = Instant::now();
        store.open_at(id, now);
        store.increment_at(id, now);
        let later = now + Duration::from_secs(61);
        assert_eq!(
            store.open_at(id, later),
            OpenedSession {
                count: 0,
                resumed: false
            }
        );
    }

    #[test]
    fn activity_refreshes_the_ttl() {
        let store = MemorySessionStore::new(Duration::from_secs(60));
        let id = Uuid::new_v4();
        let now = Instant::now();
        store.open_at(id, now);
        store.increment_at(id, now + Duration::from_secs(50));
        let after_first_ttl = now + Duration::from_secs(100);
        assert_eq!(store.open_at(id, after_first_ttl).count, 1);
    }

    #[test]
    fn eviction_bounds_memory() {
        let store = MemorySessionStore::new(Duration::from_secs(1));
        let now = Instant::now();
        for _ in 0..1000 {
            store.open_at(Uuid::new_v4(), now);
        }
        let kept = Uuid::new_v4();
        store.open_at(kept, now + Duration::from_secs(2));
        assert_eq!(store.evict_expired(now + Duration::from_secs(2)), 1000);
        assert_eq!(store.len(), 1);
    }
}
