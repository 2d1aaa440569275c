"""CheckpointError: what a checkpoint lacks or has too much of, and what to do about it."""
from __future__ import annotations

SHOW = 25  # keys listed per category in an error message


class CheckpointError(RuntimeError):
    """A checkpoint does not match the model: lists what is missing, unexpected or mis-shaped, and what to do."""

    def __init__(self, source: str, missing: list[str] = (), unexpected: list[str] = (),
                 mis_shaped: list[str] = (), hint: str = ""):
        self.missing, self.unexpected, self.mis_shaped = list(missing), list(unexpected), list(mis_shaped)
        parts = [f"{source} does not match the model"]
        for name, keys in (("missing", self.missing), ("unexpected", self.unexpected),
                           ("mis-shaped", self.mis_shaped)):
            if keys:
                more = f" (+{len(keys) - SHOW} more)" if len(keys) > SHOW else ""
                parts.append(f"{len(keys)} {name}: " + ", ".join(keys[:SHOW]) + more)
        if hint:
            parts.append(hint)
        super().__init__("\n  ".join(parts))
