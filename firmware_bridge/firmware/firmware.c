/*
 * firmware.c - the device side of PROTOCOL.md.
 *
 * Layers, bottom up:
 *   crc16, cobs        byte-level codecs, no hardware
 *   protocol           frame layout: build wire frames, check received ones
 *   uart, board        the hardware: serial rings; timers, PWM, ADC
 *   plant              the simulated plant of mode 1
 *   firmware (here)    behaviour (PROTOCOL.md section 4): what is sent when,
 *                      what a received frame does, the error counters
 *
 * Everything runs in the main loop; the interrupts only move bytes and
 * count timer ticks.  Time-driven work is checked against the device clock
 * (board_now_us), and the loop sleeps in between.
 */
#include <avr/interrupt.h>
#include <avr/sleep.h>
#include <string.h>
#include "board.h"
#include "config.h"
#include "firmware.h"
#include "plant.h"
#include "protocol.h"
#include "uart.h"

#define HEARTBEAT_US        1000000UL   /* one HEARTBEAT a second */
#define ERROR_HOLDOFF_US    1000000UL   /* at most one ERROR a second */
#define RX_BYTES_PER_PASS   16          /* then look at the timer again */

/* Channel scaling (HELLO): mode 1 sends thousandths, mode 0 volts. */
#define PLANT_SCALE         0.001f
#define ADC_SCALE_V         (5.0f / 1024.0f)    /* AVcc = 5 V reference */

/* Array sizes must be positive even for RTRL_N_ACTUATORS == 0. */
#define ACTUATOR_SLOTS      (RTRL_N_ACTUATORS > 0 ? RTRL_N_ACTUATORS : 1)

static uint8_t mode;                    /* 0 analog inputs, 1 plant */
static uint32_t period_us;              /* sampling period in force */
static int16_t actuators[ACTUATOR_SLOTS];
static plant_t plant;
static uint16_t tx_seq;                 /* +1 for every frame sent */

static uint16_t err_count[PROTO_ERR_COUNT];     /* running counts, wrap at 2^16 */
static uint16_t err_reported[PROTO_ERR_COUNT];  /* count in the last ERROR sent */
static uint8_t err_next;                /* round-robin start among the codes */
static uint8_t err_sent_once;
static uint32_t err_last_us;
static uint32_t heartbeat_due_us;

static proto_rx_t rx;
static uint8_t wire[PROTO_MAX_WIRE];    /* one outgoing frame */

/* ---- sending ------------------------------------------------------------ */

static void send_frame(uint8_t type, uint32_t t_us, const uint8_t *body, uint8_t len)
{
    uint8_t n = proto_build(type, tx_seq, t_us, body, len, wire);
    if (n == 0)
        return;                         /* body too long: a bug, never sent */
    uart_write(wire, n);
    tx_seq++;
}

static void send_hello(void)
{
    uint8_t body[PROTO_HELLO_FIXED + PROTO_HELLO_PER_CHANNEL * RTRL_N_CHANNELS];
    uint8_t *p = body + PROTO_HELLO_FIXED;
    uint8_t i;

    body[0] = PROTO_VERSION;
    body[1] = RTRL_N_CHANNELS;
    body[2] = RTRL_N_ACTUATORS;
    body[3] = mode;
    proto_put_u32(body + 4, period_us);
    for (i = 0; i < RTRL_N_CHANNELS; i++, p += PROTO_HELLO_PER_CHANNEL) {
        proto_put_f32(p, mode == 1 ? PLANT_SCALE : ADC_SCALE_V);
        proto_put_f32(p + 4, 0.0f);
    }
    send_frame(PROTO_HELLO, board_now_us(), body, (uint8_t)sizeof body);
}

static void send_error(uint8_t code, uint16_t count)
{
    uint8_t body[PROTO_ERROR_BODY];
    body[0] = code;
    proto_put_u16(body + 1, count);
    send_frame(PROTO_ERROR, board_now_us(), body, (uint8_t)sizeof body);
}

