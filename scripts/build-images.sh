#!/usr/bin/env bash
# Builds the images the stack needs on a machine without a registry:
#   wsctl-nginx:local  Debian's nginx, its libraries and a minimal filesystem, FROM scratch
#   wsctl-redis:local  Debian's redis-server and its libraries, FROM scratch
#   wsctl:local        this repository's wsctl, statically linked, via `wsctl build`
# Users with a registry do not need this: image names are configurable and
# wsctl pulls an absent image. Set FORCE=1 to rebuild images that exist.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v nginx >/dev/null || need+=(nginx)
command -v redis-server >/dev/null || need+=(redis-server)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

exists() { [ -z "${FORCE:-}" ] && docker image inspect "$1" >/dev/null 2>&1; }

# Copies a binary and every library ldd lists (and the loader) into $ctx.
copy_with_libraries() {
  local binary=$1 ctx=$2
  mkdir -p "$ctx$(dirname "$binary")"
  cp -L "$binary" "$ctx$binary"
  ldd "$binary" | grep -oE '/[^ ]+' | while read -r lib; do
    mkdir -p "$ctx$(dirname "$lib")"
    cp -L "$lib" "$ctx$lib"
  done
}

build_scratch() {
  local tag=$1 ctx=$2
  docker build -q -t "$tag" "$ctx" >/dev/null
  echo "built $tag"
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if exists wsctl-redis:local; then echo "wsctl-redis:local exists"; else
  ctx=$work/redis
  copy_with_libraries "$(command -v redis-server)" "$ctx"
  mkdir -p "$ctx/data" "$ctx/tmp"
  cat > "$ctx/Dockerfile" <<DOCKER
FROM scratch
COPY . /
WORKDIR /data
EXPOSE 6379
ENTRYPOINT ["$(command -v redis-server)"]
CMD ["--bind", "0.0.0.0", "--protected-mode", "no", "--save", "", "--appendonly", "no"]
DOCKER
  build_scratch wsctl-redis:local "$ctx"
fi

if exists wsctl-nginx:local; then echo "wsctl-nginx:local exists"; else
  ctx=$work/nginx
  copy_with_libraries "$(command -v nginx)" "$ctx"
  mkdir -p "$ctx/etc/nginx/conf.d" "$ctx/var/log/nginx" "$ctx/var/lib/nginx/body" \
    "$ctx/var/lib/nginx/proxy" "$ctx/run" "$ctx/tmp"
  cp /etc/nginx/mime.types "$ctx/etc/nginx/mime.types"
  echo 'root:x:0:0:root:/root:/bin/false' > "$ctx/etc/passwd"
  echo 'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' >> "$ctx/etc/passwd"
  echo 'root:x:0:' > "$ctx/etc/group"
  echo 'nogroup:x:65534:' >> "$ctx/etc/group"
  # nginx resolves the user name through NSS: ship the files backend.
  for lib in /lib/x86_64-linux-gnu/libnss_files.so.2; do
    [ -e "$lib" ] && { mkdir -p "$ctx$(dirname "$lib")"; cp -L "$lib" "$ctx$lib"; }
  done
  echo 'passwd: files' > "$ctx/etc/nsswitch.conf"
  echo 'group: files' >> "$ctx/etc/nsswitch.conf"
  cp nginx/nginx.conf "$ctx/etc/nginx/nginx.conf"
  # Until the first switch renders the real upstream: nothing is live.
  cp nginx/bootstrap-upstream.conf "$ctx/etc/nginx/conf.d/upstream.conf"
  # The plain listener (port 80; `nginx_network: host` replaces it).
  cp nginx/listen.conf "$ctx/etc/nginx/conf.d/listen.conf"
  cat > "$ctx/Dockerfile" <<DOCKER
FROM scratch
COPY . /
EXPOSE 80
STOPSIGNAL SIGQUIT
# nginx.conf leaves worker_processes to the command line (wsctl sizes it).
CMD ["$(command -v nginx)", "-g", "daemon off; worker_processes auto;"]
DOCKER
  build_scratch wsctl-nginx:local "$ctx"
fi

if exists wsctl:local; then echo "wsctl:local exists"; else
  RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --locked --target x86_64-unknown-linux-gnu --bin wsctl
  "${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/release/wsctl" build --tag wsctl:local
fi
