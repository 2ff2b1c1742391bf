/*
 * rtrl_edge_board.ino - the rtrl_edge board firmware as an Arduino sketch
 * (Arduino Uno or any ATmega328P board at 16 MHz).
 *
 * The firmware's sources live in ../../firmware/; the .c and .h files in
 * this folder are symbolic links to them, so the IDE compiles exactly the
 * code that `make -C firmware_bridge` builds (see ../../README.md for a
 * plain-copy export where symlinks are not available, e.g. on Windows).
 *
 * Compile-time settings (mode, period, channel and actuator counts) are in
 * config.h.  Pins: D0/D1 serial (115200 8N1) to the host, D3 PWM output of
 * actuator 0, A0..A(n-1) analog inputs in mode 0.
 *
 * Do not use Serial, analogWrite() on pins 3, 9, 10 or 11, or tone() in
 * this sketch: the firmware owns USART0 (its own interrupt handlers),
 * Timer1 (sampling clock) and Timer2 (PWM).  Timer0, millis() and delay()
 * stay with the Arduino core.
 */
#include "firmware.h"

void setup()
{
    firmware_setup();
}

void loop()
{
    firmware_loop();
}
