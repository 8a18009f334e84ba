"""Incremental Server-Sent Events decoding, on bytes and plain strings.

Why our own decoder instead of ``httpx-sse``: ``benchmarks/stream_decode.py`` measures it. httpx-sse
builds on ``aiter_lines()`` and an object per event; this decoder splits whole network reads at
once and hands out ``(event, data)`` tuples, which keeps the per-chunk cost near a bare
``aiter_lines()`` + ``json.loads`` loop.

Correct for every way bytes can arrive: a read may end anywhere — inside a line, inside a UTF-8
character (we only decode up to the last ``\\n``, and ``\\n`` never occurs inside a multi-byte
character), between ``\\r`` and ``\\n``. Line endings ``\\r\\n``, ``\\n`` and ``\\r`` are all accepted,
comment lines (``:keep-alive``) are skipped, multi-line ``data:`` fields are joined with ``\\n`` as the
SSE spec says, and a leading byte-order mark is dropped.

Bounded and linear: one event may hold at most ``max_event_bytes`` (its lines, each line ending
counted as one byte, the blank line that ends it not counted; comment lines count too), else
:class:`~llmconnect.errors.EventTooLargeError`. An unfinished line is kept as the pieces it arrived
in and joined once when it ends, so a long line costs linear time, not a copy per read.
"""

from __future__ import annotations

from collections.abc import Iterator

from .errors import EventTooLargeError

__all__ = ["DEFAULT_MAX_EVENT_BYTES", "SSEDecoder"]

_BOM = "\ufeff"
#: 1 MiB: far above any real chunk (a few hundred bytes), far below what hurts memory.
DEFAULT_MAX_EVENT_BYTES = 1 << 20


def _blank_lines(chunk: bytes, n: int) -> Iterator[int]:
    """Where the blank lines of ``chunk[:n]`` are (``chunk`` starts at the start of a line)."""
    if chunk[:1] == b"\n":
        yield 0
    i = chunk.find(b"\n\n", 0, n)
    while i >= 0:
        yield i + 1
        i = chunk.find(b"\n\n", i + 1, n)


class SSEDecoder:
    """Feed raw bytes, get complete events as ``(event_name, data)`` tuples.

    ``event_name`` is ``""`` when the event had no ``event:`` line (OpenAI and Gemini never send
    one), so callers can test it cheaply. Events without any ``data:`` line are not dispatched.
    """

    __slots__ = (
        "_after_cr",
        "_data",
        "_event",
        "_held",
        "_limit",
        "_pending",
        "_pending_size",
        "_started",
        "last_event_id",
        "retry",
    )

    def __init__(self, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        #: The unfinished line, as the pieces it arrived in (joined once, when it ends).
        self._pending: list[bytes] = []
        self._pending_size = 0
        #: Bytes of the unfinished event's complete lines. Never 0 while ``_data`` or ``_event``
        #: holds something, which is what lets the hot path test this one number.
        self._held = 0
        self._limit = max_event_bytes
        self._after_cr = False
        self._started = False
        self._event = ""
        self._data: list[str] = []
        self.last_event_id = ""
        self.retry: int | None = None

    @property
    def buffered(self) -> int:
        """Bytes of the unfinished line held until its line ending arrives."""
        return self._pending_size

    def feed(self, chunk: bytes) -> list[tuple[str, str]]:
        """Decode one network read; returns the events it completed (often zero or one)."""
        if self._after_cr:
            # The previous read ended on "\r": a "\n" starting this one belongs to that "\r\n".
            self._after_cr = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        if b"\r" in chunk:  # on this read only: what is pending was normalised already
            self._after_cr = chunk[-1:] == b"\r"
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        end = chunk.rfind(b"\n")
        if end < 0:
            if chunk:
                self._pending.append(chunk)
                self._pending_size += len(chunk)
                if self._held + self._pending_size > self._limit:
                    self._too_large(self._held + self._pending_size)
            return []
        if self._pending:
            # The unfinished line ends in this read: one join, however many reads it took.
            self._pending.append(chunk)
            end += self._pending_size
            chunk = b"".join(self._pending)
            self._pending.clear()
            self._pending_size = 0
        if end + 1 < len(chunk):
            self._pending.append(chunk[end + 1 :])
            self._pending_size = len(chunk) - end - 1
        text = chunk[:end].decode("utf-8", "replace")
        if not self._started:
            self._started = True
            if text.startswith(_BOM):
                text = text[1:]
        if (
            not self._held
            and len(chunk) <= self._limit
            and text.startswith("data: ")
            and text.endswith("\n")
            and text.count("\n") == 1
        ):
            # Hot path: a read holding exactly one whole one-line event ("data: ...\n\n"), no
            # larger than the limit, so neither it nor the start of the next one is too large.
            return [("", text[6:-1])]
        self._count(chunk, end + 1)
        return self._lines(text.split("\n"))

    def flush(self) -> list[tuple[str, str]]:
        """End of stream: dispatch what is pending.

        The spec drops an event not ended by a blank line; we deliver it instead, because some
        servers close the stream right after the last ``data:`` line and that line is the answer.
        """
        lines = []
        if self._pending:
            lines.append(b"".join(self._pending).decode("utf-8", "replace"))
            self._pending.clear()
            self._pending_size = 0
        lines.append("")
        self._held = 0
        return self._lines(lines)

    def _count(self, chunk: bytes, n: int) -> None:
        """Account for the complete lines ``chunk[:n]``: every event they end must fit, and so
        must what they leave unfinished (plus the pending partial line)."""
        held, limit = self._held, self._limit
        if held + n <= limit:
            # Nothing in here can be too large: only find where the last event ended.
            last = chunk.rfind(b"\n\n", 0, n)
            if last >= 0:
                held = n - last - 2
            elif chunk[:1] == b"\n":  # a blank line first: it ends the previous event
                held = n - 1
            else:
                held += n
        else:
            start = 0
            for blank in _blank_lines(chunk, n):
                if held + blank - start > limit:
                    self._too_large(held + blank - start)
                held, start = 0, blank + 1
            held += n - start
        if held + self._pending_size > limit:
            self._too_large(held + self._pending_size)
        self._held = held

    def _too_large(self, size: int) -> None:
        raise EventTooLargeError(
            f"an event of over {self._limit} bytes (at least {size}) in the stream",
            user_message=(
                f"The provider sent a reply piece larger than allowed ({self._limit} bytes)."
            ),
        )

    def _lines(self, lines: list[str]) -> list[tuple[str, str]]:
        events: list[tuple[str, str]] = []
        data = self._data
        for line in lines:
            if line.startswith("data:"):
                # Hot path: one data line per event for every provider we speak.
                data.append(line[6:] if line[5:6] == " " else line[5:])
            elif not line:
                if data:
                    events.append((self._event, data[0] if len(data) == 1 else "\n".join(data)))
                    data.clear()
                self._event = ""
            elif line[0] != ":":
                self._field(line)
        return events

    def _field(self, line: str) -> None:
        name, colon, value = line.partition(":")
        if colon and value[:1] == " ":
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":  # "data" without a colon: an empty data line
            self._data.append(value)
        elif name == "id":
            if "\0" not in value:
                self.last_event_id = value
        elif name == "retry" and value.isdigit():
            self.retry = int(value)
