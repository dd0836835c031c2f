// hello: ABI 1 (WASI command) in AssemblyScript.
// Request: a name (UTF-8 text; empty means "world"). Response: a greeting that also shows
// the invocation metadata the node passes in environment variables.
import { env, readRequestText, respond } from "./wl";

let name = readRequestText().trim();
if (name.length == 0) name = "world";
respond(
  "Hello, " + name + "! (function " + env("WL_FUNCTION", "?") +
  ", request " + env("WL_REQUEST_ID", "?") + ")\n",
);
