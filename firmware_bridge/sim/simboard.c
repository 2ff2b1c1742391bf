/*
 * simboard.c - run the board firmware (.elf) in simavr, UART 0 on a pty.
 *
 *   simboard [--realtime|--fast] [--seconds S] path/to/firmware.elf
 *
 * The first line on stdout is "PORT <pty slave path>", flushed as soon as
 * the pty exists; nothing else is ever written to stdout.  Every note --
 * simavr's own (its logger and its printf()s: "Loaded ...", uart_pty's
 * messages) and this harness's -- goes to stderr, and the notes made before
 * the PORT line are held back until it is out, so that it is also the first
 * line on a terminal or when stdout and stderr are one pipe.  Open that path
 * like a serial port: the baud rate is ignored and DTR/RTS ioctls fail on a
 * pty.
 *
 *   --realtime  (default) simulated time never runs ahead of wall-clock
 *               time: checked every 1 ms of simulated time, sleeping when
 *               ahead.  It can fall behind on a slow host; never read
 *               latency from it either way.
 *   --fast      unthrottled: as fast as the host allows (usually several
 *               times real time).
 *   --seconds S stop after S seconds of simulated time (exit 0).
 *
 * Exits 0 on SIGINT/SIGTERM or at --seconds; 1 if the firmware stops
 * (sleeps with interrupts off) or crashes; 2 on a usage or load error.
 *
 * uart_pty (libsimavrparts) also points the symlink /tmp/simavr-uart0 at
 * the pty.  That path is shared by every simavr on the machine, so the
 * printed PORT is the one to use; the link is removed at exit if it still
 * points at this run's pty.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include "avr_extint.h"
#include "sim_avr.h"
#include "sim_elf.h"
#include "sim_time.h"
#include "uart_pty.h"

#define DEFAULT_MCU         "atmega328p"
#define DEFAULT_FREQUENCY   16000000u
#define UART_LINK           "/tmp/simavr-uart0"
#define THROTTLE_HZ         1000u   /* realtime check: every 1 ms of sim time */

static volatile sig_atomic_t stop_requested;

/* Simulator notes made before the PORT line is out, in a temporary file;
 * then straight to stderr (file descriptor 1 becomes stderr's). */
static FILE *held_notes;

static void release_notes(void)
{
    char buf[512];
    size_t n;

    fflush(stdout);
    if (held_notes) {
        rewind(held_notes);
        while ((n = fread(buf, 1, sizeof buf, held_notes)) > 0)
            fwrite(buf, 1, n, stderr);
        fclose(held_notes);
        held_notes = NULL;
    }
    dup2(STDERR_FILENO, STDOUT_FILENO);
}

/* simavr's logger, on stdout (fd 1): the held notes, later stderr.  Same
 * filter as simavr's own: without an avr, or up to the avr's log level. */
static void log_note(avr_t *avr, const int level, const char *format, va_list ap)
{
    if (avr && avr->log < level)
        return;
    vfprintf(stdout, format, ap);
}

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static void usage(FILE *to)
{
    fprintf(to, "usage: simboard [--realtime|--fast] [--seconds S] firmware.elf\n");
}

static uint64_t monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void sleep_ns(uint64_t ns)
{
    struct timespec ts = {(time_t)(ns / 1000000000ull), (long)(ns % 1000000000ull)};
    /* an interrupting signal just ends the nap early; the loop checks it */
    nanosleep(&ts, NULL);
}

/*
 * simavr calls this while the AVR sleeps, just before it skips the cycles up
 * to the next timer event.  The default one may usleep(); pacing is done
 * by the run loop below instead, the same way for running and sleeping.
 */
static void sleep_nothing(avr_t *avr, avr_cycle_count_t how_long)
{
    (void)avr;
    (void)how_long;
}

/*
 * Output pacing.  uart_pty moves the AVR's bytes to the pty through a
 * 512-byte FIFO that its own thread drains, and drops bytes when the FIFO is
 * full: at --fast speeds a thread that gets no CPU for ~15 ms loses output
 * mid-frame.  So the run loop waits while the FIFO is over half full, but
 * only while the host keeps up (its unread bytes on the pty are few): with
 * nobody reading, the simulation runs on and the bytes are lost, as they
 * would be on a real serial line.
 */
#define PACE_FIFO_HIGH      256     /* bytes queued in uart_pty's FIFO */
#define PACE_HOST_BACKLOG   2048    /* unread bytes that mean "nobody reads" */

static unsigned fifo_fill(const uart_pty_fifo_t *f)
{
    return (unsigned)((f->write + uart_pty_fifo_fifo_size - f->read) &
                      (uart_pty_fifo_fifo_size - 1));
}

static void pace_output(uart_pty_t *pty, int probe_fd)
{
    while (!stop_requested && fifo_fill(&pty->pty.in) > PACE_FIFO_HIGH) {
        int unread = 0;
        if (probe_fd < 0 || ioctl(probe_fd, FIONREAD, &unread) != 0 ||
            unread >= PACE_HOST_BACKLOG)
            return;
        sleep_ns(100000);           /* 0.1 ms: let uart_pty's thread write */
    }
}

/* Removes uart_pty's symlink if it is still ours. */
static void remove_link(const char *slave)
{
    char target[256];
    ssize_t n = readlink(UART_LINK, target, sizeof target - 1);
    if (n <= 0)
        return;
    target[n] = '\0';
    if (strcmp(target, slave) == 0)
        unlink(UART_LINK);
}

