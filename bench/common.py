"""What the benchmark scripts share."""

from __future__ import annotations

import re

# `listserv serve`'s first line (listserv/cli/serve.py): "listserv listening on HOST:PORT; copies
# go to relay HOST:PORT" or "...; copies go to the outbox PATH". The port is the first one.
_SERVE_LISTENING = re.compile(r"^listserv listening on (\S+):(\d+)(;|$)")


def serve_port(line: str) -> int | None:
    """The port `listserv serve` listens on, from its first line; None for any other line."""
    found = _SERVE_LISTENING.match(line.strip())
    return int(found.group(2)) if found else None
