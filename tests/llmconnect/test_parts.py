"""Content parts (llmconnect/parts.py): images and PDFs reach each protocol in its own shape, a
model that cannot take one gets a note or the PDF's text, and the history resends them."""

from __future__ import annotations

import base64
import logging
from typing import Any

import pytest

from llmconnect import (
    DEFAULT_MAX_DOCUMENT_CHARS,
    APIClientFactory,
    Document,
    Image,
    InvalidRequestError,
    document_text,
    supports_documents,
    supports_images,
)
from tests.fakes.llm_server import Fail, FakeLLMServer, ReceivedPart, Reply

from .conftest import ClientMaker

#: Not a real PNG: no protocol looks inside (a recognisable byte string instead).
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00IHDR-pixels-" * 8
URL = "https://images.example.com/cat.png"
#: The models each protocol is tried with: all of them read images and PDFs.
VISION = {"openai": "gpt-4o-mini", "anthropic": "claude-sonnet-4-5", "gemini": "gemini-2.5-flash"}
NOTE = "[image: cat.png — this model does not read images]"


def make_pdf(*pages: str) -> bytes:
    """A real PDF (one line of Helvetica text per page), xref offsets computed: pypdf reads it."""
    objects: list[bytes] = [b"<< /Type /Catalog /Pages 2 0 R >>"]
    page_ids = [4 + 2 * i for i in range(len(pages))]
    kids = " ".join(f"{i} 0 R" for i in page_ids)
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode())
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    for page_id, text in zip(page_ids, pages, strict=True):
        escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        stream = f"BT /F1 12 Tf 72 720 Td ({escaped}) Tj ET".encode()
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            b"/Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>" % (page_id + 1)
        )
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


PDF = make_pdf("Quarterly revenue grew 12 percent.", "Costs fell (slightly).")
PDF_TEXT = "Quarterly revenue grew 12 percent.\n\nCosts fell (slightly)."


def text(value: str) -> ReceivedPart:
    return ReceivedPart("text", "text", text=value)


# --------------------------------------------------------------------------- native shapes


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
async def test_image_bytes_arrive_in_each_protocols_shape(
    llm_server: FakeLLMServer, make_client: ClientMaker, provider: str
) -> None:
    client = make_client(provider, VISION[provider])
    await client.chat(["What is this?", Image(PNG, "image/png", name="cat.png")])
    request = llm_server.requests[-1]
    native = {"openai": "image_url", "anthropic": "image", "gemini": "inline_data"}[provider]
    assert request.parts() == [
        text("What is this?"),
        ReceivedPart("image", native, media_type="image/png", data=PNG),
    ]
    encoded = base64.b64encode(PNG).decode()
    if provider == "openai":
        image = request.json["messages"][-1]["content"][1]
        assert image == {
            "type": "image_url",
            "image_url": {"url": f"data:image/png;base64,{encoded}"},
        }
    elif provider == "anthropic":
        image = request.json["messages"][-1]["content"][1]
        source = {"type": "base64", "media_type": "image/png", "data": encoded}
        assert image == {"type": "image", "source": source}
    else:
        image = request.json["contents"][-1]["parts"][1]
        assert image == {"inline_data": {"mime_type": "image/png", "data": encoded}}


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
async def test_image_url_is_passed_on_not_fetched(
    llm_server: FakeLLMServer, make_client: ClientMaker, provider: str
) -> None:
    client = make_client(provider, VISION[provider])
    await client.chat(["And this?", Image(url=URL, media_type="image/png")])
    request = llm_server.requests[-1]
    native = {"openai": "image_url", "anthropic": "image", "gemini": "file_data"}[provider]
    media = "image/png" if provider == "gemini" else None
    assert request.parts() == [
        text("And this?"),
        ReceivedPart("image", native, media_type=media, url=URL),
    ]
    assert len(llm_server.requests) == 1  # nothing but the chat request: no download


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
async def test_pdf_arrives_as_a_document(
    llm_server: FakeLLMServer, make_client: ClientMaker, provider: str
) -> None:
    client = make_client(provider, VISION[provider])
    await client.chat(["Summarise", Document(PDF, name="report.pdf")])
    request = llm_server.requests[-1]
    expected = {
        "openai": ReceivedPart(
            "document", "file", media_type="application/pdf", data=PDF, name="report.pdf"
        ),
        "anthropic": ReceivedPart(
            "document", "document", media_type="application/pdf", data=PDF, name="report.pdf"
        ),
        "gemini": ReceivedPart("document", "inline_data", media_type="application/pdf", data=PDF),
    }[provider]
    assert request.parts() == [text("Summarise"), expected]


