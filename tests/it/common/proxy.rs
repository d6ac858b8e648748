//! A TCP proxy in front of Redis that can *hang* the subscription
//! connections: they stay open, and nothing more passes either way. A
//! killed connection is noticed by its reader; a hung one only by a ping
//! that goes unanswered, which is what this proxy lets a test prove.
//!
//! It can also *hold replies* on the command connections: requests reach
//! Redis at once and run, their replies wait in the proxy until released.
//! That is the late-reply window of a counting script (run within its
//! deadline, answered after wsctl gave up on it), made certain.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// One proxied connection: whether it subscribed, and whether it is hung.
#[derive(Default)]
struct Link {
    subscriber: AtomicBool,
    hung: AtomicBool,
}

pub struct HangingProxy {
    pub addr: String,
    links: Arc<Mutex<Vec<Arc<Link>>>>,
    /// Replies to command connections wait while this is set.
    hold_replies: Arc<AtomicBool>,
    accept: JoinHandle<()>,
}

impl HangingProxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub async fn start(upstream: &str) -> HangingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address").to_string();
        let links: Arc<Mutex<Vec<Arc<Link>>>> = Arc::default();
        let hold_replies: Arc<AtomicBool> = Arc::default();
        let upstream = upstream.to_string();
        let registry = links.clone();
        let hold = hold_replies.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                let link = Arc::new(Link::default());
                registry.lock().expect("links").push(link.clone());
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                let held = hold.clone();
                tokio::spawn(pump(client_read, server_write, link.clone(), None));
                tokio::spawn(pump(server_read, client_write, link, Some(held)));
            }
        });
        HangingProxy {
            addr,
            links,
            hold_replies,
            accept,
        }
    }

    /// From now on, replies on connections that have not subscribed wait
    /// in the proxy (requests still pass and run) until [`Self::release_replies`].
    pub fn hold_replies(&self) {
        self.hold_replies.store(true, Ordering::Relaxed);
    }

    /// Lets the held replies through, in order.
    pub fn release_replies(&self) {
        self.hold_replies.store(false, Ordering::Relaxed);
    }

    /// Hangs every connection that has subscribed so far; returns how many.
    pub fn hang_subscribers(&self) -> usize {
        let links = self.links.lock().expect("links");
        links
            .iter()
            .filter(|link| link.subscriber.load(Ordering::Relaxed))
            .map(|link| link.hung.store(true, Ordering::Relaxed))
            .count()
    }

    /// Connections that have sent a SUBSCRIBE, hung or not.
    pub fn subscribers(&self) -> usize {
        let links = self.links.lock().expect("links");
        links
            .iter()
            .filter(|link| link.subscriber.load(Ordering::Relaxed))
            .count()
    }
}

impl Drop for HangingProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Copies one direction until either side closes; once the link is hung,
/// what is read is dropped, so the peer waits forever. `hold` is given for
/// the direction of replies: while it is set, a reply to a command
/// connection waits before it is written.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    link: Arc<Link>,
    hold: Option<Arc<AtomicBool>>,
) {
    let from_client = hold.is_none();
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let bytes = &buffer[..n];
        if from_client
            && bytes
                .windows(9)
                .any(|w| w.eq_ignore_ascii_case(b"SUBSCRIBE"))
        {
            link.subscriber.store(true, Ordering::Relaxed);
        }
        if link.hung.load(Ordering::Relaxed) {
            continue;
        }
        if let Some(hold) = &hold {
            // Bounded: a test that forgets to release fails, it does not hang.
            for _ in 0..3000 {
                if !hold.load(Ordering::Relaxed) || link.subscriber.load(Ordering::Relaxed) {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
        if to.write_all(bytes).await.is_err() {
            return;
        }
    }
}
