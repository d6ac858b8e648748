"""Riders of wsctl under a real deploy, driven by the Rust test
tests/it/clients.rs (not collected by a plain `pytest` run; that test runs
`pytest -s tests/ride_under_deploy.py`):

    WSCTL_RIDE_URL=ws://... WSCTL_RIDE_CLIENTS=20 WSCTL_RIDE_STOP=/tmp/stop \\
        python -m pytest -s tests/ride_under_deploy.py

Each client sends one message at a time, every 100 ms, until the stop
file exists (bounded: 10 minutes), then says bye. Prints `ready` once every
client has its first answer, and one JSON line with what each client saw
({"kind": "python", "clients": [...]}, the records of clients/js/test/
rider.js), then asserts what the protocol promises: counts 1, 2, 3, ...
with no gap or repeat, every message answered."""

import asyncio
import json
import os
import time

from wsctl import connect


async def rider(url, stopped, on_first):
    client = await connect(url, backoff_base=0.1, backoff_cap=2.0)
    record = {"counts": [], "times": [], "duplicates": 0, "unavailable": 0, "errors": []}

    def refused(frame):
        if frame.get("code") == "unavailable":
            record["unavailable"] += 1

    client.on("error", refused)
    record["closeCodes"] = []
    client.on(
        "state",
        lambda d: d["state"] == "reconnecting" and record["closeCodes"].append(d.get("code")),
    )
    n = 0
    try:
        while not stopped():
            answer = await client.send({"n": n})
            record["counts"].append(answer.count)
            record["times"].append(int(time.time() * 1000))
            record["duplicates"] += answer.duplicate
            if n == 0:
                on_first()
            n += 1
            await asyncio.sleep(0.1)
    except Exception as error:  # recorded, and fails the assertions below
        record["errors"].append(repr(error))
    await client.close()
    record.update(reconnects=client.reconnects, session=client.session_uuid, count=client.count)
    return record


async def ride(url, clients, stop_file):
    deadline = time.monotonic() + 600
    answered = 0

    def on_first():
        nonlocal answered
        answered += 1
        if answered == clients:
            print("ready", flush=True)

    def stopped():
        return os.path.exists(stop_file) or time.monotonic() > deadline

    return await asyncio.gather(*(rider(url, stopped, on_first) for _ in range(clients)))


def test_riders_lose_nothing_and_count_nothing_twice():
    url = os.environ["WSCTL_RIDE_URL"]
    clients = int(os.environ.get("WSCTL_RIDE_CLIENTS", "20"))
    records = asyncio.run(ride(url, clients, os.environ["WSCTL_RIDE_STOP"]))
    print(json.dumps({"kind": "python", "clients": records}), flush=True)
    for record in records:
        assert record["errors"] == []
        assert record["counts"] == list(range(1, len(record["counts"]) + 1))
        assert record["count"] == len(record["counts"])