# --------------------------------------------------------------------------- conversion


async def test_model_without_vision_gets_a_note_and_an_answer(
    llm_server: FakeLLMServer, make_client: ClientMaker
) -> None:
    llm_server.text_only_models.add("llama-3.3-70b-versatile")  # an image part: 400
    client = make_client("groq", "llama-3.3-70b-versatile")
    assert not client.supports_images
    answer = await client.chat(["look", Image(PNG, name="cat.png")])
    assert answer == f"You said: look\n\n{NOTE}"
    assert llm_server.requests[-1].json["messages"][-1]["content"] == f"look\n\n{NOTE}"
    # The history keeps the image itself: a vision model asked later still gets it.
    assert client.messages[0]["content"] == ["look", Image(PNG, name="cat.png")]


async def test_the_stand_in_refuses_images_to_a_text_only_model(
    llm_server: FakeLLMServer, make_client: ClientMaker
) -> None:
    # What the note spares the user: the same image forced through (a wrong pattern) is a 400.
    llm_server.text_only_models.add("llama-3.3-70b-versatile")
    env = {"LLMCONNECT_VISION_MODELS": "groq/llama-3.3*"}
    client = make_client("groq", "llama-3.3-70b-versatile", env=env)
    with pytest.raises(InvalidRequestError):
        await client.chat(["look", Image(PNG, name="cat.png")])
    assert client.messages == []


async def test_vision_models_variable_adds_a_model(
    llm_server: FakeLLMServer, make_client: ClientMaker
) -> None:
    env = {"LLMCONNECT_VISION_MODELS": "other-*, my-model*"}
    client = make_client("ollama", "my-model:7b", env=env)
    await client.chat(["look", Image(PNG, "image/jpeg")])
    assert llm_server.requests[-1].parts()[1] == ReceivedPart(
        "image", "image_url", media_type="image/jpeg", data=PNG
    )
    plain = make_client("ollama", "my-model:7b")
    await plain.chat(["look", Image(PNG, "image/jpeg")])
    assert llm_server.requests[-1].parts() == [
        text("look\n\n[image — this model does not read images]")
    ]


async def test_pdf_to_a_text_only_openai_compatible_model_arrives_as_its_text(
    llm_server: FakeLLMServer, make_client: ClientMaker
) -> None:
    llm_server.text_only_models.add("llama-3.3-70b-versatile")
    client = make_client("groq", "llama-3.3-70b-versatile")
    assert not client.supports_documents
    await client.chat(["Summarise", Document(PDF, name="report.pdf")])
    assert llm_server.requests[-1].parts() == [
        text(f"Summarise\n\nreport.pdf:\n```\n{PDF_TEXT}\n```")
    ]


async def test_document_text_is_cut_at_max_document_chars(
    llm_server: FakeLLMServer, make_client: ClientMaker
) -> None:
    exact = len(PDF_TEXT)
    at_limit = make_client("groq", "llama-3.3-70b-versatile", max_document_chars=exact)
    await at_limit.chat([Document(PDF, name="r.pdf")])
    assert llm_server.requests[-1].parts() == [text(f"r.pdf:\n```\n{PDF_TEXT}\n```")]
    over = make_client("groq", "llama-3.3-70b-versatile", max_document_chars=exact - 1)
    await over.chat([Document(PDF, name="r.pdf")])
    cut = f"r.pdf:\n```\n{PDF_TEXT[:-1]}\n```\n[r.pdf: cut at {exact - 1} of {exact} characters]"
    assert llm_server.requests[-1].parts() == [text(cut)]
    assert DEFAULT_MAX_DOCUMENT_CHARS == 40_000


