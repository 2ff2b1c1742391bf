/*
 * protocol.c - frame building and parsing for PROTOCOL.md version 1.
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
    uint8_t payload[PROTO_MAX_DECODED];
    uint8_t n;
    uint16_t crc;

    if (body_len > PROTO_MAX_BODY)
        return 0;
    payload[0] = type;
    proto_put_u16(payload + 1, seq);
    proto_put_u32(payload + 3, t_us);
    if (body_len)
        memcpy(payload + PROTO_HEADER, body, body_len);
    n = (uint8_t)(PROTO_HEADER + body_len);
    crc = crc16(payload, n);
    payload[n++] = (uint8_t)(crc >> 8);     /* CRC most significant byte first */
    payload[n++] = (uint8_t)crc;
    n = (uint8_t)cobs_encode(payload, n, wire_out);
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
    uint16_t crc_rx;

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
    if (n < 2)
        return PROTO_RX_BAD_CRC;            /* no room for a CRC at all */
    n -= 2;
    crc_rx = (uint16_t)(((uint16_t)rx->buf[n] << 8) | rx->buf[n + 1]);
    if (crc16(rx->buf, n) != crc_rx)
        return PROTO_RX_BAD_CRC;
    if (n < PROTO_HEADER)
        return PROTO_RX_BAD_LENGTH;         /* intact, but shorter than the header */

    out->type = rx->buf[0];
    out->seq = proto_get_u16(rx->buf + 1);
    out->t_us = proto_get_u32(rx->buf + 3);
    out->body = rx->buf + PROTO_HEADER;
    out->body_len = (uint8_t)(n - PROTO_HEADER);
    return PROTO_RX_FRAME;
}
