/* json_transform: ABI 1 (WASI command). A small JSON-in, JSON-out function.
 *
 * Request: a JSON object (UTF-8, RFC 8259).
 * Response: the same object, compact, with every string value at any depth upper-cased
 * (ASCII letters only; keys, escapes and non-ASCII text are left as they are), and one
 * field added at the end of the top-level object:
 *     "_wl": {"function": $WL_FUNCTION, "request_id": $WL_REQUEST_ID, "fields": <count>}
 * where <count> is the number of top-level fields in the request and the two env vars are
 * the invocation metadata the node passes (null when unset).
 *
 * Bad input (not JSON, not an object, invalid UTF-8, nesting deeper than 64, a "_wl" field)
 * writes nothing to stdout, names the problem and its line/column on stderr, and exits 1,
 * which the platform reports as a function error. No JSON library: a recursive-descent
 * validator that writes its output as it goes. */
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_DEPTH 64

typedef struct {
    char *data;
    size_t length, capacity;
} Buffer;

typedef struct {
    const unsigned char *text;
    size_t length, pos;
    Buffer out;
    char error[256];
    size_t error_pos;
} Parser;

static void out_of_memory(void) {
    fputs("json_transform: out of memory (request too large for the function's memory limit)\n", stderr);
    exit(1);
}

static void put(Buffer *b, const void *bytes, size_t n) {
    if (b->length + n > b->capacity) {
        size_t capacity = b->capacity ? b->capacity : 256;
        while (capacity < b->length + n) capacity *= 2;
        char *grown = realloc(b->data, capacity);
        if (!grown) out_of_memory();
        b->data = grown;
        b->capacity = capacity;
    }
    memcpy(b->data + b->length, bytes, n);
    b->length += n;
}

static void put_char(Buffer *b, char c) { put(b, &c, 1); }
static void put_str(Buffer *b, const char *s) { put(b, s, strlen(s)); }

/* Records the first error only; returns false so callers can `return fail(...)`. */
static bool fail(Parser *p, const char *format, ...) {
    if (p->error[0]) return false;
    va_list args;
    va_start(args, format);
    vsnprintf(p->error, sizeof p->error, format, args);
    va_end(args);
    p->error_pos = p->pos;
    return false;
}

/* What is at the current position, for error messages. */
static const char *found(Parser *p) {
    static char description[32];
    if (p->pos >= p->length) return "end of input";
    unsigned char c = p->text[p->pos];
    if (c >= 0x20 && c < 0x7f) snprintf(description, sizeof description, "'%c'", c);
    else snprintf(description, sizeof description, "byte 0x%02x", c);
    return description;
}

