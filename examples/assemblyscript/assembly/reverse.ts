// reverse: ABI 1 (WASI command) in AssemblyScript.
// Request: UTF-8 text. Response: the same text with its characters (Unicode code points)
// in reverse order. Invalid UTF-8 is a function error (exit 1, message on stderr).
import { fail, readRequest, respondBytes, validUtf8 } from "./wl";

/** Reverses the code points of valid UTF-8, working on the bytes: each sequence (1 to 4
 * bytes, its length told by its lead byte) is copied to the mirrored position. */
function reverseUtf8(text: Uint8Array): Uint8Array {
  const n = text.length;
  const reversed = new Uint8Array(n);
  let i = 0;
  while (i < n) {
    const lead = text[i];
    const width = lead < 0x80 ? 1 : lead < 0xe0 ? 2 : lead < 0xf0 ? 3 : 4;
    reversed.set(text.subarray(i, i + width), n - i - width);
    i += width;
  }
  return reversed;
}

const request = readRequest();
if (!validUtf8(request)) fail("request is not valid UTF-8 text");
respondBytes(reverseUtf8(request));