/* ---- sampling ----------------------------------------------------------- */

/* x in thousandths, rounded and saturated to i16 */
static int16_t to_raw(float x)
{
    float r = x * 1000.0f;
    if (r >= 32767.0f)
        return 32767;
    if (r <= -32768.0f)
        return -32768;
    return (int16_t)(r >= 0.0f ? r + 0.5f : r - 0.5f);
}

/* n_ticks periods have passed since the last sample; t_us is the latest tick. */
static void sample(uint8_t n_ticks, uint32_t t_us)
{
    int16_t raw[RTRL_N_CHANNELS];
    uint8_t body[2 * RTRL_N_CHANNELS];
    uint8_t i;

    if (n_ticks > 1)
        err_count[PROTO_ERR_SAMPLE_LATE] += (uint16_t)(n_ticks - 1);

    memset(raw, 0, sizeof raw);
    if (mode == 1) {
        /* the plant lives in device time: missed periods are integrated too */
        float dt = (float)period_us * 1e-6f * (float)n_ticks;
        plant_advance(&plant, RTRL_N_ACTUATORS > 0 ? actuators[0] : 0, dt,
                      RTRL_PLANT_MAX_STEP_S);
        raw[0] = to_raw(plant.p);
#if RTRL_N_CHANNELS > 1
        raw[1] = to_raw(plant.u);
#endif
#if RTRL_N_CHANNELS > 2
        raw[2] = to_raw(plant.v);
#endif
        /* channels 3.. have no plant signal and stay 0 */
    } else {
        for (i = 0; i < RTRL_N_CHANNELS; i++)
            raw[i] = (int16_t)board_adc_read(i);
    }
    for (i = 0; i < RTRL_N_CHANNELS; i++)
        proto_put_u16(body + 2 * i, (uint16_t)raw[i]);
    send_frame(PROTO_SAMPLE, t_us, body, (uint8_t)sizeof body);
}

/* ---- received frames ---------------------------------------------------- */

static void count_error(uint8_t code)
{
    err_count[code]++;
}

static void apply_pwm(int16_t value)
{
    /* 0..1000 -> 0..255, rounded; negative commands drive the pin low */
    int16_t v = value < 0 ? 0 : (value > 1000 ? 1000 : value);
    board_pwm_set((uint8_t)(((uint32_t)v * 255u + 500u) / 1000u));
}

static void handle_command(const proto_frame_t *f)
{
    uint8_t n = (uint8_t)(f->body_len / 2);
    uint8_t i;

    if ((f->body_len & 1) || n > RTRL_N_ACTUATORS) {
        count_error(PROTO_ERR_BAD_LENGTH);
        return;
    }
    /* actuators beyond n keep their value */
    for (i = 0; i < n; i++)
        actuators[i] = (int16_t)proto_get_u16(f->body + 2 * i);
    if (n > 0)
        apply_pwm(actuators[0]);
}

static void handle_configure(const proto_frame_t *f)
{
    uint32_t new_period = proto_get_u32(f->body);
    uint8_t new_mode = f->body[4];

    if (new_period != PROTO_CONFIGURE_KEEP_PERIOD)
        period_us = board_set_period(new_period);
    /* an unknown mode is ignored; the HELLO below shows what is in force */
    if ((new_mode == 0 || new_mode == 1) && new_mode != mode) {
        mode = new_mode;
        if (mode == 1)
            plant_reset(&plant);
    }
    send_hello();
}

static void handle_frame(const proto_frame_t *f)
{
    switch (f->type) {
    case PROTO_COMMAND:
        handle_command(f);
        break;
    case PROTO_HEARTBEAT:
        if (f->body_len != 0)
            count_error(PROTO_ERR_BAD_LENGTH);
        break;
    case PROTO_HELLO_REQUEST:
        if (f->body_len != 0)
            count_error(PROTO_ERR_BAD_LENGTH);
        else
            send_hello();
        break;
    case PROTO_CONFIGURE:
        if (f->body_len != PROTO_CONFIGURE_BODY)
            count_error(PROTO_ERR_BAD_LENGTH);
        else
            handle_configure(f);
        break;
    default:
        /* includes the device -> host types: the device has no use for them */
        count_error(PROTO_ERR_UNKNOWN_TYPE);
        break;
    }
}

