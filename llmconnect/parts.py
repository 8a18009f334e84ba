"""Content parts: a user turn may carry images and documents beside its text.

::

    from llmconnect import Document, Image

    await client.chat(["What is in this picture?", Image(png_bytes, "image/png", name="cat.png")])
    await client.chat(["Summarise:", Document(pdf_bytes, name="report.pdf")])
    await client.chat(["And this?", Image(url="https://example.com/dog.jpg")])

A part is a ``str`` (text), an :class:`Image` (bytes and a media type, or an ``https`` URL the
provider fetches itself: llmconnect never downloads anything) or a :class:`Document` (PDF bytes).
The history keeps a turn with parts as ``{"role": "user", "content": ["text", Image(...)]}``: the
parts as given, so a later turn, or another model, gets them again.

Which models see what is data, not code: each provider row holds ``vision_models`` and
``document_models`` patterns (``llmconnect/providers.py``); :data:`GENERIC_VISION_MODELS` match
any provider's model ids (``*vision*``, ``llava*``, ``*-vl*``...), and ``LLMCONNECT_VISION_MODELS``
(comma-separated patterns, from the environment the client is made with) adds more. A model that
cannot take a part gets it converted in one place, :func:`prepare_messages`, before any protocol
sees the request: a PDF becomes its extracted text (:func:`document_text`, with ``pypdf``) as a
fenced block headed by its file name, cut at ``max_document_chars``; an image becomes a short note
in the text (``[image: cat.png — this model does not read images]``). Never a 400 for the user.

Reprs of parts show the name, media type and size, never the bytes, and of a URL only its scheme,
host and path (a signed URL's query string may be a credential).
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import lru_cache
from typing import Any, TypeAlias
from urllib.parse import urlsplit

from .errors import LLMError
from .providers import ProviderSpec, resolve

__all__ = [
    "DEFAULT_MAX_DOCUMENT_CHARS",
    "GENERIC_VISION_MODELS",
    "IMAGE_TYPES",
    "VISION_MODELS_VARIABLE",
    "Content",
    "Document",
    "Image",
    "Part",
    "document_text",
    "normalize_content",
    "prepare_messages",
    "supports_documents",
    "supports_images",
]

log = logging.getLogger("llmconnect")

#: The most characters of a PDF's text sent to a model that does not read PDFs itself.
DEFAULT_MAX_DOCUMENT_CHARS = 40_000
#: The environment variable with more vision model patterns (comma-separated).
VISION_MODELS_VARIABLE = "LLMCONNECT_VISION_MODELS"
#: Model-id patterns that see images whatever the provider (OpenAI-compatible servers of open
#: models, routers): matched against the model id and its last ``/`` segment, case-insensitively.
GENERIC_VISION_MODELS: tuple[str, ...] = (
    "*vision*",
    "llava*",
    "bakllava*",
    "*-vl*",
    "*qwen*vl*",
    "pixtral*",
    "*llama-4*",
    "llama4*",
    "gemma3*",
    "gemma-3*",
    "minicpm-v*",
    "moondream*",
    "*gpt-4o*",
    "*gpt-4.1*",
    "*gpt-5*",
    "*claude-3*",
    "*claude-*-4*",
    "*gemini-*",
)

_IMAGE_NOTE = "this model does not read images"
#: The image types every provider here takes as bytes; another becomes a note, never a 400.
IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})


def _size(n: int) -> str:
    return f"{n} bytes" if n < 1024 else f"{n / 1024:.1f} KiB"


def _safe_url(url: str) -> str:
    """Scheme, host and path only: a query or fragment may carry a signature."""
    parts = urlsplit(url)
    shown = f"{parts.scheme}://{parts.hostname or ''}{parts.path}"
    return shown + ("?…" if parts.query or parts.fragment else "")


@dataclass(frozen=True, slots=True)
class Image:
    """An image: ``data`` (bytes) with its ``media_type``, or an ``https`` ``url`` the provider
    fetches itself. Exactly one of ``data`` and ``url``. ``name`` (a file name) is for notes."""

    data: bytes | None = None
    media_type: str = "image/png"
    url: str | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        if (self.data is None) == (self.url is None):
            raise ValueError("Image needs exactly one of data= and url=")
        if self.data is not None and not isinstance(self.data, bytes | bytearray | memoryview):
            raise TypeError("Image data must be bytes")
        if self.data is not None and not self.data:
            raise ValueError("Image data is empty")
        if self.url is not None and urlsplit(self.url).scheme.lower() != "https":
            raise ValueError("Image url must be an https URL")
        media_type = self.media_type.partition(";")[0].strip().lower()
        if not media_type.startswith("image/"):
            raise ValueError(f"Image media_type must be image/*, not {self.media_type[:50]!r}")
        object.__setattr__(
            self, "media_type", "image/jpeg" if media_type == "image/jpg" else media_type
        )
        if self.data is not None and not isinstance(self.data, bytes):
            object.__setattr__(self, "data", bytes(self.data))

    @property
    def label(self) -> str:
        """``image: name`` (``image`` when unnamed), for notes in the text."""
        return f"image: {self.name}" if self.name else "image"

    def __repr__(self) -> str:
        name = f"{self.name!r}, " if self.name else ""
        if self.data is not None:
            return f"Image({name}{self.media_type}, {_size(len(self.data))})"
        return f"Image({name}{self.media_type}, url={_safe_url(self.url or '')!r})"


@dataclass(frozen=True, slots=True)
class Document:
    """A document: ``data`` bytes of ``media_type`` (a PDF by default), ``name`` its file name."""

    data: bytes
    media_type: str = "application/pdf"
    name: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.data, bytes | bytearray | memoryview):
            raise TypeError("Document data must be bytes")
        if not self.data:
            raise ValueError("Document data is empty")
        if not isinstance(self.data, bytes):
            object.__setattr__(self, "data", bytes(self.data))

    @property
    def label(self) -> str:
        return f"document: {self.name}" if self.name else "document"

    @property
    def is_pdf(self) -> bool:
        return self.media_type.partition(";")[0].strip().lower() == "application/pdf"

    def __repr__(self) -> str:
        name = f"{self.name!r}, " if self.name else ""
        return f"Document({name}{self.media_type}, {_size(len(self.data))})"


#: One piece of a user turn.
Part: TypeAlias = str | Image | Document
#: A message's content: text, or a list of parts.
Content: TypeAlias = str | list[Part]


def normalize_content(content: str | Sequence[Part]) -> Content:
    """``content`` as a message holds it: a ``str`` as it is, a sequence as a list of parts
    (``TypeError`` for anything that is not a part, ``ValueError`` for no part at all)."""
    if isinstance(content, str):
        return content
    if isinstance(content, bytes | bytearray | Mapping) or not isinstance(content, Sequence):
        raise TypeError(
            "a message is a str or a sequence of parts (str, Image, Document), "
            f"not {type(content).__name__}"
        )
    parts: list[Part] = []
    for part in content:
        if not isinstance(part, str | Image | Document):
            raise TypeError(f"not a content part (str, Image, Document): {type(part).__name__}")
        parts.append(part)
    if not parts:
        raise ValueError("a message needs at least one part")
    return parts


# --------------------------------------------------------------------------- capabilities


def _patterns(env: Mapping[str, str], variable: str = VISION_MODELS_VARIABLE) -> list[str]:
    raw = env.get(variable) or ""
    return [p.strip().lower() for p in raw.split(",") if p.strip()]


def _matches(patterns: Sequence[str], *names: str) -> bool:
    return any(fnmatchcase(name, pattern.lower()) for pattern in patterns for name in names)


def _names(provider: str, model: str) -> tuple[str, str, str]:
    model = model.lower()
    return model, model.rpartition("/")[2], f"{provider.lower()}/{model}"


def images_for(spec: ProviderSpec, model: str, env: Mapping[str, str]) -> bool:
    """Whether ``model`` of ``spec`` reads images (the spec row's patterns, the generic ones,
    then ``LLMCONNECT_VISION_MODELS``, which also matches ``provider/model``)."""
    if spec.protocol == "echo":
        return False
    full, last, qualified = _names(spec.name, model)
    return (
        _matches(spec.vision_models, full, last)
        or _matches(GENERIC_VISION_MODELS, full, last)
        or _matches(_patterns(env), full, last, qualified)
    )


def documents_for(spec: ProviderSpec, model: str) -> bool:
    """Whether ``model`` of ``spec`` reads PDFs itself (the spec row's ``document_models``)."""
    full, last, _ = _names(spec.name, model)
    return _matches(spec.document_models, full, last)


def supports_images(model_name: str, env: Mapping[str, str] | None = None) -> bool:
    """Whether ``model_name`` (``provider/model``, or a bare provider for its default model)
    is sent images as images; else they become a note. ``env`` (default: the process
    environment) may add patterns in ``LLMCONNECT_VISION_MODELS``. An unknown provider: False."""
    env = os.environ if env is None else env
    try:
        resolved = resolve(model_name, env)
    except LLMError:
        return False
    return images_for(resolved.spec, resolved.model, env)


def supports_documents(model_name: str, env: Mapping[str, str] | None = None) -> bool:
    """Whether ``model_name`` is sent PDFs as documents (Anthropic, Gemini, OpenAI's own API for
    its vision models); else a PDF becomes its extracted text. An unknown provider: False."""
    env = os.environ if env is None else env
    try:
        resolved = resolve(model_name, env)
    except LLMError:
        return False
    return documents_for(resolved.spec, resolved.model)


# --------------------------------------------------------------------------- conversion


def _fence(text: str) -> str:
    """A backtick fence longer than any run of backticks in ``text``."""
    longest = run = 0
    for char in text:
        run = run + 1 if char == "`" else 0
        longest = max(longest, run)
    return "`" * max(3, longest + 1)


@lru_cache(maxsize=32)
def _pdf_text(data: bytes) -> str | None:
    """The text of a PDF's pages, or None when it cannot be read (damaged, encrypted)."""
    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            return None
        pages = [(page.extract_text() or "").strip() for page in reader.pages]
    except Exception as exc:  # pypdf raises many kinds for a damaged file
        log.info("a PDF could not be read: %s", type(exc).__name__)
        return None
    return "\n\n".join(page for page in pages if page)


def document_text(document: Document, max_chars: int = DEFAULT_MAX_DOCUMENT_CHARS) -> str:
    """``document`` as text for a model that does not read it: its name, then its text in a
    fenced block, cut at ``max_chars`` characters with a note saying so. A PDF's text is
    extracted with ``pypdf``; a ``text/*`` document is decoded as UTF-8 (bad bytes replaced).
    One that cannot be read, has no text or is another type is a one-line note instead."""
    label = document.name or "document"
    if document.is_pdf:
        text = _pdf_text(document.data)
        if text is None:
            return f"[{document.label} — this PDF could not be read]"
    elif document.media_type.lower().startswith("text/"):
        text = document.data.decode("utf-8", "replace")
    else:
        return f"[{document.label} — {document.media_type[:50]} is not read by this model]"
    if not text.strip():
        return f"[{document.label} — no text found in it]"
    note = ""
    if len(text) > max_chars:
        note = f"\n[{label}: cut at {max_chars:,} of {len(text):,} characters]"
        text = text[:max_chars]
    fence = _fence(text)
    return f"{label}:\n{fence}\n{text}\n{fence}{note}"


def _convert(
    content: Content, images: bool, documents: bool, max_document_chars: int
) -> str | list[Part]:
    """One message's content as the model can take it; a list of text alone becomes one str."""
    if isinstance(content, str):
        return content
    out: list[Part] = []
    for part in content:
        if isinstance(part, str):
            if part:
                out.append(part)
        elif isinstance(part, Image):
            if not images:
                out.append(f"[{part.label} — {_IMAGE_NOTE}]")
            elif part.data is not None and part.media_type not in IMAGE_TYPES:
                out.append(
                    f"[{part.label} — {part.media_type[:50]} is not sent: PNG, JPEG, GIF, WebP are]"
                )
            else:
                out.append(part)
        elif documents and part.is_pdf:
            out.append(part)
        else:
            out.append(document_text(part, max_document_chars))
    # Adjacent text is one text part (and text alone a plain string): "\n\n" between pieces.
    merged: list[Part] = []
    for part in out:
        if isinstance(part, str) and merged and isinstance(merged[-1], str):
            merged[-1] = f"{merged[-1]}\n\n{part}"
        else:
            merged.append(part)
    if not merged:
        return ""
    if len(merged) == 1 and isinstance(merged[0], str):
        return merged[0]
    return merged


def prepare_messages(
    messages: Sequence[Mapping[str, Any]],
    *,
    images: bool,
    documents: bool,
    max_document_chars: int = DEFAULT_MAX_DOCUMENT_CHARS,
) -> list[dict[str, Any]]:
    """The one place parts are converted for a model: ``images``/``documents`` say what it
    reads. Every content that is not a str comes back as a str (text only) or a list holding
    text and only the parts the model takes; the protocols map those natively."""
    prepared: list[dict[str, Any]] = []
    for message in messages:
        content = message["content"]
        if not isinstance(content, str):
            content = _convert(content, images, documents, max_document_chars)
        turn = {"role": message["role"], "content": content}
        if "tool_calls" in message or "tool_results" in message:
            # Tool turns (``llmconnect.tools``) travel on; the protocol encodes them.
            for key in ("tool_calls", "tool_results"):
                if key in message:
                    turn[key] = message[key]
        prepared.append(turn)
    return prepared
