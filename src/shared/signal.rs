//! The process's shutdown trigger: the first SIGTERM or SIGINT.
//!
//! `wsctl serve` takes its trigger as a plain future (tests pass their own)
//! and drains. The deploy commands take an [`Interrupt`], which they check
//! at safe points to undo or finish their run. Either way, a second signal
//! means "now": the process exits at once (130 for SIGINT, 143 for SIGTERM
//! in the deploy commands; 130 while the server drains, as before).

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Notify;

/// The signals that stop wsctl.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Interrupt,
    Terminate,
}

impl Signal {
    /// The shell's convention: 128 + the signal number.
    pub fn exit_code(self) -> u8 {
        match self {
            Signal::Interrupt => 130,
            Signal::Terminate => 143,
        }
    }

    fn code(self) -> u8 {
        match self {
            Signal::Interrupt => 1,
            Signal::Terminate => 2,
        }
    }

    fn from_code(code: u8) -> Option<Signal> {
        match code {
            1 => Some(Signal::Interrupt),
            2 => Some(Signal::Terminate),
            _ => None,
        }
    }
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Signal::Interrupt => "SIGINT",
            Signal::Terminate => "SIGTERM",
        })
    }
}

/// Waits for the next SIGTERM or SIGINT.
async fn next_signal(
    sigterm: &mut tokio::signal::unix::Signal,
    sigint: &mut tokio::signal::unix::Signal,
) -> Signal {
    tokio::select! {
        _ = sigterm.recv() => Signal::Terminate,
        _ = sigint.recv() => Signal::Interrupt,
    }
}

/// Resolves on the first SIGTERM or SIGINT, and arms the second-signal exit.
pub async fn shutdown_signal() {
    let (Ok(mut sigterm), Ok(mut sigint)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; shutdown only by kill -9");
        return std::future::pending().await;
    };
    let first = next_signal(&mut sigterm, &mut sigint).await;
    tracing::info!(signal = %first, "shutdown signal received, draining");
    tokio::spawn(async move {
        let second = next_signal(&mut sigterm, &mut sigint).await;
        tracing::warn!(signal = %second, "second signal while draining, exiting now");
        std::process::exit(130);
    });
}

/// The first SIGINT or SIGTERM a deploy command received, if any. Cheap to
/// clone; every clone sees the same signal.
#[derive(Clone, Default)]
pub struct Interrupt {
    received: Arc<AtomicU8>,
    notify: Arc<Notify>,
}

impl Interrupt {
    /// Listens for SIGINT and SIGTERM in the background. The second one
    /// exits the process at once, printing `on_second` (what is left behind).
    pub fn install(on_second: &'static str) -> anyhow::Result<Interrupt> {
        let mut sigterm = signal(SignalKind::terminate())?;
        let mut sigint = signal(SignalKind::interrupt())?;
        let interrupt = Interrupt::default();
        let shared = interrupt.clone();
        tokio::spawn(async move {
            let first = next_signal(&mut sigterm, &mut sigint).await;
            shared.raise(first);
            let second = next_signal(&mut sigterm, &mut sigint).await;
            eprintln!("wsctl: second {second}: exiting now; {on_second}");
            std::process::exit(i32::from(second.exit_code()));
        });
        Ok(interrupt)
    }

    /// Records `signal` as received (the signal task, and tests).
    pub fn raise(&self, signal: Signal) {
        let _ =
            self.received
                .compare_exchange(0, signal.code(), Ordering::SeqCst, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    /// The signal received so far, if any.
    pub fn received(&self) -> Option<Signal> {
        Signal::from_code(self.received.load(Ordering::SeqCst))
    }

    /// Resolves once a signal has been received.
    pub async fn wait(&self) -> Signal {
        loop {
            let notified = self.notify.notified();
            if let Some(signal) = self.received() {
                return signal;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_signal_wins_and_wakes_waiters() {
        let interrupt = Interrupt::default();
        assert_eq!(interrupt.received(), None);
        let waiter = tokio::spawn({
            let interrupt = interrupt.clone();
            async move { interrupt.wait().await }
        });
        tokio::task::yield_now().await;
        interrupt.raise(Signal::Terminate);
        interrupt.raise(Signal::Interrupt);
        assert_eq!(waiter.await.unwrap(), Signal::Terminate);
        assert_eq!(interrupt.received(), Some(Signal::Terminate));
        assert_eq!(Signal::Terminate.exit_code(), 143);
        assert_eq!(Signal::Interrupt.exit_code(), 130);
    }
}
