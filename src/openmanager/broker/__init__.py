"""Topic brokers: the interface (`base`) and the in-memory default (`memory`)."""

from openmanager.broker.base import Broker, Event, Listener
from openmanager.broker.memory import HistoryLimits, MemoryBroker

__all__ = ["Broker", "Event", "HistoryLimits", "Listener", "MemoryBroker"]
