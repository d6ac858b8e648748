//! Clients of the service, over real sockets: the smoke test
//! (`smoke.rs`, `wsctl smoke` and the deploy's smoke step; `app_checks.rs`
//! for an app that is not ours, which knows no protocol), one session of
//! the contract that rides every deploy (`session.rs`: resume, resend,
//! every count recorded), the cutover probe a deploy runs through the
//! public address with a few of them (`probe.rs`), and the load tool
//! (`bench/`, `wsctl bench`). The integration tests use `session.rs` too. They speak the wire protocol of
//! `docs/protocol.md` and never reach into the service's code.

pub mod app_checks;
pub mod bench;
pub mod probe;
pub mod session;
pub mod smoke;
pub mod tls;
