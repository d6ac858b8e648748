//! The `wsctl` binary: everything is in the library (`lib.rs` has the map).

fn main() -> std::process::ExitCode {
    wsctl::main()
}
