"""The host end of the serial link: pyserial opened by URL, bounded buffers,
schema checks, sequence-gap counting and reconnection with back-off.

`SerialLink` is synchronous and single-threaded: call `poll()` from the
loop that consumes samples.  With ``reconnect=True`` (the default) it never
raises for what the line does (noise, a vanished port): it counts,
reconnects and carries on.  With ``reconnect=False`` a port that cannot be
opened, or goes away, raises `LinkError`.
"""
from __future__ import annotations

import errno
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
    """The serial port could not be opened or used (wraps SerialException)."""


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
        Reopen a port that disappears, backing off from ``backoff[0]`` to
        ``backoff[1]`` seconds between attempts (doubling).
    on_state : callable(str), optional
        Called with "connected" / "disconnected" when the link changes state.

    ``stats`` counts: frames, crc_errors, cobs_errors, overflows (from the
    decoder), seq_gaps, protocol_errors (CRC-valid but malformed),
    rejected_samples (channel count not the HELLO's), samples, sent,
    write_errors, reconnects, disconnects.
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
                                          rejected_samples=0, sent=0, write_errors=0,
                                          reconnects=0, disconnects=0)
        self.last_error: Optional[str] = None
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
            self.last_error = str(exc)
            if first and not self.reconnect:
                raise LinkError(f"cannot open {self.url!r}: {exc}") from exc
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
                self.stats["protocol_errors"] += 1
                self.last_error = str(exc)
                continue
            if isinstance(msg, messages.Hello):
                if msg.version != messages.VERSION:
                    self.stats["protocol_errors"] += 1
                    self.refused = (f"device speaks protocol version {msg.version}; "
                                    f"this host speaks {messages.VERSION}")
                    self.last_error = self.refused
                    self.hello = None
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
        device's HELLO arrives; returns it, or None after `timeout`."""
        deadline = time.monotonic() + timeout
        next_ask = 0.0
        while time.monotonic() < deadline:
            if self.hello is not None:
                return self.hello
            if time.monotonic() >= next_ask:
                self.request_hello()
                next_ask = time.monotonic() + ask_every
            self.poll()
        return self.hello
