"""What the client's tests share: a real `wsctl serve` ($WSCTL, else the one
on PATH) on a free loopback port, and a TCP proxy that can cut or freeze
the links through it."""

import asyncio
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def serve():
    """serve(**env) starts a `wsctl serve` and returns its ws:// URL."""
    children = []

    def start(**env):
        port = free_port()
        child = subprocess.Popen(
            [os.environ.get("WSCTL", "wsctl"), "serve", "--host", "127.0.0.1", "--port", str(port)],
            env={**os.environ, **{k: str(v) for k, v in env.items()}},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        children.append(child)
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1)
                return port
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"wsctl serve did not start on {port}")

    yield start
    for child in children:
        child.kill()
        child.wait()


class Proxy:
    """Forwards a loopback port to `port`; `cut()` resets every open link
    (the client sees 1006), `freeze()` lets nothing more through them."""

    def __init__(self, port: int):
        self.port = port
        self.links = []
        self.server = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._link, "127.0.0.1", 0)
        return f"ws://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/ws/chat/"

    async def _link(self, reader, writer):
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)
        link = {"frozen": False, "writers": (writer, up_writer)}
        self.links.append(link)

        async def pipe(source, sink):
            try:
                while data := await source.read(65536):
                    if not link["frozen"]:
                        sink.write(data)
                        await sink.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self.links.remove(link)

    def cut(self):
        for link in list(self.links):
            for writer in link["writers"]:
                writer.transport.abort()

    def freeze(self):
        for link in list(self.links):
            link["frozen"] = True

    def close(self):
        self.server.close()
