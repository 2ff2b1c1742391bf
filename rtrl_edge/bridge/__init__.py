"""Host side of the firmware bridge (firmware_bridge/PROTOCOL.md).

    framing   CRC-16/CCITT-FALSE, COBS, `encode_frame`, `FrameDecoder` (protocol version 2)
    messages  the protocol's messages: `decode`, `encode`, `Hello`, `Sample`, ...
    link      `SerialLink`: pyserial by URL, bounded buffers, reconnect
"""
from . import messages
from .framing import (MAX_PAYLOAD, FrameDecoder, cobs_decode, cobs_encode, crc16_ccitt,
                      encode_frame, frame_check)
from .link import LinkError, SerialLink
from .messages import HelloError, ProtocolError

__all__ = ["MAX_PAYLOAD", "FrameDecoder", "cobs_decode", "cobs_encode", "crc16_ccitt",
           "encode_frame", "frame_check", "messages", "ProtocolError", "HelloError",
           "SerialLink", "LinkError"]
