"""Modbus TCP handshake with a PLC (pymodbus client; we are the client, the PLC serves).

Register map (zero-based protocol addresses, all configurable; defaults shown). With
``bits: coils`` the five signals are coils; with ``bits: holding`` each is a holding
register holding 0 or 1, in the same table as the words below.

    =============  =======  =========  ==============================================
    signal         default  written by meaning
    =============  =======  =========  ==============================================
    ok             coil 0   edge-ad    1: the part passed
    nok            coil 1   edge-ad    1: reject the part (NOK, and ERROR: fail-safe)
    fault          coil 2   edge-ad    1: the verdict is ERROR, or inspection cannot
                                       vouch for the parts (see "The fault bit")
    result_valid   coil 3   edge-ad    strobe: 1 while ok/nok/fault and part_id are
                                       valid for the part in part_id
    ack            (none)   PLC        optional: 1 when the PLC has taken the result
    part_id        HR 0-1   edge-ad    echoed id, unsigned 32 bit, high word first
                                       (`part_id_words: 1`: low 16 bits in HR 0)
    heartbeat      HR 2     edge-ad    +1 (mod 65536) every `heartbeat_interval_s`
    lost_count     (none)   edge-ad    optional: results not signalled (expired or
                                       dropped) since the start, mod 65536
    =============  =======  =========  ==============================================

The sequence for one result::

    1. (ack configured) wait until ack = 0: the PLC has released the previous result
    2. write part_id, then ok / nok / fault (adjacent addresses in one request)
    3. wait until result_valid has been low for `pulse_low_s`
    4. write result_valid = 1                        <- the PLC may read now
    5. pulse mode: hold `pulse_s`;  ack mode: wait until ack = 1 (`ack_timeout_s`)
    6. write result_valid = 0

The PLC should latch on the rising edge of result_valid and check part_id. A scanning
PLC sees every edge when both `pulse_s` (high) and `pulse_low_s` (low) last at least
two of its scans; the defaults, 30 ms and 20 ms, suit scans up to 10 ms. That caps the
pulse handshake at 1 / (pulse_s + pulse_low_s + two round trips), about 18 results/s
by default on a LAN (`max_results_per_s`, logged at start, leaves the round trips out).
Keep the part rate well below it: a backlog ages every verdict behind it. With an ack
the PLC sets the pace. An ack that does not come is a failed delivery: the runner
presents the same result again (same part_id), so the PLC sees it at least once.

A result that cannot be signalled in time is not signalled late: the runner's
`max_age_s` (2 s from acquisition by default) expires it, and the sink raises the fault
bit instead (below). When parts come faster than the handshake can signal them, the
backlog ages and the fault bit rises: it is never a silent drop.

The fault bit, outside and inside a strobe, means "inspection cannot vouch for the
parts now": the service is unhealthy (stalled, camera lost), a result was lost (expired,
dropped: held `fault_hold_s` from the moment the PLC could be told, so a loss during a
PLC outage is signalled when it returns), or the sink was closed (the service stopped).
It falls again at the next heartbeat tick once none of these holds. With `lost_count`
mapped the PLC can also count them: every part gets a strobe or a count. Inside a strobe it
is also 1 for an ERROR verdict (with nok = 1: reject).

The echoed id is the frame id, or with ``echo: part_id`` the part id when it is an
integer (a trigger counter from the PLC, say), else the frame id again.

The heartbeat is written from the sink's own delivery thread (`SinkRunner` calls
`tick()`), so it stops when deliveries are stuck, when the PLC connection is gone, and
when the service reports itself unhealthy: the PLC's watchdog on the heartbeat word is
the line's proof that inspection is alive. After a reconnect the sink first writes
result_valid = 0, so the PLC never sees a strobe left over from a broken connection.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from edge_sdk.errors import require
from edge_sdk.records import Inspection, Verdict
from edge_sdk.sinks.config import ModbusSinkConfig
from edge_sdk.sinks.errors import SinkError

__all__ = ["ModbusSink", "echo_id"]

logger = logging.getLogger(__name__)


def echo_id(inspection: Inspection, *, echo: str = "frame_id", words: int = 2) -> int:
    """The id written to the PLC, reduced to `words` 16-bit words.

    >>> import numpy as np
    >>> from edge_sdk.records import Frame, Result
    >>> frame = Frame(np.zeros((1, 1), np.uint8), frame_id=70_000, timestamp_ns=0)
    >>> ins = Inspection(frame, Result(70_000, Verdict.OK, 0.0, 1.0, part_id="12"), 0.1)
    >>> echo_id(ins), echo_id(ins, words=1), echo_id(ins, echo="part_id")
    (70000, 4464, 12)
    """
    value = inspection.result.frame_id
    if echo == "part_id":
        part = inspection.result.part_id or inspection.frame.part_id
        # A serial-number string cannot travel as a word; the frame id can.
        with contextlib.suppress(ValueError):
            value = int(part) if part is not None else value
    return value % (1 << (16 * words))


class ModbusSink:
    """Signals each result to a PLC with the handshake in the module docstring.

    The constructor connects nothing: the first delivery or heartbeat does, and a lost
    connection is reopened with backoff (`reconnect_initial_s` doubling up to
    `reconnect_max_s`). Every request waits at most `timeout_s`.
    """

    needs_pixels = False  # the record and the verdict only

    def __init__(self, config: ModbusSinkConfig, *, name: str | None = None) -> None:
        require("pymodbus", extra="signals", feature="the Modbus sink")
        from pymodbus.client import ModbusTcpClient

        self.name = name or config.name or "modbus"
        self.config = config
        self.tick_interval_s = config.heartbeat_interval_s
        self._client = ModbusTcpClient(
            config.host,
            port=config.port,
            timeout=config.timeout_s,
            retries=0,  # the runner retries, with backoff and a deadline
            reconnect_delay=0,  # and so do we (see _ensure_connected)
        )
        self._lock = threading.Lock()  # close() may come from another thread
        self._connected = False
        self._next_connect_at = 0.0
        self._connect_delay_s = config.reconnect_initial_s
        self._heartbeat = 0
        self._service_healthy = True
        self._fault_until = 0.0  # monotonic: results were lost; the fault bit holds till then
        self._loss_to_signal = False  # a loss the PLC has not been told of yet
        self.lost_results = 0  # results the runner could not deliver, told by results_lost
        self._lost_count_written: int | None = None
        self._unlogged_losses, self._next_loss_log = 0, 0.0
        self._fault_written: bool | None = None
        self._low_since = 0.0  # monotonic: when result_valid was last written 0
        # Unknown after (re)connecting or a failed cycle: reset before the next result, so
        # the PLC never sees new bits under a strobe that is already high.
        self._strobe_maybe_high = True
        # Called right after result_valid is set, with time.monotonic_ns(): the moment the
        # line has its answer (for "frame acquired to PLC bit written" latency).
        self.on_strobe: Callable[[Inspection, int], None] | None = None
        if config.map.ack is None:
            logger.info(
                "modbus %s: pulse handshake, result_valid high %.0f ms and low >= %.0f ms: "
                "at most %.1f results/s; faster parts raise the fault bit",
                self.name,
                1e3 * config.pulse_s,
                1e3 * config.pulse_low_s,
                self.max_results_per_s,
            )

    @property
    def max_results_per_s(self) -> float | None:
        """The pulse handshake's ceiling (round trips not counted); None with an ack,
        where the PLC sets the pace."""
        if self.config.map.ack is not None:
            return None
        return 1.0 / (self.config.pulse_s + self.config.pulse_low_s)

    # -- the sink protocol ---------------------------------------------------------------
    def __call__(self, inspection: Inspection) -> None:
        m, cfg = self.config.map, self.config
        verdict = inspection.result.verdict
        fault = verdict is Verdict.ERROR or self._fault_now()
        with self._lock:
            self._ensure_connected()
            try:
                self._reset_strobe_if_needed()  # first: a PLC may hold ack until it drops
                if m.ack is not None and not self._wait_bit(m.ack, False, cfg.ack_timeout_s):
                    raise SinkError(
                        f"PLC {self._where()} still holds ack ({m.ack}) from the previous "
                        f"result after {cfg.ack_timeout_s} s"
                    )
                self._write_words(m.part_id, self._id_words(inspection))
                self._write_bits(
                    {m.ok: verdict is Verdict.OK, m.nok: verdict.is_reject, m.fault: fault}
                )
                self._fault_signalled(fault)
                low_left = self._low_since + cfg.pulse_low_s - time.monotonic()
                if low_left > 0:  # the PLC must see result_valid low before the next edge
                    time.sleep(low_left)
                self._strobe_maybe_high = True
                self._write_bits({m.result_valid: True})
                if self.on_strobe is not None:
                    self.on_strobe(inspection, time.monotonic_ns())
                if m.ack is None:
                    time.sleep(cfg.pulse_s)
                    acked = True
                else:
                    acked = self._wait_bit(m.ack, True, cfg.ack_timeout_s)
                self._write_bits({m.result_valid: False})
                self._strobe_maybe_high = False
                self._low_since = time.monotonic()
            except SinkError:
                raise
            except Exception as exc:
                self._disconnect()
                raise SinkError(f"PLC {self._where()}: {type(exc).__name__}: {exc}") from exc
        if not acked:
            raise SinkError(
                f"PLC {self._where()} did not acknowledge frame {inspection.result.frame_id} "
                f"within {cfg.ack_timeout_s} s"
            )

    def tick(self) -> None:
        """Increment the heartbeat (only while the service is healthy) and keep the fault
        bit in step with the service's health and lost results."""
        m = self.config.map
        fault = self._fault_now()
        with self._lock:
            count_known = m.lost_count is None or self._lost_count_written == self.lost_results
            if m.heartbeat is None and self._fault_written == fault and count_known:
                return
            self._ensure_connected()
            try:
                self._reset_strobe_if_needed()
                if self._service_healthy and m.heartbeat is not None:
                    self._heartbeat = (self._heartbeat + 1) & 0xFFFF
                    self._write_words(m.heartbeat, [self._heartbeat])
                if fault != self._fault_written:  # also after a connect: clear a stale 1
                    self._write_bits({m.fault: fault})
                    self._fault_signalled(fault)
                self._write_lost_count()
            except Exception as exc:
                self._disconnect()
                raise SinkError(f"PLC {self._where()}: heartbeat: {exc}") from exc

    def results_lost(self, count: int, why: str) -> None:
        """The runner could not signal `count` results (expired, dropped): raise the fault
        bit now and hold it `fault_hold_s`, so the PLC knows parts went unjudged."""
        self.lost_results += count
        self._loss_to_signal = True
        self._unlogged_losses += count
        if time.monotonic() >= self._next_loss_log:  # an outage loses many: one line a second
            logger.error(
                "modbus %s: %d result(s) not signalled (last: %s); %d since start; fault bit "
                "raised",
                self.name,
                self._unlogged_losses,
                why,
                self.lost_results,
            )
            self._unlogged_losses = 0
            self._next_loss_log = time.monotonic() + 1.0
        with self._lock:
            self._ensure_connected()
            try:
                self._reset_strobe_if_needed()
                self._write_bits({self.config.map.fault: True})
                self._fault_signalled(True)
                self._write_lost_count()
            except Exception as exc:
                self._disconnect()
                raise SinkError(f"PLC {self._where()}: raising the fault bit: {exc}") from exc

    def set_service_health(self, healthy: bool, detail: dict[str, Any] | None = None) -> None:
        """Tell the PLC whether inspection is healthy: unhealthy stops the heartbeat and
        raises the fault bit (at the next tick)."""
        self._service_healthy = bool(healthy)

    def close(self) -> None:
        """Drop the strobe if it may be high and raise the fault bit: no inspection runs
        any more (best effort, two requests); then disconnect."""
        with self._lock:
            if self._connected:
                try:
                    self._reset_strobe_if_needed()
                    self._write_bits({self.config.map.fault: True})
                except Exception as exc:
                    logger.debug("modbus %s: signalling the stop: %s", self.name, exc)
            self._disconnect()

    def _fault_now(self) -> bool:
        return (
            not self._service_healthy
            or self._loss_to_signal
            or time.monotonic() < self._fault_until
        )

    def _fault_signalled(self, fault: bool) -> None:
        """The PLC holds `fault` now; a loss it has just learnt of holds for fault_hold_s."""
        self._fault_written = fault
        if fault and self._loss_to_signal:
            self._loss_to_signal = False
            self._fault_until = time.monotonic() + self.config.fault_hold_s

    def _write_lost_count(self) -> None:
        address = self.config.map.lost_count
        if address is not None and self._lost_count_written != self.lost_results:
            self._write_words(address, [self.lost_results & 0xFFFF])
            self._lost_count_written = self.lost_results

    # -- Modbus requests -----------------------------------------------------------------
    def _ensure_connected(self) -> None:
        if self._connected and self._client.connected:
            return
        now = time.monotonic()
        if now < self._next_connect_at:
            raise SinkError(
                f"PLC {self._where()} unreachable; next connection attempt in "
                f"{self._next_connect_at - now:.2f} s"
            )
        if not self._client.connect():
            self._next_connect_at = now + self._connect_delay_s
            self._connect_delay_s = min(2 * self._connect_delay_s, self.config.reconnect_max_s)
            raise SinkError(f"cannot connect to PLC {self._where()}")
        self._connected = True
        self._strobe_maybe_high = True
        self._connect_delay_s = self.config.reconnect_initial_s
        logger.info("modbus %s: connected to PLC %s", self.name, self._where())

    def _reset_strobe_if_needed(self) -> None:
        if self._strobe_maybe_high:
            self._write_bits({self.config.map.result_valid: False})
            self._strobe_maybe_high = False
            self._low_since = time.monotonic()

    def _disconnect(self) -> None:
        self._connected = False
        self._fault_written = None
        self._lost_count_written = None
        try:
            self._client.close()
        except Exception as exc:  # closing a dead socket may complain; nothing to do
            logger.debug("modbus %s: close: %s", self.name, exc)

    def _write_bits(self, bits: dict[int, bool]) -> None:
        holding = self.config.bits == "holding"
        for start, values in _runs(bits):
            if holding:
                self._check(
                    self._client.write_registers(
                        start, [int(v) for v in values], device_id=self.config.unit_id
                    )
                )
            else:
                self._check(self._client.write_coils(start, values, device_id=self.config.unit_id))

    def _write_words(self, address: int, words: Sequence[int]) -> None:
        self._check(
            self._client.write_registers(address, list(words), device_id=self.config.unit_id)
        )

    def _read_bit(self, address: int) -> bool:
        unit = self.config.unit_id
        if self.config.bits == "holding":
            response = self._check(
                self._client.read_holding_registers(address, count=1, device_id=unit)
            )
            return bool(response.registers[0])
        return bool(self._check(self._client.read_coils(address, count=1, device_id=unit)).bits[0])

    def _wait_bit(self, address: int, value: bool, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while self._read_bit(address) != value:
            if time.monotonic() >= deadline:
                return False
            time.sleep(self.config.ack_poll_s)
        return True

    def _check(self, response: Any) -> Any:
        if response.isError():
            raise SinkError(f"PLC {self._where()} refused a request: {response}")
        return response

    def _id_words(self, inspection: Inspection) -> list[int]:
        words = self.config.map.part_id_words
        value = echo_id(inspection, echo=self.config.echo, words=words)
        return [value >> 16, value & 0xFFFF] if words == 2 else [value]

    def _where(self) -> str:
        return f"{self.config.host}:{self.config.port} (unit {self.config.unit_id})"


def _runs(bits: dict[int, bool]) -> list[tuple[int, list[bool]]]:
    """Adjacent addresses grouped into one request each.

    >>> _runs({3: True, 1: False, 2: True, 7: False})
    [(1, [False, True, True]), (7, [False])]
    """
    runs: list[tuple[int, list[bool]]] = []
    for address in sorted(bits):
        if runs and runs[-1][0] + len(runs[-1][1]) == address:
            runs[-1][1].append(bits[address])
        else:
            runs.append((address, [bits[address]]))
    return runs
