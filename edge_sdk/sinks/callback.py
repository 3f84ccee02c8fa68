"""The integration API: any Python callable as a sink.

>>> from edge_sdk.sinks.runner import SinkRunner
>>> verdicts = []
>>> sink = CallbackSink(lambda ins: verdicts.append(ins.result.verdict), name="mes")
>>> sink.name
'mes'
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from edge_sdk.errors import ConfigError
from edge_sdk.records import Inspection

__all__ = ["CallbackSink", "load_callable"]


class CallbackSink:
    """Calls `fn(inspection)` on the sink's own thread; an exception is a failed delivery
    (retried by the runner). `on_close`, if given, runs once at close."""

    def __init__(
        self,
        fn: Callable[[Inspection], Any],
        *,
        name: str = "callback",
        on_close: Callable[[], Any] | None = None,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"CallbackSink needs a callable, got {type(fn).__name__}")
        self.name = name
        self._fn = fn
        self._on_close = on_close
        # A callable object with its own heartbeat or health message keeps it.
        interval = getattr(fn, "tick_interval_s", None)
        tick = getattr(fn, "tick", None)
        if interval and callable(tick):
            self.tick_interval_s = float(interval)
            self.tick = tick

    def __call__(self, inspection: Inspection) -> None:
        self._fn(inspection)

    def close(self) -> None:
        """Run `on_close` (or the callable's own `close()`, if it has one)."""
        closer = self._on_close or getattr(self._fn, "close", None)
        if callable(closer):
            closer()


def load_callable(target: str, options: dict[str, Any] | None = None) -> Callable[..., Any]:
    """Import `package.module:attribute`; a class is instantiated with `options`.

    >>> load_callable("operator:attrgetter", {})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    edge_sdk.errors.ConfigError: callback target 'operator:attrgetter': ...
    >>> load_callable("json:dumps")([1])
    '[1]'
    """
    module_name, _, attr_path = target.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"callback target {target!r}: cannot import {module_name!r}: {exc}"
        ) from exc
    for attr in attr_path.split("."):
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            raise ConfigError(
                f"callback target {target!r}: module {module_name!r} has no {attr_path!r}"
            ) from None
    if isinstance(obj, type):
        try:
            obj = obj(**(options or {}))
        except Exception as exc:
            raise ConfigError(
                f"callback target {target!r}: {obj.__name__}(**options) failed: {exc}"
            ) from exc
    elif options:
        raise ConfigError(f"callback target {target!r} is a function: it takes no `options`")
    if not callable(obj):
        raise ConfigError(f"callback target {target!r} is not callable")
    return obj
