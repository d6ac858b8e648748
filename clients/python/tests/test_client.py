"""wsctl against a real `wsctl serve`: answers, ids, refusals, the
close codes, a cut link and a frozen one."""

import asyncio
import re
import time

import pytest

from conftest import Proxy
from wsctl import WsctlError, backoff_delay, connect


def test_full_jitter_backoff_stays_under_its_cap():
    for attempt in range(40):
        ceiling = min(5.0, 0.1 * 2**attempt)
        assert backoff_delay(attempt, rand=lambda: 0.0) == 0.0
        top = backoff_delay(attempt, rand=lambda: 0.999999)
        assert ceiling * 0.99 < top < ceiling
    draws = {round(backoff_delay(5), 4) for _ in range(200)}
    assert len(draws) > 100, "reconnect delays in lockstep"


def test_answers_ids_and_a_bye(serve):
    port = serve(BROADCAST_RATE=100)

    async def main():
        client = await connect(f"ws://127.0.0.1:{port}/ws/chat/")
        counts, goodbyes, broadcasts = [], [], []
        client.on("count", lambda d: counts.append(d["count"]))
        client.on("goodbye", goodbyes.append)
        client.on("broadcast", broadcasts.append)
        first = await client.send("one")
        assert (first.count, first.duplicate) == (1, False)
        assert re.fullmatch(r"[0-9a-f]{8}-0", first.id)
        assert (await client.send({"two": 2})).count == 2
        assert (await client.broadcast("to all")).count == 3
        assert client.state == "open"
        session = client.session_uuid
        await client.close()
        assert client.state == "closed"
        assert [g["reason"] for g in goodbyes] == ["client_request"]
        assert goodbyes[0]["count"] == 3
        assert counts == [1, 2, 3]
        assert len(broadcasts) == 1
        with pytest.raises(WsctlError):
            await client.send("after close")
        again = await connect(f"ws://127.0.0.1:{port}/ws/chat/", session=session)
        assert (await again.send("four")).count == 4
        await again.close()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_a_refused_frame_raises_and_the_client_stays_open(serve):
    port = serve(BROADCAST_MAX_SIZE=10)

    async def main():
        client = await connect(f"ws://127.0.0.1:{port}/ws/chat/")
        with pytest.raises(WsctlError) as refused:
            await client.broadcast("x" * 100)
        assert refused.value.code == "message_too_large"
        assert (await client.send("fine")).count == 1
        await client.close()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_close_1009_ends_the_client(serve):
    port = serve(MAX_MESSAGE_SIZE=1000)

    async def main():
        client = await connect(f"ws://127.0.0.1:{port}/ws/chat/")
        await client.send("small")
        with pytest.raises(WsctlError):
            await client.send("x" * 5000)
        assert client.state == "closed"

    asyncio.run(asyncio.wait_for(main(), 30))


def test_a_cut_link_reconnects_resumes_and_loses_nothing(serve):
    port = serve()

    async def main():
        proxy = Proxy(port)
        url = await proxy.start()
        client = await connect(url, backoff_base=0.05, backoff_cap=0.5)
        await client.send(0)
        session = client.session_uuid
        sent = []
        for i in range(1, 31):
            sent.append(asyncio.ensure_future(client.send(i)))
            if i in (10, 20):
                proxy.cut()
            await asyncio.sleep(0.01)
        answers = await asyncio.wait_for(asyncio.gather(*sent), 20)
        assert sorted(a.count for a in answers) == list(range(2, 32))
        assert client.session_uuid == session
        assert client.count == 31
        assert client.reconnects >= 2
        await client.close()
        proxy.close()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_the_watchdog_drops_a_frozen_link_and_resends(serve):
    port = serve(HEARTBEAT_INTERVAL=0.5)

    async def main():
        proxy = Proxy(port)
        url = await proxy.start()
        client = await connect(url, backoff_base=0.05, backoff_cap=0.2)
        errors = []
        client.on("error", errors.append)
        assert (await client.send("before")).count == 1
        proxy.freeze()
        started = time.monotonic()
        answer = await asyncio.wait_for(client.send("while frozen"), 10)
        waited = time.monotonic() - started
        assert answer.count == 2
        assert any(e.get("code") == "watchdog" for e in errors), errors
        assert 0.5 <= waited < 4, waited
        assert client.reconnects == 1
        await client.close()
        proxy.close()

    asyncio.run(asyncio.wait_for(main(), 30))
