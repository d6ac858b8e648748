#!/usr/bin/env bash
# Deploy and rollback timing on the local Docker Engine (section 7 of
# docs/BENCHMARKS.md): the static wsctl, the local images, then
# scripts/bench_deploy.py. About a minute on 2 cores once built.
set -euo pipefail
cd "$(dirname "$0")/.."
RUSTFLAGS='-C target-feature=+crt-static' \
  cargo build --release --locked --target x86_64-unknown-linux-gnu --bin wsctl
bash scripts/build-images.sh
exec python3 scripts/bench_deploy.py "$@"
