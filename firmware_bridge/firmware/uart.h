/*
 * uart.h - USART0 with interrupt-driven, bounded RX and TX ring buffers.
 *
 * 8N1 at RTRL_BAUD (115200) with double speed (U2X0): at 16 MHz UBRR0 = 16,
 * 117 647 baud, +2.1 %, the usual setting of Arduino Uno boards and their
 * USB bridges.  Pins: RXD = PD0 (D0), TXD = PD1 (D1).
 */
#ifndef RTRL_UART_H
#define RTRL_UART_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

void uart_init(void);

/* What uart_read() found. */
enum {
    UART_NONE = 0,  /* nothing received */
    UART_BYTE,      /* *byte holds the next received byte */
    UART_LOST       /* bytes were lost at this point of the stream (the RX
                       ring was full, or the hardware overran); the bytes
                       after the loss follow on the next calls */
};

/* Takes the next received byte, in order, with losses reported in place. */
uint8_t uart_read(uint8_t *byte);

/* Non-zero if uart_read() has something to report. */
uint8_t uart_rx_ready(void);

/* Queues n bytes for sending; waits while the ring is full, so it must be
 * called with interrupts enabled (never from an ISR). */
void uart_write(const uint8_t *data, uint8_t n);

#ifdef __cplusplus
}
#endif

#endif /* RTRL_UART_H */
