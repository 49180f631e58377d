"""Compiling rule-language text at the async edge without holding the event loop.

Parsing is linear but slow in pure Python (tens of milliseconds for a valid 4 KB expression on a busy
machine), so text longer than `SLICED_CHARS` is compiled in slices (`budget.run_sliced` over
`core.rules.compile_steps`): the loop is given back every few milliseconds, as for other long work.
One long compile runs at a time, the others wait their turn (first come, first served), so however
many clients send long expressions, other work waits for at most one slice per turn of the loop.
Shorter text, the common case, compiles at once. A thread would not help: pure-Python work takes the
GIL from the loop in 5 ms turns.
"""

from __future__ import annotations

import asyncio

from openmanager.budget import run_sliced
from openmanager.core.filters import TopicFilter, parse_filter
from openmanager.core.rules import Condition, Limits, compile_steps, run_steps

SLICED_CHARS = 256
"""Expressions longer than this (in characters) are compiled in slices."""

_turns: dict[asyncio.AbstractEventLoop, asyncio.Lock] = {}


def _one_at_a_time() -> asyncio.Lock:
    """The running loop's lock for long compiles (a loop of its own per test or hub process)."""
    loop = asyncio.get_running_loop()
    lock = _turns.get(loop)
    if lock is None:
        for old in [other for other in _turns if other.is_closed()]:
            del _turns[old]
        lock = _turns[loop] = asyncio.Lock()
    return lock


async def compile_sliced(text: str, *, fleet: bool = False, limits: Limits) -> Condition:
    """`core.rules.compile_condition`, in slices when `text` is long (then cached, so a
    `compile_condition` of the same arguments right after is a cache hit). Raises `RuleSyntaxError`."""
    steps = compile_steps(text, fleet=fleet, limits=limits)
    if SLICED_CHARS < len(text) <= limits.max_length:
        async with _one_at_a_time():
            return await run_sliced(steps)
    return run_steps(steps)  # at once: short, or refused by the pre-scan


async def parse_filter_async(topic: str, raw: object, *, user: str, limits: Limits) -> TopicFilter:
    """`core.filters.parse_filter`, with a long `where` compiled in slices first."""
    where = raw.get("where") if isinstance(raw, dict) else None
    if topic == "metrics" and isinstance(where, str) and len(where) > SLICED_CHARS:
        await compile_sliced(where, limits=limits)  # errors are the ones parse_filter would raise
    return parse_filter(topic, raw, user=user, limits=limits)
