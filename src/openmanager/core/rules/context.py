"""What a compiled rule reads when it is evaluated: the contexts the hub (and the tests, the backtest) pass
to `Condition`: one server's view (`EvalContext`), what the history functions may add
(`HistoryContext`), and a fleet rule's servers (`FleetContext`). Callers implement these; `compile`
only reads them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from openmanager.core.forecast import Baseline, Moments, PeerStats
from openmanager.core.model import ServerInfo

__all__ = ["EvalContext", "FleetContext", "HistoryContext"]


class EvalContext(Protocol):
    """One server's view, as a per-server condition (or the inside of `count()`) sees it."""

    @property
    def server(self) -> ServerInfo:
        """Who the server is: `server.<attr>` and `tags.<key>` read from here."""
        ...

    def latest(self, field: str) -> float | str | None:
        """The latest value of a metric (a float) or of `status` (a str); None when not reported."""
        ...

    def series(self, metric: str, since_ms: int) -> tuple[Sequence[int], Sequence[float]]:
        """Timestamps (ms, ascending) and values of `metric` at or after `since_ms`, without NaNs."""
        ...

    def labelled(self, metric: str) -> Mapping[str, float]:
        """The latest value of each of the server's labelled series of `metric`, by label value (`disk` →
        `{"/": 40.1, "/var": 91.2}`); empty when it has none (or none known now)."""
        ...

    @property
    def now_ms(self) -> int:
        """The evaluation instant; windows end here."""
        ...


class HistoryContext(EvalContext, Protocol):
    """What a context may add for `predict`, `time_to`, `anomaly` and `outlier` (each method optional)."""

    def moments(self, metric: str, window_ms: int) -> Moments | None:
        """The running sums of `metric` over `[now_ms - window_ms, now_ms]` (not to be changed)."""
        ...

    def baseline(self, metric: str) -> Baseline | None:
        """The server's usual `metric` at `now_ms`'s hour of the day (UTC); None without enough days."""
        ...

    def peers(self, metric: str) -> PeerStats | None:
        """The median and MAD of `metric` across the servers of this server's role now; None without
        enough of them."""
        ...


class FleetContext(Protocol):
    """The servers in a fleet rule's scope."""

    def members(self) -> Sequence[EvalContext]:
        """The servers in scope, each as its own EvalContext."""
        ...

    @property
    def now_ms(self) -> int:
        """The evaluation instant."""
        ...
