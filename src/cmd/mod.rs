//! One file per subcommand: a clap `Args` struct and `run(args)`, which turns
//! the arguments into a plain options struct and calls a domain module.

pub mod bench;
pub mod build;
pub mod deploy;
pub mod docs;
pub mod operate;
pub mod probe;
pub mod serve;
pub mod smoke;
pub mod token;
