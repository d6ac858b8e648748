"""A team's own service speaking wsctl's contract (docs/protocol.md), as a
Python ASGI app: Starlette under uvicorn, counts in Redis (REDIS_URL).

- GET /up: 200 (wsctl's health path); 503 once shutting down.
- /ws/chat/?session_uuid=...: the contract's greeting, `message` ->
  `message_response` with the session's count (Redis INCR, so a session
  resumes on the other colour), `bye` -> goodbye + 1000.
- SIGTERM: every connection gets `goodbye` (server_shutdown) and 1001 after
  the message it is answering, nothing more is read; then uvicorn exits.
"""
import asyncio
import datetime
import json
import os
import signal
import uuid

import redis.asyncio as redis
import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

COLOR = os.environ.get("COLOR", "unknown")
SESSION_TTL = 3600
store = redis.from_url(os.environ.get("REDIS_URL", "redis://localhost:6379/0"))
connections = {}  # connection_id -> Connection
shutting_down = False


def now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Connection:
    def __init__(self, socket, session):
        self.socket = socket
        self.session = session
        self.id = str(uuid.uuid4())
        self.lock = asyncio.Lock()  # held while a message is answered
        self.done = False

    async def goodbye(self, reason, code):
        async with self.lock:
            if self.done:
                return
            self.done = True
            count = int(await store.get(key(self.session)) or 0)
            try:
                await self.socket.send_text(json.dumps({
                    "type": "goodbye", "count": count, "reason": reason,
                    "connection_id": self.id}))
                await self.socket.close(code)
            except Exception:
                pass


def key(session):
    return f"pyapp:session:{session}:count"


async def up(request):
    if shutting_down:
        return PlainTextResponse("shutting down\n", status_code=503)
    return PlainTextResponse("ok\n")


async def chat(socket: WebSocket):
    session = socket.query_params.get("session_uuid")
    if session is not None:
        try:
            session = str(uuid.UUID(session))
        except ValueError:
            await socket.close(1008)
            return
    if shutting_down:
        await socket.close(1001)
        return
    await socket.accept()
    resumed = session is not None and bool(await store.exists(key(session)))
    session = session or str(uuid.uuid4())
    count = int(await store.get(key(session)) or 0)
    me = Connection(socket, session)
    connections[me.id] = me
    try:
        await socket.send_text(json.dumps({
            "type": "connection_established", "connection_id": me.id,
            "session_uuid": session, "count": count, "resumed": resumed,
            "color": COLOR, "version": "python-asgi-test", "heartbeat_interval": 30}))
        while True:
            text = await socket.receive_text()
            async with me.lock:
                if me.done:
                    return
                try:
                    frame = json.loads(text)
                except ValueError:
                    await socket.send_text(json.dumps({"type": "error", "code": "invalid_json", "detail": "not JSON"}))
                    continue
                kind = frame.get("type", "message") if isinstance(frame, dict) else None
                if kind == "bye":
                    me.done = True
                    count = int(await store.get(key(session)) or 0)
                    await socket.send_text(json.dumps({
                        "type": "goodbye", "count": count, "reason": "client_request",
                        "connection_id": me.id}))
                    await socket.close(1000)
                    return
                if kind != "message" or "message" not in frame:
                    await socket.send_text(json.dumps({"type": "error", "code": "invalid_message", "detail": "not a message"}))
                    continue
                count = await store.incr(key(session))
                await store.expire(key(session), SESSION_TTL)
                await socket.send_text(json.dumps({
                    "type": "message_response", "count": count, "message": frame["message"],
                    "connection_id": me.id, "timestamp": now()}))
    except WebSocketDisconnect:
        pass
    finally:
        connections.pop(me.id, None)


app = Starlette(routes=[Route("/up", up), WebSocketRoute("/ws/chat/", chat), WebSocketRoute("/ws/chat", chat)])


class Server(uvicorn.Server):
    """uvicorn closes WebSockets with 1012 on shutdown; the contract asks
    for goodbye and 1001 first."""

    def handle_exit(self, sig, frame):
        global shutting_down
        if shutting_down:
            return super().handle_exit(sig, frame)
        shutting_down = True
        loop = asyncio.get_event_loop()
        loop.create_task(self.drain(sig, frame))

    async def drain(self, sig, frame):
        await asyncio.gather(*(c.goodbye("server_shutdown", 1001) for c in list(connections.values())))
        super().handle_exit(sig, frame)


if __name__ == "__main__":
    config = uvicorn.Config(app, host="0.0.0.0", port=int(os.environ.get("PORT", "8000")),
                            ws="wsproto", log_level="warning", lifespan="off")
    Server(config).run()
