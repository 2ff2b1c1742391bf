"""The host end of the serial link: pyserial opened by URL, bounded buffers,
schema checks, sequence-gap counting and reconnection with back-off.

`SerialLink` is synchronous and single-threaded: call `poll()` from the
loop that consumes samples.  A port that cannot be opened when the link is
made raises `LinkError` (an OSError with the system's reason) at once.
After that, with ``reconnect=True`` (the default) it never raises for what
the line or the device does (noise, a vanished port, a HELLO it must
refuse): it counts, says why in ``last_error``, reconnects and carries on.
With ``reconnect=False`` a port that goes away raises `LinkError`.
"""
from __future__ import annotations

import errno
import os
import queue
import time
from typing import Callable, Dict, List, Optional, Sequence

from . import messages
from .framing import FrameDecoder, encode_frame

try:
    import serial
except ImportError:  # pragma: no cover - pyserial is a dependency
    serial = None


class LinkError(OSError):
    """The serial port could not be opened or used (wraps SerialException);
    ``errno`` is the system's error number when there is one."""


#: Frames of protocol version 1 in a row (and none of this version) after
#: which the device is taken to run old firmware.
OLD_VERSION_FRAMES = 3
HELLO_VERSION_AT = messages.HEADER.size   # the version byte of a HELLO payload


