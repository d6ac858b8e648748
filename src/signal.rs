//! The shutdown trigger of the real process: the first SIGTERM or SIGINT.
//!
//! The server takes its trigger as a plain future (tests pass their own). A
//! second signal while the server drains means "now": the process exits at
//! once with code 130.

use tokio::signal::unix::{SignalKind, signal};

/// Resolves on the first SIGTERM or SIGINT, and arms the second-signal exit.
pub async fn shutdown_signal() {
    let (Ok(mut sigterm), Ok(mut sigint)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; shutdown only by kill -9");
        return std::future::pending().await;
    };
    let name = tokio::select! {
        _ = sigterm.recv() => "SIGTERM",
        _ = sigint.recv() => "SIGINT",
    };
    tracing::info!(signal = name, "shutdown signal received, draining");
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = sigterm.recv() => "SIGTERM",
            _ = sigint.recv() => "SIGINT",
        };
        tracing::warn!(signal = name, "second signal while draining, exiting now");
        std::process::exit(130);
    });
}
