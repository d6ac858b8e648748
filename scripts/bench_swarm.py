#!/usr/bin/env python3
"""Blue-green on a real three-node Swarm (issue 25; docs/BENCHMARKS.md
section 10): deploy and rollback times with REPLICAS tasks over two
workers, and the time from a worker's death to every client back.

    python3 scripts/bench_swarm.py [CLIENTS] [REPLICAS] [ROUNDS]

Builds nothing: run scripts/build-images.sh first (the static wsctl and the
local images, which scripts/swarm.sh copies into every node). Steps:
1. a swarm of three engines in network namespaces (scripts/swarm.sh: one
   manager, two workers), a stack with `platform: swarm`, `replicas:
   REPLICAS` on the workers, Nginx on the manager's address;
2. CLIENTS clients of the protocol (Python `websockets`), each sending a
   message every 200 ms, waiting at most 10 s for its answer, reconnecting
   with its session_uuid and checking that its count goes on;
3. ROUNDS deploys and rollbacks under them: from the command's start to the
   switch step done (traffic moved), and the whole command;
4. worker 2 dies as a machine does (`swarm.sh kill`: link down, then
   SIGKILL): the time until the edge's upstream lists only live tasks again
   (the follower), and until every client that lost its socket had an
   answer again;
5. the swarm removed (namespaces, bridge, data roots), also on failure.
"""
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

import websockets

WSCTL = os.environ.get("WSCTL", "target/x86_64-unknown-linux-gnu/release/wsctl")
CLIENTS = int(sys.argv[1]) if len(sys.argv) > 1 else 200
REPLICAS = int(sys.argv[2]) if len(sys.argv) > 2 else 4
ROUNDS = int(sys.argv[3]) if len(sys.argv) > 3 else 3
PACE = 0.2
ANSWER_TIMEOUT = 10.0
SWARM = "b" + uuid.uuid4().hex[:5]


def swarm(*args):
    return subprocess.run(
        ["bash", "scripts/swarm.sh", *args], check=True, capture_output=True, text=True
    ).stdout


class Client:
    """One session: counts must go 1, 2, 3, ... across every reconnect."""

    def __init__(self, url):
        self.url = url
        self.session = None
        self.count = 0
        self.last_answer = time.monotonic()
        self.answers = []  # monotonic times of answers
        self.reconnects = 0
        self.broken = []

    async def run(self, stop):
        while not stop.is_set():
            url = self.url + (f"?session_uuid={self.session}" if self.session else "")
            try:
                # close_timeout: a dead link must not hold the reconnect for
                # the default 10 s of closing handshake.
                async with websockets.connect(
                    url, open_timeout=5, close_timeout=0.5, max_size=None
                ) as ws:
                    hello = json.loads(await asyncio.wait_for(ws.recv(), 5))
                    if self.session and (not hello.get("resumed") or hello["count"] != self.count):
                        self.broken.append(f"resume gave {hello.get('count')} after {self.count}")
                        self.count = hello["count"]
                    self.session = hello["session_uuid"]
                    while not stop.is_set():
                        await ws.send(json.dumps({"type": "message", "message": "x"}))
                        while True:
                            frame = json.loads(await asyncio.wait_for(ws.recv(), ANSWER_TIMEOUT))
                            if frame.get("type") == "message_response":
                                break
                            if frame.get("type") == "goodbye":
                                raise ConnectionError("goodbye")
                        if frame["count"] != self.count + 1:
                            self.broken.append(f"count {frame['count']} after {self.count}")
                        self.count = frame["count"]
                        now = time.monotonic()
                        self.answers.append(now)
                        self.last_answer = now
                        await asyncio.sleep(PACE)
            except (OSError, asyncio.TimeoutError, websockets.WebSocketException, ConnectionError):
                pass
            if not stop.is_set():
                self.reconnects += 1
                await asyncio.sleep(0.1)


