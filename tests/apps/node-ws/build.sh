#!/usr/bin/env bash
# Builds the Node test app (server.js on Debian's `ws` library) into an
# image FROM scratch: node, the libraries ldd lists, the ws module and
# server.js. No shell, no wsctl. Used by tests/it/deploy_external.rs and
# scripts/bench_deploy.py (APP=node).
#   bash tests/apps/node-ws/build.sh TAG
set -euo pipefail
tag=${1:?usage: build.sh TAG}
here=$(cd "$(dirname "$0")" && pwd)
[ -f /usr/share/nodejs/ws/index.js ] || { echo "Debian's node-ws is missing (apt-get install node-ws)" >&2; exit 1; }
node=$(readlink -f "$(command -v node)")
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx$(dirname "$node")" "$ctx/usr/share/nodejs" "$ctx/app"
cp -L "$node" "$ctx$node"
ldd "$node" | grep -oE '/[^ ]+' | while read -r lib; do
  mkdir -p "$ctx$(dirname "$lib")"
  cp -L "$lib" "$ctx$lib"
done
cp -rL /usr/share/nodejs/ws "$ctx/usr/share/nodejs/"
cp "$here/server.js" "$ctx/app/server.js"
cat > "$ctx/Dockerfile" <<DOCKER
FROM scratch
COPY . /
ENTRYPOINT ["$node", "/app/server.js"]
DOCKER
docker build -q -t "$tag" "$ctx" >/dev/null
echo "built $tag"
