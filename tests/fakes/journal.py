"""One sequence that several stand-ins write to, in the order their requests arrive.

Why: "the bot showed a sign before it asked the LLM" is a statement about order across two
servers. Time stamps would make it a timed assertion; a shared list written on each request's
arrival (all stand-ins run on the test's event loop, so appends never interleave) states the
order itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Journal"]


@dataclass
class Journal:
    """``(source, what)`` of every request the stand-ins that share it received, in order."""

    entries: list[tuple[str, str]] = field(default_factory=list)

    def record(self, source: str, what: str) -> None:
        self.entries.append((source, what))

    def first(self, source: str, what: str | None = None) -> int:
        """The position of ``source``'s first entry (``what`` it was, when given); ValueError
        when there is none."""
        for n, (s, w) in enumerate(self.entries):
            if s == source and (what is None or w == what):
                return n
        raise ValueError(f"no {source} {what or ''} entry in {self.entries}")
