import asyncio, uuid
import pytest
from openmanager.broker.redis import RedisBroker
from tests.services import delete_prefix

@pytest.fixture
async def nodes():
    a = RedisBroker("redis://127.0.0.1:6379/0", prefix="omx", node="a", topics=["t"])
    await a.start()
    yield a
    print("teardown", flush=True)
    async def dump():
        await asyncio.sleep(3)
        for t in asyncio.all_tasks():
            c = t.get_coro()
            while c is not None:
                f = getattr(c, "cr_frame", None) or getattr(c, "gi_frame", None) or getattr(c, "ag_frame", None)
                print("  ", getattr(c, "__qualname__", c), f.f_code.co_filename if f else "", f.f_lineno if f else "")
                c = getattr(c, "cr_await", None) or getattr(c, "gi_yieldfrom", None) or getattr(c, "ag_await", None)
            print("--")
    d = asyncio.ensure_future(dump())
    await a.close()
    print("closed", flush=True)
    d.cancel()

async def test_x(nodes):
    await nodes.publish("t", {"n": 1})
