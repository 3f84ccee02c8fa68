"""GenICam cameras through Harvesters: any GigE Vision / USB3 Vision camera whose vendor
ships a GenTL producer, with a profile applied, for days, through cable pulls.

How it stays up:

- Every fetch waits at most `fetch_poll_s` and then checks the stop flag, so neither
  `stop()` nor `close()` waits on a fetch that will never return (Harvesters' `fetch()`
  without a timeout blocks forever, and `stop()` from another thread does not free it).
- The wait for a frame happens in Python, not in the producer: GenTL's native wait holds
  the GIL (Harvesters' binding does not release it), so a 10 ms native wait made every
  other thread, the PLC and MQTT sinks among them, wake up to 10 ms late. Each check of
  the producer returns at once (`_NATIVE_WAIT_MS` = 0) and the loop sleeps
  `_FETCH_NAP_S` between checks, with the GIL released (`benchmarks/gil_wakeup.py`).
- Any error from the device other than a timeout counts as a disconnect: the acquirer is
  destroyed and re-created with exponential backoff, the profile re-applied, the event
  counted and logged, with backoff so a dead camera does not spin the CPU.
- Destroying an acquirer frees what Harvesters 1.4 keeps after `destroy()`
  (`destroy_acquirer`): its GenApi chunk adapter stays attached to the node map and
  leaked 0.38 MiB of native memory per reconnect, and the acquirer itself stays
  referenced (the Harvester's list, a `weakref.finalize` on a bound method) until exit.
- Free run uses newest-only buffering (``StreamBufferHandlingMode=NewestOnly`` on the
  data stream, set before `start()`), so a slow consumer gets the newest frame, not one
  several buffers old. Triggered acquisition uses oldest-first so no part is skipped.
  Producers without NewestOnly get it emulated: queued buffers are handed back uncopied
  and only the newest one is kept.
- Each frame is copied once, inside the buffer's ``with`` block, from the driver's memory
  into an array the pipeline owns (`pixel_formats.decode`); the buffer's data is only a
  view and holds other frames afterwards.

Over 400 lines on purpose: one class and the two Harvesters workarounds it needs. Its
open, fetch, reconnect and close paths share one lock and one acquirer's life cycle, and
read best side by side.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_sdk.records import Frame
from edge_sdk.sources.base import FrameSource
from edge_sdk.sources.discovery import (
    CameraInfo,
    describe,
    lease_harvester,
    refresh_harvester,
    release_harvester,
    select_camera,
)
from edge_sdk.sources.errors import (
    CameraNotFoundError,
    FrameTimeoutError,
    SourceClosedError,
    SourceError,
)
from edge_sdk.sources.pixel_formats import decode, frame_bytes, output_shape
from edge_sdk.sources.pool import ArrayPool
from edge_sdk.sources.producers import find_producers
from edge_sdk.sources.profiles import CameraProfile, apply_profile

__all__ = ["GenICamSource", "ReconnectPolicy"]

logger = logging.getLogger(__name__)

_STREAM_MODES = {"newest_only": "NewestOnly", "oldest_first": "OldestFirst"}
_NATIVE_WAIT_MS = 0  # a native wait holds the GIL: never wait inside the producer
_NATIVE_CHECK_S = 1e-6  # one check of the producer's queue per try_fetch
_FETCH_NAP_S = 0.001  # between checks, with the GIL free: at most 1 ms of added latency


@dataclass(frozen=True)
class ReconnectPolicy:
    """When to try again after a camera was lost.

    The first attempt waits `initial_delay_s`; each failure multiplies the wait by
    `factor` up to `max_delay_s`. `max_attempts` None retries for ever (a line waits
    for its camera); otherwise `read()` raises `SourceError` after that many failures.
    """

    initial_delay_s: float = 0.5
    max_delay_s: float = 10.0
    factor: float = 2.0
    max_attempts: int | None = None

    def delay_s(self, failures: int) -> float:
        """Seconds to wait before attempt number `failures + 1`.

        >>> [ReconnectPolicy().delay_s(n) for n in range(6)]
        [0.5, 1.0, 2.0, 4.0, 8.0, 10.0]
        """
        return min(self.initial_delay_s * self.factor**failures, self.max_delay_s)


class GenICamSource(FrameSource):
    """Frames from one GenICam camera. Opening finds the camera, applies the profile and
    starts acquisition; `read()` and `frames()` deliver `Frame` records.

    `camera` is a selector (see `edge_sdk.sources.discovery`): an alias from `aliases`, a
    serial number, a user-defined name, a device id or an index. `camera_id` (the name
    written into each Frame) defaults to the selector as given.

    Timestamps are the camera's (``timestamp_ns`` of the buffer) when the producer
    provides them, else the host clock at fetch; `timestamp_source` says which.
    """

    def __init__(
        self,
        camera: str | int = 0,
        *,
        profile: CameraProfile | None = None,
        aliases: Mapping[str, str | int] | None = None,
        producer_paths: Sequence[str | os.PathLike[str]] = (),
        include_simulator: bool = True,
        camera_id: str | None = None,
        reconnect: ReconnectPolicy = ReconnectPolicy(),
        fetch_poll_s: float = 0.1,
    ) -> None:
        super().__init__(camera_id=camera_id if camera_id is not None else str(camera))
        self._selector = camera
        self._profile = profile or CameraProfile()
        self._aliases = dict(aliases or {})
        self._producer_paths = tuple(producer_paths)
        self._include_simulator = include_simulator
        self._policy = reconnect
        self.poll_s = fetch_poll_s
        self._harvester: Any = None
        self._acquirer: Any = None
        self._info: CameraInfo | None = None
        self._lock = threading.Lock()  # held while a fetch is in flight
        self._emulate_newest = False
        self._last_id: int | None = None  # the camera's own id of the last frame
        self._id_offset = 0
        self._last_out = -1
        self._host_clock = False
        self._failures = 0
        self._next_attempt = 0.0
        self._pool = ArrayPool()

    # -- what callers may want to know ---------------------------------------------------
    @property
    def info(self) -> CameraInfo:
        """The camera this source opened."""
        if self._info is None:
            raise SourceClosedError(f"camera {self.camera_id!r} is not open")
        return self._info

    @property
    def profile(self) -> CameraProfile:
        """The profile applied on open and after every reconnect."""
        return self._profile

    @property
    def timestamp_source(self) -> str:
        """ "camera" when frames carry the camera's timestamps, "host" otherwise."""
        return "host" if self._host_clock else "camera"

    @property
    def connected(self) -> bool:
        """False from the moment the device is found gone until it is reconnected."""
        return self._is_open and self._acquirer is not None

    @property
    def node_map(self) -> Any:
        """The camera's GenICam node map (for reading features; prefer profiles to set)."""
        if self._acquirer is None:
            raise SourceClosedError(f"camera {self.camera_id!r} is not connected")
        return self._acquirer.remote_device.node_map

    def trigger(self) -> None:
        """Fire the software trigger (profile trigger mode "software") for one frame."""
        if self._profile.trigger.mode != "software":
            raise SourceError(
                f"camera {self.camera_id!r}: trigger() needs a profile with trigger mode "
                f"'software', found {self._profile.trigger.mode!r}"
            )
        self.node_map.TriggerSoftware.execute()

    # -- lifecycle -----------------------------------------------------------------------
    def _open(self) -> None:
        producers = find_producers(self._producer_paths, include_simulator=self._include_simulator)
        if not producers:
            raise CameraNotFoundError(
                "no GenTL producer found: install the camera vendor's GenTL producer "
                "(it sets GENICAM_GENTL64_PATH) or name its .cti file in the configuration"
            )
        self._harvester = lease_harvester(producers)
        try:
            self._info = select_camera(
                describe(self._harvester), self._selector, aliases=self._aliases
            )
            self._failures = 0
            self._connect()
        except BaseException:
            self._release()
            raise
        logger.info(
            "camera %s opened: %s (%s)", self.camera_id, self._info.label, self._info.producer
        )

    def _close(self) -> None:
        # A read() in another thread returns within one poll; if it does not (a producer
        # stuck in native code), destroy() anyway: it is what frees a blocked fetch.
        got = self._lock.acquire(timeout=max(1.0, 5 * self.poll_s))
        try:
            self._release()
        finally:
            if got:
                self._lock.release()
        logger.info("camera %s closed (%s)", self.camera_id, self.stats.to_dict())

    def _release(self) -> None:
        self._drop_acquirer()
        if self._harvester is not None:
            self._harvester = None
            release_harvester()

    def _connect(self) -> None:
        """Create the acquirer, apply the profile, set buffering and start."""
        info = self.info
        key: dict[str, str] | int
        if info.serial:
            key = {"serial_number": info.serial}
        elif info.device_id:
            key = {"id_": info.device_id}
        else:
            key = info.index
        acquirer = _create_keeping_sigint(self._harvester, key)
        self._acquirer = acquirer
        try:
            acquirer.timeout_period_on_update_event_data_call = _NATIVE_WAIT_MS
            apply_profile(acquirer.remote_device.node_map, self._profile, camera=self.camera_id)
            if self._profile.num_buffers is not None:
                acquirer.num_buffers = max(self._profile.num_buffers, acquirer.min_num_buffers)
            self._set_buffer_handling(acquirer)
            acquirer.start()
        except BaseException:
            self._drop_acquirer()
            raise
        self._last_id = None

    def _set_buffer_handling(self, acquirer: Any) -> None:
        wanted = self._profile.effective_buffer_handling
        self._emulate_newest = False
        stream_map = acquirer.data_streams[0].node_map
        mode = _STREAM_MODES[wanted]
        if stream_map.has_node("StreamBufferHandlingMode"):
            node = stream_map.get_node("StreamBufferHandlingMode")
            if mode in node.symbolics:
                node.value = mode
                return
        if wanted == "newest_only":
            self._emulate_newest = True
            logger.info(
                "camera %s: producer lacks StreamBufferHandlingMode=NewestOnly; "
                "emulating it (older queued buffers are returned unread)",
                self.camera_id,
            )
        # Oldest-first is the GenTL default when the node is absent.

    def _drop_acquirer(self) -> None:
        acquirer, self._acquirer = self._acquirer, None
        if acquirer is not None:
            try:
                destroy_acquirer(acquirer, self._harvester)
            except Exception:
                logger.exception("camera %s: destroying the acquirer failed", self.camera_id)

    # -- reading -------------------------------------------------------------------------
    def _read(self, *, timeout_s: float) -> Frame:
        deadline = time.monotonic() + timeout_s
        while True:
            if self._stop.is_set():
                raise SourceClosedError(f"camera {self.camera_id!r} was stopped")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._count(timeouts=1)
                raise FrameTimeoutError(
                    f"camera {self.camera_id!r}: no frame within {timeout_s:g} s"
                    + (" (reconnecting)" if self._acquirer is None else "")
                )
            if self._acquirer is None:
                self._reconnect(deadline)
                continue
            with self._lock:
                if self._acquirer is None or self._stop.is_set():
                    continue
                try:
                    buffer = self._acquirer.try_fetch(timeout=_NATIVE_CHECK_S)
                    if buffer is not None:
                        if self._emulate_newest:
                            buffer = self._newest(buffer)
                        return self._take(buffer)
                except SourceError:
                    raise  # e.g. a pixel format the decoder does not know: not a disconnect
                except Exception as exc:  # the device is gone (or its producer failed)
                    self._lost(exc)
                    continue
            # Nothing yet: sleep outside the lock (close() may want it) and the GIL.
            self._stop.wait(min(_FETCH_NAP_S, max(0.0, deadline - time.monotonic())))

    def _take(self, buffer: Any) -> Frame:
        """Copy the frame out of the driver's buffer and give the buffer back."""
        with buffer:
            module = buffer.module
            component = buffer.payload.components[0]
            width, height, fmt = component.width, component.height, component.data_format
            padding_x = component.x_padding
            count = frame_bytes(fmt, width, height, padding_x=padding_x)
            raw = np.frombuffer(
                module.raw_buffer, dtype=np.uint8, count=count, offset=component.data_offset
            )
            out = self._pool.take(output_shape(fmt, width, height))
            image = decode(raw, fmt, width, height, padding_x=padding_x, out=out)  # the copy
            frame_id = int(module.frame_id)
            timestamp_ns = self._timestamp(module)
        self._count_ids(frame_id)
        # A camera counts again from its start after a reboot or reconnect: continue our
        # numbering instead, so an id names one frame for the life of the source (the
        # PLC echo and the results log depend on it).
        if frame_id + self._id_offset <= self._last_out:
            self._id_offset = self._last_out + 1 - frame_id
        self._last_out = frame_id + self._id_offset
        return Frame(
            image=image,
            frame_id=self._last_out,
            timestamp_ns=timestamp_ns,
            camera_id=self.camera_id,
        )

    def _newest(self, buffer: Any) -> Any:
        """The newest queued buffer; older ones go back to the producer unread.

        At most `num_buffers` are drained: a producer faster than this loop must not
        keep it going for ever. Waits are zero so an empty queue costs no latency.
        """
        acquirer = self._acquirer
        try:
            for _ in range(acquirer.num_buffers):
                newer = acquirer.try_fetch(timeout=_NATIVE_CHECK_S)
                if newer is None:
                    break
                buffer.queue()
                buffer = newer
        except BaseException:
            buffer.queue()
            raise
        return buffer

    def _timestamp(self, module: Any) -> int:
        if not self._host_clock:
            try:
                return int(module.timestamp_ns)
            except Exception:
                # Asking every frame would raise every frame; remember the answer.
                self._host_clock = True
                logger.info(
                    "camera %s gives no buffer timestamps; using the host clock", self.camera_id
                )
        return time.time_ns()

    def _count_ids(self, frame_id: int) -> None:
        last, self._last_id = self._last_id, frame_id
        self._count(frames=1)
        if last is None or frame_id <= last:  # first frame, restart or wrap: no gap known
            return
        gap = frame_id - last - 1
        if gap <= 0:
            return
        if self._profile.effective_buffer_handling == "newest_only":
            self._count(skipped=gap)
        else:
            self._count(lost=gap)
            logger.warning(
                "camera %s: %d frame(s) lost before frame %d", self.camera_id, gap, frame_id
            )

    # -- faults --------------------------------------------------------------------------
    def _lost(self, exc: BaseException) -> None:
        self._count(disconnects=1)
        logger.warning(
            "camera %s lost (%s: %s); reconnecting in %.1f s",
            self.camera_id,
            type(exc).__name__,
            exc,
            self._policy.delay_s(0),
        )
        self._drop_acquirer()
        self._failures = 0
        self._next_attempt = time.monotonic() + self._policy.delay_s(0)

    def _reconnect(self, deadline: float) -> None:
        """One reconnection attempt when it is due; returns early at the deadline."""
        wait = self._next_attempt - time.monotonic()
        if wait > 0:
            if self._stop.wait(min(wait, max(0.0, deadline - time.monotonic()))):
                return
            if time.monotonic() < self._next_attempt:
                return
        policy = self._policy
        try:
            with self._lock:
                if self._stop.is_set():
                    return
                # Re-enumerate (the camera may be back at a new address) unless other
                # cameras share the Harvester: update() would destroy their acquirers.
                if refresh_harvester():
                    self._info = select_camera(
                        describe(self._harvester),
                        f"serial:{self.info.serial}" if self.info.serial else self.info.index,
                    )
                self._connect()
        except Exception as exc:
            self._failures += 1
            delay = policy.delay_s(self._failures)
            self._next_attempt = time.monotonic() + delay
            if policy.max_attempts is not None and self._failures >= policy.max_attempts:
                raise SourceError(
                    f"camera {self.camera_id!r} did not come back after {self._failures} "
                    f"attempts; last error: {exc}"
                ) from exc
            logger.warning(
                "camera %s: reconnect attempt %d failed (%s); next in %.1f s",
                self.camera_id,
                self._failures,
                exc,
                delay,
            )
            return
        self._count(reconnects=1)
        logger.info(
            "camera %s reconnected after %d failed attempt(s); profile re-applied",
            self.camera_id,
            self._failures,
        )
        self._failures = 0


