#!/usr/bin/env bash
# A second Docker Engine on this machine, standing in for a second host.
#
#   scripts/second-engine.sh start N   # N in 1..250: bridge, addresses and paths
#   scripts/second-engine.sh stop N    # removes everything `start` made
#
# `start` prints shell assignments (DOCKER_HOST=..., TCP=..., BRIDGE=...)
# and copies the stack's images into the new engine (no registry here).
# With TLS=1 the TCP socket requires TLS with client certificates, as
# `dockerd --tlsverify` on a remote host does; the CA, client certificate
# and key are made here (CERTS=dir with ca.pem, cert.pem, key.pem).
#
# The engine gets a bridge of its own (w2eN, 10.214.N.1/24) and an address
# pool of its own (10.213.N.0/24). It runs with --iptables=false (the first
# engine owns this host's iptables), and the host forwards bridged traffic
# through iptables with a DROP policy, so one FORWARD rule lets containers
# on this engine's bridges talk: create its networks with
# `-o com.docker.network.bridge.name=w2eN<suffix>` (printed as BRIDGES). Never `--bridge=none`: at start,
# that makes dockerd delete the host's docker0 and breaks the first engine.
# `--config-file` points at an empty file because /etc/docker/daemon.json
# pins the first engine's data root. Load and fault tests reach this engine
# only over loopback and the addresses made here.
set -euo pipefail
# shellcheck source=lib/dockerd.sh
source "$(dirname "$0")/lib/dockerd.sh"

action=${1:?usage: second-engine.sh start|stop N}
n=${2:?usage: second-engine.sh start|stop N}
if ! [[ $n =~ ^[0-9]+$ ]] || ((n < 1 || n > 250)); then
    echo "second-engine.sh: N must be 1..250, not '$n'" >&2
    exit 2
fi
root=/tmp/wsctl-engine-$n
bridge=w2e$n
socket=$root/docker.sock
tcp_port=$((23750 + n))
images=${SECOND_ENGINE_IMAGES:-"wsctl:local wsctl-nginx:local"}

stop() {
    if [[ -S $socket ]]; then
        # Containers and networks first: their bridges live in the host's
        # network namespace and would outlive the engine.
        local containers
        containers=$(docker -H "unix://$socket" ps -aq 2>/dev/null || true)
        if [[ -n $containers ]]; then
            docker -H "unix://$socket" rm -f $containers >/dev/null 2>&1 || true
        fi
        docker -H "unix://$socket" network prune -f >/dev/null 2>&1 || true
    fi
    stop_dockerd "$root/dockerd.pid"
    while iptables -D FORWARD -i "$bridge+" -o "$bridge+" -j ACCEPT 2>/dev/null; do :; done
    if ip link show "$bridge" >/dev/null 2>&1; then
        ip link delete "$bridge" || true
    fi
    # Network bridges the engine made for its networks (br-<id>) go with
    # the engine; its containerd, mounts and root go here.
    remove_root "$root"
}

# A CA, a server certificate for 127.0.0.1 and a client certificate.
make_certs() {
    local dir=$1
    mkdir -p "$dir"
    (
        cd "$dir"
        openssl req -x509 -newkey rsa:2048 -nodes -keyout ca-key.pem -out ca.pem \
            -days 2 -subj "/CN=wsctl test CA" 2>/dev/null
        openssl req -newkey rsa:2048 -nodes -keyout server-key.pem -out server.csr \
            -subj "/CN=127.0.0.1" 2>/dev/null
        printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >server.ext
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial \
            -days 2 -extfile server.ext -out server-cert.pem 2>/dev/null
        openssl req -newkey rsa:2048 -nodes -keyout key.pem -out client.csr \
            -subj "/CN=wsctl" 2>/dev/null
        printf 'extendedKeyUsage=clientAuth\n' >client.ext
        openssl x509 -req -in client.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial \
            -days 2 -extfile client.ext -out cert.pem 2>/dev/null
    )
}

start() {
    stop
    mkdir -p "$root"
    echo '{}' >"$root/empty.json"
    ip link add "$bridge" type bridge
    ip addr add "10.214.$n.1/24" dev "$bridge"
    ip link set "$bridge" up
    iptables -I FORWARD -i "$bridge+" -o "$bridge+" -j ACCEPT
    local tls=()
    if [[ ${TLS:-0} == 1 ]]; then
        make_certs "$root/certs"
        tls=(--tlsverify --tlscacert "$root/certs/ca.pem"
            --tlscert "$root/certs/server-cert.pem" --tlskey "$root/certs/server-key.pem")
    fi
    local driver=()
    if docker info --format '{{.Driver}}' 2>/dev/null | grep -q fuse-overlayfs; then
        driver=(--storage-driver fuse-overlayfs)
    fi
    dockerd --config-file "$root/empty.json" \
        --data-root "$root/data" --exec-root "$root/exec" \
        --pidfile "$root/dockerd.pid" \
        -H "unix://$socket" -H "tcp://127.0.0.1:$tcp_port" \
        --bridge="$bridge" --iptables=false --ip6tables=false \
        --default-address-pool "base=10.213.$n.0/24,size=26" \
        "${driver[@]}" "${tls[@]}" >"$root/dockerd.log" 2>&1 &
    for _ in $(seq 1 300); do
        if docker -H "unix://$socket" version >/dev/null 2>&1; then
            break
        fi
        sleep 0.1
    done
    if ! docker -H "unix://$socket" version >/dev/null 2>&1; then
        echo "second-engine.sh: dockerd did not start; its log:" >&2
        tail -20 "$root/dockerd.log" >&2
        exit 1
    fi
    for image in $images; do
        docker save "$image" | docker -H "unix://$socket" load >/dev/null
    done
    echo "DOCKER_HOST=unix://$socket"
    echo "TCP=tcp://127.0.0.1:$tcp_port"
    echo "BRIDGE=$bridge"
    echo "BRIDGES=$bridge"
    if [[ ${TLS:-0} == 1 ]]; then
        echo "CERTS=$root/certs"
    fi
}

case $action in
start) start ;;
stop) stop ;;
*)
    echo "second-engine.sh: unknown action '$action' (start or stop)" >&2
    exit 2
    ;;
esac
