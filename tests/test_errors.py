"""Every exception class the package defines is rooted in `OpenManagerError`, save the documented signal."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import openmanager
from openmanager.core.errors import OpenManagerError

SKIPPED_MODULES = ("openmanager.__main__", "openmanager.store.migrations")  # run at import: the CLI, Alembic
OUTSIDE_THE_TREE = {"openmanager.gateway.limits._BodyTooLarge"}  # must reach BodyLimit, not the app's handler


def exception_classes() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(openmanager.__path__, "openmanager."):
        if info.name.startswith(SKIPPED_MODULES):
            continue
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, BaseException) and cls.__module__ == info.name:
                found[f"{info.name}.{cls.__qualname__}"] = cls
    return found


def test_every_exception_of_the_package_is_an_openmanager_error() -> None:
    classes = exception_classes()
    assert len(classes) > 20 and set(classes) >= OUTSIDE_THE_TREE
    outside = {name for name, cls in classes.items() if not issubclass(cls, OpenManagerError)}
    assert outside == OUTSIDE_THE_TREE


def test_rooted_errors_keep_their_message_and_what_caught_them_before() -> None:
    from openmanager.agent.runner import AgentRefused
    from openmanager.notify.message import DeliveryError
    from openmanager.sources.prometheus import ExpositionError, ScrapeError

    error = DeliveryError("HTTP 503", retry_after_s=2.0)
    assert (error.message, str(error), error.retryable, error.code) == ("HTTP 503", "HTTP 503", True, "delivery_failed")
    assert not DeliveryError("gone", gone=True).retryable
    assert issubclass(ExpositionError, ValueError)  # a parser's error, caught as one
    for cls in (AgentRefused, ScrapeError, ExpositionError):
        assert str(cls("why")) == cls("why").message == "why"
