#!/usr/bin/env bash
# Builds the Python test app (app.py: Starlette under uvicorn, counts in
# Redis) into an image FROM scratch: Debian's python3.11, the libraries ldd
# lists for it and its extension modules, the standard library, and the
# app's packages from PyPI. No shell, no wsctl. Used by
# tests/it/deploy_external.rs.
#   bash tests/apps/python-asgi/build.sh TAG
set -euo pipefail
tag=${1:?usage: build.sh TAG}
here=$(cd "$(dirname "$0")" && pwd)
python=/usr/bin/python3.11
stdlib=/usr/lib/python3.11
[ -x "$python" ] && [ -d "$stdlib" ] || { echo "Debian's python3.11 is missing" >&2; exit 1; }
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
copy_libraries() {
  { ldd "$1" 2>/dev/null || true; } | { grep -oE '/[^ ]+' || true; } | while read -r lib; do
    [ -e "$ctx$lib" ] && continue
    mkdir -p "$ctx$(dirname "$lib")"
    cp -L "$lib" "$ctx$lib"
  done
}
mkdir -p "$ctx/usr/bin" "$ctx/usr/lib" "$ctx/app/lib" "$ctx/tmp"
cp -L "$python" "$ctx$python"
copy_libraries "$python"
# The standard library without its tests and caches.
tar -C /usr/lib --exclude='python3.11/test' --exclude='__pycache__' \
  --exclude='python3.11/idlelib' --exclude='python3.11/tkinter' -cf - python3.11 \
  | tar -C "$ctx/usr/lib" -xf -
for module in "$ctx$stdlib"/lib-dynload/*.so; do copy_libraries "$module"; done
# Pinned, pure-Python packages (wsproto: uvicorn's WebSocket protocol;
# async-timeout: redis needs it below Python 3.11.3, and Debian has 3.11.2).
python3 -m pip install -q --disable-pip-version-check --no-compile --target "$ctx/app/lib" \
  --only-binary=:all: --python-version 3.11 \
  starlette==1.10.0 uvicorn==0.55.0 redis==8.1.0 wsproto==1.2.0 async-timeout==5.0.1 2>&1 \
  | grep -v "Running pip as the 'root' user" || true
[ -d "$ctx/app/lib/uvicorn" ] || { echo "pip could not install the app's packages" >&2; exit 1; }
cp "$here/app.py" "$ctx/app/app.py"
cat > "$ctx/Dockerfile" <<DOCKER
FROM scratch
COPY . /
ENV PYTHONPATH=/app/lib PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
ENTRYPOINT ["$python", "/app/app.py"]
DOCKER
docker build -q -t "$tag" "$ctx" >/dev/null
echo "built $tag"
