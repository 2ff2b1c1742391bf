/*
 * protocol.c - frame building and parsing for PROTOCOL.md version 2.
 */
#include <string.h>
#include "crc16.h"
#include "protocol.h"

void proto_put_u16(uint8_t *dst, uint16_t v)
{
    dst[0] = (uint8_t)v;
    dst[1] = (uint8_t)(v >> 8);
}

void proto_put_u32(uint8_t *dst, uint32_t v)
{
    dst[0] = (uint8_t)v;
    dst[1] = (uint8_t)(v >> 8);
    dst[2] = (uint8_t)(v >> 16);
    dst[3] = (uint8_t)(v >> 24);
}

void proto_put_f32(uint8_t *dst, float v)
{
    /* float is IEEE-754 binary32 on avr-gcc; go through its bit pattern so
       the byte order is explicit rather than the host's */
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    proto_put_u32(dst, bits);
}

uint16_t proto_get_u16(const uint8_t *src)
{
    return (uint16_t)(src[0] | ((uint16_t)src[1] << 8));
}

uint32_t proto_get_u32(const uint8_t *src)
{
    return (uint32_t)src[0] | ((uint32_t)src[1] << 8) |
           ((uint32_t)src[2] << 16) | ((uint32_t)src[3] << 24);
}

uint8_t proto_build(uint8_t type, uint16_t seq, uint32_t t_us,
                    const uint8_t *body, uint8_t body_len, uint8_t *wire_out)
{
    uint8_t frame[PROTO_MAX_DECODED];      /* len || payload || check */
    uint8_t n;
    uint16_t check;

    if (body_len > PROTO_MAX_BODY)
        return 0;
    frame[0] = (uint8_t)(PROTO_HEADER + body_len);
    frame[1] = type;
    proto_put_u16(frame + 2, seq);
    proto_put_u32(frame + 4, t_us);
    if (body_len)
        memcpy(frame + 1 + PROTO_HEADER, body, body_len);
    n = (uint8_t)(1 + PROTO_HEADER + body_len);
    check = crc16(frame, n) ^ PROTO_CHECK_XOR;
    frame[n++] = (uint8_t)(check >> 8);     /* most significant byte first */
    frame[n++] = (uint8_t)check;
    n = (uint8_t)cobs_encode(frame, n, wire_out);
    wire_out[n++] = 0x00;
    return n;
}

void proto_rx_init(proto_rx_t *rx)
{
    cobs_decoder_init(&rx->cobs, rx->buf, (uint8_t)sizeof rx->buf);
}

void proto_rx_discard(proto_rx_t *rx)
{
    cobs_decoder_discard(&rx->cobs);
}

proto_rx_result_t proto_rx_feed(proto_rx_t *rx, uint8_t byte, proto_frame_t *out)
{
    uint8_t n;
    uint16_t check, check_rx;

    switch (cobs_decoder_feed(&rx->cobs, byte)) {
    case COBS_MORE:
        return PROTO_RX_NONE;
    case COBS_BAD:
        return PROTO_RX_BAD_COBS;
    case COBS_OVERFLOW:
        return PROTO_RX_OVERFLOW;
    case COBS_FRAME:
        break;
    }

    n = rx->cobs.len;
    if (n < PROTO_OVERHEAD)
        return PROTO_RX_BAD_CRC;            /* no room for a length and a check */
    n -= 2;                                 /* length byte + payload */
    check_rx = (uint16_t)(((uint16_t)rx->buf[n] << 8) | rx->buf[n + 1]);
    /* the length byte first: a frame run on into the next never matches */
    if (rx->buf[0] != n - 1)
        return PROTO_RX_BAD_CRC;
    check = crc16(rx->buf, n);
    check ^= PROTO_CHECK_XOR;
    if (check != check_rx)
        return PROTO_RX_BAD_CRC;
    n--;                                    /* payload bytes */
    if (n < PROTO_HEADER)
        return PROTO_RX_BAD_LENGTH;         /* intact, but shorter than the header */

    out->type = rx->buf[1];
    out->seq = proto_get_u16(rx->buf + 2);
    out->t_us = proto_get_u32(rx->buf + 4);
    out->body = rx->buf + 1 + PROTO_HEADER;
    out->body_len = (uint8_t)(n - PROTO_HEADER);
    return PROTO_RX_FRAME;
}