static void receive(void)
{
    proto_frame_t f;
    uint8_t byte;
    uint8_t i;

    for (i = 0; i < RX_BYTES_PER_PASS; i++) {
        uint8_t got = uart_read(&byte);
        if (got == UART_NONE)
            break;
        if (got == UART_LOST) {
            /* bytes were lost here: the frame in progress is damaged */
            count_error(PROTO_ERR_OVERFLOW);
            proto_rx_discard(&rx);
            continue;
        }
        switch (proto_rx_feed(&rx, byte, &f)) {
        case PROTO_RX_NONE:
            break;
        case PROTO_RX_FRAME:
            handle_frame(&f);
            break;
        case PROTO_RX_BAD_CRC:
            count_error(PROTO_ERR_BAD_CRC);
            break;
        case PROTO_RX_BAD_COBS:
            count_error(PROTO_ERR_BAD_COBS);
            break;
        case PROTO_RX_OVERFLOW:
            count_error(PROTO_ERR_OVERFLOW);
            break;
        case PROTO_RX_BAD_LENGTH:
            count_error(PROTO_ERR_BAD_LENGTH);
            break;
        }
    }
}

/* ---- time-driven duties ------------------------------------------------- */

static void heartbeat(uint32_t now)
{
    if ((int32_t)(now - heartbeat_due_us) < 0)
        return;
    send_frame(PROTO_HEARTBEAT, now, 0, 0);
    heartbeat_due_us += HEARTBEAT_US;
    if ((int32_t)(now - heartbeat_due_us) >= 0)
        heartbeat_due_us = now + HEARTBEAT_US;  /* fell behind: no burst */
}

/* At most one ERROR a second, for the next code (round robin) whose count
 * changed since it was last reported. */
static void report_errors(uint32_t now)
{
    uint8_t k;

    if (err_sent_once && (uint32_t)(now - err_last_us) < ERROR_HOLDOFF_US)
        return;
    for (k = 0; k < PROTO_ERR_COUNT - 1; k++) {
        uint8_t code = (uint8_t)(1 + (err_next + k) % (PROTO_ERR_COUNT - 1));
        uint16_t count = err_count[code];
        if (count != err_reported[code]) {
            send_error(code, count);
            err_reported[code] = count;
            err_next = (uint8_t)(code % (PROTO_ERR_COUNT - 1));
            err_last_us = now;
            err_sent_once = 1;
            return;
        }
    }
}

/* Sleeps until the next interrupt unless work is already waiting.  The
 * check runs with interrupts off, and SEI delays them by one instruction,
 * so an interrupt cannot slip in between the check and the SLEEP. */
static void idle(void)
{
    cli();
    if (!board_tick_pending() && !uart_rx_ready()) {
        set_sleep_mode(SLEEP_MODE_IDLE);
        sleep_enable();
        sei();
        sleep_cpu();
        sleep_disable();
    }
    sei();
}

/* ---- entry points ------------------------------------------------------- */

void firmware_setup(void)
{
    cli();
    mode = RTRL_MODE;
    plant_reset(&plant);
    memset(actuators, 0, sizeof actuators);
    proto_rx_init(&rx);
    uart_init();
    period_us = board_init(RTRL_PERIOD_US);
    sei();

    heartbeat_due_us = board_now_us() + HEARTBEAT_US;
    send_hello();
}

void firmware_loop(void)
{
    uint32_t tick_us, now;
    uint8_t n_ticks = board_take_ticks(&tick_us);

    if (n_ticks)
        sample(n_ticks, tick_us);
    receive();
    now = board_now_us();
    heartbeat(now);
    report_errors(now);
    idle();
}
