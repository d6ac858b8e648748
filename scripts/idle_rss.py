#!/usr/bin/env python3
"""RSS growth of a running `wsctl serve` over N idle WebSocket connections.

A stand-in until `wsctl bench hold` lands. Connections come from 20 loopback
source addresses so ephemeral ports do not run out; run it with a raised
open-file limit:

    ulimit -n 20000; wsctl serve --host 127.0.0.1 --port 18765 & 
    python3 scripts/idle_rss.py 5000 18765 $!
"""
import asyncio
import sys

N, PORT, PID = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
HANDSHAKE = (
    "GET /ws/chat/ HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
).encode()


def rss_kib():
    with open(f"/proc/{PID}/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1])
    raise SystemExit("no VmRSS")


async def open_one(i):
    source = f"127.0.0.{1 + i % 20}"
    reader, writer = await asyncio.open_connection("127.0.0.1", PORT, local_addr=(source, 0))
    writer.write(HANDSHAKE)
    await reader.readuntil(b"\r\n\r\n")
    await reader.read(300)  # connection_established
    return reader, writer


async def main():
    before = rss_kib()
    connections = []
    for start in range(0, N, 500):
        connections += await asyncio.gather(*(open_one(i) for i in range(start, min(N, start + 500))))
    await asyncio.sleep(2)
    after = rss_kib()
    per = (after - before) * 1024 / len(connections)
    print(f"connections={len(connections)} rss_before_kib={before} rss_after_kib={after} "
          f"per_connection_bytes={per:.0f}")


asyncio.run(main())
