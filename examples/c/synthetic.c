/* synthetic: ABI 1 (WASI command). Reproduces one trace row: runs for the row's duration and
 * touches the row's memory, so `wl load` can replay any trace against the live platform.
 *
 * Request: "<duration_ms> <touch_mb> <mode>", e.g. "12.5 8 sleep"
 *   duration_ms  how long the invocation lasts (0 <= d <= 900000, fractions allowed)
 *   touch_mb     MB of linear memory to allocate and write (one byte per 4 KiB page, so the
 *                pages are really committed); must fit the function's configured memory
 *   mode         "sleep" (nanosleep: WASI poll_oneoff on a clock, holds no CPU) or
 *                "busy" (spins on the monotonic clock, holds one CPU for the duration)
 * Response: "ok <duration_ms> <touch_mb> <mode>\n".
 * The duration counts from the start of main (after instantiation), so the time the platform
 * adds around it is what wl measures as overhead.
 * Bad input: exit 1 with a message on stderr naming what is wrong. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_REQUEST 128
#define MAX_DURATION_MS 900000.0
#define PAGE 4096

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1000.0 + (double)t.tv_nsec / 1e6;
}

static int fail(const char *message, const char *request) {
    fprintf(stderr, "synthetic: %s (request: \"%s\"); expected \"<duration_ms> <touch_mb> <sleep|busy>\"\n",
            message, request);
    return 1;
}

int main(void) {
    double started = now_ms();
    char request[MAX_REQUEST + 1];
    size_t length = 0;
    for (;;) {
        ssize_t got = read(STDIN_FILENO, request + length, MAX_REQUEST + 1 - length);
        if (got < 0) {
            perror("synthetic: reading the request");
            return 1;
        }
        if (got == 0) break;
        length += (size_t)got;
        if (length > MAX_REQUEST) {
            fprintf(stderr, "synthetic: request longer than %d bytes\n", MAX_REQUEST);
            return 1;
        }
    }
    request[length] = '\0';

    double duration_ms = 0.0, touch_mb = 0.0;
    char mode[16] = "";
    if (sscanf(request, "%lf %lf %15s", &duration_ms, &touch_mb, mode) != 3)
        return fail("three fields needed", request);
    if (!(duration_ms >= 0.0 && duration_ms <= MAX_DURATION_MS)) return fail("duration_ms out of range", request);
    if (!(touch_mb >= 0.0 && touch_mb <= 16384.0)) return fail("touch_mb out of range", request);
    int busy = strcmp(mode, "busy") == 0;
    if (!busy && strcmp(mode, "sleep") != 0) return fail("mode must be sleep or busy", request);

    size_t bytes = (size_t)(touch_mb * 1048576.0);
    if (bytes > 0) {
        volatile unsigned char *memory = malloc(bytes);
        if (memory == NULL) return fail("cannot allocate touch_mb within the function's memory", request);
        for (size_t i = 0; i < bytes; i += PAGE) memory[i] = (unsigned char)i;
    }

    double deadline = started + duration_ms;
    if (busy) {
        while (now_ms() < deadline) {
        }
    } else {
        double left = deadline - now_ms();
        if (left > 0) {
            struct timespec t = {(time_t)(left / 1000.0), (long)((left - (double)(time_t)(left / 1000.0) * 1000.0) * 1e6)};
            nanosleep(&t, NULL);
        }
    }
    printf("ok %g %g %s\n", duration_ms, touch_mb, mode);
    return 0;
}
