"""The client through failures: a hub restart, and 50 connection cuts at random moments through a proxy.

Every hub here is a real subprocess; the proxy is a real TCP proxy on loopback (tests/client/proxy.py)."""

from __future__ import annotations

import asyncio
import itertools
import random
from pathlib import Path

from openmanager.client import ConnectionState, Event, HubClient, LogStream, MetricsStream, Reset, Snapshot
from tests.client.proxy import CuttableProxy
from tests.client.waiting import until
from tests.integration.hubproc import HubProcess


def _collapse(states: list[ConnectionState]) -> list[str]:
    return [name for name, _ in itertools.groupby(s.state for s in states)]


async def test_hub_restart_resubscribes_with_a_reset(tmp_path: Path) -> None:
    args = ("--servers", "20", "--seed", "11", "--tick", "0.2", "--no-local")
    hub = HubProcess(tmp_path, *args)
    await asyncio.to_thread(hub.start)
    client = HubClient(hub.base, token=hub.token, backoff_min=0.05, backoff_max=0.5)
    states: list[ConnectionState] = []
    client.on_state(states.append)
    try:
        await client.connect()
        metrics: list[Event] = []
        snapshots: list[Snapshot] = []
        logs: list[Event] = []
        resets: list[Reset] = []
        msub = await client.subscribe("metrics", on_event=metrics.append, on_snapshot=snapshots.append,
                                      on_reset=resets.append)
        lsub = await client.subscribe("logs", on_event=logs.append, on_reset=resets.append)
        await until(lambda: len(metrics) >= 2 and logs, 15, "metrics and logs before the restart")
        old_epoch = metrics[-1].epoch
        ids = (msub.sub, lsub.sub)

        await asyncio.to_thread(hub.stop)
        await asyncio.wait_for(client.wait_for_state("reconnecting"), 10)
        hub = HubProcess(tmp_path, *args, port=hub.port)  # same port, same data directory
        await asyncio.to_thread(hub.start)
        await asyncio.wait_for(client.wait_for_state("open"), 15)
        await until(lambda: metrics[-1].epoch != old_epoch and logs[-1].epoch != old_epoch, 15,
                    "metrics and logs events from the restarted hub")

        assert _collapse(states) == ["connecting", "open", "reconnecting", "open"]
        first_drop = next(s for s in states if s.state == "reconnecting")
        assert first_drop.attempt == 0 and "hub closed the connection" in first_drop.reason  # 1012 from uvicorn
        assert all(s.next_delay_s is not None and 0 <= s.next_delay_s <= 0.5 for s in states
                   if s.state == "reconnecting")
        assert (msub.sub, lsub.sub) == ids and msub.active and lsub.active  # same shapes, same ids
        assert len(snapshots) == 2 and not snapshots[0].reset and snapshots[1].reset
        new_epoch = snapshots[1].cursor.rsplit("-", 1)[0]
        assert new_epoch != old_epoch and metrics[-1].epoch == new_epoch
        assert sorted(r.topic for r in resets) == ["logs", "metrics"]
        assert all("restarted" in r.reason and r.since.startswith(old_epoch) for r in resets)
        assert msub.resets == 1 and lsub.resets == 1
        assert client.stats.resets == 2 and client.stats.resumed == 0
        after = [e for e in metrics if e.epoch == new_epoch]
        assert [e.seq for e in after] == sorted({e.seq for e in after})
    finally:
        await client.close()
        await asyncio.to_thread(hub.stop)