def _create_keeping_sigint(harvester: Any, key: Any) -> Any:
    """`harvester.create(key)` without its side effect on the main thread: Harvesters 1.4
    installs its own SIGINT handler there (holding the acquirer), which replaced the
    application's Ctrl-C handling, the line service's included."""
    if threading.current_thread() is not threading.main_thread():
        return harvester.create(key)
    previous = signal.getsignal(signal.SIGINT)
    try:
        return harvester.create(key)
    finally:
        signal.signal(signal.SIGINT, previous)


def destroy_acquirer(acquirer: Any, harvester: Any) -> None:
    """`acquirer.destroy()`, and what Harvesters 1.4.3 leaves behind after it.

    Measured on the simulator (`tests/test_genicam_source.py`): without the chunk
    adapter's detach, every create/destroy leaked 0.38 MiB (300 cycles); with it the
    growth levels off (0.035 MiB a cycle averaged over 300, falling). The attributes are
    Harvesters' private ones, hence each step is skipped where a version lacks it.
    """
    try:
        acquirer.stop()  # before the detach: no buffer may be attached to the adapter
    except Exception:
        logger.debug("stopping a lost acquirer failed", exc_info=True)
    chunk_adapter = getattr(acquirer, "_chunk_adapter", None)
    if chunk_adapter is not None and hasattr(chunk_adapter, "detach_node_map"):
        chunk_adapter.detach_node_map()  # GenApi frees the adapter's node copies only then
    acquirer.destroy()
    finalizer = getattr(acquirer, "_finalizer", None)
    if finalizer is not None:
        finalizer.detach()  # it holds `acquirer.destroy`, a bound method: a strong reference
    if harvester is not None:
        with contextlib.suppress(ValueError):
            harvester.image_acquirers.remove(acquirer)
