/*
 * crc16.h - CRC-16/CCITT-FALSE (PROTOCOL.md section 1).
 *
 * Polynomial 0x1021, initial value 0xFFFF, no reflection, no final XOR.
 * Check value: crc16("123456789", 9) == 0x29B1.  A frame's check is this
 * CRC XORed with 0xFFFF (protocol.c).
 */
#ifndef RTRL_CRC16_H
#define RTRL_CRC16_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CRC16_INIT 0xFFFFu

/* Feeds one byte into a running CRC and returns the new CRC. */
uint16_t crc16_update(uint16_t crc, uint8_t byte);

/* CRC of len bytes at data, starting from CRC16_INIT. */
uint16_t crc16(const uint8_t *data, size_t len);

#ifdef __cplusplus
}
#endif

#endif /* RTRL_CRC16_H */
