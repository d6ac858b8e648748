#!/usr/bin/env python3
"""Idle WebSockets through one host's public address with N replicas, then
one deploy under all of them (sections 8 and 11 of docs/BENCHMARKS.md).

    python3 scripts/bench_hold_deploy.py [CONNECTIONS] [REPLICAS]

Builds nothing: run scripts/build-images.sh first (the static wsctl and
the local images). Steps:
1. a stack with its own prefix and free port, `replicas: REPLICAS`,
   `nginx_network: host` (NGINX_NETWORK=stack: the default network, the
   load then goes straight at the Nginx container, since Docker's userland
   proxy on a published loopback port gives up near 3,000 connections),
   and `unlimited_networks` covering loopback and the Docker networks (the
   load comes from a few addresses);
2. `wsctl bench hold --follow -n CONNECTIONS` to the public address from
   loopback sources 127.0.0.1..S (S: one per 5,000 connections, or
   SOURCES), which splits itself into processes of 19,900 connections at
   most;
3. memory of every container (`docker stats`) before and while holding,
   and per held connection in Nginx and in each app replica;
4. `wsctl deploy` while every connection is held: each session must come
   back resumed with its count (`follow` in the bench report);
5. connects per second for each 10,000 opened, resumes per second during
   the move, and a picture of both over the run (PLOT, default
   docs/bench_hold_deploy_CONNECTIONS.png; in BENCH_SHORT mode a file in
   the run's temporary directory), drawn from the bench's own timeline;
6. CPU time per part of the machine over the move (each colour's
   replicas, Nginx, Redis, the Docker daemon side, the bench on the host),
   sampled from /proc every second, and per moved session: what the move
   costs and where, so that what bounds it is a figure, not a guess;
7. everything removed, and the kernel settings restored.

One source address to one IP:port has about 28,000 ephemeral ports, so the
run widens `net.ipv4.ip_local_port_range` to 1024-65535 for its duration;
past 40,000 connections it also raises `net.netfilter.nf_conntrack_max`
(every socket pair is tracked, and a move adds a new pair while the old
one lingers in TIME_WAIT), and puts both back.
"""
import json
import math
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid

# The static wsctl scripts/build-images.sh builds (WSCTL: another path,
# as the test suite gives when cargo builds elsewhere).
WSCTL = os.environ.get("WSCTL", "target/x86_64-unknown-linux-gnu/release/wsctl")
CONNECTIONS = int(sys.argv[1]) if len(sys.argv) > 1 else 50000
REPLICAS = int(sys.argv[2]) if len(sys.argv) > 2 else 4
# Seconds to hold after every connection opened (the deploy runs inside).
HOLD_SECONDS = int(os.environ.get("HOLD_SECONDS", "240"))
# Seconds over which each old replica spreads its goodbyes (the service's
# DRAIN_WINDOW; unset: the service's default of 2 s). SHUTDOWN_TIMEOUT and
# drain_timeout grow with it.
DRAIN_WINDOW = os.environ.get("DRAIN_WINDOW")
PORT_RANGE = "/proc/sys/net/ipv4/ip_local_port_range"
CONNTRACK_MAX = "/proc/sys/net/netfilter/nf_conntrack_max"
NGINX_NETWORK = os.environ.get("NGINX_NETWORK", "host")
SHORT = os.environ.get("BENCH_SHORT") == "1"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(*args, **kwargs):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kwargs).stdout


def mib(text):
    """`12.3MiB` / `1.2GiB` -> MiB."""
    number, unit = re.match(r"([\d.]+)\s*([KMG]i?B)", text).groups()
    return float(number) * {"KiB": 1 / 1024, "MiB": 1, "GiB": 1024}.get(unit, 1)


def memory(prefix):
    """MiB per container of the stack, from `docker stats`."""
    out = run("docker", "stats", "--no-stream", "--format", "{{.Name}} {{.MemUsage}}")
    usage = {}
    for line in out.splitlines():
        name, rest = line.split(" ", 1)
        if name.startswith(prefix):
            usage[name[len(prefix):]] = round(mib(rest.split("/")[0].strip()), 1)
    return usage


def per_connection(before, holding, held, replicas):
    """KiB per held WebSocket: Nginx (two sockets each), and each app replica
    (its share of them), from the `docker stats` figures."""
    if not held:
        return {}
    figures = {}
    for name, mib_now in holding.items():
        share = held / replicas if name.startswith("app_") else held
        if name == "nginx" or name.startswith("app_"):
            figures[name] = round((mib_now - before.get(name, 0)) * 1024 / share, 1)
    return figures


