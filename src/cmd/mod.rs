//! One file per subcommand (or one small family of them): a clap `Args`
//! struct and a function that turns the arguments into an operation or
//! options, calls the domain module once and prints the result. Only
//! `cmd/` knows clap; `target.rs` is what every stack command shares.

pub mod bench;
pub mod build;
pub mod checker;
pub mod deploy;
pub mod docs;
pub mod down;
pub mod init;
pub mod lock;
pub mod operate;
pub mod probe;
pub mod serve;
pub mod smoke;
pub mod status;
pub mod target;
pub mod tls;
pub mod token;
pub mod traffic;
