//! The embedded backend: each session's message count kept in this process
//! for `SESSION_TTL` after its last activity, with the message ids it saw
//! within `DEDUPE_WINDOW`, and broadcasts straight into the local hub.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use super::{Answer, Backend, OpenedSession, Unavailable};
use crate::serve::config::Dedupe;
use crate::serve::hub::{Hub, HubFrame};

/// Counts in this process, behind one mutex (each operation is a hash-map
/// lookup, far shorter than the I/O around it).
///
/// Memory is bounded twice: sessions expire `SESSION_TTL` after their last
/// activity, and at most `MAX_SESSIONS` are kept. When a new session would
/// exceed that, the least recently active session *without a live
/// connection* is evicted (a connected client never loses its count). So
/// the store holds at most `max(MAX_SESSIONS, live connections)` sessions,
/// whatever a connect/close loop with fresh `session_uuid`s does.
pub struct MemoryBackend {
    ttl: Duration,
    dedupe: Dedupe,
    sessions: Mutex<Sessions>,
    hub: Hub,
}

struct Sessions {
    entries: HashMap<Uuid, Entry>,
    /// Sessions without a live connection, oldest activity first: the
    /// eviction order. Keyed by a sequence number taken at each activity.
    idle: BTreeMap<u64, Uuid>,
    next_seq: u64,
    max: usize,
}

#[derive(Debug)]
struct Entry {
    count: u64,
    expires_at: Instant,
    /// Open connections on this session.
    live: u32,
    /// Its key in `idle` while `live` is 0.
    idle_seq: Option<u64>,
    /// Message ids, allocated at the session's first id (most clients of
    /// the counter send none).
    ids: Option<Box<SeenIds>>,
}

/// The ids a session used within the dedupe window, with the count each
/// was answered with.
#[derive(Debug, Default)]
struct SeenIds {
    by_id: HashMap<Arc<str>, (u64, Instant)>,
    /// First uses, oldest first: the order in which ids are forgotten. An
    /// id used again after its window has a second, newer record here; the
    /// older one no longer matches `by_id` and is skipped when it leaves.
    order: VecDeque<(Instant, Arc<str>)>,
}

impl SeenIds {
    /// The count `id` was answered with, if it was first used within the
    /// window.
    fn seen(&self, id: &str, now: Instant, window: Duration) -> Option<u64> {
        self.by_id
            .get(id)
            .filter(|(_, first)| now.saturating_duration_since(*first) < window)
            .map(|(count, _)| *count)
    }

    /// Records `id` as first used now, answered with `count`, and forgets
    /// what left the window or exceeds `dedupe.max_ids`.
    fn remember(&mut self, id: &str, count: u64, now: Instant, dedupe: Dedupe) {
        let id: Arc<str> = id.into();
        self.by_id.insert(id.clone(), (count, now));
        self.order.push_back((now, id));
        while let Some((first, _)) = self.order.front() {
            let expired = now.saturating_duration_since(*first) >= dedupe.window;
            if !expired && self.order.len() <= dedupe.max_ids {
                break;
            }
            if let Some((first, id)) = self.order.pop_front()
                && self.by_id.get(&id).is_some_and(|(_, at)| *at == first)
            {
                self.by_id.remove(&id);
            }
        }
    }
}

impl Sessions {
    /// Moves an entry to the young end of the idle order, or out of it
    /// while it has a live connection.
    fn touch(&mut self, session: Uuid) {
        let Some(entry) = self.entries.get_mut(&session) else {
            return;
        };
        if let Some(seq) = entry.idle_seq.take() {
            self.idle.remove(&seq);
        }
        if entry.live == 0 {
            let seq = self.next_seq;
            self.next_seq += 1;
            entry.idle_seq = Some(seq);
            self.idle.insert(seq, session);
        }
    }

    /// Evicts idle sessions, oldest first, until the store fits `max`.
    fn enforce_cap(&mut self) -> usize {
        let mut evicted = 0;
        while self.entries.len() > self.max {
            let Some((_, oldest)) = self.idle.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
            evicted += 1;
        }
        evicted
    }

    /// The entry for `session`, started at 0 when it is unknown or expired.
    fn fresh_or_live(&mut self, session: Uuid, now: Instant, ttl: Duration) -> (&mut Entry, bool) {
        let entry = self.entries.entry(session).or_insert(Entry {
            count: 0,
            expires_at: now,
            live: 0,
            idle_seq: None,
            ids: None,
        });
        let known = entry.expires_at > now;
        if !known {
            entry.count = 0;
            entry.ids = None;
        }
        entry.expires_at = now + ttl;
        (entry, known)
    }
}

impl MemoryBackend {
    pub fn new(ttl: Duration, max_sessions: usize, dedupe: Dedupe, hub: Hub) -> Self {
        MemoryBackend {
            ttl,
            dedupe,
            hub,
            sessions: Mutex::new(Sessions {
                entries: HashMap::new(),
                idle: BTreeMap::new(),
                next_seq: 0,
                max: max_sessions.max(1),
            }),
        }
    }