class SerialLink:
    """A framed, checksummed link to one device.

    Parameters
    ----------
    url : str
        Anything pyserial's ``serial_for_url`` opens: ``/dev/ttyACM0``, a pty
        path, ``loop://``, ``socket://host:port``.
    baudrate : int
        Ignored by ptys, sockets and ``loop://``.
    timeout, write_timeout : float
        Seconds; a read returns after ``timeout`` with what has arrived.
    read_chunk : int
        Bytes read per call at most: with the decoder's fixed buffer this
        bounds the link's memory, however much garbage arrives.
    reconnect : bool
        Reopen a port that disappears after it was opened, backing off from
        ``backoff[0]`` to ``backoff[1]`` seconds between attempts (doubling).
        A port that cannot be opened at first raises `LinkError` either way.
    on_state : callable(str), optional
        Called with "connected" / "disconnected" when the link changes state.

    ``stats`` counts: seq_gaps, protocol_errors (CRC-valid but malformed,
    or a HELLO of another version), bad_hello (a HELLO of this version with
    an impossible value, PROTOCOL.md §3), rejected_samples (channel count not
    the HELLO's, or the stream is refused), samples, sent, write_errors,
    reconnects, disconnects; ``decoder_stats`` the decoder's frames,
    crc_errors, cobs_errors, overflows, old_frames (protocol version 1),
    bytes, resyncs; ``all_stats()`` both.

    ``hello`` is the device's accepted schema.  ``refused`` says why its
    stream is refused (a HELLO of another version or with an impossible
    value, or frames of protocol version 1), None otherwise; samples are
    rejected while it is set, until an acceptable HELLO arrives.
    ``last_error`` is the latest problem in words (a rejected field and its
    value, an OS error).
    """

    def __init__(self, url: str, *, baudrate: int = 115200, timeout: float = 0.02,
                 write_timeout: float = 0.5, read_chunk: int = 4096,
                 reconnect: bool = True, backoff=(0.05, 2.0),
                 on_state: Optional[Callable[[str], None]] = None,
                 clock: Callable[[], float] = time.monotonic):
        if serial is None:  # pragma: no cover
            raise LinkError("pyserial is not installed: pip install pyserial")
        self.url = url
        self.baudrate = baudrate
        self.timeout = timeout
        self.write_timeout = write_timeout
        self.reconnect = reconnect
        self.backoff = (float(backoff[0]), float(backoff[1]))
        self.on_state = on_state
        self._clock = clock
        self._decoder = FrameDecoder()
        self._buf = bytearray(read_chunk)
        self._view = memoryview(self._buf)
        self._port = None
        self._next_attempt = 0.0
        self._delay = self.backoff[0]
        self._rx_seq: Optional[int] = None
        self._tx_seq = 0
        self._closed = False
        self.hello: Optional[messages.Hello] = None
        self.refused: Optional[str] = None   # why the device's stream is refused
        self.stats: Dict[str, int] = dict(samples=0, seq_gaps=0, protocol_errors=0,
                                          bad_hello=0, rejected_samples=0, sent=0,
                                          write_errors=0, reconnects=0, disconnects=0)
        self.last_error: Optional[str] = None
        self._refusals = 0                   # refusals so far (wait_for_hello)
        self._old_device = False             # refused for frames of version 1
        self._open(first=True)

    # -- connection ------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._port is not None

    def _open(self, first: bool = False) -> bool:
        try:
            port = serial.serial_for_url(self.url, baudrate=self.baudrate,
                                         timeout=self.timeout,
                                         write_timeout=self.write_timeout,
                                         do_not_open=True)
            # a pty rejects the DTR/RTS ioctls (EINVAL/ENOTTY); pyserial 3.5
            # ignores that on open, and no modem line is ours to drive anyway
            port.dsrdtr = False
            port.rtscts = False
            port.open()
        except (serial.SerialException, OSError, ValueError) as exc:
            code = getattr(exc, "errno", None)
            reason = os.strerror(code) if isinstance(code, int) and code > 0 else str(exc)
            self.last_error = f"cannot open {self.url!r}: {reason}"
            if first:
                # a port that was never there is a mistake to report, not a
                # disconnection to wait out
                err = LinkError(self.last_error)
                err.errno = code if isinstance(code, int) else None
                raise err from exc
            self._schedule_retry()
            return False
        self._port = port
        self._decoder.reset(mid_stream=True)
        self._rx_seq = None
        self._delay = self.backoff[0]
        if not first:
            self.stats["reconnects"] += 1
        self._notify("connected")
        return True

    def _schedule_retry(self) -> None:
        self._next_attempt = self._clock() + self._delay
        self._delay = min(self._delay * 2, self.backoff[1])

    def _lost(self, exc: BaseException) -> None:
        self.last_error = str(exc)
        try:
            self._port.close()
        except Exception:
            pass
        self._port = None
        self.stats["disconnects"] += 1
        self._notify("disconnected")
        if not self.reconnect:
            raise LinkError(f"lost {self.url!r}: {exc}") from exc
        self._schedule_retry()

    def _notify(self, state: str) -> None:
        if self.on_state is not None:
            self.on_state(state)

    def _ensure_open(self) -> bool:
        if self._port is not None:
            return True
        if self._closed or self._clock() < self._next_attempt:
            return False
        return self._open()

    def close(self) -> None:
        """Close the port for good: later calls neither read nor reopen."""
        self._closed = True
        if self._port is not None:
            try:
                self._port.close()
            finally:
                self._port = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- receiving -------------------------------------------------------

    def poll(self, timeout: Optional[float] = None) -> List[messages.Message]:
        """Read what has arrived (waiting up to the port's timeout for the
        first byte) and return the decoded messages, oldest first.  Returns
        [] while disconnected (after sleeping up to `timeout`, default the
        port's timeout, so that a caller's loop does not spin)."""
        if not self._ensure_open():
            time.sleep(self.timeout if timeout is None else timeout)
            return []
        port = self._port
        try:
            waiting = port.in_waiting
            want = min(max(waiting, 1), len(self._buf))
            n = port.readinto(self._view[:want])
        except (serial.SerialException, OSError) as exc:
            self._lost(exc)
            return []
        if not n:
            return []
        return self._decode(self._decoder.feed(self._view[:n].tobytes()))

    def _decode(self, payloads: Sequence[bytes]) -> List[messages.Message]:
        old = self._decoder.old_streak >= OLD_VERSION_FRAMES
        if old and not self._old_device:
            self._refuse(f"device sends frames of protocol version 1 (no length byte); this "
                         f"host speaks version {messages.VERSION}: update its firmware")
        self._old_device = old
        out = []
        for payload in payloads:
            is_hello = len(payload) >= 3 and payload[0] == messages.HELLO
            if len(payload) >= 3:
                # the header's seq counts even if the body turns out malformed;
                # a HELLO (a device reset) starts a new sequence
                seq = payload[1] | payload[2] << 8
                if (self._rx_seq is not None and not is_hello
                        and seq != (self._rx_seq + 1) & 0xFFFF):
                    self.stats["seq_gaps"] += 1
                self._rx_seq = seq
            try:
                msg = messages.decode(payload)
            except messages.ProtocolError as exc:
                version = payload[HELLO_VERSION_AT] if len(payload) > HELLO_VERSION_AT else None
                if is_hello and version not in (None, messages.VERSION):
                    self._refuse_version(version)
                elif is_hello:
                    self.stats["bad_hello"] += 1
                    self._refuse(str(exc) if isinstance(exc, messages.HelloError)
                                 else f"malformed HELLO: {exc}")
                else:
                    self.stats["protocol_errors"] += 1
                    self.last_error = str(exc)
                continue
            if isinstance(msg, messages.Hello):
                if msg.version != messages.VERSION:
                    self._refuse_version(msg.version)
                    continue
                self.hello, self.refused = msg, None
            elif isinstance(msg, messages.Sample):
                if self.refused or (self.hello is not None
                                    and len(msg.raw) != self.hello.n_channels):
                    self.stats["rejected_samples"] += 1
                    continue
                self.stats["samples"] += 1
            out.append(msg)
        return out

    def _refuse_version(self, version: int) -> None:
        self.stats["protocol_errors"] += 1
        self._refuse(f"device speaks protocol version {version}; this host speaks "
                     f"{messages.VERSION}")

    def _refuse(self, why: str) -> None:
        """Refuse the device's stream until an acceptable HELLO arrives."""
        self.refused = self.last_error = why
        self.hello = None
        self._refusals += 1

    @property
    def decoder_stats(self) -> Dict[str, int]:
        return dict(self._decoder.stats)

    def all_stats(self) -> Dict[str, int]:
        """Decoder and link counters together."""
        return {**self._decoder.stats, **self.stats}

    # -- sending ---------------------------------------------------------

    def send(self, msg: messages.Message) -> bool:
        """Frame and write one message with this host's sequence number and
        clock; False (counted) if the port is down or the write failed."""
        payload = messages.encode(msg, seq=self._tx_seq,
                                  t_us=int(self._clock() * 1e6) & 0xFFFFFFFF)
        if not self._ensure_open():
            self.stats["write_errors"] += 1
            return False
        try:
            self._port.write(encode_frame(payload))
        except (serial.SerialTimeoutException, queue.Full):   # loop:// raises queue.Full
            self.stats["write_errors"] += 1
            return False
        except (serial.SerialException, OSError) as exc:
            if isinstance(exc, OSError) and exc.errno == errno.EAGAIN:
                self.stats["write_errors"] += 1
                return False
            self.stats["write_errors"] += 1
            self._lost(exc)
            return False
        self._tx_seq = (self._tx_seq + 1) & 0xFFFF
        self.stats["sent"] += 1
        return True

    def command(self, *values: int) -> bool:
        """Send actuator values (int16 each)."""
        return self.send(messages.Command(tuple(int(v) for v in values)))

    def request_hello(self) -> bool:
        return self.send(messages.HelloRequest())

    def configure(self, period_us: int = 0, mode: int = 0xFF) -> bool:
        return self.send(messages.Configure(int(period_us), int(mode)))

    def heartbeat(self) -> bool:
        return self.send(messages.Heartbeat())

    def wait_for_hello(self, timeout: float = 5.0, ask_every: float = 0.5):
        """Poll (asking with HELLO_REQUEST every `ask_every` s) until the
        device's HELLO arrives; returns it.  Returns None after `timeout`,
        or as soon as the device is refused (a HELLO of another version or
        with an impossible value, frames of protocol version 1): then
        ``refused`` and ``last_error`` say why.  Never raises for what the
        device sends."""
        deadline = time.monotonic() + timeout
        next_ask = 0.0
        refusals = self._refusals
        while time.monotonic() < deadline:
            if self.hello is not None:
                return self.hello
            if self._refusals != refusals:
                return None
            if time.monotonic() >= next_ask:
                self.request_hello()
                next_ask = time.monotonic() + ask_every
            self.poll()
        return self.hello
