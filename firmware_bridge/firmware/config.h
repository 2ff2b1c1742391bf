/*
 * config.h - compile-time configuration of the rtrl_edge board firmware.
 *
 * Every value can be overridden with a -D flag (the Makefile passes
 * MODE=, PERIOD_US=, N_CHANNELS=, N_ACTUATORS= through as these), e.g.
 *
 *     make -C firmware_bridge MODE=0 N_CHANNELS=4 PERIOD_US=5000
 *
 * The Arduino sketch uses the defaults (edit them here, or add #defines at
 * the top of config.h, if you need others there).
 */
#ifndef RTRL_CONFIG_H
#define RTRL_CONFIG_H

#ifndef F_CPU
#define F_CPU 16000000UL            /* Arduino Uno: 16 MHz crystal */
#endif

/* Mode at reset: 0 = analog inputs A0..A(n-1), 1 = simulated plant. */
#ifndef RTRL_MODE
#define RTRL_MODE 1
#endif

/* Sampling period at reset, microseconds (PROTOCOL.md section 4). */
#ifndef RTRL_PERIOD_US
#define RTRL_PERIOD_US 10000UL
#endif

/* Channels per SAMPLE (1..6; the ATmega328P has analog inputs A0..A5). */
#ifndef RTRL_N_CHANNELS
#define RTRL_N_CHANNELS 3
#endif

/* Actuators a COMMAND may set (0..4); actuator 0 drives the plant and PWM. */
#ifndef RTRL_N_ACTUATORS
#define RTRL_N_ACTUATORS 1
#endif

/* Serial line: 8N1, no flow control. */
#ifndef RTRL_BAUD
#define RTRL_BAUD 115200UL
#endif

/*
 * Accepted sampling periods.  A CONFIGURE outside this range is clamped, and
 * the HELLO that answers it reports the period actually in force.
 *
 * The lower bound keeps SAMPLEs to at most 80 % of the line: a SAMPLE of n
 * channels is 12 + 2n bytes on the wire (1 length + 7 header + 2n body +
 * 2 check + 1 COBS + 1 delimiter), 10 bits each.  At 115200 baud that is
 * 1518 us for 1 channel, 1952 us for 3, 2603 us for 6.  The upper bound is
 * about what Timer1 reaches with its largest prescaler (65536 * 64 us at
 * 16 MHz).
 */
#define RTRL_SAMPLE_WIRE_BYTES (12UL + 2UL * (RTRL_N_CHANNELS))
#define RTRL_MIN_PERIOD_US \
    (RTRL_SAMPLE_WIRE_BYTES * 10UL * 1000000UL / (RTRL_BAUD) * 5UL / 4UL)
#define RTRL_MAX_PERIOD_US 4000000UL

/* The plant is integrated in substeps of at most this many seconds. */
#define RTRL_PLANT_MAX_STEP_S 0.01f

/* Ring buffer sizes (powers of two, at most 256). */
#define RTRL_UART_RX_SIZE 128
#define RTRL_UART_TX_SIZE 128

#if RTRL_MODE != 0 && RTRL_MODE != 1
#error "RTRL_MODE must be 0 (analog inputs) or 1 (simulated plant)"
#endif
#if RTRL_N_CHANNELS < 1 || RTRL_N_CHANNELS > 6
#error "RTRL_N_CHANNELS must be 1..6"
#endif
#if RTRL_N_ACTUATORS < 0 || RTRL_N_ACTUATORS > 4
#error "RTRL_N_ACTUATORS must be 0..4"
#endif
#if RTRL_PERIOD_US < RTRL_MIN_PERIOD_US || RTRL_PERIOD_US > RTRL_MAX_PERIOD_US
#error "RTRL_PERIOD_US must be within RTRL_MIN_PERIOD_US..RTRL_MAX_PERIOD_US"
#endif
#if F_CPU != 16000000UL && F_CPU != 8000000UL
#error "the timer arithmetic assumes F_CPU of 16 MHz or 8 MHz"
#endif

#endif /* RTRL_CONFIG_H */
