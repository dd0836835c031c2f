"""wordcount: ABI 2 (a component implementing protos/handler.wit), built with componentize-py.

Request: UTF-8 text. Response: JSON with the request's word, line and character counts, its
five most common words, and running totals kept in the warm instance (invocations served and
words seen by this instance). Metadata pairs the node passes (request id, function name...)
are echoed under "metadata".

Invalid UTF-8 is a function error: raising componentize_py_types.Err(message) returns the
WIT `err(message)` case, which the platform reports to the caller.
"""

import json
import re
from collections import Counter

import wit_world
from componentize_py_types import Err

WORD = re.compile(r"\w+(?:['’]\w+)*")

invocations = 0
total_words = 0


class WitWorld(wit_world.WitWorld):
    def handle(self, request: bytes, metadata: list[tuple[str, str]]) -> bytes:
        global invocations, total_words
        try:
            text = request.decode("utf-8")
        except UnicodeDecodeError as error:
            raise Err(f"request is not valid UTF-8 text: byte {error.start} (0x{request[error.start]:02x})")
        words = [word.lower() for word in WORD.findall(text)]
        counts = Counter(words)
        # Most common first, ties alphabetical. (Not Counter.most_common: it imports heapq
        # lazily, and componentize-py bundles only modules imported when the component is built.)
        top = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:5]
        invocations += 1
        total_words += len(words)
        result = {
            "words": len(words),
            "lines": len(text.splitlines()),
            "chars": len(text),
            "top": top,
            "instance": {"invocations": invocations, "total_words": total_words},
            "metadata": dict(metadata),
        }
        return json.dumps(result, ensure_ascii=False).encode()
