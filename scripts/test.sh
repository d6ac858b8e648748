#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what the tests need,
# then runs format, lint and every test. `.ci/run` calls this script.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v redis-server >/dev/null || need_apt+=(redis-server)
command -v promtool >/dev/null || need_apt+=(prometheus)
command -v docker-compose >/dev/null || need_apt+=(docker-compose)
command -v docker-registry >/dev/null || need_apt+=(docker-registry)
# The second Docker Engine of the multi-host test (scripts/second-engine.sh).
command -v ip >/dev/null || need_apt+=(iproute2)
command -v iptables >/dev/null || need_apt+=(iptables)
command -v dockerd >/dev/null || need_apt+=(docker.io)
# The ssh:// engine of the multi-host test: an sshd on a loopback port.
[ -x /usr/sbin/sshd ] || need_apt+=(openssh-server)
command -v ssh >/dev/null || need_apt+=(openssh-client)
# The external-app tests' Node service (tests/apps/node-ws).
command -v node >/dev/null || need_apt+=(nodejs)
[ -f /usr/share/nodejs/ws/index.js ] || need_apt+=(node-ws)
# The official JavaScript client's tests in a real browser (tests/it/clients.rs).
command -v chromium >/dev/null || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "==> installing ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest
# The official Python client and its tests (clients/python), and the
# benchmark scripts' pictures (matplotlib), from PyPI.
python3 -c 'import websockets, pytest, matplotlib' 2>/dev/null ||
  python3 -m pip install -q --disable-pip-version-check 'websockets>=13' 'pytest>=7' 'matplotlib>=3.7'
if [ "${CI:-}" = true ] && ! docker version >/dev/null 2>&1; then
  echo "CI=true and the Docker Engine is unreachable: the Docker tests will fail" >&2
fi

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
# One optimized build serves both the load-path check and the images: the
# statically linked binary (the Docker tests package it with wsctl build).
echo "==> release build (static)"
# The same command as scripts/build-images.sh, which then finds it built.
# The yardstick server of scripts/bench.py (which the benchmark scripts'
# short mode runs among the tests) is a package of its own
# (examples/bare_server), built apart: it does not link wsctl, so this
# compiles one file, and its features never reach the binary the images
# ship.
RUSTFLAGS='-C target-feature=+crt-static' \
  cargo build --release --locked --target x86_64-unknown-linux-gnu --bin wsctl
RUSTFLAGS='-C target-feature=+crt-static' \
  cargo build --release --locked --target x86_64-unknown-linux-gnu -p bare_server
release="${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/release/wsctl"

# A short correctness check of the load path against the release build:
# zero connect failures, drops, lost replies and count violations (wsctl
# bench exits 1 on any). No timing is asserted.
echo "==> load-path check (release build)"
ulimit -n "$(ulimit -Hn)"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$release" serve --host 127.0.0.1 --port "$port" >/dev/null &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT
python3 - "$port" <<'PY'
import sys, time, urllib.request
for _ in range(100):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/readyz", timeout=1)
        break
    except Exception:
        time.sleep(0.1)
PY
url="ws://127.0.0.1:$port/ws/chat/"
"$release" bench hold -n 5000 --duration 3 --url "$url" --server-pid "$server"
"$release" bench rtt -n 500 --rate 1000 --duration 3 --url "$url"
kill -TERM "$server"
wait "$server"
trap - EXIT

# Deploy tests need the local Nginx and Redis images (no registry here).
# Always rebuilt (a few seconds each), so CI tests this commit's Nginx
# config and binary, not images left on the machine by an earlier run.
echo "==> images"
FORCE=1 bash scripts/build-images.sh

echo "==> tests"
# A test that keeps a log of its own (tests/it/common/test_log.rs) leaves
# it here when it fails; printed below, so CI's output says what happened.
test_logs="${CARGO_TARGET_DIR:-target}/tmp/test-logs"
rm -rf "$test_logs"
status=0
cargo nextest run --locked --no-fail-fast "$@" || status=$?
if [ "$status" -ne 0 ] && [ -n "$(ls -A "$test_logs" 2>/dev/null)" ]; then
  for log in "$test_logs"/*.log; do
    echo "==> the log of a failed test: $log"
    cat "$log"
  done
fi
exit "$status"

