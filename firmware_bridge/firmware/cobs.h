/*
 * cobs.h - Consistent Overhead Byte Stuffing (Cheshire & Baker 1999).
 *
 * COBS rewrites a block of bytes so that it contains no 0x00, at a cost of
 * one byte per started 254 bytes; a single 0x00 then ends every frame on the
 * wire (PROTOCOL.md section 1).  The encoder works on a whole block; the
 * decoder takes one wire byte at a time, as they come out of the UART, and
 * decodes into a bounded buffer that the caller owns.
 */
#ifndef RTRL_COBS_H
#define RTRL_COBS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Worst-case encoded size of n bytes (without the 0x00 delimiter). */
#define COBS_ENCODED_MAX(n) ((n) + ((n) / 254u) + 1u)

/*
 * Encodes len bytes from src into dst, which must hold COBS_ENCODED_MAX(len)
 * bytes.  Returns the encoded length; the delimiter is not written.
 */
size_t cobs_encode(const uint8_t *src, size_t len, uint8_t *dst);

/* What cobs_decoder_feed() made of one byte. */
typedef enum {
    COBS_MORE = 0,      /* inside a frame, or an ignored byte: keep feeding */
    COBS_FRAME,         /* a frame ended: buf[0..len) holds it, valid until the next feed */
    COBS_BAD,           /* a delimiter cut a block short: the frame is dropped */
    COBS_OVERFLOW       /* too many bytes without a delimiter: dropped, and
                           everything up to and including the next 0x00 is ignored */
} cobs_result_t;

/*
 * Incremental decoder.  It decodes on the fly, so it needs no copy of the
 * encoded bytes: buf receives the decoded frame, at most cap bytes, which
 * allows cap + 1 encoded bytes per frame (the overflow limit).
 */
typedef struct {
    uint8_t *buf;       /* decoded bytes of the current frame */
    uint8_t cap;        /* capacity of buf; at most 254 */
    uint8_t len;        /* decoded bytes so far */
    uint8_t n_encoded;  /* encoded bytes of the current frame so far */
    uint8_t code;       /* code byte of the current block; 0 before the first */
    uint8_t remaining;  /* data bytes still due in the current block */
    uint8_t discarding; /* after an overflow: ignore up to the next 0x00 */
} cobs_decoder_t;

/* Prepares d to decode into buf[0..cap), cap <= 254. */
void cobs_decoder_init(cobs_decoder_t *d, uint8_t *buf, uint8_t cap);

/* Forgets the current frame and ignores input up to the next 0x00 (used
 * when bytes were lost before they reached the decoder). */
void cobs_decoder_discard(cobs_decoder_t *d);

/* Feeds one wire byte.  An empty frame (two delimiters in a row) is
 * ignored silently and returns COBS_MORE. */
cobs_result_t cobs_decoder_feed(cobs_decoder_t *d, uint8_t byte);

#ifdef __cplusplus
}
#endif

#endif /* RTRL_COBS_H */
