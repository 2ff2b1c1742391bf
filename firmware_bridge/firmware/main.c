/*
 * main.c - entry point of the plain avr-gcc build (make -C firmware_bridge).
 *
 * The Arduino sketch does not compile this file's contents: the Arduino
 * core has its own main(), which calls the sketch's setup() and loop(), and
 * those call firmware_setup() and firmware_loop().
 */
#ifndef ARDUINO

#include "config.h"
#include "firmware.h"

#ifdef RTRL_SIMAVR_SECTION
/*
 * Tells simavr which MCU and clock this .elf is for, and the supply
 * voltages its ADC needs (millivolts).  The tags live in a .mmcu section
 * that the Makefile leaves out of the .hex, so real chips never see them.
 */
#include <avr/avr_mcu_section.h>
AVR_MCU(F_CPU, "atmega328p");
AVR_MCU_VOLTAGES(5000, 5000, 5000);
#endif

int main(void)
{
    firmware_setup();
    for (;;)
        firmware_loop();
}

#endif /* ARDUINO */
