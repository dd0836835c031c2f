// {{name}}: a wl function (ABI 1, a WASI command) in AssemblyScript: the request body is
// stdin, the response is stdout, stderr is the invocation's log; exit 1 is a function error.
// `process` is @assemblyscript/wasi-shim's WASI implementation (see asconfig.json).

const body = new Uint8Array(64 * 1024);
let length = 0;
for (;;) {
  const got = process.stdin.read(body.buffer, length);
  if (got == 0 || length + got >= body.length) break;
  length += got;
}
let who = String.UTF8.decode(body.slice(0, length).buffer).trim();
if (who.length == 0) who = "world";
const fn = process.env.has("WL_FUNCTION") ? process.env.get("WL_FUNCTION") : "{{name}}";
process.stdout.write("Hello, " + who + "! (from " + fn + ")\n");
process.stderr.write("{{name}}: answered " + length.toString() + " bytes\n");