    fn with_sessions<T>(&self, f: impl FnOnce(&mut Sessions) -> T) -> T {
        // A panic while holding the lock cannot leave an entry half-written
        // (each closure does one insert or field update), so a poisoned lock
        // is still consistent.
        let mut sessions = self
            .sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut sessions)
    }

    /// Drops every expired session without a live connection; the server
    /// calls this periodically.
    pub fn evict_expired(&self, now: Instant) -> usize {
        self.with_sessions(|sessions| {
            let before = sessions.entries.len();
            let Sessions { entries, idle, .. } = sessions;
            entries.retain(|_, entry| {
                let keep = entry.expires_at > now || entry.live > 0;
                if !keep && let Some(seq) = entry.idle_seq {
                    idle.remove(&seq);
                }
                keep
            });
            before - entries.len()
        })
    }

    /// Sessions held now, expired ones not yet evicted included.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.with_sessions(|sessions| sessions.entries.len())
    }

    fn open_at(&self, session: Uuid, now: Instant) -> OpenedSession {
        self.with_sessions(|sessions| {
            let (entry, resumed) = sessions.fresh_or_live(session, now, self.ttl);
            entry.live += 1;
            let count = entry.count;
            sessions.touch(session);
            sessions.enforce_cap();
            OpenedSession { count, resumed }
        })
    }

    fn increment_at(&self, session: Uuid, id: Option<&str>, now: Instant) -> Answer {
        let dedupe = self.dedupe;
        self.with_sessions(|sessions| {
            let (entry, _) = sessions.fresh_or_live(session, now, self.ttl);
            let original = id.and_then(|id| {
                let ids = entry.ids.as_ref()?;
                ids.seen(id, now, dedupe.window)
            });
            let counted = match original {
                Some(count) => Answer {
                    count,
                    duplicate: true,
                },
                None => {
                    entry.count += 1;
                    if let Some(id) = id {
                        let ids = entry.ids.get_or_insert_with(Box::default);
                        ids.remember(id, entry.count, now, dedupe);
                    }
                    Answer {
                        count: entry.count,
                        duplicate: false,
                    }
                }
            };
            sessions.touch(session);
            sessions.enforce_cap();
            counted
        })
    }

    fn release_at(&self, session: Uuid) {
        self.with_sessions(|sessions| {
            if let Some(entry) = sessions.entries.get_mut(&session) {
                entry.live = entry.live.saturating_sub(1);
                sessions.touch(session);
            }
        })
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn redis_up(&self) -> Option<bool> {
        None
    }

    fn spawn_background(self: Arc<Self>, tasks: &TaskTracker, _hub: Hub, stop: CancellationToken) {
        tasks.spawn(evict_expired_sessions(self, stop));
    }

    async fn open(&self, session: Uuid) -> Result<OpenedSession, Unavailable> {
        Ok(self.open_at(session, Instant::now()))
    }

    async fn increment(
        &self,
        session: Uuid,
        id: Option<&str>,
        broadcast: Option<String>,
    ) -> Result<Answer, Unavailable> {
        let counted = self.increment_at(session, id, Instant::now());
        if let Some(frame) = broadcast
            && !counted.duplicate
        {
            // An error only means no connection is listening right now.
            let _ = self.hub.send(HubFrame { text: frame.into() });
        }
        Ok(counted)
    }

    async fn count(&self, session: Uuid) -> Result<u64, Unavailable> {
        let now = Instant::now();
        Ok(self.with_sessions(|sessions| {
            sessions
                .entries
                .get(&session)
                .filter(|entry| entry.expires_at > now)
                .map_or(0, |entry| entry.count)
        }))
    }

    fn release(&self, session: Uuid) {
        self.release_at(session);
    }
}

