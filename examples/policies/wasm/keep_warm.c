/* keep_warm: a wl routing and keep-alive policy as a WebAssembly module (ABI "wl-policy v1").

Build (examples/Makefile does this: `make -C examples policies`):
    clang --target=wasm32-wasi --sysroot=/usr -mexec-model=reactor -O2 -Wl,--stack-first -s \
        -o build/policies/keep_warm.wasm policies/wasm/keep_warm.c
Run:
    wl sim replay --trace TRACE --policy wasm:examples/build/policies/keep_warm.wasm
    wl policy set wasm:/abs/path/to/keep_warm.wasm

Decisions:
  route:   the warmest idle instance (the one idle for the shortest time); else the busy
           instance with the shortest expected wait, if that wait is below the cold-start
           estimate; else spawn (or, at max_instances, queue on the best busy instance, or
           reject with retry after 1 s when there is none).
  on_idle: invoke the next queued request; else stay warm until idle for KEEP_MS, then kill.

The ABI (the host is policies/wasm.py; its docstring is the reference). The module exports
`memory`, `wl_policy_v1_buffer(n) -> ptr` (a buffer of at least n doubles), `wl_route(n)` and
`wl_on_idle(n)`. Before each call the host writes n doubles at the buffer:

  header (HEADER = 14 doubles)            instance records (RECORD = 8 doubles each, creation order)
   0 now_ms                                0 id
   1 payload_bytes (route; else 0)         1 state: 0 starting, 1 busy, 2 idle
   2 subject instance id (on_idle; else -1) 2 active executions
   3 function memory_mb                    3 queue length
   4 function concurrency                  4 ms in the current state (busy: since the running
   5 max_instances (-1 = no limit)            execution started; idle: idle ms; starting: since created)
   6 cold-start estimate, ms               5 memory_mb
   7 duration estimate for this payload, ms 6 completed invocations
   8 arrivals in the last 1 s              7 age, ms since created
   9 arrivals in the last 60 s
  10 arrivals in the last 600 s
  11 ms since the previous arrival (-1 = none)
  12 arrivals so far
  13 number of instance records that follow

The answer goes into the first two doubles of the same buffer: [action, argument], and the
call returns 0. route: 0 assign to instance id `argument`, 1 spawn, 2 reject (retry after
`argument` ms). on_idle: 3 invoke the next queued request, 4 keep alive `argument` ms, 5 kill.
*/

#include <stdlib.h>

#define HEADER 14
#define RECORD 8
#define KEEP_MS (5.0 * 60.0 * 1000.0) /* stay warm for 5 minutes after the last execution */

enum { STARTING = 0, BUSY = 1, IDLE = 2 };
enum { ASSIGN = 0, SPAWN = 1, REJECT = 2, INVOKE = 3, KEEP_ALIVE = 4, KILL = 5 };

static double *buffer;
static int capacity;

__attribute__((export_name("wl_policy_v1_buffer"))) double *wl_policy_v1_buffer(int n) {
    if (n > capacity) {
        double *grown = realloc(buffer, (size_t)n * sizeof(double));
        if (grown == NULL) return NULL; /* the host reports a buffer outside memory */
        buffer = grown;
        capacity = n;
    }
    return buffer;
}

static int answer(double action, double argument) {
    buffer[0] = action;
    buffer[1] = argument;
    return 0;
}

__attribute__((export_name("wl_route"))) int wl_route(int n) {
    const double *h = buffer;
    int count = (int)h[13];
    if (n < HEADER || HEADER + count * RECORD > n) return 1;
    double cold_ms = h[6], duration_ms = h[7], concurrency = h[4], max_instances = h[5];
    double best_idle = -1, best_idle_ms = 0, best_busy = -1, best_wait = 0;
    for (int i = 0; i < count; i++) {
        const double *r = buffer + HEADER + i * RECORD;
        if (r[1] == IDLE) {
            if (best_idle < 0 || r[4] <= best_idle_ms) { best_idle = r[0]; best_idle_ms = r[4]; }
        } else if (r[1] == BUSY) {
            double remaining = duration_ms - r[4];
            if (remaining < 0) remaining = 0;
            if (r[2] < concurrency) remaining = 0; /* a free slot: runs at once */
            double wait = remaining + r[3] * duration_ms;
            if (best_busy < 0 || wait < best_wait) { best_busy = r[0]; best_wait = wait; }
        }
    }
    if (best_idle >= 0) return answer(ASSIGN, best_idle);
    if (best_busy >= 0 && best_wait < cold_ms) return answer(ASSIGN, best_busy);
    if (max_instances >= 0 && count >= max_instances) {
        if (best_busy >= 0) return answer(ASSIGN, best_busy);
        return answer(REJECT, 1000.0);
    }
    return answer(SPAWN, 0);
}

__attribute__((export_name("wl_on_idle"))) int wl_on_idle(int n) {
    const double *h = buffer;
    int count = (int)h[13];
    if (n < HEADER || HEADER + count * RECORD > n) return 1;
    for (int i = 0; i < count; i++) {
        const double *r = buffer + HEADER + i * RECORD;
        if (r[0] != h[2]) continue;
        if (r[3] > 0) return answer(INVOKE, 0);
        double idle_ms = r[1] == IDLE ? r[4] : 0;
        double remaining = KEEP_MS - idle_ms;
        if (remaining > 1e-3) return answer(KEEP_ALIVE, remaining);
        return answer(KILL, 0);
    }
    return 2; /* the subject is always among the records: a host bug */
}
