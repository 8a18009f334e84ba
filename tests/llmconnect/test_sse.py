"""SSEDecoder: every way bytes can arrive gives the same events."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmconnect import EventTooLargeError
from llmconnect.sse import SSEDecoder


def decode(pieces: list[bytes]) -> list[tuple[str, str]]:
    decoder = SSEDecoder()
    events: list[tuple[str, str]] = []
    for piece in pieces:
        events.extend(decoder.feed(piece))
    events.extend(decoder.flush())
    return events


def cut(body: bytes, offsets: list[int]) -> list[bytes]:
    points = sorted({o % (len(body) + 1) for o in offsets})
    pieces, start = [], 0
    for point in points:
        pieces.append(body[start:point])
        start = point
    pieces.append(body[start:])
    return pieces


def openai_body(texts: list[str], newline: str) -> bytes:
    lines = []
    for text in texts:
        chunk = {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
        lines.append(f"data: {json.dumps(chunk, ensure_ascii=False)}{newline}{newline}")
        lines.append(f": keep-alive{newline}{newline}")
    lines.append(f"data: [DONE]{newline}{newline}")
    return "".join(lines).encode()


def test_single_event():
    assert decode([b"data: hello\n\n"]) == [("", "hello")]


def test_event_name_and_multiline_data():
    body = b"event: message_start\ndata: one\ndata: two\n\n"
    assert decode([body]) == [("message_start", "one\ntwo")]


def test_comments_and_keepalives_are_skipped():
    assert decode([b": keep-alive\n\n:\n\ndata: x\n\n"]) == [("", "x")]


def test_crlf_and_lone_cr_line_endings():
    assert decode([b"data: a\r\n\r\ndata: b\r\rdata: c\n\n"]) == [("", "a"), ("", "b"), ("", "c")]


def test_crlf_split_between_cr_and_lf():
    assert decode([b"data: a\r", b"\n\r", b"\n"]) == [("", "a")]


def test_utf8_character_split_across_reads():
    body = "data: héllo 🌍\n\n".encode()
    split = body.index("🌍".encode()) + 2
    assert decode([body[:split], body[split:]]) == [("", "héllo 🌍")]


def test_data_without_space_and_empty_data_line():
    assert decode([b"data:x\n\ndata\ndata: y\n\n"]) == [("", "x"), ("", "\ny")]


def test_event_without_data_is_not_dispatched():
    assert decode([b"event: ping\n\ndata: z\n\n"]) == [("", "z")]


def test_unterminated_last_event_is_delivered_at_end():
    assert decode([b"data: first\n\ndata: last"]) == [("", "first"), ("", "last")]


def test_byte_order_mark_is_dropped():
    assert decode(["\ufeffdata: a\n\n".encode()]) == [("", "a")]


def test_id_and_retry_fields():
    decoder = SSEDecoder()
    assert decoder.feed(b"id: 7\nretry: 1500\ndata: a\n\n") == [("", "a")]
    assert (decoder.last_event_id, decoder.retry) == ("7", 1500)


texts = st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=15)


@settings(max_examples=300, deadline=None)
@given(texts=texts, offsets=st.lists(st.integers(min_value=0), max_size=40), crlf=st.booleans())
def test_random_cuts_yield_identical_events(texts, offsets, crlf):
    body = openai_body(texts, "\r\n" if crlf else "\n")
    whole = decode([body])
    assert decode(cut(body, offsets)) == whole
    assert [json.loads(d)["choices"][0]["delta"]["content"] for _, d in whole[:-1]] == texts
    assert whole[-1] == ("", "[DONE]")


@settings(max_examples=100, deadline=None)
@given(texts=texts)
def test_one_byte_reads(texts):
    body = openai_body(texts, "\r\n")
    assert decode([body[i : i + 1] for i in range(len(body))]) == decode([body])


def anthropic_body(texts: list[str]) -> bytes:
    lines = ["event: message_start\ndata: {}\n\n", "event: ping\ndata: {}\n\n"]
    for text in texts:
        delta = {"type": "content_block_delta", "delta": {"type": "text_delta", "text": text}}
        lines.append(f"event: content_block_delta\ndata: {json.dumps(delta)}\n\n")
    lines.append("event: message_stop\ndata: {}\n\n")
    return "".join(lines).encode()


@settings(max_examples=200, deadline=None)
@given(texts=texts, offsets=st.lists(st.integers(min_value=0), max_size=40))
def test_event_names_survive_any_cut(texts, offsets):
    body = anthropic_body(texts)
    events = decode(cut(body, offsets))
    assert events == decode([body])
    names = [name for name, _ in events]
    assert names == ["message_start", "ping", *["content_block_delta"] * len(texts), "message_stop"]
    assert [json.loads(d)["delta"]["text"] for _, d in events[2:-1]] == texts


def test_event_line_and_data_line_in_separate_reads():
    assert decode([b"event: error\n", b"data: {}\n\n"]) == [("error", "{}")]


# --------------------------------------------------------------------------- size limit


def sized_event(size: int) -> bytes:
    """``data: xxx...\\n`` of exactly ``size`` bytes (the event; its blank line comes apart)."""
    return b"data: " + b"x" * (size - 7) + b"\n"


def feed_all(decoder: SSEDecoder, pieces: list[bytes]) -> list[tuple[str, str]]:
    events: list[tuple[str, str]] = []
    for piece in pieces:
        events.extend(decoder.feed(piece))
    return events + decoder.flush()


@pytest.mark.parametrize("piece", [1, 7, 64, 10_000], ids=lambda n: f"reads-of-{n}")
@pytest.mark.parametrize("crlf", [False, True], ids=["lf", "crlf"])
def test_an_event_at_the_limit_passes_and_one_byte_more_fails(piece: int, crlf: bool) -> None:
    limit = 300
    for size, ok in ((limit, True), (limit + 1, False)):
        body = b": c\n\n" + sized_event(size) + b"\n" + b"data: next\n\n"
        if crlf:
            body = body.replace(b"\n", b"\r\n")  # a line ending counts one byte either way
        pieces = [body[i : i + piece] for i in range(0, len(body), piece)]
        decoder = SSEDecoder(max_event_bytes=limit)
        if ok:
            assert feed_all(decoder, pieces) == [("", "x" * (size - 7)), ("", "next")]
        else:
            with pytest.raises(EventTooLargeError, match=str(limit)):
                feed_all(decoder, pieces)


def test_every_line_of_an_event_counts() -> None:
    # Two data lines and an event line: 12 + 10 + 10 = 32 bytes.
    body = b"event: name\ndata: 123\ndata: 456\n\n"
    assert feed_all(SSEDecoder(max_event_bytes=32), [body]) == [("name", "123\n456")]
    with pytest.raises(EventTooLargeError):
        feed_all(SSEDecoder(max_event_bytes=31), [body])
    # A stream of data lines that never ends its event is cut too.
    with pytest.raises(EventTooLargeError):
        feed_all(SSEDecoder(max_event_bytes=1000), [b"data: 123\n"] * 200)


def test_many_small_events_in_one_big_read_are_fine() -> None:
    body = b"".join(sized_event(100) + b"\n" for _ in range(100))  # 10 KB in one read
    assert len(feed_all(SSEDecoder(max_event_bytes=100), [body])) == 100


@settings(max_examples=200, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=7, max_value=80), min_size=1, max_size=8),
    offsets=st.lists(st.integers(min_value=0), max_size=20),
    limit=st.integers(min_value=7, max_value=80),
)
def test_limit_holds_however_bytes_arrive(sizes: list[int], offsets: list[int], limit: int) -> None:
    body = b"".join(sized_event(s) + b"\n" for s in sizes)
    decoder = SSEDecoder(max_event_bytes=limit)
    if max(sizes) <= limit:
        assert len(feed_all(decoder, cut(body, offsets))) == len(sizes)
    else:
        with pytest.raises(EventTooLargeError):
            feed_all(decoder, cut(body, offsets))


def test_a_long_line_is_buffered_without_copying() -> None:
    """Linear work: pieces of an unfinished line are kept as they came (no re-copy of the
    buffer per read), and joined once when the line ends."""
    decoder = SSEDecoder(max_event_bytes=10_000_000)
    pieces = [b"data: "] + [bytes([65 + i % 26]) * 1000 for i in range(5000)]  # 5 MB
    for piece in pieces:
        assert decoder.feed(piece) == []
    assert decoder.buffered == sum(map(len, pieces))
    assert len(decoder._pending) == len(pieces)
    assert all(a is b for a, b in zip(decoder._pending, pieces, strict=True))
    [(_, data)] = decoder.feed(b"\n\n")
    assert len(data) == 5_000_000
    assert decoder.buffered == 0