/// Evicts expired sessions so that memory stays bounded by the sessions
/// active within one TTL.
async fn evict_expired_sessions(store: Arc<MemoryBackend>, stop: CancellationToken) {
    let period = store
        .ttl
        .clamp(Duration::from_secs(1), Duration::from_secs(60));
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.cancelled() => return,
        }
        let evicted = store.evict_expired(Instant::now());
        if evicted > 0 {
            tracing::debug!(evicted, "expired sessions evicted");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_hub() -> Hub {
        tokio::sync::broadcast::channel(16).0
    }

    const DEDUPE: Dedupe = Dedupe {
        window: Duration::from_secs(300),
        max_ids: 1000,
    };

    fn store(ttl: Duration, max_sessions: usize) -> MemoryBackend {
        MemoryBackend::new(ttl, max_sessions, DEDUPE, test_hub())
    }

    /// Counts a message without an id; its new count.
    fn bump(store: &MemoryBackend, id: Uuid, now: Instant) -> u64 {
        store.increment_at(id, None, now).count
    }

    #[test]
    fn a_new_session_starts_at_zero_and_resumes_with_its_count() {
        let store = store(Duration::from_secs(60), 100);
        let id = Uuid::new_v4();
        let now = Instant::now();
        assert_eq!(
            store.open_at(id, now),
            OpenedSession {
                count: 0,
                resumed: false
            }
        );
        assert_eq!(bump(&store, id, now), 1);
        assert_eq!(bump(&store, id, now), 2);
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
        let store = store(Duration::from_secs(60), 100);
        let id = Uuid::new_v4();
        let now = Instant::now();
        store.open_at(id, now);
        bump(&store, id, now);
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
        let store = store(Duration::from_secs(60), 100);
        let id = Uuid::new_v4();
        let now = Instant::now();
        store.open_at(id, now);
        bump(&store, id, now + Duration::from_secs(50));
        let after_first_ttl = now + Duration::from_secs(100);
        assert_eq!(store.open_at(id, after_first_ttl).count, 1);
    }

    #[test]
    fn expiry_evicts_closed_sessions_and_keeps_connected_ones() {
        let store = store(Duration::from_secs(1), 10_000);
        let now = Instant::now();
        for _ in 0..1000 {
            let closed = Uuid::new_v4();
            store.open_at(closed, now);
            store.release_at(closed);
        }
        let connected = Uuid::new_v4();
        store.open_at(connected, now);
        let kept = Uuid::new_v4();
        store.open_at(kept, now + Duration::from_secs(2));
        assert_eq!(store.evict_expired(now + Duration::from_secs(2)), 1000);
        assert_eq!(store.len(), 2);
    }

    #[test]
    fn a_full_store_evicts_the_least_recently_active_idle_session() {
        let store = store(Duration::from_secs(60), 3);
        let now = Instant::now();
        let [connected, old, young] = [Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()];
        // `connected` is the oldest but keeps a live connection.
        store.open_at(connected, now);
        bump(&store, connected, now);
        for id in [old, young] {
            store.open_at(id, now);
            bump(&store, id, now);
            store.release_at(id);
        }
        bump(&store, young, now);
        let newcomer = Uuid::new_v4();
        store.open_at(newcomer, now);
        assert_eq!(store.len(), 3);
        assert_eq!(
            store.open_at(connected, now).count,
            1,
            "a live session is kept"
        );
        assert_eq!(
            store.open_at(young, now).count,
            2,
            "a recently active one is kept"
        );
        assert!(!store.open_at(old, now).resumed, "the oldest idle one went");
    }

    #[test]
    fn a_store_of_live_sessions_grows_past_the_cap_rather_than_drop_one() {
        let store = store(Duration::from_secs(60), 2);
        let now = Instant::now();
        let live: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
        for id in &live {
            store.open_at(*id, now);
        }
        assert_eq!(store.len(), 4);
        for id in &live {
            store.release_at(*id);
        }
        store.open_at(Uuid::new_v4(), now);
        assert_eq!(store.len(), 2, "idle sessions are evicted down to the cap");
    }

    #[test]
    fn a_connect_close_loop_stays_within_the_cap() {
        let store = store(Duration::from_secs(3600), 1000);
        let now = Instant::now();
        for _ in 0..20_000 {
            let id = Uuid::new_v4();
            store.open_at(id, now);
            store.release_at(id);
        }
        assert_eq!(store.len(), 1000);
    }

    #[test]
    fn a_repeated_id_is_a_duplicate_with_the_original_count_until_its_window_ends() {
        let window = Duration::from_secs(10);
        let store = MemoryBackend::new(
            Duration::from_secs(3600),
            100,
            Dedupe {
                window,
                max_ids: 100,
            },
            test_hub(),
        );
        let session = Uuid::new_v4();
        let now = Instant::now();
        let first = store.increment_at(session, Some("a"), now);
        assert_eq!(
            first,
            Answer {
                count: 1,
                duplicate: false
            }
        );
        assert_eq!(bump(&store, session, now), 2);
        let again = store.increment_at(session, Some("a"), now + Duration::from_secs(9));
        assert_eq!(
            again,
            Answer {
                count: 1,
                duplicate: true
            }
        );
        // Another session's "a" is its own.
        let other = store.increment_at(Uuid::new_v4(), Some("a"), now);
        assert_eq!(
            other,
            Answer {
                count: 1,
                duplicate: false
            }
        );
        // After the window the id counts again, and is remembered anew.
        let later = now + window;
        assert_eq!(store.increment_at(session, Some("a"), later).count, 3);
        let resent = store.increment_at(session, Some("a"), later + Duration::from_secs(1));
        assert_eq!(
            resent,
            Answer {
                count: 3,
                duplicate: true
            }
        );
    }

    #[test]
    fn a_session_keeps_at_most_max_ids_and_forgets_the_oldest() {
        let store = MemoryBackend::new(
            Duration::from_secs(3600),
            100,
            Dedupe {
                window: Duration::from_secs(300),
                max_ids: 3,
            },
            test_hub(),
        );
        let session = Uuid::new_v4();
        let now = Instant::now();
        for id in ["a", "b", "c", "d"] {
            store.increment_at(session, Some(id), now);
        }
        assert!(
            !store.increment_at(session, Some("a"), now).duplicate,
            "forgotten"
        );
        assert!(
            store.increment_at(session, Some("d"), now).duplicate,
            "kept"
        );
        let held = store.with_sessions(|sessions| {
            let ids = sessions.entries[&session].ids.as_ref().unwrap();
            (ids.by_id.len(), ids.order.len())
        });
        assert_eq!(held, (3, 3));
    }
}
