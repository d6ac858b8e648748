#!/usr/bin/env python3
"""What Nginx's old workers cost after reloads that cut no socket (section 9
of docs/BENCHMARKS.md).

    python3 scripts/bench_reloads.py [CONNECTIONS]

Builds nothing: run scripts/build-images.sh first (the static wsctl and the
local images). Steps:
1. a stack with its own prefix and free port (one replica; `unlimited_networks`
   covering the Docker networks, since the load comes from one address);
2. CONNECTIONS idle WebSockets on blue (`wsctl bench hold --follow`, straight
   at the Nginx container, so every one goes through Nginx);
3. a 3-step canary (`--canary-steps 20,50,80,100`, 8 s of analysis each) while
   they are held, with a second, smaller group of clients connecting during
   the first step (they land on both colours by weight);
4. after each reload, the old workers and their resident memory (the
   deploy's own `reload` events, from `docker top`), then every 2 s after the
   deploy: when the old workers go (the drain moves blue's clients, which
   reconnect through the new workers) and what stays (the canary's clients on
   green, still on the workers of the step they connected in);
5. everything removed.
"""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid

# The static wsctl scripts/build-images.sh builds (WSCTL: another path,
# as the test suite gives when cargo builds elsewhere).
WSCTL = os.environ.get("WSCTL", "target/x86_64-unknown-linux-gnu/release/wsctl")
CONNECTIONS = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
LATE = max(CONNECTIONS // 5, 1)
# BENCH_SHORT=1: the same steps, shorter (CI runs it so that a script that
# breaks is caught; no figure is kept).
SHORT = os.environ.get("BENCH_SHORT") == "1"
HOLD = 40 if SHORT else 150
ANALYSIS = "2" if SHORT else "8"
LOOKS_AFTER = 2 if SHORT else 10


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(*args):
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def workers(nginx):
    """(current workers, old workers, old workers' RSS in KiB)."""
    out = run("docker", "top", nginx, "-o", "pid,rss,args")
    current = old = kib = 0
    for line in out.splitlines()[1:]:
        parts = line.split(None, 2)
        if len(parts) < 3:
            continue
        if "worker process is shutting down" in parts[2]:
            old += 1
            kib += int(parts[1])
        elif "worker process" in parts[2]:
            current += 1
    return current, old, kib


def hold(url, n, seconds):
    return subprocess.Popen(
        [WSCTL, "bench", "hold", "--follow", "-n", str(n), "--duration", str(seconds),
         "--sources", "1", "--json", "--url", url],
        stdout=subprocess.PIPE, text=True)


def main():
    unique = uuid.uuid4().hex[:8]
    prefix = f"r{unique}_"
    workdir = tempfile.mkdtemp(prefix="wsctl-bench-reloads-")
    config = os.path.join(workdir, "wsctl.yaml")
    nets = '["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]'
    with open(config, "w") as f:
        f.write(f'prefix: "{prefix}"\npublic_address: "127.0.0.1:{free_port()}"\n'
                f"ready_timeout: 60\nunlimited_networks: {nets}\nprivate_networks: {nets}\n"
                # Idle sockets send nothing: every sample counts at once.
                "analysis: {interval: 1.0, min_messages: 0}\n")
    holds = []
    try:
        run(WSCTL, "deploy", "--config", config)
        nginx = f"{prefix}nginx"
        ip = run("docker", "inspect", "-f",
                 "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", nginx).strip()
        url = f"ws://{ip}:80/ws/chat/"
        current, _, _ = workers(nginx)
        print(f"Nginx {ip}: {current} workers", flush=True)
        holds.append(hold(url, CONNECTIONS, HOLD))
        time.sleep(3 if SHORT else 15)
        rows = [{"when": "before the canary", "workers": current,
                 "old_workers": workers(nginx)[1], "old_workers_mib": 0.0}]
        deploy = subprocess.Popen(
            [WSCTL, "deploy", "--canary-steps", "20,50,80,100", "--analysis", ANALYSIS, "--json",
             "--config", config], stdout=subprocess.PIPE, text=True)
        late_started = False
        events = []
        for line in deploy.stdout:
            if not line.startswith("{"):
                continue
            event = json.loads(line)
            events.append(event)
            if event.get("event") == "reload":
                rows.append({"when": f"after {event['step']}: {event['reason']}",
                             "workers": workers(nginx)[0], "old_workers": event["old_workers"],
                             "old_workers_mib": round(event["old_workers_kib"] / 1024, 1),
                             "moved": event["moved"]})
                print(rows[-1], flush=True)
                if not late_started:
                    holds.append(hold(url, LATE, HOLD - 30))
                    late_started = True
        deploy.wait()
        ended = time.monotonic()
        summary = next(e for e in events if e.get("event") == "deploy")
        print(f"deploy: {summary['outcome']} in {summary['seconds']:.1f} s", flush=True)
        for _ in range(LOOKS_AFTER):
            time.sleep(2)
            current, old, kib = workers(nginx)
            rows.append({"when": f"{time.monotonic() - ended:.0f} s after the deploy",
                         "workers": current, "old_workers": old,
                         "old_workers_mib": round(kib / 1024, 1)})
            print(rows[-1], flush=True)
        status = json.loads(run(WSCTL, "status", "--json", "--config", config))
        reports = []
        for bench in holds:
            out, _ = bench.communicate(timeout=400)
            report = json.loads(out)
            report.pop("connect_histogram", None)
            reports.append(report)
        print(json.dumps({"connections": CONNECTIONS, "late": LATE, "rows": rows,
                          "green_connections": status["colors"]["green"].get("connections"),
                          "holds": reports}, indent=1))
        return 0 if deploy.returncode == 0 else 1
    finally:
        for bench in holds:
            if bench.poll() is None:
                bench.kill()
        names = run("docker", "ps", "-aq", "--filter", f"name={prefix}").split()
        if names:
            subprocess.run(["docker", "rm", "-f", *names], capture_output=True)
        volumes = run("docker", "volume", "ls", "-q", "--filter", f"name={prefix}").split()
        if volumes:
            subprocess.run(["docker", "volume", "rm", *volumes], capture_output=True)
        subprocess.run(["docker", "network", "rm", f"{prefix}wsctl"], capture_output=True)


if __name__ == "__main__":
    sys.exit(main())
