#!/usr/bin/env bash
# A real Docker Swarm of several nodes on this machine, for the Swarm tests
# (issue 25): one Docker Engine per network namespace, joined through a
# bridge of their own.
#
#   scripts/swarm.sh start NAME [NODES]  # NODES in 2..5 (default 3): node 0 manages
#   scripts/swarm.sh stop NAME           # removes everything `start` made
#   scripts/swarm.sh kill NAME N         # node N dies as a machine does
#   scripts/swarm.sh revive NAME N       # a killed node N boots again
#
# NAME is 1-6 lower-case letters or digits: it names the namespaces
# (NAMEn0, NAMEn1, ...), the bridge (NAMEbr) and the root /tmp/wsw-NAME, so
# that tests running at once do not meet. `start` prints shell assignments:
# MANAGER (the manager engine's socket, for DOCKER_HOST), NODES (every
# node's socket), ADDRESSES (every node's address on the bridge; node n is
# 10.215.X.(n+1), the host is 10.215.X.254), and copies the stack's images
# into every node (no registry here: `docker save | docker load`).
#
# Node n's host name is NAMEnN. The namespaces have no default route: a
# pull (there is no registry here) fails at once instead of waiting for DNS
# (a task started in 3 s instead of 14). What works on this machine (../shared/recipes/swarm-on-one-machine.md):
# dockerd started with `nsenter --net=...` (`ip netns exec` fails with
# "Devices cgroup isn't mounted"), each with its own config file, data and
# exec roots; VXLAN overlays work; the routing mesh does not (no IPVS), so
# services use `--endpoint-mode dnsrr` and host-mode ports. Inside its
# namespace each dockerd keeps its own docker0 and iptables, which never
# touch the host's. Load and fault tests reach the nodes only at the
# addresses made here.
set -euo pipefail
# shellcheck source=lib/dockerd.sh
source "$(dirname "$0")/lib/dockerd.sh"

action=${1:?usage: swarm.sh start|stop|kill|revive NAME [NODES|N]}
name=${2:?usage: swarm.sh start|stop|kill|revive NAME [NODES|N]}
nodes=${3:-3}
[[ $action == kill || $action == revive ]] && nodes=3
if ! [[ $name =~ ^[a-z0-9]{1,6}$ ]]; then
    echo "swarm.sh: NAME must be 1-6 of a-z0-9, not '$name'" >&2
    exit 2
fi
if ! [[ $nodes =~ ^[0-9]+$ ]] || ((nodes < 2 || nodes > 5)); then
    echo "swarm.sh: NODES must be 2..5, not '$nodes'" >&2
    exit 2
