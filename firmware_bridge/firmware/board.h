/*
 * board.h - the ATmega328P's timers and ADC as the firmware uses them.
 *
 *   Timer1  CTC at the sampling period: counts ticks and keeps the device
 *           clock (microseconds, wraps at 2^32).
 *   Timer2  fast PWM on OC2B = PD3 (Arduino pin D3), about 977 Hz at 16 MHz;
 *           its overflow interrupt also wakes the CPU from idle sleep every
 *           ~1 ms, so time-based duties (heartbeat, error reports) run on
 *           time even when the sampling period is long.
 *   ADC     AVcc reference, inputs A0..A5, 125 kHz conversion clock.
 *
 * Timer0 is left alone: the Arduino core uses it for millis().
 */
#ifndef RTRL_BOARD_H
#define RTRL_BOARD_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Sets up Timer1 at period_us (see board_set_period), Timer2 PWM at duty 0,
 * and the ADC; returns the period in force.  Interrupts are not enabled
 * here. */
uint32_t board_init(uint32_t period_us);

/*
 * Restarts the sampling timer at period_us, clamped to
 * RTRL_MIN_PERIOD_US..RTRL_MAX_PERIOD_US and rounded to the timer's
 * resolution (0.5 us up to 32.8 ms, then 4, 16 and 64 us at 16 MHz).
 * The device clock runs on without a jump; ticks not yet taken are dropped.
 * Returns the period now in force, in microseconds.
 */
uint32_t board_set_period(uint32_t period_us);

/* The device clock, microseconds since reset (wraps at 2^32). */
uint32_t board_now_us(void);

/* Returns the number of sampling ticks since the last call (saturating at
 * 255) and, if any, the device time of the latest one in *tick_us. */
uint8_t board_take_ticks(uint32_t *tick_us);

/* Non-zero if a tick is waiting; call with interrupts disabled to decide
 * race-free whether to sleep. */
uint8_t board_tick_pending(void);

/* PWM duty on PD3: 0 = constantly low, 255 = constantly high. */
void board_pwm_set(uint8_t duty);

/* One 10-bit conversion of analog input channel (0..5): 0..1023. */
uint16_t board_adc_read(uint8_t channel);

#ifdef __cplusplus
}
#endif

#endif /* RTRL_BOARD_H */
