#!/usr/bin/env python3
"""Idle WebSockets through one host's Nginx with N replicas, then one deploy
under all of them (section 8 of docs/BENCHMARKS.md).

    python3 scripts/bench_hold_deploy.py [CONNECTIONS] [REPLICAS]

Builds nothing: run scripts/build-images.sh first (the static wsctl and
the local images). Steps:
1. a stack with its own prefix and free port, `replicas: REPLICAS`, and
   `unlimited_networks` covering the Docker networks (the load comes from
   one address);
2. `wsctl bench hold --follow -n CONNECTIONS` straight at the Nginx
   container (Docker's userland proxy on the published port gives up at
   about 3,000 connections here), which splits itself into processes of
   19,900 connections at most;
3. memory of every container (`docker stats`) before and while holding,
   and per held connection in Nginx and in each app replica;
4. `wsctl deploy` while every connection is held: each session must come
   back resumed with its count (`follow` in the bench report);
5. everything removed, and the ephemeral port range restored.

One source address to one IP:port has about 28,000 ephemeral ports, so the
run widens `net.ipv4.ip_local_port_range` to 1024-65535 for its duration
(and puts it back).
"""
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
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


def connections(config, colour):
    status = json.loads(run(WSCTL, "status", "--json", "--config", config))
    return status["colors"][colour].get("connections") or 0


def main():
    unique = uuid.uuid4().hex[:8]
    prefix = f"b{unique}_"
    workdir = tempfile.mkdtemp(prefix="wsctl-bench-hold-")
    config = os.path.join(workdir, "wsctl.yaml")
    nets = '["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]'
    with open(config, "w") as f:
        f.write(f'prefix: "{prefix}"\npublic_address: "127.0.0.1:{free_port()}"\n'
                f"replicas: {REPLICAS}\nready_timeout: 60\n"
                f"unlimited_networks: {nets}\nprivate_networks: {nets}\n")
        if DRAIN_WINDOW:
            window = int(DRAIN_WINDOW)
            f.write(f'app_env: {{DRAIN_WINDOW: "{window}", SHUTDOWN_TIMEOUT: "{window + 10}"}}\n'
                    f"drain_timeout: {window + 30}\n")
    with open(PORT_RANGE) as f:
        old_range = f.read().strip()
    # Only a load beyond the usual ephemeral range needs it widened (a short
    # run in CI leaves the machine's setting alone).
    widen = CONNECTIONS > 20000
    bench = None
    try:
        if widen:
            with open(PORT_RANGE, "w") as f:
                f.write("1024 65535")
        run(WSCTL, "deploy", "--config", config)
        nginx = f"{prefix}nginx"
        ip = run("docker", "inspect", "-f",
                 "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", nginx).strip()
        workers = int(run("docker", "top", nginx).count("nginx: worker process"))
        before = memory(prefix)
        print(f"stack: {REPLICAS} replicas, Nginx {ip} with {workers} workers; before: {before}",
              flush=True)
        url = f"ws://{ip}:80/ws/chat/"
        bench = subprocess.Popen(
            [WSCTL, "bench", "hold", "--follow", "-n", str(CONNECTIONS),
             "--duration", str(HOLD_SECONDS), "--sources", "1",
             "--connect-concurrency", "768", "--json", "--url", url],
            stdout=subprocess.PIPE, text=True)
        started = time.monotonic()
        held = 0
        while time.monotonic() - started < 900 and bench.poll() is None:
            held = connections(config, "blue")
            print(f"  {time.monotonic() - started:6.0f} s: {held} held", flush=True)
            if held >= CONNECTIONS:
                break
            time.sleep(10)
        opened_in = time.monotonic() - started
        time.sleep(5)
        holding = memory(prefix)
        print(f"held {held} after {opened_in:.0f} s; memory while holding: {holding}", flush=True)
        print(f"memory per held connection: {per_connection(before, holding, held, REPLICAS)}",
              flush=True)
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
        report = json.loads(out)
        report.pop("connect_histogram", None)
        print(json.dumps(report, indent=1))
        return 0 if deploy.returncode == 0 and bench.returncode == 0 else 1
    finally:
        if bench is not None and bench.poll() is None:
            bench.kill()
        if widen:
            with open(PORT_RANGE, "w") as f:
                f.write(old_range)
        names = run("docker", "ps", "-aq", "--filter", f"name={prefix}").split()
        if names:
            subprocess.run(["docker", "rm", "-f", *names], capture_output=True)
        volumes = run("docker", "volume", "ls", "-q", "--filter", f"name={prefix}").split()
        if volumes:
            subprocess.run(["docker", "volume", "rm", *volumes], capture_output=True)
        subprocess.run(["docker", "network", "rm", f"{prefix}wsctl"], capture_output=True)


if __name__ == "__main__":
    sys.exit(main())
