"""The official Python client of the wsctl service (docs/protocol.md).

asyncio and the ``websockets`` package::

    import asyncio
    from wsctl import connect

    async def main():
        client = await connect("wss://chat.example.com/ws/chat/")
        answer = await client.send({"text": "hello"})
        print(answer.count, answer.duplicate)
        await client.close()

    asyncio.run(main())

It behaves as the protocol asks of every client, like clients/js/wsctl.js:

- resumes its session (``session_uuid``) on every reconnect;
- reconnects at once after a server's goodbye, else with full-jitter backoff
  (a random wait in [0, min(cap, base * 2**attempt))), so a fleet of clients
  never comes back in lockstep;
- close codes: 1000 ends the client; 1001, 1006, 1011, 1012, 1013 (and any
  other) reconnect; 1002, 1003, 1007, 1008, 1009 and 1010 end it;
- gives every message an id, and resends whatever was not answered after a
  goodbye, a drop or an ``unavailable``: a resend that had counted is
  answered as a duplicate with its original count, never counted twice;
- a watchdog: no frame for twice ``heartbeat_interval`` means a dead link,
  which is dropped and reconnected.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Optional
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

__all__ = ["Answer", "WsctlClient", "WsctlError", "backoff_delay", "connect"]

TERMINAL_CLOSE_CODES = {1000, 1002, 1003, 1007, 1008, 1009, 1010}
RETRY_ERRORS = {"unavailable", "rate_limited"}


def backoff_delay(
    attempt: int,
    base: float = 0.1,
    cap: float = 5.0,
    rand: Callable[[], float] = random.random,
) -> float:
    """Full-jitter backoff: a random wait in [0, min(cap, base * 2**attempt)) s."""
    return rand() * min(cap, base * 2 ** min(attempt, 30))


@dataclass(frozen=True)
class Answer:
    """The server's answer to a message or broadcast."""

    count: int
    duplicate: bool
    id: str


class WsctlError(Exception):
    """A frame the server refused (``code``, ``detail``), or the client's end."""

    def __init__(self, code: str, detail: str):
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


@dataclass
class _Pending:
    frame: str
    future: asyncio.Future
    retries: int = 0


async def connect(url: str, **options: Any) -> "WsctlClient":
    """Starts a client of ``url`` (``ws://host/ws/chat/``) and returns it
    once its first connection is greeted (or at once with ``wait=False``).

    Options: ``session`` (a ``session_uuid`` to resume), ``backoff_base``
    and ``backoff_cap`` (seconds, 0.1 and 5), ``retry_delay`` (seconds
    before a frame answered ``unavailable`` or ``rate_limited`` goes again;
    it doubles to 2 s with jitter), ``watchdog`` (False turns it off),
    ``open_timeout`` (seconds for one connection attempt, 5).
    """
    wait = options.pop("wait", True)
    client = WsctlClient(url, **options)
    client.start()
    if wait:
        await client.wait_open()
    return client


