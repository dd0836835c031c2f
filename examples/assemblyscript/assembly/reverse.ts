// reverse: ABI 1 (WASI command) in AssemblyScript.
// Request: UTF-8 text. Response: the same text with its characters (Unicode code points)
// in reverse order. Invalid UTF-8 is a function error (exit 1, message on stderr).
import { readRequestText, respond } from "./wl";

function reverseCodePoints(text: string): string {
  const parts = new Array<string>();
  let i = 0;
  while (i < text.length) {
    const unit = text.charCodeAt(i);
    // A high surrogate starts a two-unit code point: keep the pair together.
    const width = unit >= 0xd800 && unit <= 0xdbff && i + 1 < text.length ? 2 : 1;
    parts.push(text.substr(i, width));
    i += width;
  }
  parts.reverse();
  return parts.join("");
}

respond(reverseCodePoints(readRequestText()));
