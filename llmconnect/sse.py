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
"""

from __future__ import annotations

__all__ = ["SSEDecoder"]

_BOM = "\ufeff"


class SSEDecoder:
    """Feed raw bytes, get complete events as ``(event_name, data)`` tuples.

    ``event_name`` is ``""`` when the event had no ``event:`` line (OpenAI and Gemini never send
    one), so callers can test it cheaply. Events without any ``data:`` line are not dispatched.
    """

    __slots__ = ("_after_cr", "_data", "_event", "_started", "_tail", "last_event_id", "retry")

    def __init__(self) -> None:
        self._tail = b""
        self._after_cr = False
        self._started = False
        self._event = ""
        self._data: list[str] = []
        self.last_event_id = ""
        self.retry: int | None = None

    def feed(self, chunk: bytes) -> list[tuple[str, str]]:
        """Decode one network read; returns the events it completed (often zero or one)."""
        if self._after_cr:
            # The previous read ended on "\r": a "\n" starting this one belongs to that "\r\n".
            self._after_cr = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        if self._tail:
            chunk = self._tail + chunk
        if b"\r" in chunk:
            self._after_cr = chunk[-1:] == b"\r"
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        end = chunk.rfind(b"\n")
        if end < 0:
            self._tail = chunk
            return []
        self._tail = chunk[end + 1 :]
        text = chunk[:end].decode("utf-8", "replace")
        if not self._started:
            self._started = True
            if text.startswith(_BOM):
                text = text[1:]
        if (
            not self._data
            and not self._event
            and text.startswith("data: ")
            and text.endswith("\n")
            and text.count("\n") == 1
        ):
            # Hot path: a read holding exactly one whole one-line event ("data: ...\n\n").
            return [("", text[6:-1])]
        return self._lines(text.split("\n"))

    def flush(self) -> list[tuple[str, str]]:
        """End of stream: dispatch what is pending.

        The spec drops an event not ended by a blank line; we deliver it instead, because some
        servers close the stream right after the last ``data:`` line and that line is the answer.
        """
        lines = []
        if self._tail:
            lines.append(self._tail.decode("utf-8", "replace"))
            self._tail = b""
        lines.append("")
        return self._lines(lines)

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
