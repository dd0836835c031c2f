/* cpu_work: ABI 1 (WASI command). CPU-bound work whose duration is linear in the request.
 *
 * Request: a decimal integer n (0 <= n <= 100000000), surrounding whitespace allowed.
 * Response: "n=<n> hash=<16 hex digits>\n", the result of n rounds of a 64-bit mixing
 * function (1000 dependent multiply/xor-shift steps per round), so nothing can be skipped
 * or precomputed and the time taken is proportional to n. This gives duration prediction
 * something real to learn from a request's features.
 *
 * The same source builds natively (build/native/cpu_work) for the process-per-request
 * baseline; both builds print the same hash for the same n.
 * Bad input: exit 1 with a message on stderr naming what is wrong. */
#include <ctype.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_N 100000000ULL
#define STEPS_PER_ROUND 1000
#define MAX_REQUEST 64

/* splitmix64's finaliser: cheap, dependent, and not something a compiler can fold. */
static uint64_t mix(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

static uint64_t work(uint64_t n) {
    uint64_t state = 0x9e3779b97f4a7c15ULL ^ n;
    for (uint64_t round = 0; round < n; round++) {
        for (int step = 0; step < STEPS_PER_ROUND; step++) state = mix(state + round);
    }
    return state;
}

static int fail(const char *message, const char *request) {
    fprintf(stderr, "cpu_work: %s (request: \"%s\"); expected a decimal integer n, 0 <= n <= %llu\n",
            message, request, (unsigned long long)MAX_N);
    return 1;
}

int main(void) {
    char request[MAX_REQUEST + 1];
    size_t length = 0;
    for (;;) {
        ssize_t got = read(STDIN_FILENO, request + length, MAX_REQUEST + 1 - length);
        if (got < 0) {
            perror("cpu_work: reading the request");
            return 1;
        }
        if (got == 0) break;
        length += (size_t)got;
        if (length > MAX_REQUEST) {
            fprintf(stderr, "cpu_work: request longer than %d bytes; expected a decimal integer n\n",
                    MAX_REQUEST);
            return 1;
        }
    }
    request[length] = '\0';
    if (memchr(request, '\0', length) != NULL) return fail("request contains a NUL byte", "");

    /* Trim surrounding whitespace; what is left must be digits only. */
    char *start = request;
    while (*start && isspace((unsigned char)*start)) start++;
    char *end = request + length;
    while (end > start && isspace((unsigned char)end[-1])) end--;
    *end = '\0';
    if (start == end) return fail("empty request", start);

    uint64_t n = 0;
    for (const char *p = start; p < end; p++) {
        if (!isdigit((unsigned char)*p)) return fail("not a non-negative decimal integer", start);
        n = n * 10 + (uint64_t)(*p - '0');
        if (n > MAX_N) return fail("n is too large", start);
    }

    printf("n=%" PRIu64 " hash=%016" PRIx64 "\n", n, work(n));
    return 0;
}
