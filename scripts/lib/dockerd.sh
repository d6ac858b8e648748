# What the scripts that start Docker Engines of their own share
# (second-engine.sh, swarm.sh): sourced, not run.

# stop_dockerd PIDFILE: SIGTERM, up to 10 s to exit, then SIGKILL.
stop_dockerd() {
    local pid
    [[ -f $1 ]] || return 0
    pid=$(cat "$1")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
}

# remove_root ROOT: the containerd and shims that outlived their dockerd,
# what overlay and fuse left mounted under ROOT, then ROOT itself.
remove_root() {
    pkill -f "$1/" 2>/dev/null || true
    grep -o " $1[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    rm -rf "$1"
}