def timed(config, *args):
    """Runs `wsctl ARGS --json`: seconds to the switch step done, and in all."""
    started = time.monotonic()
    process = subprocess.Popen(
        [WSCTL, *args, "--json", "--config", config],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    switched = None
    summary = {}
    for line in process.stdout:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == "step" and event.get("step") == "switch" and event.get("status") == "ok":
            switched = time.monotonic() - started
        if event.get("event") in ("deploy", "rollback"):
            summary = event
    process.wait()
    if process.returncode != 0:
        raise SystemExit(f"wsctl {' '.join(args)} failed: {process.stderr.read()}")
    return switched, time.monotonic() - started, summary


def upstream_servers(manager, nginx):
    with tempfile.NamedTemporaryFile() as copy:
        subprocess.run(
            ["docker", "-H", manager, "cp", f"{nginx}:/etc/nginx/conf.d/upstream.conf", copy.name],
            check=True, capture_output=True,
        )
        text = open(copy.name).read()
    return sorted(re.findall(r"server ([0-9.]+):", text))


def live_task_addresses(config):
    out = subprocess.run([WSCTL, "status", "--json", "--config", config], capture_output=True, text=True)
    status = json.loads(out.stdout)
    live = status.get("live")
    tasks = status["colors"].get(live, {}).get("replicas", []) if live else []
    return sorted(t["address"] for t in tasks if t.get("state") == "running" and t.get("address"))


async def main():
    out = swarm("start", SWARM, "3")
    manager = re.search(r"^MANAGER=(.*)$", out, re.M).group(1)
    address = re.search(r'^ADDRESSES="([^ ]+)', out, re.M).group(1)
    os.environ["DOCKER_HOST"] = manager
    stack_dir = tempfile.mkdtemp(prefix="wsctl-bench-swarm-")
    config = os.path.join(stack_dir, "wsctl.yaml")
    prefix = f"{SWARM}_"
    public = f"{address}:18080"
    with open(config, "w") as f:
        f.write(
            f'platform: swarm\nprefix: "{prefix}"\npublic_address: "{public}"\n'
            'images: {app: "wsctl:local", nginx: "wsctl-nginx:local", redis: "wsctl-redis:local"}\n'
            f"replicas: {REPLICAS}\nready_timeout: 60\ndrain_timeout: 10\n"
            'swarm: {constraints: ["node.role==worker"]}\n'
            'private_networks: ["127.0.0.0/8", "10.0.0.0/8"]\nunlimited_networks: ["10.0.0.0/8"]\n'
        )
    _, first, _ = timed(config, "deploy")
    print(f"first deploy (network, Redis, Nginx, {REPLICAS} tasks): {first:.1f} s")

    url = f"ws://{public}/ws/chat/"
    stop = asyncio.Event()
    clients = [Client(url) for _ in range(CLIENTS)]
    tasks = [asyncio.create_task(c.run(stop)) for c in clients]
    await asyncio.sleep(3)

    moves = {"deploy": [], "rollback": []}
    for _ in range(ROUNDS):
        for action in ("deploy", "rollback"):
            switched, total, _ = await asyncio.to_thread(timed, config, action)
            moves[action].append((switched, total))
            await asyncio.sleep(2)
    for action, runs in moves.items():
        to_switch = [s for s, _ in runs]
        totals = [t for _, t in runs]
        print(
            f"{action} x{len(runs)}: to traffic moved median {statistics.median(to_switch):.2f} s "
            f"(min {min(to_switch):.2f}, max {max(to_switch):.2f}); whole command median "
            f"{statistics.median(totals):.2f} s"
        )

    await asyncio.sleep(3)
    nginx = f"{prefix}nginx"
    killed = time.monotonic()
    swarm("kill", SWARM, "2")
    before = await asyncio.to_thread(upstream_servers, manager, nginx)
    followed = None
    dead_gone = None
    while time.monotonic() - killed < 120:
        live = await asyncio.to_thread(live_task_addresses, config)
        servers = await asyncio.to_thread(upstream_servers, manager, nginx)
        if dead_gone is None and len(servers) < len(before):
            dead_gone = time.monotonic() - killed
        if len(live) == REPLICAS and servers == live:
            followed = time.monotonic() - killed
            break
        await asyncio.sleep(0.25)
    # Every client that lost its socket has an answer after the kill.
    await asyncio.sleep(ANSWER_TIMEOUT + 10)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    gaps = []
    for c in clients:
        before = [t for t in c.answers if t <= killed]
        after = [t for t in c.answers if t > killed]
        if before and after:
            gaps.append(after[0] - before[-1])
    lost = [g for g in gaps if g > 2.0]
    broken = [b for c in clients for b in c.broken]
    print(
        f"worker 2 killed: its tasks out of the upstream after "
        f"{'never' if dead_gone is None else f'{dead_gone:.1f} s'}, the upstream on "
        f"{REPLICAS} live tasks after "
        f"{'never' if followed is None else f'{followed:.1f} s'}; "
        f"{len(lost)} of {CLIENTS} clients lost their socket; "
        f"every client back within {max(gaps):.1f} s of the kill "
        f"(median of those that lost it {statistics.median(lost) if lost else 0:.1f} s)"
    )
    print(
        f"clients: {sum(len(c.answers) for c in clients)} answers, "
        f"{sum(c.reconnects for c in clients)} reconnects, {len(broken)} count breaks"
    )
    if broken:
        raise SystemExit(f"counts broke: {broken[:5]}")


if __name__ == "__main__":
    try:
        asyncio.run(main())
    finally:
        swarm("stop", SWARM)
