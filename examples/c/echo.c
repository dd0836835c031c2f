/* echo: ABI 1 (WASI command). Copies the request body (stdin) to the response (stdout).
 *
 * The smallest useful wl function, and the one the benchmarks use to measure what the
 * platform itself costs. The same source builds natively for the process-per-request
 * baseline. */
#include <stdio.h>
#include <unistd.h>

/* Static, not on the stack: a wasm32-wasi program's stack is only 64 KiB. */
static char buffer[64 * 1024];

int main(void) {
    for (;;) {
        ssize_t got = read(STDIN_FILENO, buffer, sizeof buffer);
        if (got == 0) return 0;
        if (got < 0) {
            perror("echo: reading the request");
            return 1;
        }
        for (ssize_t done = 0; done < got;) {
            ssize_t put = write(STDOUT_FILENO, buffer + done, (size_t)(got - done));
            if (put <= 0) {
                perror("echo: writing the response");
                return 1;
            }
            done += put;
        }
    }
}
