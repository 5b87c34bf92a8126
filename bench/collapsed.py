"""Summarise a py-spy profile in raw (collapsed stack) format: where the samples went.

    py-spy record --pid PID --format raw --output serve.txt      # while the benchmark runs
    python bench/collapsed.py serve.txt [--top 25] [--match listserv]

Prints, per function, the share of samples in which it is on the stack (inclusive) and in
which it is the innermost frame (self). py-spy is a public tool (pip install py-spy).
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_LINE = re.compile(r"^(.*) (\d+)$")
_FRAME = re.compile(r"^(.*?) \((.*?)(?::\d+)?\)$")


def _name(frame: str) -> str:
    """'func (path/to/module.py:123)' -> 'func (module.py)'; thread markers as they are."""
    found = _FRAME.match(frame)
    if not found:
        return frame
    function, path = found.groups()
    return f"{function} ({'/'.join(path.split('/')[-2:])})"


# Frames worth showing in the inclusive list; the rest (asyncio, click, runpy, threads) is
# plumbing that sits under everything.
_INTERESTING = re.compile(r"\((listserv|stages|cli|aiosmtplib|aiosmtpd|tinydb|json|email)/|gnupg\.py|subprocess\.py")


def summarize(path: Path, top: int = 25, match: str = "") -> str:
    inclusive, exclusive = Counter(), Counter()
    total = 0
    for line in path.read_text().splitlines():
        found = _LINE.match(line)
        if not found:
            continue
        stack, count = found.group(1), int(found.group(2))
        frames = [_name(frame) for frame in stack.split(";") if frame]
        total += count
        for name in set(frames):
            inclusive[name] += count
        if frames:
            exclusive[frames[-1]] += count
    if not total:
        return f"{path}: no samples"
    lines = [f"{path.name}: {total} samples"]
    for title, counter in (("inclusive (on the stack)", inclusive), ("self (innermost frame)", exclusive)):
        lines.append(f"  {title}:")
        shown = 0
        for name, count in counter.most_common():
            if match and match not in name:
                continue
            if counter is inclusive and not match and not _INTERESTING.search(name):
                continue
            lines.append(f"    {100.0 * count / total:5.1f}%  {name}")
            shown += 1
            if shown >= top:
                break
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="Summarise a py-spy raw profile")
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--match", default="", help="only functions whose name contains this")
    args = parser.parse_args()
    for file in args.files:
        print(summarize(file, args.top, args.match))


if __name__ == "__main__":
    main()