def series(counts):
    """A timeline's `{unix_second: count}` as sorted (second, count) pairs."""
    return sorted((int(second), count) for second, count in counts.items())


def per_block(counts, block=10000):
    """Connects per second over each `block` opened, in order (the last one
    partial): the rate of the first 10,000 beside the last shows whether it
    falls. Each second's connects are taken as spread evenly over it."""
    points = series(counts)
    if not points:
        return []
    marks = [float(points[0][0])]
    total = 0
    for second, count in points:
        while total + count >= len(marks) * block:
            marks.append(second + (len(marks) * block - total) / count)
        total += count
    rates = [round(block / max(b - a, 1e-3)) for a, b in zip(marks, marks[1:])]
    rest = total - (len(marks) - 1) * block
    if rest > 0:
        rates.append(round(rest / max(points[-1][0] + 1 - marks[-1], 1e-3)))
    return rates


def describe(timeline, follow):
    """Per 10,000: connects per second; the move: resumes per second."""
    connects = series(timeline.get("connects", {}))
    resumes = series(timeline.get("resumes", {}))
    blocks = per_block(timeline.get("connects", {}))
    figures = {"connects_per_second_per_10000": blocks}
    if len(blocks) >= 2:
        figures["last_over_first"] = round(blocks[-1] / max(blocks[0], 1), 2)
    if connects:
        figures["connect_seconds"] = connects[-1][0] - connects[0][0] + 1
    if resumes:
        figures["resumes"] = sum(count for _, count in resumes)
        figures["peak_resumes_per_second"] = max(count for _, count in resumes)
    if follow.get("move_seconds"):
        figures["move_seconds"] = follow["move_seconds"]
        figures["resumes_per_second"] = round(follow.get("resumed", 0) / follow["move_seconds"])
    return figures


def draw(timeline, follow, path, title):
    """Connects and resumes per second over the run, as a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    connects = series(timeline.get("connects", {}))
    resumes = series(timeline.get("resumes", {}))
    everything = connects + resumes
    if not everything:
        return
    zero = min(second for second, _ in everything)
    fig, ax = plt.subplots(figsize=(10, 4.5), dpi=100)
    last = max(second for second, _ in everything) + 1
    for points, label, colour in [(connects, "first connects per second", "tab:blue"),
                                  (resumes, "sessions resumed per second", "tab:orange")]:
        if points:
            # Every second of the run, a quiet one as 0.
            counts = dict(points)
            xs = list(range(zero, last + 1))
            ax.step([x - zero for x in xs], [counts.get(x, 0) for x in xs], where="post",
                    label=label, color=colour)
    if follow.get("first_goodbye_unix_ms"):
        ax.axvline(follow["first_goodbye_unix_ms"] / 1000 - zero, color="grey", linestyle=":",
                   label="first goodbye (deploy drains blue)")
    total = sum(c for _, c in connects)
    held = ax.twinx()
    running, xs, ys = 0, [], []
    for second, count in connects:
        running += count
        xs.append(second - zero)
        ys.append(running)
    held.plot(xs, ys, color="tab:green", alpha=0.5, label=f"opened so far (of {total:,})")
    held.set_ylabel("connections opened")
    ax.set_xlabel("seconds since the first connect")
    ax.set_ylabel("per second")
    ax.set_ylim(bottom=0)
    held.set_ylim(bottom=0)
    ax.set_title(title, fontsize=10)
    lines, labels = ax.get_legend_handles_labels()
    more, more_labels = held.get_legend_handles_labels()
    ax.legend(lines + more, labels + more_labels, loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# Host processes by what they are part of (containers go by their name).
DOCKER_SIDE = {"dockerd", "containerd", "containerd-shim", "runc", "runc:[2:INIT]", "docker-proxy"}


class CpuSampler(threading.Thread):
    """CPU seconds per part of the machine, once a second, from
    /proc/PID/stat (user + system time) and /proc/PID/cgroup (which
    container a process is in): the stack's containers by name (replicas
    grouped by colour), the Docker daemon side, `wsctl` on the host (the
    bench and the deploy command), kernel threads, and the rest. A process
    that starts and ends between two samples (an exec's runc) is missed."""

    def __init__(self, prefix):
        super().__init__(daemon=True)
        self.prefix = prefix
        self.samples = []  # (unix time, {part: seconds in the last second})
        self.stop = threading.Event()
        self.names = {}
        self.tick = os.sysconf("SC_CLK_TCK")

    def containers(self):
        out = run("docker", "ps", "--no-trunc", "--format", "{{.ID}} {{.Names}}")
        return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)

    def part(self, comm, cgroup):
        for piece in re.findall(r"[0-9a-f]{64}", cgroup):
            name = self.names.get(piece)
            if name is None:
                continue
            if not name.startswith(self.prefix):
                return "other containers"
            name = name[len(self.prefix):]
            return re.sub(r"^(app_[a-z]+)_\d+$", r"\1", name)
        if comm in DOCKER_SIDE:
            return "docker daemon side"
        if comm in ("wsctl", "tokio-rt-worker"):
            return "wsctl on the host (bench, deploy)"
        if re.match(r"(kworker|ksoftirqd|rcu_|migration|kswapd)", comm):
            return "kernel threads"
        return "other"

    def read(self):
        ticks = {}
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/stat") as f:
                    stat = f.read()
                with open(f"/proc/{pid}/cgroup") as f:
                    cgroup = f.read()
            except OSError:
                continue
            comm = stat[stat.index("(") + 1:stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2:].split()
            ticks[pid] = (self.part(comm, cgroup), int(fields[11]) + int(fields[12]))
        return ticks

    def run(self):
        self.names = self.containers()
        last, looked = self.read(), time.time()
        while not self.stop.wait(1.0):
            if time.time() - looked > 5:
                self.names, looked = self.containers(), time.time()
            now = self.read()
            used = {}
            for pid, (part, ticks) in now.items():
                before = last.get(pid)
                if before is not None:
                    used[part] = used.get(part, 0) + (ticks - before[1]) / self.tick
            self.samples.append((time.time(), used))
            last = now

    def between(self, start, end):
        """CPU seconds per part over [start, end] (unix seconds)."""
        total = {}
        for at, used in self.samples:
            if start <= at <= end + 1:
                for part, seconds in used.items():
                    total[part] = total.get(part, 0) + seconds
        return {part: round(seconds, 1) for part, seconds in
                sorted(total.items(), key=lambda item: -item[1])}