def test_document_text_fences_and_notes() -> None:
    ticks = Document(b"a ``` b ```` c", "text/plain", name="t.md")
    assert document_text(ticks) == "t.md:\n`````\na ``` b ```` c\n`````"
    assert document_text(Document(b"%PDF-1.4 broken", name="bad.pdf")) == (
        "[document: bad.pdf — this PDF could not be read]"
    )
    assert document_text(Document(make_pdf(""), name="scan.pdf")) == (
        "[document: scan.pdf — no text found in it]"
    )
    assert document_text(Document(b"PK\x03\x04", "application/zip")) == (
        "[document — application/zip is not read by this model]"
    )


async def test_an_image_type_no_provider_takes_becomes_a_note(
    llm_server: FakeLLMServer, make_client: ClientMaker
) -> None:
    client = make_client("anthropic", "claude-sonnet-4-5")
    await client.chat(["look", Image(PNG, "image/bmp", name="old.bmp"), Image(PNG, "Image/JPG")])
    assert llm_server.requests[-1].parts() == [
        text("look\n\n[image: old.bmp — image/bmp is not sent: PNG, JPEG, GIF, WebP are]"),
        ReceivedPart("image", "image", media_type="image/jpeg", data=PNG),
    ]


async def test_echo_reads_the_notes() -> None:
    client = APIClientFactory.create(model="echo", env={})
    answer = await client.chat(["look", Image(PNG, name="cat.png"), Document(PDF, name="r.pdf")])
    assert answer == f"[echo] You said: look\n\n{NOTE}\n\nr.pdf:\n```\n{PDF_TEXT}\n```"


# --------------------------------------------------------------------------- history


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
async def test_history_with_parts_is_resent_on_the_next_turn(
    llm_server: FakeLLMServer, make_client: ClientMaker, provider: str
) -> None:
    client = make_client(provider, VISION[provider])
    llm_server.enqueue(Reply(text="A cat."), Reply(text="Grey."))
    image = Image(PNG, "image/png", name="cat.png")
    await client.chat(["What is this?", image, Document(PDF, name="r.pdf")])
    await client.chat("What colour?")
    assert client.messages == [
        {"role": "user", "content": ["What is this?", image, Document(PDF, name="r.pdf")]},
        {"role": "assistant", "content": "A cat."},
        {"role": "user", "content": "What colour?"},
        {"role": "assistant", "content": "Grey."},
    ]
    first, second = llm_server.requests
    assert second.turns()[:-1] == [*first.turns(), ("assistant", [text("A cat.")])]
    assert second.parts() == [text("What colour?")]
    assert [p.kind for p in second.parts(0)] == ["text", "image", "document"]


async def test_create_takes_the_history_shape_and_converts_it_per_model(
    llm_server: FakeLLMServer, make_client: ClientMaker
) -> None:
    vision = make_client("anthropic", "claude-sonnet-4-5")
    await vision.chat(("What is this?", Image(PNG, name="cat.png")))  # any sequence
    stored: list[dict[str, Any]] = [dict(m) for m in vision.messages]
    # Another model (a fallback, a /model switch) gets the same history, converted for it.
    text_only = make_client("groq", "llama-3.3-70b-versatile", messages=stored)
    await text_only.chat("and?")
    assert llm_server.requests[-1].parts(0) == [text(f"What is this?\n\n{NOTE}")]
    gemini = make_client("gemini", "gemini-2.5-flash", messages=stored)
    await gemini.chat("and?")
    assert llm_server.requests[-1].parts(0)[1].data == PNG
    assert text_only.messages[0] == vision.messages[0]


async def test_plain_string_api_unchanged(
    llm_server: FakeLLMServer, make_client: ClientMaker
) -> None:
    client = make_client("openai", "gpt-4o-mini", messages=[{"role": "user", "content": "a"}])
    assert await client.chat("hi") == "You said: hi"
    body = llm_server.requests[-1].json
    assert body["messages"] == [{"role": "user", "content": "a"}, {"role": "user", "content": "hi"}]
    assert client.messages[-2:] == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "You said: hi"},
    ]


# --------------------------------------------------------------------------- capabilities


