"""counter: ABI 2 (a component implementing protos/handler.wit), built with componentize-py.

Counts the invocations its instance has served and returns the count as decimal text:
"1" on a cold start, then "2", "3", ... while the instance stays warm. A new instance starts
again at "1". That makes keep-alive visible: module-level state lives as long as the
instance, like a warm Lambda's globals (a loaded model, a connection pool, a cache).
"""

import wit_world

invocations = 0


class WitWorld(wit_world.WitWorld):
    def handle(self, request: bytes, metadata: list[tuple[str, str]]) -> bytes:
        global invocations
        invocations += 1
        return str(invocations).encode()
