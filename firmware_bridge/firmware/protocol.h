/*
 * protocol.h - rtrl_edge serial protocol, version 2 (firmware_bridge/PROTOCOL.md).
 *
 *   wire frame = COBS( len || payload || check_hi || check_lo ) || 0x00
 *   len        = payload bytes, 1..64
 *   check      = CRC-16/CCITT-FALSE of len || payload, XORed with 0xFFFF
 *   payload    = type u8 | seq u16 | t_us u32 | body     (little-endian)
 *
 * The length byte lets no frame that ran on into the next one (a lost or
 * damaged delimiter) pass, whatever its CRC; the XOR keeps frames of
 * version 1 (no length byte, no XOR) from passing.
 *
 * This module knows the frame layout and nothing about the board: it builds
 * wire frames from a type and a body, and turns received wire bytes into
 * checked payloads.
 */
#ifndef RTRL_PROTOCOL_H
#define RTRL_PROTOCOL_H

#include <stdint.h>
#include "cobs.h"

#ifdef __cplusplus
extern "C" {
#endif

#define PROTO_VERSION       2

/* Sizes (PROTOCOL.md section 1 and 2). */
#define PROTO_MAX_PAYLOAD   64u
#define PROTO_HEADER        7u
#define PROTO_OVERHEAD      3u      /* length byte + 2 check bytes */
#define PROTO_CHECK_XOR     0xFFFFu
#define PROTO_MAX_BODY      (PROTO_MAX_PAYLOAD - PROTO_HEADER)             /* 57 */
#define PROTO_MAX_DECODED   (PROTO_MAX_PAYLOAD + PROTO_OVERHEAD)           /* 67 */
#define PROTO_MAX_ENCODED   (PROTO_MAX_DECODED + 1u)                       /* 68 */
#define PROTO_MAX_WIRE      (PROTO_MAX_ENCODED + 1u)                       /* 69 */

/* Frame types (section 3). */
enum {
    PROTO_HELLO          = 0x01,    /* device -> host */
    PROTO_SAMPLE         = 0x02,    /* device -> host */
    PROTO_COMMAND        = 0x03,    /* host -> device */
    PROTO_HEARTBEAT      = 0x04,    /* both */
    PROTO_ERROR          = 0x05,    /* device -> host */
    PROTO_HELLO_REQUEST  = 0x06,    /* host -> device */
    PROTO_CONFIGURE      = 0x07     /* host -> device */
};

/* Error codes carried by ERROR frames (section 3). */
enum {
    PROTO_ERR_BAD_CRC       = 1,
    PROTO_ERR_BAD_COBS      = 2,
    PROTO_ERR_OVERFLOW      = 3,
    PROTO_ERR_UNKNOWN_TYPE  = 4,
    PROTO_ERR_BAD_LENGTH    = 5,
    PROTO_ERR_SAMPLE_LATE   = 6,
    PROTO_ERR_COUNT         = 7     /* codes are 1..PROTO_ERR_COUNT-1 */
};

/* Fixed body sizes. */
#define PROTO_HELLO_FIXED       8u  /* version, n_channels, n_actuators, mode, period_us */
#define PROTO_HELLO_PER_CHANNEL 8u  /* scale f32, offset f32 */
#define PROTO_ERROR_BODY        3u  /* code u8, count u16 */
#define PROTO_CONFIGURE_BODY    5u  /* period_us u32, mode u8 */
#define PROTO_CONFIGURE_KEEP_PERIOD 0u
#define PROTO_CONFIGURE_KEEP_MODE   0xFFu

/* Little-endian field access; f32 is IEEE-754 binary32 (avr-gcc's float). */
void     proto_put_u16(uint8_t *dst, uint16_t v);
void     proto_put_u32(uint8_t *dst, uint32_t v);
void     proto_put_f32(uint8_t *dst, float v);
uint16_t proto_get_u16(const uint8_t *src);
uint32_t proto_get_u32(const uint8_t *src);

/*
 * Builds a complete wire frame (delimiter included) into wire_out, which
 * must hold PROTO_MAX_WIRE bytes.  body_len must be <= PROTO_MAX_BODY.
 * Returns the number of bytes to send, or 0 if the body is too long.
 */
uint8_t proto_build(uint8_t type, uint16_t seq, uint32_t t_us,
                    const uint8_t *body, uint8_t body_len, uint8_t *wire_out);

/* A received, CRC-checked frame.  body points into the receiver's buffer
 * and is valid until the next proto_rx_feed(). */
typedef struct {
    uint8_t type;
    uint16_t seq;
    uint32_t t_us;
    const uint8_t *body;
    uint8_t body_len;
} proto_frame_t;

/* What proto_rx_feed() made of one byte: PROTO_RX_NONE, PROTO_RX_FRAME, or
 * (negated) one of the error codes BAD_CRC, BAD_COBS, OVERFLOW, BAD_LENGTH. */
typedef enum {
    PROTO_RX_NONE = 0,
    PROTO_RX_FRAME = 1,
    PROTO_RX_BAD_CRC = -PROTO_ERR_BAD_CRC,
    PROTO_RX_BAD_COBS = -PROTO_ERR_BAD_COBS,
    PROTO_RX_OVERFLOW = -PROTO_ERR_OVERFLOW,
    PROTO_RX_BAD_LENGTH = -PROTO_ERR_BAD_LENGTH
} proto_rx_result_t;

/* Receiver: a COBS decoder over a buffer for one decoded frame. */
typedef struct {
    cobs_decoder_t cobs;
    uint8_t buf[PROTO_MAX_DECODED];
} proto_rx_t;

void proto_rx_init(proto_rx_t *rx);

/* Forgets the frame in progress and resynchronises after the next 0x00. */
void proto_rx_discard(proto_rx_t *rx);

/*
 * Feeds one wire byte.  On PROTO_RX_FRAME, *out holds the frame.  A damaged
 * frame is never delivered: it is reported once, and decoding starts afresh
 * after the next 0x00.  A decoded frame too short to hold a length byte and
 * a check, or whose length byte does not match its size, or whose check
 * does not match, is a BAD_CRC; an intact one whose payload is shorter than
 * the header is a BAD_LENGTH.  The type is not checked here.
 */
proto_rx_result_t proto_rx_feed(proto_rx_t *rx, uint8_t byte, proto_frame_t *out);

#ifdef __cplusplus
}
#endif

#endif /* RTRL_PROTOCOL_H */
