/*
 * firmware.h - the board firmware as two calls, so that the same code runs
 * from main.c (avr-gcc build) and from the Arduino sketch's setup()/loop().
 */
#ifndef RTRL_FIRMWARE_H
#define RTRL_FIRMWARE_H

#ifdef __cplusplus
extern "C" {
#endif

/* Sets up the UART, timers, PWM and ADC, enables interrupts and sends HELLO. */
void firmware_setup(void);

/* One pass of the main loop: sample on a tick, handle received bytes, send
 * due heartbeats and error reports, then sleep until the next interrupt if
 * nothing is left to do.  Call it forever. */
void firmware_loop(void);

#ifdef __cplusplus
}
#endif

#endif /* RTRL_FIRMWARE_H */