static void skip_whitespace(Parser *p) {
    while (p->pos < p->length) {
        unsigned char c = p->text[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        p->pos++;
    }
}

/* Length of the valid UTF-8 sequence starting at s (a byte >= 0x80), or 0 if invalid. */
static size_t utf8_sequence_length(const unsigned char *s, size_t available) {
    unsigned char lead = s[0];
    size_t n;
    unsigned char low = 0x80, high = 0xbf; /* allowed range of the second byte */
    if (lead >= 0xc2 && lead <= 0xdf) n = 2;
    else if (lead >= 0xe0 && lead <= 0xef) {
        n = 3;
        if (lead == 0xe0) low = 0xa0;
        if (lead == 0xed) high = 0x9f; /* no UTF-16 surrogates */
    } else if (lead >= 0xf0 && lead <= 0xf4) {
        n = 4;
        if (lead == 0xf0) low = 0x90;
        if (lead == 0xf4) high = 0x8f;
    } else return 0;
    if (available < n) return 0;
    if (s[1] < low || s[1] > high) return 0;
    for (size_t i = 2; i < n; i++)
        if (s[i] < 0x80 || s[i] > 0xbf) return 0;
    return n;
}

static bool is_hex(unsigned char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* Parses a string at p->pos (which is '"'); copies it to out, upper-cased if asked. */
static bool parse_string(Parser *p, bool uppercase) {
    size_t start = p->pos++;
    put_char(&p->out, '"');
    while (p->pos < p->length) {
        unsigned char c = p->text[p->pos];
        if (c == '"') {
            p->pos++;
            put_char(&p->out, '"');
            return true;
        }
        if (c < 0x20) return fail(p, "control character (byte 0x%02x) inside a string; escape it", c);
        if (c == '\\') {
            if (p->pos + 1 >= p->length) break;
            unsigned char e = p->text[p->pos + 1];
            size_t n = 2;
            if (e == 'u') {
                for (size_t i = 2; i < 6; i++)
                    if (p->pos + i >= p->length || !is_hex(p->text[p->pos + i]))
                        return fail(p, "bad \\u escape: expected 4 hex digits");
                n = 6;
            } else if (!strchr("\"\\/bfnrt", e) || e == '\0') {
                return fail(p, "bad escape '\\%c' in a string", e >= 0x20 && e < 0x7f ? e : '?');
            }
            put(&p->out, p->text + p->pos, n);
            p->pos += n;
            continue;
        }
        if (c >= 0x80) {
            size_t n = utf8_sequence_length(p->text + p->pos, p->length - p->pos);
            if (n == 0) return fail(p, "invalid UTF-8 (byte 0x%02x) inside a string", c);
            put(&p->out, p->text + p->pos, n);
            p->pos += n;
            continue;
        }
        put_char(&p->out, uppercase && c >= 'a' && c <= 'z' ? (char)(c - 'a' + 'A') : (char)c);
        p->pos++;
    }
    p->pos = start;
    return fail(p, "unterminated string");
}

static bool digits(Parser *p) {
    size_t start = p->pos;
    while (p->pos < p->length && p->text[p->pos] >= '0' && p->text[p->pos] <= '9') p->pos++;
    return p->pos > start;
}

static bool parse_number(Parser *p) {
    size_t start = p->pos;
    if (p->text[p->pos] == '-') p->pos++;
    if (p->pos < p->length && p->text[p->pos] == '0') p->pos++;
    else if (!digits(p)) return fail(p, "bad number: expected a digit, found %s", found(p));
    if (p->pos < p->length && p->text[p->pos] == '.') {
        p->pos++;
        if (!digits(p)) return fail(p, "bad number: expected a digit after '.', found %s", found(p));
    }
    if (p->pos < p->length && (p->text[p->pos] == 'e' || p->text[p->pos] == 'E')) {
        p->pos++;
        if (p->pos < p->length && (p->text[p->pos] == '+' || p->text[p->pos] == '-')) p->pos++;
        if (!digits(p)) return fail(p, "bad number: expected a digit in the exponent, found %s", found(p));
    }
    put(&p->out, p->text + start, p->pos - start);
    return true;
}

static bool parse_literal(Parser *p, const char *word) {
    size_t n = strlen(word);
    if (p->length - p->pos < n || memcmp(p->text + p->pos, word, n) != 0)
        return fail(p, "expected a JSON value, found %s", found(p));
    put(&p->out, word, n);
    p->pos += n;
    return true;
}

static bool parse_value(Parser *p, int depth);

/* Parses an object at p->pos ('{'). At the top level, counts fields and leaves the closing
 * brace for the caller, which appends the "_wl" field first. */
static bool parse_object(Parser *p, int depth, size_t *field_count) {
    bool top = field_count != NULL;
    p->pos++;
    put_char(&p->out, '{');
    size_t fields = 0;
    skip_whitespace(p);
    if (p->pos < p->length && p->text[p->pos] == '}') {
        p->pos++;
    } else {
        for (;;) {
            skip_whitespace(p);
            if (p->pos >= p->length || p->text[p->pos] != '"')
                return fail(p, "expected a field name (a string), found %s", found(p));
            if (top && p->length - p->pos >= 5 && memcmp(p->text + p->pos, "\"_wl\"", 5) == 0)
                return fail(p, "field \"_wl\" is reserved for the platform's metadata");
            if (!parse_string(p, false)) return false;
            skip_whitespace(p);
            if (p->pos >= p->length || p->text[p->pos] != ':')
                return fail(p, "expected ':' after a field name, found %s", found(p));
            p->pos++;
            put_char(&p->out, ':');
            if (!parse_value(p, depth + 1)) return false;
            fields++;
            skip_whitespace(p);
            if (p->pos < p->length && p->text[p->pos] == ',') {
                p->pos++;
                put_char(&p->out, ',');
                continue;
            }
            if (p->pos < p->length && p->text[p->pos] == '}') {
                p->pos++;
                break;
            }
            return fail(p, "expected ',' or '}' in an object, found %s", found(p));
        }
    }
    if (top) *field_count = fields;
    else put_char(&p->out, '}');
    return true;
}

static bool parse_array(Parser *p, int depth) {
    p->pos++;
    put_char(&p->out, '[');
    skip_whitespace(p);
    if (p->pos < p->length && p->text[p->pos] == ']') {
        p->pos++;
        put_char(&p->out, ']');
        return true;
    }
    for (;;) {
        if (!parse_value(p, depth + 1)) return false;
        skip_whitespace(p);
        if (p->pos < p->length && p->text[p->pos] == ',') {
            p->pos++;
            put_char(&p->out, ',');
            continue;
        }
        if (p->pos < p->length && p->text[p->pos] == ']') {
            p->pos++;
            put_char(&p->out, ']');
            return true;
        }
        return fail(p, "expected ',' or ']' in an array, found %s", found(p));
    }
}

static bool parse_value(Parser *p, int depth) {
    if (depth > MAX_DEPTH) return fail(p, "nesting deeper than %d levels", MAX_DEPTH);
    skip_whitespace(p);
    if (p->pos >= p->length) return fail(p, "expected a JSON value, found end of input");
    unsigned char c = p->text[p->pos];
    if (c == '{') return parse_object(p, depth, NULL);
    if (c == '[') return parse_array(p, depth);
    if (c == '"') return parse_string(p, true);
    if (c == '-' || (c >= '0' && c <= '9')) return parse_number(p);
    if (c == 't') return parse_literal(p, "true");
    if (c == 'f') return parse_literal(p, "false");
    if (c == 'n') return parse_literal(p, "null");
    return fail(p, "expected a JSON value, found %s", found(p));
}

/* Appends a JSON string (or null) for an environment variable's value. */
static void put_json_env(Buffer *b, const char *name) {
    const char *value = getenv(name);
    if (!value) {
        put_str(b, "null");
        return;
    }
    put_char(b, '"');
    for (const unsigned char *s = (const unsigned char *)value; *s; s++) {
        if (*s == '"' || *s == '\\') {
            put_char(b, '\\');
            put_char(b, (char)*s);
        } else if (*s < 0x20) {
            char escaped[8];
            snprintf(escaped, sizeof escaped, "\\u%04x", *s);
            put_str(b, escaped);
        } else {
            put_char(b, (char)*s);
        }
    }
    put_char(b, '"');
}

static unsigned char *read_all(int fd, size_t *length) {
    Buffer b = {0};
    /* Static, not on the stack: a wasm32-wasi program's stack is only 64 KiB. */
    static char chunk[64 * 1024];
    for (;;) {
        ssize_t got = read(fd, chunk, sizeof chunk);
        if (got < 0) {
            perror("json_transform: reading the request");
            exit(1);
        }
        if (got == 0) break;
        put(&b, chunk, (size_t)got);
    }
    *length = b.length;
    return (unsigned char *)b.data;
}

static int report(Parser *p) {
    size_t line = 1, column = 1;
    for (size_t i = 0; i < p->error_pos && i < p->length; i++) {
        if (p->text[i] == '\n') {
            line++;
            column = 1;
        } else {
            column++;
        }
    }
    fprintf(stderr, "json_transform: invalid request at line %zu, column %zu (byte %zu): %s\n",
            line, column, p->error_pos, p->error);
    return 1;
}

int main(void) {
    Parser p = {0};
    p.text = read_all(STDIN_FILENO, &p.length);
    skip_whitespace(&p);
    if (p.pos >= p.length) {
        fail(&p, "empty request; expected a JSON object");
        return report(&p);
    }
    if (p.text[p.pos] != '{') {
        fail(&p, "expected a JSON object ('{'), found %s", found(&p));
        return report(&p);
    }
    size_t fields = 0;
    if (!parse_object(&p, 1, &fields)) return report(&p);
    skip_whitespace(&p);
    if (p.pos < p.length) {
        fail(&p, "unexpected %s after the JSON object", found(&p));
        return report(&p);
    }

    if (fields > 0) put_char(&p.out, ',');
    put_str(&p.out, "\"_wl\":{\"function\":");
    put_json_env(&p.out, "WL_FUNCTION");
    put_str(&p.out, ",\"request_id\":");
    put_json_env(&p.out, "WL_REQUEST_ID");
    char count[32];
    snprintf(count, sizeof count, ",\"fields\":%zu}}\n", fields);
    put_str(&p.out, count);

    if (fwrite(p.out.data, 1, p.out.length, stdout) != p.out.length || fflush(stdout) != 0) {
        perror("json_transform: writing the response");
        return 1;
    }
    return 0;
}
