// Helpers for wl's ABI 1 (a WASI command): the request body is stdin, the response is
// stdout, stderr is the invocation's log, and a non-zero exit is a function error.
// `process` here is @assemblyscript/wasi-shim's WASI implementation (see asconfig.json).

const CHUNK = 64 * 1024;

/** Reads the whole request body from stdin. */
export function readRequest(): Uint8Array {
  let body = new Uint8Array(CHUNK);
  let length = 0;
  for (;;) {
    if (length == body.length) {
      const grown = new Uint8Array(body.length * 2);
      grown.set(body);
      body = grown;
    }
    // read() fills the buffer from an offset and returns how many bytes it read; 0 is EOF.
    const got = process.stdin.read(body.buffer, length);
    if (got == 0) break;
    length += got;
  }
  return body.subarray(0, length);
}

/** Decodes the request as UTF-8 text, failing the invocation if it is not valid UTF-8. */
export function readRequestText(): string {
  const body = readRequest();
  if (!validUtf8(body)) fail("request is not valid UTF-8 text");
  return String.UTF8.decode(body.slice(0).buffer);
}

/** True if `bytes` is valid UTF-8. The decoder replaces invalid sequences with U+FFFD, so a
 * lossless decode/encode round trip proves validity. */
export function validUtf8(bytes: Uint8Array): bool {
  const copy = bytes.slice(0).buffer;
  return sameBytes(String.UTF8.encode(String.UTF8.decode(copy)), copy);
}

/** Writes text to stdout as UTF-8. */
export function respond(text: string): void {
  process.stdout.write(text);
}

/** Writes raw bytes to stdout. */
export function respondBytes(body: Uint8Array): void {
  process.stdout.write(body.slice(0).buffer);
}

/** Reports a function error: the message goes to stderr (the log) and the exit code is 1. */
export function fail(message: string): void {
  process.stderr.write(message + "\n");
  process.exit(1);
}

/** A metadata value the node passes as an environment variable, or `fallback`. */
export function env(name: string, fallback: string = ""): string {
  return process.env.has(name) ? process.env.get(name) : fallback;
}

function sameBytes(a: ArrayBuffer, b: ArrayBuffer): bool {
  if (a.byteLength != b.byteLength) return false;
  return memory.compare(changetype<usize>(a), changetype<usize>(b), a.byteLength) == 0;
}
