"""Frames of the serial protocol (firmware_bridge/PROTOCOL.md §1).

    wire frame = COBS(payload || crc16_be(payload)) || 0x00

`FrameDecoder` turns any byte stream -- split anywhere, with garbage, flipped
bits, truncated or oversized frames in it -- into the payloads of the intact
frames, in bounded memory, and never raises.
"""
from __future__ import annotations

import binascii
from typing import Dict, List

MAX_PAYLOAD = 64                           # bytes, PROTOCOL §1
DELIMITER = b"\x00"


def crc16_ccitt(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no xorout).

    >>> hex(crc16_ccitt(b"123456789"))
    '0x29b1'
    """
    # binascii.crc_hqx is exactly this CRC with the initial value as argument,
    # computed in C.
    return binascii.crc_hqx(data, crc)


def cobs_encode(data: bytes) -> bytes:
    """Consistent Overhead Byte Stuffing (Cheshire & Baker 1999): the result
    holds no 0x00 and is at most len(data) + len(data) // 254 + 1 bytes."""
    out = bytearray()
    for segment in bytes(data).split(b"\x00"):
        # each zero-free segment is written in blocks of at most 254 bytes; a
        # block of exactly 254 carries no implied zero after it
        while len(segment) >= 254:
            out.append(0xFF)
            out += segment[:254]
            segment = segment[254:]
        out.append(len(segment) + 1)
        out += segment
    return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    """Inverse of `cobs_encode`; raises ValueError on a malformed block."""
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        code = data[i]
        if code == 0:
            raise ValueError("COBS: zero byte inside an encoded block")
        end = i + code
        if end > n:
            raise ValueError("COBS: block runs past the end of the frame")
        block = data[i + 1:end]
        if 0 in block:
            raise ValueError("COBS: zero byte inside an encoded block")
        out += block
        i = end
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out)


def encode_frame(payload: bytes) -> bytes:
    """One wire frame for `payload` (1 to MAX_PAYLOAD bytes)."""
    payload = bytes(payload)
    if not 1 <= len(payload) <= MAX_PAYLOAD:
        raise ValueError(f"payload is {len(payload)} bytes; a frame carries at least 1 "
                         f"and at most {MAX_PAYLOAD}")
    return cobs_encode(payload + crc16_ccitt(payload).to_bytes(2, "big")) + DELIMITER


def max_encoded_size(max_payload: int = MAX_PAYLOAD) -> int:
    """Longest COBS block of payload + CRC, without the delimiter."""
    n = max_payload + 2
    return n + n // 254 + 1


class FrameDecoder:
    """Incremental frame decoder with a fixed-size buffer.

    ``feed(data)`` accepts any bytes and returns the CRC-checked payloads of
    the frames completed by them, oldest first.  Damaged input is dropped and
    counted in ``stats``:

    - ``frames``: payloads delivered
    - ``crc_errors``: frames whose CRC did not match
    - ``cobs_errors``: frames that were not valid COBS, or too short to hold a CRC
    - ``overflows``: runs of more than ``max_encoded_size(max_payload)`` bytes
      without a delimiter (dropped up to the next delimiter)
    - ``bytes``: bytes fed
    - ``resyncs``: a cut first frame after ``reset(mid_stream=True)``

    Memory: one bytearray of the largest legal encoded frame, allocated here.
    """

    __slots__ = ("max_payload", "_limit", "_buf", "_len", "_skipping", "_syncing", "stats")

    def __init__(self, max_payload: int = MAX_PAYLOAD):
        if not 1 <= int(max_payload) <= 4096:
            raise ValueError(f"max_payload must be in 1..4096, got {max_payload!r}")
        self.max_payload = int(max_payload)
        self._limit = max_encoded_size(self.max_payload)
        self._buf = bytearray(self._limit)
        self._len = 0
        self._skipping = False          # after an overflow: drop up to the next 0x00
        self._syncing = False           # joined mid-stream: the first frame may be cut
        self.stats: Dict[str, int] = dict(frames=0, crc_errors=0, cobs_errors=0,
                                          overflows=0, bytes=0, resyncs=0)

    def reset(self, mid_stream: bool = False) -> None:
        """Forget a partial frame; stats are kept.  With ``mid_stream`` (a
        port just opened on a running sender), bytes up to the first delimiter
        are the tail of a frame sent before we listened: if they do not form
        a valid frame they are counted in ``resyncs``, not as errors."""
        self._len = 0
        self._skipping = False
        self._syncing = bool(mid_stream)

    def _drop(self, bucket: str) -> None:
        self.stats["resyncs" if self._syncing else bucket] += 1

    def feed(self, data) -> List[bytes]:
        raw = data if isinstance(data, (bytes, bytearray)) else bytes(data)
        n = len(raw)
        self.stats["bytes"] += n
        out: List[bytes] = []
        start = 0
        while start < n:
            end = raw.find(0, start)
            chunk_end = n if end < 0 else end
            self._append(raw, start, chunk_end)
            if end < 0:
                break
            self._complete(out)
            start = end + 1
        return out

    # -- internals -------------------------------------------------------

    def _append(self, raw, start: int, end: int) -> None:
        if self._skipping:
            return
        size = end - start
        if self._len + size > self._limit:
            self.stats["overflows"] += 1
            self._len = 0
            self._skipping = True
            return
        self._buf[self._len:self._len + size] = raw[start:end]
        self._len += size

    def _complete(self, out: List[bytes]) -> None:
        if self._skipping:
            self._skipping = self._syncing = False
            return
        size, self._len = self._len, 0
        if size == 0:
            self._syncing = False
            return                      # two delimiters in a row: not a frame
        payload = self._check(bytes(self._buf[:size]))
        self._syncing = False
        if payload is not None:
            self.stats["frames"] += 1
            out.append(payload)

    def _check(self, block: bytes):
        """The payload of one encoded block, or None (counted)."""
        try:
            decoded = cobs_decode(block)
        except ValueError:
            return self._drop("cobs_errors")
        if len(decoded) < 3:            # no room for a CRC and at least one byte
            return self._drop("cobs_errors")
        payload, crc = decoded[:-2], decoded[-2:]
        if crc16_ccitt(payload) != int.from_bytes(crc, "big"):
            return self._drop("crc_errors")
        if len(payload) > self.max_payload:
            return self._drop("overflows")
        return payload
