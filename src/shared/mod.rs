//! What both sides (the service and the deploy tool) and the clients use:
//! input parsing and its error (`input.rs`), values never printed and the
//! `say!` macros that mask them (`secrets.rs`), the process's shutdown and
//! interrupt trigger (`signal.rs`), timestamps (`time.rs`), and the
//! headers the service and the deploy tool agree on (`protocol.rs`).

pub mod input;
pub mod protocol;
pub mod secrets;
pub mod signal;
pub mod time;
