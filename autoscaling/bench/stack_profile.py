"""Where a process's samples go, from py-spy's collapsed stacks (`py-spy record --format raw`): each line
is `frame;frame;...;frame COUNT`, a frame `function (path:line)`. Pure: text in, shares out."""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

_FRAME = re.compile(r"^(?P<function>.*?) \((?P<path>[^:()]*)(?::\d+)?\)$")


@dataclass(frozen=True)
class Frame:
    function: str
    path: str  # relative to site-packages where it is under one

    @property
    def label(self) -> str:
        return f"{self.function} ({self.path})"


def parse_frame(text: str) -> Frame:
    match = _FRAME.match(text.strip())
    if match is None:
        return Frame(text.strip(), "")
    return Frame(match["function"], match["path"].split("/site-packages/")[-1])


def shares(collapsed: str, ours: str = "serve_app/", top: int = 15) -> dict:
    """Samples in all; the share of samples with a frame of `ours` anywhere on the stack (our code and
    what it calls); the top self frames (where the time is spent) and our top inclusive functions."""
    total = 0
    own: Counter[str] = Counter()
    ours_inclusive: Counter[str] = Counter()
    with_ours = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [parse_frame(f) for f in stack.split(";")]
        total += n
        own[frames[-1].label] += n
        ours_here = {f.label for f in frames if ours in f.path}
        with_ours += n if ours_here else 0
        for label in ours_here:
            ours_inclusive[label] += n

    def share(n: int) -> float:
        return round(n / total, 4) if total else 0.0

    return {"samples": total, "share_with_our_code": share(with_ours),
            "top_self": [{"frame": label, "share": share(n)} for label, n in own.most_common(top)],
            "our_top_inclusive": [{"frame": label, "share": share(n)} for label, n in ours_inclusive.most_common(top)]}
