"""{{name}}: a wl function (ABI 2, a component of protos/handler.wit built with componentize-py).

Module-level state lives as long as the instance: it survives warm invocations (a loaded
model, a cache, a counter), like a warm Lambda's globals.
"""

import wit_world

served = 0


class WitWorld(wit_world.WitWorld):
    def handle(self, request: bytes, metadata: list[tuple[str, str]]) -> bytes:
        global served
        served += 1
        who = request.decode("utf-8", "replace").strip() or "world"
        return f"Hello, {who}! (invocation {served} of this instance)\n".encode()
