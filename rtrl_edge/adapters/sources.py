"""Where the loop's samples come from: a recording, a synthetic signal, the
board on a serial line (`SerialSource`), or an MQTT topic (`mqtt.MqttSource`).

Every source has the same small interface, so that `OnlineLoop` never knows
which one it reads:

``channels``
    values per sample (int);
``rate_hz``
    samples per second, or None for a stream without a fixed rate;
``read() -> list of 1-D float64 arrays``
    everything that has arrived since the last call (empty if nothing has);
``exhausted``
    True once no sample will ever come again (a recording's end);
``gap`` (optional)
    True on the read after samples may have been lost (a lost frame, a
    reconnect): the loop then restarts its forecasting window;
``wait(timeout)`` (optional)
    block until a sample may be ready, for sources whose ``read`` returns at
    once;
``max_backlog`` (optional)
    the most samples of one read that the loop learns from (default 10, the
    newest; the older ones are dropped as late): a source whose bursts are
    data rather than lateness (MQTT) sets it to its own queue's size;
``stats() -> dict`` (optional)
    the source's counters, reported in the loop's summary;
``position`` and ``seek(position)`` (optional)
    a replay's place, saved in checkpoints so a resumed run continues after
    the last sample learnt.
"""
from __future__ import annotations

import time
from typing import Dict, List

import numpy as np

__all__ = ["ReplaySource", "SerialSource", "SyntheticSource"]


class ReplaySource:
    """Rows of an array (T, channels), optionally paced at `rate_hz`."""

    def __init__(self, values, rate_hz: float = 10.0, *, realtime: bool = False):
        self.values = np.asarray(values, dtype=np.float64)
        if self.values.ndim != 2:
            raise ValueError(f"replay values must have shape (T, channels), got "
                             f"{self.values.shape}")
        self.rate_hz = float(rate_hz)
        self.realtime = realtime
        self.channels = self.values.shape[1]
        self._i = 0
        self._start = None

    def read(self) -> List[np.ndarray]:
        if self._i >= len(self.values):
            return []
        if self.realtime:
            now = time.monotonic()
            if self._start is None:
                self._start = now - self._i / self.rate_hz
            due = self._start + self._i / self.rate_hz
            if now < due:
                time.sleep(min(due - now, 0.05))
                return []
        row = self.values[self._i]
        self._i += 1
        return [row]

    @property
    def exhausted(self) -> bool:
        return self._i >= len(self.values)

    @property
    def position(self) -> int:
        """Rows read so far (where `seek` continues a resumed run)."""
        return self._i

    def seek(self, position: int) -> None:
        """Continue at row `position` (the row after the last one read)."""
        if not 0 <= position <= len(self.values):
            raise ValueError(f"the checkpoint had read {position} samples of this source; "
                             f"it has {len(self.values)}")
        self._i = int(position)
        self._start = None

    def stats(self) -> Dict[str, int]:
        return {"replayed": self._i}


class SyntheticSource(ReplaySource):
    """A noisy two-tone signal (3 channels: signal, its derivative, a tone),
    for trying the loop without data or hardware."""

    def __init__(self, n: int = 20000, rate_hz: float = 100.0, seed: int = 0, **kw):
        rng = np.random.default_rng(seed)
        t = np.arange(n) / rate_hz
        s = np.sin(2 * np.pi * 0.3 * t) + 0.4 * np.sin(2 * np.pi * 1.1 * t + 1.0)
        ds = np.gradient(s, t)
        values = np.stack([s, ds, np.cos(2 * np.pi * 0.3 * t)], axis=1)
        super().__init__(values + 0.01 * rng.standard_normal(values.shape), rate_hz, **kw)


class SerialSource:
    """Samples from the board through a `bridge.SerialLink`, in the device's
    units (scaled by its HELLO)."""

    def __init__(self, link, *, hello_timeout: float = 10.0):
        self.link = link
        hello = link.wait_for_hello(timeout=hello_timeout)
        if hello is None:
            if getattr(link, "refused", False):
                raise TimeoutError(f"no usable HELLO from the device on {link.url!r}: "
                                   f"{link.last_error}")
            raise TimeoutError(f"no HELLO from the device on {link.url!r} within "
                               f"{hello_timeout:g} s ({link.last_error or 'no data'})")
        self.channels = hello.n_channels
        self.rate_hz = hello.sample_rate_hz
        self.exhausted = False
        self._gaps = self._breaks()
        self.gap = False                # a frame was lost since the last read

    def read(self) -> List[np.ndarray]:
        from ..bridge import messages
        out = []
        for msg in self.link.poll():
            if isinstance(msg, messages.Sample):
                out.append(np.asarray(msg.values(self.link.hello), dtype=np.float64))
        gaps = self._breaks()
        self.gap, self._gaps = gaps != self._gaps, gaps
        return out

    def _breaks(self) -> int:
        """Lost frames and reconnects: either breaks the stream."""
        return self.link.stats["seq_gaps"] + self.link.stats["reconnects"]

    def stats(self) -> Dict[str, int]:
        return self.link.all_stats()
