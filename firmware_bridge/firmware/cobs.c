/*
 * cobs.c - COBS encoder and incremental, bounded decoder.
 *
 * Encoded form: a sequence of blocks, each a code byte c (1..255) followed
 * by c - 1 non-zero data bytes.  A block with c < 255 stands for its data
 * followed by one 0x00; the last block's 0x00 is implied by the frame end
 * and not part of the data.  A block with c == 255 has no 0x00 after it.
 */
#include "cobs.h"

size_t cobs_encode(const uint8_t *src, size_t len, uint8_t *dst)
{
    size_t out = 1;         /* next free position in dst */
    size_t code_at = 0;     /* where the current block's code byte goes */
    uint8_t code = 1;       /* current block length + 1 */

    for (size_t i = 0; i < len; i++) {
        if (src[i] == 0) {
            /* a zero ends the block; it is represented by the code itself */
            dst[code_at] = code;
            code_at = out++;
            code = 1;
        } else {
            dst[out++] = src[i];
            if (++code == 0xFF) {
                /* a full block of 254 data bytes, no zero after it */
                dst[code_at] = code;
                code_at = out++;
                code = 1;
            }
        }
    }
    dst[code_at] = code;
    return out;
}

static void reset_frame(cobs_decoder_t *d)
{
    d->len = 0;
    d->n_encoded = 0;
    d->code = 0;
    d->remaining = 0;
}

void cobs_decoder_init(cobs_decoder_t *d, uint8_t *buf, uint8_t cap)
{
    d->buf = buf;
    d->cap = cap;
    d->discarding = 0;
    reset_frame(d);
}

void cobs_decoder_discard(cobs_decoder_t *d)
{
    reset_frame(d);
    d->discarding = 1;
}

cobs_result_t cobs_decoder_feed(cobs_decoder_t *d, uint8_t byte)
{
    if (byte == 0) {
        /* frame delimiter */
        uint8_t was_discarding = d->discarding;
        uint8_t n_encoded = d->n_encoded;
        uint8_t complete = (d->remaining == 0);
        d->discarding = 0;
        if (was_discarding || n_encoded == 0) {
            reset_frame(d);
            return COBS_MORE;           /* end of junk, or an empty frame */
        }
        /* d->len stays readable until the next feed */
        d->n_encoded = 0;
        d->code = 0;
        d->remaining = 0;
        if (!complete) {
            d->len = 0;
            return COBS_BAD;
        }
        return COBS_FRAME;
    }

    if (d->discarding)
        return COBS_MORE;

    if (d->n_encoded == 0)
        d->len = 0;                     /* a new frame begins */

    /* at most cap decoded bytes can come from cap + 1 encoded ones */
    if (d->n_encoded > d->cap) {
        cobs_decoder_discard(d);
        return COBS_OVERFLOW;
    }
    d->n_encoded++;

    if (d->remaining > 0) {
        /* a data byte of the current block */
        if (d->len >= d->cap) {         /* cannot happen within the limit above */
            cobs_decoder_discard(d);
            return COBS_OVERFLOW;
        }
        d->buf[d->len++] = byte;
        d->remaining--;
    } else {
        /* a code byte: the previous block (if any, and not a full one) ended
           in a zero that now becomes data */
        if (d->code != 0 && d->code != 0xFF) {
            if (d->len >= d->cap) {
                cobs_decoder_discard(d);
                return COBS_OVERFLOW;
            }
            d->buf[d->len++] = 0;
        }
        d->code = byte;
        d->remaining = (uint8_t)(byte - 1);
    }
    return COBS_MORE;
}
