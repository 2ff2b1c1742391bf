/*
 * uart.c - USART0 driver: RX complete and data-register-empty interrupts
 * move bytes between the hardware and two single-producer/single-consumer
 * ring buffers.  Indices are 8-bit, so reads and writes of them are atomic;
 * each index is written by one side only, and the buffers are volatile so
 * that the compiler keeps every data access before the index update that
 * publishes it.
 */
#include <avr/interrupt.h>
#include <avr/io.h>
#include "config.h"
#include "uart.h"

#define RX_MASK (RTRL_UART_RX_SIZE - 1)
#define TX_MASK (RTRL_UART_TX_SIZE - 1)

#if (RTRL_UART_RX_SIZE & RX_MASK) || RTRL_UART_RX_SIZE > 256
#error "RTRL_UART_RX_SIZE must be a power of two, at most 256"
#endif
#if (RTRL_UART_TX_SIZE & TX_MASK) || RTRL_UART_TX_SIZE > 256
#error "RTRL_UART_TX_SIZE must be a power of two, at most 256"
#endif

/* UBRR for double-speed mode, rounded to the nearest divisor. */
#define UBRR_U2X (((F_CPU) + 4UL * (RTRL_BAUD)) / (8UL * (RTRL_BAUD)) - 1UL)

static volatile uint8_t rx_buf[RTRL_UART_RX_SIZE];
static volatile uint8_t rx_head;        /* written by the ISR */
static volatile uint8_t rx_tail;        /* written by uart_read() */
static volatile uint8_t rx_lost;        /* a loss is waiting to be reported */
static volatile uint8_t rx_lost_at;     /* ring index where it happened */

static volatile uint8_t tx_buf[RTRL_UART_TX_SIZE];
static volatile uint8_t tx_head;        /* written by uart_write() */
static volatile uint8_t tx_tail;        /* written by the ISR */

void uart_init(void)
{
    /* U2X0 before UBRR0: the chip does not care, but simavr works out the
       bit time when UBRR0 is written and would otherwise run at half speed */
    UCSR0A = _BV(U2X0);
    UBRR0 = (uint16_t)UBRR_U2X;
    UCSR0C = _BV(UCSZ01) | _BV(UCSZ00);                 /* 8N1 */
    UCSR0B = _BV(RXEN0) | _BV(TXEN0) | _BV(RXCIE0);     /* UDRIE0 only while sending */
}

ISR(USART_RX_vect)
{
    uint8_t status = UCSR0A;            /* read the flags before UDR0 */
    uint8_t byte = UDR0;
    uint8_t next = (uint8_t)((rx_head + 1) & RX_MASK);
    uint8_t full = (next == rx_tail);

    /* DOR0: bytes before this one were lost in hardware; full ring: this
       one is dropped.  Either way the loss sits at rx_head, between the
       bytes already queued and the ones still to come.  A second loss
       before the first is reported is not recorded separately; the frame
       check will catch its damage. */
    if (((status & _BV(DOR0)) || full) && !rx_lost) {
        rx_lost_at = rx_head;
        rx_lost = 1;
    }
    if (full)
        return;
    rx_buf[rx_head] = byte;
    rx_head = next;
}

ISR(USART_UDRE_vect)
{
    if (tx_head == tx_tail) {
        UCSR0B &= (uint8_t)~_BV(UDRIE0);    /* nothing left: stop asking */
        return;
    }
    UDR0 = tx_buf[tx_tail];
    tx_tail = (uint8_t)((tx_tail + 1) & TX_MASK);
}

uint8_t uart_read(uint8_t *byte)
{
    uint8_t tail = rx_tail;

    /* the ISR writes rx_lost_at before rx_lost, and neither while rx_lost
       is set, so this pair of reads is consistent */
    if (rx_lost && rx_lost_at == tail) {
        rx_lost = 0;
        return UART_LOST;
    }
    if (tail == rx_head)
        return UART_NONE;
    *byte = rx_buf[tail];
    rx_tail = (uint8_t)((tail + 1) & RX_MASK);
    return UART_BYTE;
}

uint8_t uart_rx_ready(void)
{
    return (uint8_t)(rx_tail != rx_head || rx_lost);
}

void uart_write(const uint8_t *data, uint8_t n)
{
    while (n--) {
        uint8_t next = (uint8_t)((tx_head + 1) & TX_MASK);
        while (next == tx_tail)
            ;                           /* ring full: the UDRE ISR drains it */
        tx_buf[tx_head] = *data++;
        tx_head = next;
        /* Read-modify-write of UCSR0B: safe, because the only ISR that
           writes it (UDRE) clears UDRIE0 only on an empty ring, and the
           ring holds the byte just queued. */
        UCSR0B |= _BV(UDRIE0);
    }
}
