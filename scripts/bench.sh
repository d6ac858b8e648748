#!/usr/bin/env bash
# The benchmark suite: release builds of wsctl and the bare yardstick server
# (examples/bare_server, a package of its own), the standard set of runs, and docs/BENCHMARKS.md.
# Takes about four minutes on 2 cores. Needs redis-server for the Redis row.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v redis-server >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
}
cargo build --release --locked --bin wsctl
cargo build --release --locked -p bare_server
ulimit -n "$(ulimit -Hn)"
exec python3 scripts/bench.py "$@"
