/*
 * crc16.c - CRC-16/CCITT-FALSE, table-free.
 *
 * The byte-at-a-time form of the MSB-first CRC with polynomial
 * x^16 + x^12 + x^5 + 1 (0x1021): with x = (crc >> 8) ^ byte, folded once by
 * x ^= x >> 4, the eight shift-and-xor steps collapse into three shifted
 * copies of x.  It is the algorithm of avr-libc's _crc_xmodem_update() in
 * portable C, so the same file also compiles on a host for testing; it costs
 * no flash for a table and a few dozen cycles a byte on the AVR.
 */
#include "crc16.h"

uint16_t crc16_update(uint16_t crc, uint8_t byte)
{
    uint16_t x = (uint8_t)((crc >> 8) ^ byte);
    x ^= x >> 4;
    return (uint16_t)((crc << 8) ^ (x << 12) ^ (x << 5) ^ x);
}

uint16_t crc16(const uint8_t *data, size_t len)
{
    uint16_t crc = CRC16_INIT;
    while (len--)
        crc = crc16_update(crc, *data++);
    return crc;
}
