#!/usr/bin/env python3
"""Times traffic moves through the Docker API and writes section 7 of
docs/BENCHMARKS.md: from `wsctl deploy` starting to new connections through
the public address reaching the new colour, and the same for `wsctl
rollback`, over several rounds, with each step's time from `--json`, for
the bundled service and for the Node test app as an external app.

Called by scripts/bench-deploy.sh (which builds the static binary and the
local images). The stack has its own prefix and free port, and everything
it made is removed at the end, also on failure.
"""
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid

# The static wsctl scripts/build-images.sh builds (WSCTL: another path,
# as the test suite gives when cargo builds elsewhere).
WSCTL = os.environ.get("WSCTL", "target/x86_64-unknown-linux-gnu/release/wsctl")
# BENCH_SHORT=1: one round of each, and docs/BENCHMARKS.md is left alone
# (CI runs it so that a script that breaks is caught).
SHORT = os.environ.get("BENCH_SHORT") == "1"
ROUNDS = 1 if SHORT else int(os.environ.get("ROUNDS", "5"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def colour(public, app="wsctl"):
    """The colour behind the public address (a fresh connection), or None:
    /status for the bundled service, `GET /` ("node-ws COLOUR") for the
    Node app; three tries, since an old Nginx worker may close a connection
    right after a reload."""
    for _ in range(3):
        try:
            if app == "node":
                with urllib.request.urlopen(f"http://{public}/", timeout=1) as response:
                    return response.read().decode().split()[-1]
            with urllib.request.urlopen(f"http://{public}/status", timeout=1) as response:
                return json.load(response).get("color")
        except Exception:
            time.sleep(0.1)
    return None


def timed_move(config, command, target):
    """Runs `wsctl COMMAND --json`; returns (seconds from the start until the
    switch step reported `target` verified through the public address,
    total seconds, the summary event)."""
    started = time.monotonic()
    run = subprocess.Popen([WSCTL, command, "--json", "--config", config],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    moved, last = None, None
    for line in run.stdout:
        event = json.loads(line)
        last = event
        if (event.get("event") == "step" and event.get("step") == "switch"
                and event.get("status") == "ok"):
            moved = time.monotonic() - started
    code = run.wait(timeout=120)
    total = time.monotonic() - started
    if code != 0 or moved is None or last.get("to") != target:
        raise SystemExit(f"{command} failed ({code}): {run.stderr.read()}")
    return moved, total, last


def section(deploys, rollbacks, node_deploys, node_rollbacks):
    def row(name, runs, app="bundled service"):
        traffic = [r[0] for r in runs]
        total = [r[1] for r in runs]
        steps = {}
        for _, _, summary in runs:
            for step, ms in summary["steps_ms"].items():
                steps.setdefault(step, []).append(ms)
        parts = ", ".join(f"{s} {statistics.median(v):.0f}" for s, v in steps.items())
        return (f"| `wsctl {name}`, {app} | {statistics.median(traffic)*1000:.0f} / {max(traffic)*1000:.0f} ms "
                f"| {statistics.median(total):.2f} s | {parts} |")

    return "\n".join([
        "## 7. Deploy and rollback through the Docker API",
        "",
        f"{ROUNDS} rounds of `wsctl deploy` then `wsctl rollback` on the local engine, for each app (no clients but "
        "wsctl's own cutover probe). *Traffic moved* is from starting the command to its switch step "
        "reporting that a new connection through the public Nginx address reached the new colour "
        "(Nginx names its loaded colour and the app answers through it); *done* includes the drain of "
        "the old colour (the bundled service's `DRAIN_WINDOW` is 2 s).",
        "",
        "| command | traffic moved, median / max | done, median | median step times (ms) |",
        "|---|---|---|---|",
        row("deploy", deploys),
        row("rollback", rollbacks),
        row("deploy", node_deploys, "Node app (external)"),
        row("rollback", node_rollbacks, "Node app (external)"),
        "",
        "The Node app is tests/apps/node-ws (Debian's `ws` library, FROM scratch, no wsctl inside) "
        "as `app_kind: external`: readiness is `wsctl probe` of its `/up` from the stack's checker "
        "container, the switch's check is `/up` through Nginx, and its drain is as long as the app "
        "takes to close its sockets and exit on SIGTERM (no `DRAIN_WINDOW`). Its health step (from "
        "started to ready) is in the last column; the target of issue 21 was traffic on the new "
        "colour within 2 s of `wsctl deploy` starting for an app ready within 0.5 s.",
        "",
        "Readiness is `wsctl probe` run inside the container by exec every 20 ms, not the image's "
        "HEALTHCHECK (every 2 s), which stays for `status` and restarts: before this change a deploy "
        "took about 3.1 s to move traffic (2.3 s of it waiting for the HEALTHCHECK) and a rollback 3.5 s. "
        "The switch includes waiting until Nginx's workers have taken the reload (a `docker top` "
        "before it and a few after).",
        "",
        "Command: `bash scripts/bench-deploy.sh` (raw figures printed as JSON).",
        "",
    ])


NODE_APP = "tests/apps/node-ws"


def rounds(app, unique):
    """ROUNDS deploys and rollbacks of one stack: `wsctl` (the bundled
    service) or `node` (tests/apps/node-ws as `app_kind: external`).
    Everything the stack made is removed at the end, also on failure."""
    prefix = f"bench{unique}{app}_"
    public = f"127.0.0.1:{free_port()}"
    workdir = tempfile.mkdtemp(prefix="wsctl-bench-")
    config = os.path.join(workdir, "wsctl.yaml")
    image = None
    # Requests from this machine reach Nginx from the Docker network's
    # gateway, outside the default private_networks: /status would answer
    # 403.
    text = (f'prefix: "{prefix}"\npublic_address: "{public}"\ndrain_timeout: 10\n'
            'private_networks: ["127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", '
            '"192.168.0.0/16"]\n')
    if app == "node":
        image = f"bench{unique}-node:1"
        subprocess.run(["bash", f"{NODE_APP}/build.sh", image], check=True,
                       capture_output=True, timeout=300)
        text += (f'app_kind: external\nimages: {{app: "{image}", checker: "wsctl:local"}}\n'
                 "health_path: /up\nws_path: /echo/\n")
    with open(config, "w") as f:
        f.write(text)
    try:
        subprocess.run([WSCTL, "deploy", "--config", config], check=True,
                       capture_output=True, timeout=120)
        deploys, rollbacks = [], []
        live = colour(public, app)
        if live not in ("blue", "green"):
            raise SystemExit(f"the first deploy left no colour live: {live}")
        for _ in range(ROUNDS):
            other = "green" if live == "blue" else "blue"
            deploys.append(timed_move(config, "deploy", other))
            rollbacks.append(timed_move(config, "rollback", live))
            if colour(public, app) != live:
                raise SystemExit(f"after the rollback the public address does not report {live}")
        return deploys, rollbacks
    finally:
        names = subprocess.run(["docker", "ps", "-aq", "--filter", f"name={prefix}"],
                               capture_output=True, text=True).stdout.split()
        if names:
            subprocess.run(["docker", "rm", "-f", *names], capture_output=True)
        volumes = subprocess.run(["docker", "volume", "ls", "-q", "--filter", f"name={prefix}"],
                                 capture_output=True, text=True).stdout.split()
        if volumes:
            subprocess.run(["docker", "volume", "rm", *volumes], capture_output=True)
        subprocess.run(["docker", "network", "rm", f"{prefix}wsctl"], capture_output=True)
        if image:
            subprocess.run(["docker", "image", "rm", "-f", image], capture_output=True)


def main():
    unique = uuid.uuid4().hex[:8]
    deploys, rollbacks = rounds("wsctl", unique)
    node_deploys, node_rollbacks = rounds("node", unique)
    print(json.dumps({"deploy": [r[:2] for r in deploys],
                      "rollback": [r[:2] for r in rollbacks],
                      "node_deploy": [r[:2] for r in node_deploys],
                      "node_rollback": [r[:2] for r in node_rollbacks]}))
    text = section(deploys, rollbacks, node_deploys, node_rollbacks)
    if SHORT:
        print(text)
        return 0
    path = "docs/BENCHMARKS.md"
    # Replaces section 7 only: the sections after it stay as they are.
    old = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
    before, _, rest = old.partition("\n## 7. ")
    after = re.search(r"\n## \d+\. ", rest)
    tail = rest[after.start():] if after else ""
    with open(path, "w") as out:
        out.write(before.rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n" + tail)
    print(text)


if __name__ == "__main__":
    sys.exit(main())