def move_cost(sampler, follow):
    """The move's CPU: seconds per part, per moved session, and the time
    the machine's cores need for it at full use (a floor for the move)."""
    start, end = follow.get("first_goodbye_unix_ms"), follow.get("last_back_unix_ms")
    if not (start and end and follow.get("resumed")):
        return {}
    parts = sampler.between(start / 1000, end / 1000)
    ours = sum(seconds for part, seconds in parts.items()
               if part not in ("other", "other containers"))
    cores = os.cpu_count() or 1
    return {
        "cpu_seconds_by_part": parts,
        "cpu_ms_per_moved_session": round(1000 * ours / follow["resumed"], 3),
        "cores": cores,
        "seconds_at_full_use_of_the_cores": round(ours / cores, 1),
    }


def connections(config, colour):
    status = json.loads(run(WSCTL, "status", "--json", "--config", config))
    return status["colors"][colour].get("connections") or 0


def main():
    unique = uuid.uuid4().hex[:8]
    prefix = f"b{unique}_"
    workdir = tempfile.mkdtemp(prefix="wsctl-bench-hold-")
    config = os.path.join(workdir, "wsctl.yaml")
    nets = '["127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]'
    public = f"127.0.0.1:{free_port()}"
    with open(config, "w") as f:
        f.write(f'prefix: "{prefix}"\npublic_address: "{public}"\n'
                f"replicas: {REPLICAS}\nready_timeout: 60\nnginx_network: {NGINX_NETWORK}\n"
                f"unlimited_networks: {nets}\nprivate_networks: {nets}\n")
        if CONNECTIONS > 40000 and not DRAIN_WINDOW:
            # Tens of thousands of goodbyes and closes take a saturated
            # replica longer than the default 15 s drain.
            f.write('app_env: {SHUTDOWN_TIMEOUT: "50"}\ndrain_timeout: 60\n')
        if DRAIN_WINDOW:
            window = int(DRAIN_WINDOW)
            f.write(f'app_env: {{DRAIN_WINDOW: "{window}", SHUTDOWN_TIMEOUT: "{window + 10}"}}\n'
                    f"drain_timeout: {window + 30}\n")
    with open(PORT_RANGE) as f:
        old_range = f.read().strip()
    # Only a load beyond the usual ephemeral range needs it widened (a short
    # run in CI leaves the machine's setting alone).
    widen = CONNECTIONS > 20000
    old_conntrack = None
    if CONNECTIONS > 40000 and os.path.exists(CONNTRACK_MAX):
        with open(CONNTRACK_MAX) as f:
            old_conntrack = f.read().strip()
    bench = None
    try:
        if widen:
            with open(PORT_RANGE, "w") as f:
                f.write("1024 65535")
        if old_conntrack is not None:
            with open(CONNTRACK_MAX, "w") as f:
                f.write(str(max(int(old_conntrack), 8 * CONNECTIONS)))
        run(WSCTL, "deploy", "--config", config)
        nginx = f"{prefix}nginx"
        workers = int(run("docker", "top", nginx).count("nginx: worker process"))
        before = memory(prefix)
        if NGINX_NETWORK == "host":
            # The public address itself, from loopback sources of 5,000
            # connections each: connect() searches the source's ephemeral
            # ports for a free one, and the fuller they are, the longer it
            # searches (docs/BENCHMARKS.md section 11).
            url = f"ws://{public}/ws/chat/"
            sources = int(os.environ.get("SOURCES") or min(250, max(1, math.ceil(CONNECTIONS / 5000))))
        else:
            ip = run("docker", "inspect", "-f",
                     "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", nginx).strip()
            url = f"ws://{ip}:80/ws/chat/"
            sources = 1
        print(f"stack: {REPLICAS} replicas, Nginx on the {NGINX_NETWORK} network with {workers} "
              f"workers, load to {url} from {sources} sources; before: {before}", flush=True)
        bench = subprocess.Popen(
            [WSCTL, "bench", "hold", "--follow", "-n", str(CONNECTIONS),
             "--duration", str(HOLD_SECONDS), "--sources", str(sources),
             "--connect-concurrency", "768", "--json", "--url", url],
            stdout=subprocess.PIPE, text=True)
        started = time.monotonic()
        held, last = 0, -1
        while time.monotonic() - started < 900 and bench.poll() is None:
            held = connections(config, "blue")
            print(f"  {time.monotonic() - started:6.0f} s: {held} held", flush=True)
            # All open, or no more opening (a few connects timed out).
            if held >= CONNECTIONS or held == last:
                break
            last = held
            time.sleep(10)
        opened_in = time.monotonic() - started
        time.sleep(5)
        holding = memory(prefix)
        print(f"held {held} after {opened_in:.0f} s; memory while holding: {holding}", flush=True)
        print(f"memory per held connection: {per_connection(before, holding, held, REPLICAS)}",
              flush=True)
        sampler = CpuSampler(prefix)
        sampler.start()
        deploy_started = time.monotonic()
        deploy = subprocess.run([WSCTL, "deploy", "--json", "--config", config],
                                capture_output=True, text=True)
        deploy_seconds = time.monotonic() - deploy_started
        summary = [json.loads(line) for line in deploy.stdout.splitlines() if line.startswith("{")]
        steps = [e for e in summary if e.get("event") == "step" and e.get("status") != "started"]
        print(f"deploy exit {deploy.returncode} in {deploy_seconds:.1f} s")
        for step in steps:
            print(f"  {step['step']:<10} {step['status']:<7} {step.get('duration_ms')} ms  "
                  f"{step.get('detail', '')[:120]}")
        green = connections(config, "green")
        after = memory(prefix)
        print(f"green holds {green}; memory after the move: {after}", flush=True)
        out, _ = bench.communicate(timeout=HOLD_SECONDS + 900)
        sampler.stop.set()
        report = json.loads(out)
        report.pop("connect_histogram", None)
        timeline = report.pop("timeline", None) or {}
        print(json.dumps(report, indent=1))
        phases = describe(timeline, report.get("follow") or {})
        phases["move_cpu"] = move_cost(sampler, report.get("follow") or {})
        print(json.dumps(phases, indent=1))
        plot = os.environ.get("PLOT") or (
            os.path.join(workdir, "timeline.png") if SHORT
            else f"docs/bench_hold_deploy_{CONNECTIONS}.png")
        draw(timeline, report.get("follow") or {}, plot,
             f"{CONNECTIONS:,} idle WebSockets, replicas {REPLICAS}, Nginx on the "
             f"{NGINX_NETWORK} network: connects, then one deploy")
        print(f"picture: {plot}")
        return 0 if deploy.returncode == 0 and bench.returncode == 0 else 1
    finally:
        if bench is not None and bench.poll() is None:
            bench.kill()
        if widen:
            with open(PORT_RANGE, "w") as f:
                f.write(old_range)
        if old_conntrack is not None:
            with open(CONNTRACK_MAX, "w") as f:
                f.write(old_conntrack)
        names = run("docker", "ps", "-aq", "--filter", f"name={prefix}").split()
        if names:
            subprocess.run(["docker", "rm", "-f", *names], capture_output=True)
        volumes = run("docker", "volume", "ls", "-q", "--filter", f"name={prefix}").split()
        if volumes:
            subprocess.run(["docker", "volume", "rm", *volumes], capture_output=True)
        subprocess.run(["docker", "network", "rm", f"{prefix}wsctl"], capture_output=True)


if __name__ == "__main__":
    sys.exit(main())