int main(int argc, char **argv)
{
    static elf_firmware_t fw;       /* large: keep off the stack */
    static uart_pty_t pty;
    const char *elf_path = NULL;
    int realtime = 1;
    double seconds = 0.0;           /* 0: no limit */
    int stdout_fd;
    FILE *out;
    avr_t *avr;
    struct sigaction sa;
    uint64_t limit_ns, check_cycles, next_check, wall0;
    int state, exit_code = 0;
    int probe_fd;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--realtime") == 0) {
            realtime = 1;
        } else if (strcmp(argv[i], "--fast") == 0) {
            realtime = 0;
        } else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc) {
            char *end;
            seconds = strtod(argv[++i], &end);
            if (*end != '\0' || !(seconds > 0.0)) {
                fprintf(stderr, "simboard: --seconds needs a positive number, got '%s'\n", argv[i]);
                return 2;
            }
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (argv[i][0] == '-' || elf_path) {
            usage(stderr);
            return 2;
        } else {
            elf_path = argv[i];
        }
    }
    if (!elf_path) {
        usage(stderr);
        return 2;
    }

    /* stdout carries the PORT line only: keep it aside.  Whatever simavr
       prints (load messages, uart_pty's notes) goes to file descriptor 1,
       which holds it in a temporary file until the PORT line is out, and is
       stderr after that (release_notes, also at any exit). */
    fflush(stdout);
    stdout_fd = dup(STDOUT_FILENO);
    if (stdout_fd < 0 || !(out = fdopen(stdout_fd, "w"))) {
        perror("simboard: stdout");
        return 2;
    }
    held_notes = tmpfile();
    if (dup2(held_notes ? fileno(held_notes) : STDERR_FILENO, STDOUT_FILENO) < 0) {
        perror("simboard: stdout");
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    atexit(release_notes);
    avr_global_logger_set(log_note);
    /* uart_pty would start an xterm or open a second (tap) pty on these */
    unsetenv("SIMAVR_UART_XTERM");
    unsetenv("SIMAVR_UART_TAP");

    if (access(elf_path, R_OK) != 0) {
        fprintf(stderr, "simboard: cannot read %s: %s\n", elf_path, strerror(errno));
        return 2;
    }
    if (elf_read_firmware(elf_path, &fw) != 0) {
        fprintf(stderr, "simboard: cannot load %s as an AVR ELF file\n", elf_path);
        return 2;
    }
    /* firmware.elf names its MCU and clock in its .mmcu section; an .elf
       without one is taken for an Arduino Uno */
    if (fw.mmcu[0] == '\0')
        snprintf(fw.mmcu, sizeof fw.mmcu, "%s", DEFAULT_MCU);
    if (fw.frequency == 0)
        fw.frequency = DEFAULT_FREQUENCY;

    avr = avr_make_mcu_by_name(fw.mmcu);
    if (!avr) {
        fprintf(stderr, "simboard: simavr does not know the MCU '%s'\n", fw.mmcu);
        return 2;
    }
    if (avr_init(avr) != 0) {
        fprintf(stderr, "simboard: avr_init failed\n");
        return 2;
    }
    avr_load_firmware(avr, &fw);
    avr->sleep = sleep_nothing;
    /* simavr 1.6 polls a low-level external interrupt pin every cycle while
       it is low, enabled or not; the PWM pin PD3 is INT1 and sits low at
       duty 0, which would cost one simulator event per cycle.  The
       firmware uses no external interrupt, so switch the polling off. */
    avr_extint_set_strict_lvl_trig(avr, 0, 0);
    avr_extint_set_strict_lvl_trig(avr, 1, 0);

    uart_pty_init(avr, &pty);
    if (pty.pty.s == 0 || pty.pty.slavename[0] == '\0') {
        fprintf(stderr, "simboard: could not create a pty\n");
        return 2;
    }
    uart_pty_connect(&pty, '0');

    /* a descriptor of our own on the slave side, only to ask how many
       bytes the host has not read yet (FIONREAD) */
    probe_fd = open(pty.pty.slavename, O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);

    fprintf(out, "PORT %s\n", pty.pty.slavename);
    fflush(out);
    release_notes();
    fprintf(stderr, "simboard: %s, %s at %u Hz, %s%s\n", elf_path, fw.mmcu,
            (unsigned)avr->frequency, realtime ? "realtime" : "fast",
            seconds > 0.0 ? "" : ", until SIGINT/SIGTERM");

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    limit_ns = seconds > 0.0 ? (uint64_t)(seconds * 1e9) : 0;
    check_cycles = avr_hz_to_cycles(avr, THROTTLE_HZ);
    next_check = avr->cycle + check_cycles;
    wall0 = monotonic_ns();

    for (;;) {
        state = avr_run(avr);
        if (state == cpu_Done || state == cpu_Crashed) {
            fprintf(stderr, "simboard: the firmware %s at %.6f s of simulated time\n",
                    state == cpu_Done ? "stopped (sleep with interrupts off)" : "crashed",
                    (double)avr_cycles_to_nsec(avr, avr->cycle) * 1e-9);
            exit_code = 1;
            break;
        }
        if (stop_requested)
            break;
        if (avr->cycle >= next_check) {
            uint64_t sim_ns = avr_cycles_to_nsec(avr, avr->cycle);
            next_check = avr->cycle + check_cycles;
            if (limit_ns && sim_ns >= limit_ns)
                break;
            pace_output(&pty, probe_fd);
            if (realtime) {
                uint64_t wall_ns = monotonic_ns() - wall0;
                if (sim_ns > wall_ns)
                    sleep_ns(sim_ns - wall_ns);
            }
        }
    }

    /* uart_pty's thread may hold bytes for the pty; the process exit ends
       it (uart_pty_stop could block on a pty that nobody reads) */
    remove_link(pty.pty.slavename);
    fclose(out);
    return exit_code;
}