async def test_fifty_random_cuts_lose_and_repeat_nothing(tmp_path: Path) -> None:
    hub = HubProcess(tmp_path, "--servers", "200", "--seed", "3", "--tick", "0.1", "--no-local")
    await asyncio.to_thread(hub.start)
    proxy = await CuttableProxy(hub.port).start()
    reference = HubClient(hub.base, token=hub.token)
    cut = HubClient(f"ws://127.0.0.1:{proxy.port}/ws", token=hub.token, backoff_min=0.02, backoff_max=0.2,
                    ping_interval=1.0)
    states: list[ConnectionState] = []
    cut.on_state(states.append)
    try:
        await reference.connect()
        await cut.connect()
        ref_logs: list[Event] = []
        cut_logs: list[Event] = []
        resets: list[Reset] = []
        await reference.subscribe("logs", on_event=ref_logs.append)
        ref_metrics = MetricsStream.on(reference)
        ref_view = ref_metrics.subscribe()
        await ref_metrics.connect()

        await cut.subscribe("logs", on_event=cut_logs.append, on_reset=resets.append)
        log_stream = LogStream.on(cut)  # the same shape: shares the hub subscription
        streamed: list[tuple[str | None, dict]] = []
        log_stream.on_log(lambda r: streamed.append((log_stream.cursor, r)))
        await log_stream.connect()
        cut_metrics = MetricsStream.on(cut)
        cut_view = cut_metrics.subscribe(on_reset=resets.append)
        await cut_metrics.connect()
        await until(lambda: len(cut_logs) >= 3, 10, "logs flowing")

        rng = random.Random(20261126)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 40
        cuts = 0
        while cuts < 50:
            assert loop.time() < deadline, f"only {cuts} cuts in 40 s"
            await asyncio.sleep(rng.uniform(0.05, 0.3))  # pacing the cuts, not waiting for a result
            cuts += proxy.cut() > 0
        end_seq = ref_logs[-1].seq
        await asyncio.wait_for(cut.wait_for_state("open"), 10)
        await until(lambda: cut_logs and cut_logs[-1].seq >= end_seq + 5 and ref_logs[-1].seq >= end_seq + 5,
                    15, "logs after the last cut")

        # Logs: every event exactly once, in order, the same as the uncut reference's.
        # A cut can land during a handshake (a failed attempt) or while re-subscribing (a drop before
        # `open`), so count what the client saw rather than state transitions.
        assert cut.stats.drops + cut.stats.connect_failures >= 50
        assert sum(s.state == "reconnecting" and "lost" in s.reason for s in states) == cut.stats.drops
        assert reference.stats.drops == 0
        assert resets == [] and cut.stats.resets == 0
        # every reconnect that got back to `open` resumed its logs from the cursor (`recovered: true`);
        # `metrics` is in the delta encoding, whose resume is a fresh snapshot (recovered: false, no reset)
        reopened = sum(s.state == "open" and s.reason == "resumed" for s in states)
        assert reopened > 0 and cut.stats.resumed >= reopened
        epoch = ref_logs[0].epoch
        assert {e.epoch for e in ref_logs} == {e.epoch for e in cut_logs} == {epoch}
        ref_seqs = [e.seq for e in ref_logs]
        cut_seqs = [e.seq for e in cut_logs]
        assert ref_seqs == list(range(ref_seqs[0], ref_seqs[0] + len(ref_seqs)))
        assert cut_seqs == list(range(cut_seqs[0], cut_seqs[0] + len(cut_seqs))), "a gap or a duplicate"
        lo, hi = max(ref_seqs[0], cut_seqs[0]), min(ref_seqs[-1], cut_seqs[-1])
        assert lo <= cut_seqs[0] + 1 and hi >= end_seq + 5  # the overlap covers the whole cutting period
        ref_by_seq = {e.seq: e for e in ref_logs}
        assert all(e.data == ref_by_seq[e.seq].data and e.sub == ref_by_seq[e.seq].sub
                   for e in cut_logs if lo <= e.seq <= hi)
        # The LogStream shared the subscription: its records are the events' records, in order.
        records = [(e.cursor, r) for e in cut_logs for r in e.data["records"]]
        assert streamed and streamed == records[len(records) - len(streamed):]

        # Metrics: the latest sample per server converges to the reference's at the same cursor.
        await until(lambda: cut_view.cursor == ref_view.cursor and cut_view.state == ref_view.state, 10,
                    "metrics state equal to the reference's at the same cursor")
        assert len(cut_view.state) == 200
    finally:
        await cut.close()
        await reference.close()
        await proxy.close()
        await asyncio.to_thread(hub.stop)


async def test_a_restarted_hub_gets_its_clients_back_within_seconds(tmp_path: Path) -> None:
    """After a 1012 the client retries about every second (jittered), not on its exponential backoff:
    however long the hub was away, it is back within a few seconds of the hub answering."""
    import time

    args = ("--servers", "4", "--seed", "3", "--tick", "0.5", "--no-local")
    hub = HubProcess(tmp_path, *args)
    await asyncio.to_thread(hub.start)
    client = HubClient(hub.base, token=hub.token)  # the default backoff: 0.5 s doubling up to 20 s
    states: list[ConnectionState] = []
    client.on_state(states.append)
    try:
        await client.connect()
        await asyncio.to_thread(hub.stop)
        # five failed attempts: on the exponential backoff the next would wait up to 16 s
        await until(lambda: sum(s.state == "reconnecting" for s in states) >= 6, 20, "six reconnect attempts")
        waits = [s.next_delay_s for s in states if s.state == "reconnecting"]
        assert all(w is not None and 0.2 <= w <= 1.0 for w in waits), waits
        hub = HubProcess(tmp_path, *args, port=hub.port)
        await asyncio.to_thread(hub.start)
        answered = time.monotonic()
        await asyncio.wait_for(client.wait_for_state("open"), 10)
        assert time.monotonic() - answered < 4.0
    finally:
        await client.close()
        await asyncio.to_thread(hub.stop)
