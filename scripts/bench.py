#!/usr/bin/env python3
"""Runs the standard benchmark set and writes docs/BENCHMARKS.md.

Called by scripts/bench.sh after the release builds. Every server is started
fresh on a free loopback port for its row and stopped after it; every load
comes from `wsctl bench`, whose JSON report is kept in the table.
"""
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
import urllib.request

WSCTL = os.environ.get("WSCTL", "target/release/wsctl")
BARE = os.environ.get("BARE", "target/release/bare_server")
# BENCH_SHORT=1: every row, with a hundredth of the connections and runs of
# a second; nothing is written (CI runs it so that a script that breaks is
# caught; no figure is kept).
SHORT = os.environ.get("BENCH_SHORT") == "1"


def count(full):
    return str(max(full // 100, 20)) if SHORT else str(full)


def seconds(full):
    return "1" if SHORT else str(full)
ENV = {k: v for k, v in os.environ.items() if k not in (
    "REDIS_URL", "PORT", "HOST", "COLOR", "RATE_LIMIT", "MAX_CONNECTIONS", "DEBUG")}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, limit=20.0):
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if predicate():
            return time.monotonic() - start
        time.sleep(0.005)
    raise SystemExit("timed out waiting for a server")


def http_status(url):
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status
    except Exception:
        return None


class Server:
    """A wsctl or bare server on a free port, stopped when the block ends."""

    def __init__(self, kind, env=None):
        self.port = free_port()
        if kind == "wsctl":
            cmd = [WSCTL, "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        else:
            cmd = [BARE, f"127.0.0.1:{self.port}"]
        started = time.monotonic()
        self.proc = subprocess.Popen(cmd, env={**ENV, **(env or {})},
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if kind == "wsctl":
            wait_for(lambda: http_status(f"http://127.0.0.1:{self.port}/readyz") == 200)
        else:
            wait_for(lambda: socket.socket().connect_ex(("127.0.0.1", self.port)) == 0)
        self.ready_after = time.monotonic() - started
        self.url = f"ws://127.0.0.1:{self.port}/ws/chat/"

    def __enter__(self):
        return self

    def __exit__(self, *_):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def bench(server, *args):
    cmd = [WSCTL, "bench", *args, "--json", "--url", server.url, "--server-pid", str(server.proc.pid)]
    if args[0] == "rtt" or args[0] == "flood" or args[0] == "fanout":
        cmd = cmd[:-2]
    out = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
    report = json.loads(out.stdout)
    report["command"] = "wsctl bench " + " ".join(args)
    report["exit_code"] = out.returncode
    print(f"  {report['command']}: exit {out.returncode}", file=sys.stderr)
    return report


def main():
    results = {}
    print("idle connections", file=sys.stderr)
    for n in (1000, 5000, 15000):
        for kind in ("wsctl", "bare"):
            with Server(kind) as server:
                results[f"idle_{kind}_{n}"] = bench(server, "hold", "-n", count(n), "--duration",
                                                    seconds(3))

    print("most connections in one process", file=sys.stderr)
    with Server("wsctl") as server:
        results["max_wsctl"] = bench(server, "hold", "-n", count(19000), "--duration", seconds(5))

    print("round trip at 1,000 connections, 2,000 msg/s", file=sys.stderr)
    for kind in ("wsctl", "bare"):
        with Server(kind) as server:
            results[f"rtt_{kind}"] = bench(server, "rtt", "-n", count(1000), "--rate", "2000", "--duration",
                                           seconds(10))

    print("flood: 100 connections, 8 in flight", file=sys.stderr)
    redis_port = free_port()
    redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    try:
        wait_for(lambda: socket.socket().connect_ex(("127.0.0.1", redis_port)) == 0)
        flood = ("flood", "-n", "100", "--in-flight", "8", "--duration", seconds(10))
        with Server("wsctl", {"RATE_LIMIT": "1000000"}) as server:
            results["flood_wsctl_memory"] = bench(server, *flood)
        with Server("wsctl", {"RATE_LIMIT": "1000000", "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0"}) as server:
            results["flood_wsctl_redis"] = bench(server, *flood)
        with Server("bare") as server:
            results["flood_bare"] = bench(server, *flood)
    finally:
        redis.kill()
        redis.wait()

    print("broadcast fan-out to 10,000 connections", file=sys.stderr)
    with Server("wsctl") as server:
        results["fanout_wsctl"] = bench(server, "fanout", "-n", count(10000), "--rounds", "5")

    print("start-up and shutdown", file=sys.stderr)
    startups = []
    for _ in range(1 if SHORT else 5):
        with Server("wsctl") as server:
            startups.append(server.ready_after)
    with Server("wsctl") as server:
        # Held past the SIGTERM, also in a short run.
        holder = subprocess.Popen([WSCTL, "bench", "hold", "-n", count(10000), "--duration",
                                   "15" if SHORT else "60", "--json",
                                   "--url", server.url], stdout=subprocess.PIPE, text=True, env=ENV)
        status = f"http://127.0.0.1:{server.port}/status"

        def all_connected():
            try:
                with urllib.request.urlopen(status, timeout=1) as response:
                    return json.load(response)["connections_active"] >= int(count(10000))
            except Exception:
                return False
        wait_for(all_connected, 60)
        signalled = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        code = server.proc.wait(timeout=30)
        shutdown_seconds = time.monotonic() - signalled
        holder_report = json.loads(holder.communicate(timeout=90)[0])
    results["shutdown"] = {"exit_code": code, "seconds": shutdown_seconds, "holder": holder_report}
    results["startup_seconds"] = startups

    if SHORT:
        # The report is still rendered, so a row that broke shows here.
        write_markdown(results, write=False)
        return
    with open("docs/benchmarks.json", "w") as raw:
        json.dump(results, raw, indent=1)
    write_markdown(results)


def pct(report, key):
    block = report.get(key) or {}
    return f"{block.get('p50_ms', 0):.2f} / {block.get('p99_ms', 0):.2f} / {block.get('p999_ms', 0):.2f} / {block.get('max_ms', 0):.2f}"


def kib(value):
    return f"{value / 1024:.1f} KiB"


def write_markdown(r, write=True):
    cores = os.cpu_count()
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    lines = [
        "# Benchmarks",
        "",
        "Written by `bash scripts/bench.sh` (raw reports: `docs/benchmarks.json`).",
        f"Machine: {cores} cores, {mem_gib:.0f} GiB, {platform.system()} {platform.release()}; "
        "load generator, server and Redis on the same machine, over loopback.",
        "The yardstick is `examples/bare_server/src/main.rs`: tokio-tungstenite with the same 4 KiB read "
        "buffer and counter/echo work, and nothing else (no metrics, sessions, heartbeats, limits).",
        "Each row is a single run. On this shared 2-core machine, where the load generator competes "
        "with the server for the same cores, tail latencies and throughput move by a third or more "
        "between runs (p99 ratios of 0.67x and 1.40x were seen in two runs of the same code): "
        "compare ratios within one run, not figures across runs.",
        "",
        "## 1. Idle connections: server RSS per connection",
        "",
        "| connections | wsctl | bare server | ratio |",
        "|---|---|---|---|",
    ]
    for n in (1000, 5000, 15000):
        w = r[f"idle_wsctl_{n}"]["server_rss_per_connection_bytes"]
        b = r[f"idle_bare_{n}"]["server_rss_per_connection_bytes"]
        lines.append(f"| {n:,} | {kib(w)} | {kib(b)} | {w / b:.2f}x |")
    lines += ["", "Command: `wsctl bench hold -n N --duration 3 --server-pid PID`.", ""]
    m = r["max_wsctl"]
    lines += [
        "## 2. Most connections in one process",
        "",
        f"{m['connections_opened']:,} of {m['connections_requested']:,} connections held "
        f"(open-file limit {os.sysconf('SC_OPEN_MAX'):,} per process), failures "
        f"{sum(m['connect_failures'].values())}, {m['connects_per_second']:.0f} connects/s, "
        f"server RSS {m['server_rss_after_kib'] / 1024:.0f} MiB "
        f"({kib(m['server_rss_per_connection_bytes'])} per connection).",
        "",
        "Command: `wsctl bench hold -n 19000 --duration 5 --server-pid PID`.",
        "",
        "## 3. Round trip, 1,000 connections at 2,000 messages/s in total",
        "",
        "| server | p50 / p99 / p99.9 / max (ms) | answered | lost | count violations |",
        "|---|---|---|---|---|",
    ]
    for kind in ("wsctl", "bare"):
        x = r[f"rtt_{kind}"]
        lines.append(f"| {kind} | {pct(x, 'round_trip')} | {x['messages_answered']:,} | "
                     f"{x['messages_lost']} | {x['count_violations']} |")
    p99 = r["rtt_wsctl"]["round_trip"]["p99_ms"] / max(r["rtt_bare"]["round_trip"]["p99_ms"], 1e-9)
    lines += ["", f"p99 ratio wsctl / bare: {p99:.2f}x. Command: "
              "`wsctl bench rtt -n 1000 --rate 2000 --duration 10`.", "",
              "## 4. Throughput, 100 connections with 8 messages in flight each", "",
              "| server | messages/s | p50 / p99 / p99.9 / max (ms) | count violations |",
              "|---|---|---|---|"]
    for key, name in (("flood_wsctl_memory", "wsctl, embedded layer"),
                      ("flood_wsctl_redis", "wsctl, Redis"), ("flood_bare", "bare")):
        x = r[key]
        lines.append(f"| {name} | {x['messages_per_second']:,.0f} | {pct(x, 'round_trip')} | "
                     f"{x['count_violations']} |")
    ratio = r["flood_wsctl_memory"]["messages_per_second"] / r["flood_bare"]["messages_per_second"]
    lines += ["", f"wsctl (embedded) / bare: {ratio:.2f}x. Command: "
              "`wsctl bench flood -n 100 --in-flight 8 --duration 10` (server with `RATE_LIMIT=1000000`).",
              ""]
    f = r["fanout_wsctl"]
    lines += [
        "## 5. Broadcast fan-out to 10,000 connections",
        "",
        f"5 broadcasts, {f['messages_answered']:,} deliveries, {f['messages_lost']} missing. "
        f"Time from send until a connection has it, p50 / p99 / p99.9 / max: {pct(f, 'fanout')} ms "
        "(max = until the last connection has it).",
        "",
        "Command: `wsctl bench fanout -n 10000 --rounds 5`.",
        "",
    ]
    s = r["shutdown"]
    h = s["holder"]
    starts = sorted(r["startup_seconds"])
    lines += [
        "## 6. Start-up and shutdown",
        "",
        f"Start-up (process start to `/readyz` 200), {len(starts)} runs: median "
        f"{starts[len(starts) // 2] * 1000:.0f} ms, "
        f"max {starts[-1] * 1000:.0f} ms.",
        "",
        f"Shutdown with {h['connections_opened']:,} connections open: SIGTERM to exit "
        f"{s['seconds']:.2f} s (exit code {s['exit_code']}, `SHUTDOWN_TIMEOUT` 10 s, `DRAIN_WINDOW` 2 s); "
        f"{h['goodbyes_received']:,} clients received `goodbye`, {h['closed_1001']:,} close 1001.",
        "",
    ]
    if not write:
        print("\n".join(lines))
        return
    # Sections 7 and on (deploy timing, scripts/bench-deploy.sh, and the
    # sections of the deploy-side scripts): kept.
    deploy_section = ""
    if os.path.exists("docs/BENCHMARKS.md"):
        old = open("docs/BENCHMARKS.md").read()
        if "\n## 7. " in old:
            deploy_section = "\n\n## 7. " + old.split("\n## 7. ", 1)[1].rstrip("\n") + "\n"
    with open("docs/BENCHMARKS.md", "w") as out:
        out.write("\n".join(lines).rstrip("\n") + "\n" + deploy_section)
    print("wrote docs/BENCHMARKS.md", file=sys.stderr)


if __name__ == "__main__":
    main()
