/* {{name}}: a wl function (ABI 1, a WASI command): the request body is stdin, the response is
 * stdout, stderr is the invocation's log, and a non-zero exit is a function error. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char request[64 * 1024]; /* static: a wasm32-wasi stack is only 64 KiB */

int main(void) {
    size_t length = fread(request, 1, sizeof request - 1, stdin);
    if (ferror(stdin)) {
        perror("{{name}}: reading the request");
        return 1;
    }
    request[length] = '\0';
    const char *function = getenv("WL_FUNCTION");
    printf("Hello, %s! (from %s)\n", length ? request : "world", function ? function : "{{name}}");
    fprintf(stderr, "{{name}}: answered %zu bytes\n", length);
    return 0;
}