@pytest.mark.parametrize(
    ("model", "images", "documents"),
    [
        ("openai/gpt-4o-mini", True, True),
        ("openai/gpt-4.1", True, True),
        ("openai/gpt-3.5-turbo", False, False),
        ("openai", True, True),  # its default model, gpt-4o-mini
        ("anthropic/claude-sonnet-4-5", True, True),
        ("gemini/gemini-2.5-flash", True, True),
        ("groq/llama-3.3-70b-versatile", False, False),
        ("groq/meta-llama/llama-4-scout-17b-16e-instruct", True, False),
        ("openrouter/openai/gpt-4o", True, False),
        ("openrouter/anthropic/claude-3.5-sonnet", True, False),
        ("ollama/llava:13b", True, False),
        ("ollama/llama3.2-vision", True, False),
        ("ollama/qwen2.5vl:7b", True, False),
        ("together/Qwen/Qwen2.5-VL-72B-Instruct", True, False),
        ("mistral/pixtral-12b-2409", True, False),
        ("mistral/mistral-small-latest", True, False),
        ("deepseek/deepseek-chat", False, False),
        ("echo", False, False),
        ("nosuchprovider/x", False, False),
    ],
)
def test_which_models_read_images_and_documents(model: str, images: bool, documents: bool) -> None:
    assert supports_images(model, env={}) is images
    assert supports_documents(model, env={}) is documents


def test_vision_models_variable_patterns() -> None:
    assert not supports_images("ollama/mine", env={})
    assert supports_images("ollama/mine", env={"LLMCONNECT_VISION_MODELS": "MINE"})
    assert supports_images("ollama/mine", env={"LLMCONNECT_VISION_MODELS": " x , ollama/m*"})
    assert not supports_images("ollama/mine", env={"LLMCONNECT_VISION_MODELS": "groq/m*"})
    custom = {"MYLLM_BASE_URL": "http://127.0.0.1:1/v1", "LLMCONNECT_VISION_MODELS": "myllm/*"}
    assert supports_images("myllm/anything", env=custom)
    assert not supports_images("echo", env={"LLMCONNECT_VISION_MODELS": "*"})


# --------------------------------------------------------------------------- bad input, secrets


def test_parts_check_their_fields() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        Image()
    with pytest.raises(ValueError, match="exactly one"):
        Image(PNG, url=URL)
    with pytest.raises(ValueError, match="https"):
        Image(url="http://images.example.com/cat.png")
    with pytest.raises(ValueError, match="empty"):
        Document(b"")
    with pytest.raises(ValueError, match="image/"):
        Image(PNG, "application/pdf")
    assert Image(bytearray(PNG)).data == PNG


async def test_bad_messages_are_refused_before_anything_is_sent(
    llm_server: FakeLLMServer, make_client: ClientMaker
) -> None:
    client = make_client("openai", "gpt-4o-mini")
    with pytest.raises(ValueError, match="at least one part"):
        await client.chat([])
    with pytest.raises(TypeError, match="not a content part"):
        await client.chat(["hi", {"type": "image_url"}])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        await client.chat(b"bytes")  # type: ignore[arg-type]
    assert client.messages == []
    assert llm_server.requests == []


def test_reprs_show_size_and_type_never_bytes_or_url_query() -> None:
    assert repr(Image(PNG, name="cat.png")) == "Image('cat.png', image/png, 112 bytes)"
    big = Document(b"%PDF" + b"x" * 4096, name="r.pdf")
    assert repr(big) == "Document('r.pdf', application/pdf, 4.0 KiB)"
    signed = Image(url="https://cdn.example.com/a/cat.png?token=SECRET-SIG&ex=1")
    assert repr(signed) == "Image(image/png, url='https://cdn.example.com/a/cat.png?…')"
    assert "SECRET" not in str(signed.__repr__())


async def test_no_bytes_in_errors_or_logs(
    llm_server: FakeLLMServer, make_client: ClientMaker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    encoded = base64.b64encode(PNG).decode()
    llm_server.enqueue(Fail(503), Fail(400))
    client = make_client("anthropic", "claude-sonnet-4-5")
    with pytest.raises(InvalidRequestError) as caught:
        await client.chat(["hi", Image(PNG, name="cat.png"), Document(PDF, name="r.pdf")])
    shown = [str(caught.value), repr(caught.value), caught.value.user_message, repr(client)]
    shown += [record.getMessage() for record in caplog.records]
    assert any("retry" in line for line in shown)  # the 503 was logged and retried
    for line in shown:
        assert encoded[:40] not in line
        assert "IHDR" not in line
        assert "Quarterly" not in line