class WsctlClient:
    def __init__(
        self,
        url: str,
        session: Optional[str] = None,
        backoff_base: float = 0.1,
        backoff_cap: float = 5.0,
        retry_delay: float = 0.1,
        watchdog: bool = True,
        open_timeout: float = 5.0,
    ):
        self.url = url
        self.session_uuid: Optional[str] = session
        #: The session's count as last answered.
        self.count = 0
        #: ``connecting``, ``open``, ``reconnecting``, ``closing`` or ``closed``.
        self.state = "connecting"
        self.connection_id: Optional[str] = None
        self.color: Optional[str] = None
        self.heartbeat_interval: Optional[float] = None
        #: Connections after the first that greeted.
        self.reconnects = 0
        self._backoff = (backoff_base, backoff_cap)
        self._retry_delay = retry_delay
        self._watchdog = watchdog
        self._open_timeout = open_timeout
        self._prefix = uuid.uuid4().hex[:8]
        self._ids = itertools.count()
        self._pending: dict[str, _Pending] = {}
        self._listeners: dict[str, list[Callable[[Any], None]]] = {}
        self._ws = None
        self._greeted = asyncio.Event()
        self._closed = asyncio.Event()
        self._task: Optional[asyncio.Task] = None
        self._timers: set[asyncio.Task] = set()
        self._ever_greeted = False

    # What a user calls.

    def on(self, event: str, listener: Callable[[Any], None]) -> None:
        """Calls ``listener(detail)`` on ``open``, ``message``, ``broadcast``,
        ``heartbeat``, ``goodbye``, ``error``, ``state`` and ``count``."""
        self._listeners.setdefault(event, []).append(listener)

    async def send(self, message: Any) -> Answer:
        """Sends a message; returns the server's answer, also when it comes on
        a later connection."""
        return await self._submit("message", message)

    async def broadcast(self, message: Any) -> Answer:
        """Broadcasts to every connection; returns like ``send``."""
        return await self._submit("broadcast", message)

    async def close(self) -> None:
        """Says ``bye`` and waits for the server's goodbye and close (5 s at
        most)."""
        if self.state == "closed":
            return
        if self.state != "closing":
            self._set_state("closing")
            ws = self._ws
            if ws is not None and self._greeted.is_set():
                try:
                    await ws.send(json.dumps({"type": "bye"}))
                except ConnectionClosed:
                    pass
            else:
                self._end(WsctlError("closed", "the client closed"))
        try:
            await asyncio.wait_for(self._closed.wait(), 5)
        except asyncio.TimeoutError:
            self._end(WsctlError("closed", "the client closed"))

    async def wait_open(self) -> None:
        """Waits until a connection is greeted (or the client has ended)."""
        greeted = asyncio.ensure_future(self._greeted.wait())
        closed = asyncio.ensure_future(self._closed.wait())
        await asyncio.wait({greeted, closed}, return_when=asyncio.FIRST_COMPLETED)
        greeted.cancel()
        closed.cancel()
        if self.state == "closed":
            raise WsctlError("closed", "the client ended before it was greeted")

    # The machinery.

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _submit(self, kind: str, message: Any) -> Answer:
        if self.state in ("closing", "closed"):
            raise WsctlError("closed", "the client is closed")
        frame_id = f"{self._prefix}-{next(self._ids)}"
        entry = _Pending(
            json.dumps({"type": kind, "message": message, "id": frame_id}),
            asyncio.get_running_loop().create_future(),
        )
        self._pending[frame_id] = entry
        await self._transmit(entry)
        return await entry.future

    async def _transmit(self, entry: _Pending) -> None:
        ws = self._ws
        if ws is None or not self._greeted.is_set():
            return  # goes out after the next greeting
        try:
            await ws.send(entry.frame)
        except ConnectionClosed:
            pass  # the reader reconnects and resends

    def _target(self) -> str:
        if not self.session_uuid:
            return self.url
        parts = urlsplit(self.url)
        query = [(k, v) for k, v in parse_qsl(parts.query) if k != "session_uuid"]
        query.append(("session_uuid", self.session_uuid))
        return urlunsplit(parts._replace(query=urlencode(query)))

    async def _run(self) -> None:
        attempt = 0
        while self.state not in ("closing", "closed"):
            code, said_goodbye, greeted = 1006, False, False
            try:
                async with ws_connect(
                    self._target(),
                    open_timeout=self._open_timeout,
                    ping_interval=None,
                    close_timeout=2,
                    max_size=None,
                ) as ws:
                    self._ws = ws
                    code, said_goodbye, greeted = await self._read(ws)
            except Exception as error:  # refused, reset, an HTTP answer: try again
                self._emit("error", {"code": "connect", "detail": str(error)})
            finally:
                self._ws = None
                self._greeted.clear()
            if self.state in ("closing", "closed"):
                break
            if code in TERMINAL_CLOSE_CODES:
                self._end(WsctlError("closed", f"the server closed the connection ({code})"))
                return
            if greeted:
                attempt = 0
            self._set_state("reconnecting", code)
            # After a goodbye the server asked us to move: go at once (it
            # already spread its goodbyes); after that, and after a drop,
            # back off.
            wait = 0.0 if said_goodbye else backoff_delay(attempt, *self._backoff)
            attempt += 1
            await asyncio.sleep(wait)
        self._end(WsctlError("closed", "the client closed"))

    async def _read(self, ws) -> tuple[int, bool, bool]:
        """Reads until the connection ends; returns its close code (1006
        without one), whether the server said goodbye first, and whether
        the connection was greeted."""
        said_goodbye = False
        greeted = False
        while True:
            limit = None
            if self._watchdog and self.heartbeat_interval and self._greeted.is_set():
                limit = 2 * self.heartbeat_interval
            try:
                text = await asyncio.wait_for(ws.recv(), limit)
            except asyncio.TimeoutError:
                self._emit("error", {"code": "watchdog", "detail": f"no frame for {limit} s"})
                # A dead link: drop it without waiting for a close handshake.
                ws.transport.abort()
                return 1006, said_goodbye, greeted
            except ConnectionClosed as closed:
                rcvd = closed.rcvd
                return (rcvd.code if rcvd is not None else 1006), said_goodbye, greeted
            if not isinstance(text, str):
                continue
            try:
                frame = json.loads(text)
            except ValueError:
                continue
            kind = frame.get("type")
            if kind == "connection_established":
                greeted = True
                await self._greeting(ws, frame)
            elif kind == "message_response":
                self._answered(frame)
                self._emit("message", frame)
            elif kind == "broadcast":
                self._emit("broadcast", frame)
            elif kind == "heartbeat":
                self._emit("heartbeat", frame)
            elif kind == "goodbye":
                said_goodbye = frame.get("reason") != "client_request"
                self._count_is(frame.get("count"))
                self._emit("goodbye", frame)
            elif kind == "error":
                self._refused(frame)

    async def _greeting(self, ws, frame: dict) -> None:
        again = self._ever_greeted
        self._ever_greeted = True
        self.session_uuid = frame.get("session_uuid")
        self.connection_id = frame.get("connection_id")
        self.color = frame.get("color")
        self.heartbeat_interval = frame.get("heartbeat_interval")
        if frame.get("resumed") is not True:
            self.count = 0  # a new session, or one that expired
        if again:
            self.reconnects += 1
        self._count_is(frame.get("count"))
        self._greeted.set()
        # Everything unanswered goes again, in order: what had counted is
        # answered as a duplicate with its count.
        try:
            for entry in list(self._pending.values()):
                await ws.send(entry.frame)
            if self.state == "closing":
                await ws.send(json.dumps({"type": "bye"}))
        except ConnectionClosed:
            return
        if self.state != "closing":
            self._set_state("open")
        self._emit("open", frame)

    def _answered(self, frame: dict) -> None:
        self._count_is(frame.get("count"))
        entry = self._pending.pop(frame.get("id"), None) if "id" in frame else None
        if entry is not None and not entry.future.done():
            entry.future.set_result(
                Answer(frame["count"], frame.get("duplicate") is True, frame["id"])
            )

    def _refused(self, frame: dict) -> None:
        self._emit("error", frame)
        frame_id = frame.get("id")
        entry = self._pending.get(frame_id) if frame_id is not None else None
        if entry is None:
            return
        if frame.get("code") in RETRY_ERRORS:
            wait = self._retry_delay + backoff_delay(entry.retries, self._retry_delay, 2.0)
            entry.retries += 1
            self._later(wait, entry)
            return
        del self._pending[frame_id]
        if not entry.future.done():
            entry.future.set_exception(WsctlError(frame.get("code", ""), frame.get("detail", "")))

    def _later(self, wait: float, entry: _Pending) -> None:
        async def resend() -> None:
            await asyncio.sleep(wait)
            if entry in self._pending.values():
                await self._transmit(entry)

        task = asyncio.get_running_loop().create_task(resend())
        self._timers.add(task)
        task.add_done_callback(self._timers.discard)

    def _count_is(self, count: Any) -> None:
        if isinstance(count, int) and count > self.count:
            self.count = count
            self._emit("count", {"count": count})

    def _end(self, why: WsctlError) -> None:
        if self.state == "closed":
            return
        for task in list(self._timers):
            task.cancel()
        for entry in self._pending.values():
            if not entry.future.done():
                entry.future.set_exception(why)
        self._pending.clear()
        ws = self._ws
        if ws is not None:
            ws.transport.abort()
        self._set_state("closed")
        self._closed.set()

    def _set_state(self, state: str, code: Optional[int] = None) -> None:
        """``code``: the close code that ended the last connection."""
        if self.state != state:
            self.state = state
            detail = {"state": state} if code is None else {"state": state, "code": code}
            self._emit("state", detail)

    def _emit(self, event: str, detail: Any) -> None:
        for listener in self._listeners.get(event, []):
            listener(detail)
