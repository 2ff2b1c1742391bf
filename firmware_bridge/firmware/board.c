/*
 * board.c - Timer1 tick and clock, Timer2 PWM, ADC (see board.h).
 */
#include <avr/interrupt.h>
#include <avr/io.h>
#include <util/atomic.h>
#include "board.h"
#include "config.h"

#define CPU_MHZ ((uint8_t)((F_CPU) / 1000000UL))   /* 16 (or 8) timer clocks per us */
#if F_CPU == 16000000UL
#define LOG2_CPU_MHZ 4
#else
#define LOG2_CPU_MHZ 3
#endif

/* Timer1 prescalers, smallest first: divisor (as log2) and CS1x bits. */
static const struct {
    uint8_t log2_div;
    uint8_t cs;
} prescalers[] = {
    {3, _BV(CS11)},                 /* clk/8 */
    {6, _BV(CS11) | _BV(CS10)},     /* clk/64 */
    {8, _BV(CS12)},                 /* clk/256 */
    {10, _BV(CS12) | _BV(CS10)},    /* clk/1024 */
};

static volatile uint32_t clock_base_us; /* device time of the last compare match */
static volatile uint32_t tick_period_us;/* added to clock_base_us at each match */
static volatile uint8_t ticks;          /* matches not yet taken */
static int8_t count_shift;              /* us = TCNT1 << shift (>> -shift if negative) */

ISR(TIMER1_COMPA_vect)
{
    clock_base_us += tick_period_us;
    if (ticks != 0xFF)
        ticks++;
}

/* Timer2 overflow only wakes the CPU from sleep. */
EMPTY_INTERRUPT(TIMER2_OVF_vect);

static uint32_t counts_to_us(uint16_t counts)
{
    if (count_shift >= 0)
        return (uint32_t)counts << count_shift;
    return (uint32_t)(counts >> (uint8_t)(-count_shift));
}

/* Device time; call with interrupts disabled. */
static uint32_t now_us_locked(void)
{
    uint32_t base = clock_base_us;
    uint16_t counts = TCNT1;
    if (TIFR1 & _BV(OCF1A)) {
        /* a compare match is pending, its ISR has not run: the counter has
           restarted from 0 and the base is one period behind */
        counts = TCNT1;
        base += tick_period_us;
    }
    return base + counts_to_us(counts);
}

uint32_t board_now_us(void)
{
    uint32_t now;
    ATOMIC_BLOCK(ATOMIC_RESTORESTATE) {
        now = now_us_locked();
    }
    return now;
}

uint32_t board_set_period(uint32_t period_us)
{
    uint8_t i;
    uint32_t counts = 0;

    if (period_us < RTRL_MIN_PERIOD_US)
        period_us = RTRL_MIN_PERIOD_US;
    if (period_us > RTRL_MAX_PERIOD_US)
        period_us = RTRL_MAX_PERIOD_US;

    /* smallest prescaler whose 16-bit counter reaches the period */
    for (i = 0; i < sizeof prescalers / sizeof prescalers[0]; i++) {
        uint8_t shift = prescalers[i].log2_div;
        counts = (period_us * CPU_MHZ + ((1UL << shift) >> 1)) >> shift;
        if (counts <= 65536UL)
            break;
    }
    if (i == sizeof prescalers / sizeof prescalers[0]) {
        i--;
        counts = 65536UL;
    }

    ATOMIC_BLOCK(ATOMIC_RESTORESTATE) {
        uint32_t now = now_us_locked();
        int8_t shift = (int8_t)(prescalers[i].log2_div - LOG2_CPU_MHZ);

        TCCR1B = 0;                             /* stop */
        TCCR1A = 0;
        TCNT1 = 0;
        OCR1A = (uint16_t)(counts - 1);         /* CTC: TOP = OCR1A, period = OCR1A + 1 */
        TIFR1 = _BV(OCF1A);                     /* drop a pending match */
        count_shift = shift;
        tick_period_us = (shift >= 0) ? counts << shift : counts >> (uint8_t)(-shift);
        clock_base_us = now;
        ticks = 0;
        TIMSK1 = _BV(OCIE1A);
        TCCR1B = _BV(WGM12) | prescalers[i].cs; /* mode 4, CTC; start */
    }
    return tick_period_us;
}

uint8_t board_take_ticks(uint32_t *tick_us)
{
    uint8_t n;
    ATOMIC_BLOCK(ATOMIC_RESTORESTATE) {
        n = ticks;
        ticks = 0;
        *tick_us = clock_base_us;
    }
    return n;
}

uint8_t board_tick_pending(void)
{
    return ticks;
}

void board_pwm_set(uint8_t duty)
{
    if (duty == 0) {
        /* fast PWM still gives a 1/256 pulse at OCR2B = 0: disconnect the
           pin from the timer and hold it low instead */
        TCCR2A &= (uint8_t)~_BV(COM2B1);
        PORTD &= (uint8_t)~_BV(PD3);
    } else {
        OCR2B = duty;
        TCCR2A |= _BV(COM2B1);                  /* non-inverting on OC2B */
    }
}

uint16_t board_adc_read(uint8_t channel)
{
    ADMUX = _BV(REFS0) | (channel & 0x07);      /* AVcc reference */
    ADCSRA |= _BV(ADSC);
    while (ADCSRA & _BV(ADSC))
        ;
    return ADC;
}

uint32_t board_init(uint32_t period_us)
{
    /* Timer2: fast PWM (mode 3), clk/64, output disconnected until duty > 0 */
    DDRD |= _BV(PD3);
    PORTD &= (uint8_t)~_BV(PD3);
    TCCR2A = _BV(WGM21) | _BV(WGM20);
    TCCR2B = _BV(CS22);
    OCR2B = 0;
    TIMSK2 = _BV(TOIE2);

    /* ADC: enabled, clk/128 (125 kHz at 16 MHz); digital buffers off on the
       analog inputs in use */
    ADMUX = _BV(REFS0);
    ADCSRA = _BV(ADEN) | _BV(ADPS2) | _BV(ADPS1) | _BV(ADPS0);
    DIDR0 = (uint8_t)((1u << RTRL_N_CHANNELS) - 1u);

    return board_set_period(period_us);
}