fi
root=/tmp/wsw-$name
bridge=${name}br
# A /24 of its own per swarm, 10.215.X.0/24: `start` claims the first X
# from a hash of NAME on that no interface of the host has an address in.
# (The hash alone let two swarms started at once share a /24, 1 in 256
# per pair: a test then reached the other swarm's Nginx at its address.)
first_subnet=$((16#$(printf '%s' "$name" | sha256sum | cut -c1-2)))
net=
images=${SWARM_IMAGES:-"wsctl:local wsctl-nginx:local wsctl-redis:local"}

node_socket() { echo "$root/$1/docker.sock"; }

# Starts node N's engine in its namespace, on its own data and exec roots
# (a second start, after a kill, finds its swarm state there).
start_engine() {
    local i=$1 ns=${name}n$1
    local driver=()
    if docker info --format '{{.Driver}}' 2>/dev/null | grep -q fuse-overlayfs; then
        driver=(--storage-driver fuse-overlayfs)
    fi
    # A host name of its own too (a UTS namespace): Swarm names nodes by
    # it, and `docker node ls` should tell them apart.
    nsenter --net="/run/netns/$ns" unshare --uts sh -c 'hostname "$0" && exec "$@"' "$ns" \
        dockerd --config-file "$root/empty.json" \
        --data-root "$root/$i/data" --exec-root "$root/$i/exec" \
        --pidfile "$root/$i/dockerd.pid" -H "unix://$(node_socket "$i")" \
        "${driver[@]}" >>"$root/$i/dockerd.log" 2>&1 &
}

# Waits up to 30 s for node N's engine to answer.
wait_engine() {
    local socket
    socket="unix://$(node_socket "$1")"
    for _ in $(seq 1 300); do
        docker -H "$socket" version >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "swarm.sh: node $1 did not start; its log:" >&2
    tail -20 "$root/$1/dockerd.log" >&2
    exit 1
}

stop() {
    local i
    for dir in "$root"/[0-9]; do
        [[ -d $dir ]] || continue
        i=${dir##*/}
        if [[ -S $(node_socket "$i") ]]; then
            docker -H "unix://$(node_socket "$i")" swarm leave --force >/dev/null 2>&1 || true
        fi
        stop_dockerd "$dir/dockerd.pid"
    done
    for ns in $(ip netns list 2>/dev/null | grep -o "^${name}n[0-9]" || true); do
        ip netns delete "$ns" 2>/dev/null || true
    done
    while iptables -D FORWARD -i "$bridge" -o "$bridge" -j ACCEPT 2>/dev/null; do :; done
    if ip link show "$bridge" >/dev/null 2>&1; then
        ip link delete "$bridge" || true
    fi
    remove_root "$root"
}

# Sets net to a free 10.215.X and gives the bridge X.254, under a lock
# shared by every swarm.sh on this machine, so two starts cannot claim the
# same X between the look and the claim.
claim_subnet() {
    local offset x
    exec 9>/tmp/wsw-subnets.lock
    flock 9
    for ((offset = 0; offset < 256; offset++)); do
        x=$(((first_subnet + offset) % 256))
        if ! ip -4 -o addr show | grep -q " inet 10\.215\.$x\."; then
            net=10.215.$x
            ip addr add "$net.254/24" dev "$bridge"
            flock -u 9
            exec 9>&-
            return
        fi
    done
    echo "swarm.sh: every 10.215.X.0/24 is in use on this host" >&2
    exit 1
}

start() {
    stop
    mkdir -p "$root"
    echo '{}' >"$root/empty.json"
    ip link add "$bridge" type bridge
    claim_subnet
    ip link set "$bridge" up
    # The host forwards bridged traffic through iptables (DROP policy).
    iptables -I FORWARD -i "$bridge" -o "$bridge" -j ACCEPT
    local i ns sockets=() addresses=()
    for ((i = 0; i < nodes; i++)); do
        ns=${name}n$i
        ip netns add "$ns"
        ip link add "${name}v$i" type veth peer name eth0 netns "$ns"
        ip link set "${name}v$i" master "$bridge" up
        ip -n "$ns" addr add "$net.$((i + 1))/24" dev eth0
        ip -n "$ns" link set eth0 up
        ip -n "$ns" link set lo up
        mkdir -p "$root/$i"
        start_engine "$i"
        sockets+=("unix://$(node_socket "$i")")
        addresses+=("$net.$((i + 1))")
    done
    for ((i = 0; i < nodes; i++)); do
        wait_engine "$i"
    done
    docker -H "${sockets[0]}" swarm init --advertise-addr "$net.1" \
        --default-addr-pool 10.217.0.0/16 >/dev/null
    local token
    token=$(docker -H "${sockets[0]}" swarm join-token -q worker)
    for ((i = 1; i < nodes; i++)); do
        docker -H "${sockets[$i]}" swarm join --token "$token" "$net.1:2377" >/dev/null
    done
    # Every node Ready before anyone uses the swarm.
    for _ in $(seq 1 300); do
        ready=$(docker -H "${sockets[0]}" node ls --format '{{.Status}}' | grep -c Ready || true)
        ((ready == nodes)) && break
        sleep 0.1
    done
    if ((ready != nodes)); then
        echo "swarm.sh: $ready of $nodes nodes ready" >&2
        exit 1
    fi
    for image in $images; do
        if docker image inspect "$image" >/dev/null 2>&1; then
            for socket in "${sockets[@]}"; do
                docker save "$image" | docker -H "$socket" load >/dev/null
            done
        fi
    done
    echo "MANAGER=${sockets[0]}"
    echo "NODES=\"${sockets[*]}\""
    echo "ADDRESSES=\"${addresses[*]}\""
}

# kill N: node N dies as a machine does. Its link goes down first, so that
# nothing it held says goodbye (no FIN, no RST: its peers find out by
# their own timeouts, as from a dead host); then its containers' processes
# and its engine (dockerd, containerd, shims) are SIGKILLed. `stop` still
# removes what is left.
kill_node() {
    local n=${1:?usage: swarm.sh kill NAME N}
    local socket pid
    socket="unix://$(node_socket "$n")"
    local containers
    containers=$(docker -H "$socket" ps -q 2>/dev/null || true)
    ip link set "${name}v$n" down
    for id in $containers; do
        pid=$(docker -H "$socket" inspect -f '{{.State.Pid}}' "$id" 2>/dev/null || true)
        [[ $pid =~ ^[1-9][0-9]*$ ]] && kill -9 "$pid" 2>/dev/null || true
    done
    for pid in $(ip netns pids "${name}n$n" 2>/dev/null || true); do
        kill -9 "$pid" 2>/dev/null || true
    done
}

# revive N: a killed node N boots again: its link comes up and its engine
# starts on the data root it had, so it rejoins the swarm as the node it
# was, and its containers with a restart policy start again, with the
# files they had (as after a power cut).
revive_node() {
    local n=${1:?usage: swarm.sh revive NAME N}
    ip link set "${name}v$n" up
    start_engine "$n"
    wait_engine "$n"
}

case $action in
start) start ;;
stop) stop ;;
kill) kill_node "${3:-}" ;;
revive) revive_node "${3:-}" ;;
*)
    echo "swarm.sh: unknown action '$action' (start, stop, kill or revive)" >&2
    exit 2
    ;;
esac
