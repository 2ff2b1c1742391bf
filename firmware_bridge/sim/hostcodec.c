/*
 * hostcodec.c - the firmware's frame codec (crc16, cobs, protocol), built
 * for the host so that tests can drive it byte by byte.
 *
 *   hostcodec build TYPE SEQ T_US HEXBODY   prints the wire frame in hex
 *   hostcodec parse  < wire bytes           prints one line per event:
 *       FRAME type seq t_us hexbody         an intact frame
 *       ERROR code                          1 BAD_CRC, 2 BAD_COBS,
 *                                           3 OVERFLOW, 5 BAD_LENGTH
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "protocol.h"

static int hex_to_bytes(const char *hex, uint8_t *out, size_t cap)
{
    size_t n = strlen(hex) / 2;
    if (strlen(hex) % 2 || n > cap)
        return -1;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1)
            return -1;
        out[i] = (uint8_t)v;
    }
    return (int)n;
}

static int build(int argc, char **argv)
{
    uint8_t body[256], wire[PROTO_MAX_WIRE];
    int n;
    uint8_t len;

    if (argc != 6)
        return 2;
    n = hex_to_bytes(argv[5], body, sizeof body);
    if (n < 0 || n > 255)
        return 2;
    len = proto_build((uint8_t)strtoul(argv[2], NULL, 0), (uint16_t)strtoul(argv[3], NULL, 0),
                      (uint32_t)strtoul(argv[4], NULL, 0), body, (uint8_t)n, wire);
    if (len == 0) {
        fprintf(stderr, "body too long\n");
        return 1;
    }
    for (uint8_t i = 0; i < len; i++)
        printf("%02x", wire[i]);
    printf("\n");
    return 0;
}

static int parse(void)
{
    static proto_rx_t rx;
    proto_frame_t f;
    int c;

    proto_rx_init(&rx);
    while ((c = getchar()) != EOF) {
        proto_rx_result_t r = proto_rx_feed(&rx, (uint8_t)c, &f);
        if (r == PROTO_RX_FRAME) {
            printf("FRAME %u %u %lu ", f.type, f.seq, (unsigned long)f.t_us);
            for (uint8_t i = 0; i < f.body_len; i++)
                printf("%02x", f.body[i]);
            printf("\n");
        } else if (r != PROTO_RX_NONE) {
            printf("ERROR %d\n", -(int)r);
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "build") == 0)
        return build(argc, argv);
    if (argc == 2 && strcmp(argv[1], "parse") == 0)
        return parse();
    fprintf(stderr, "usage: hostcodec build TYPE SEQ T_US HEXBODY | hostcodec parse < bytes\n");
    return 2;
}
