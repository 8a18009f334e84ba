"""Files users attach: which are read, how, and the one safe way to download them.

A front end hands each file over as (name, declared media type, bytes) to :func:`prepare`, or as a
URL on its platform's own file host to :meth:`Downloader.fetch`; either gives an
:class:`Attachment`:

- ``image``: PNG, JPEG, WebP or GIF (its first frame), checked to really be one by Pillow, scaled
  down to ``MAX_IMAGE_PIXELS`` on its long side keeping its aspect (re-encoded: PNG when it has
  transparency or was a PNG/GIF, else JPEG); a GIF is always re-encoded as a PNG of its first frame;
- ``text``: ``text/*`` and common source and data files (:data:`TEXT_EXTENSIONS`), decoded as UTF-8
  (bad bytes replaced) and inlined as a fenced block under the file's name, cut at
  ``MAX_TEXT_ATTACHMENT_CHARS`` with a note;
- ``pdf``: kept as bytes (``application/pdf``);
- ``skipped``: anything else, or a file that is too big, unreadable, one too many, or whose
  download failed; :attr:`Attachment.note` is one short line for the user naming the file and why.

Nothing here raises for bad input: the message's text is always still answered. Pillow's work and
the text decoding run in a thread (:func:`prepare_async`), off the event loop.

The downloader fetches only from the hosts it is given (:func:`is_allowed`; the front ends pass
their ``DISCORD_CDN_URL`` / ``SLACK_FILES_URL``), never a URL a user typed, with the size checked
from ``Content-Length`` before reading and while reading, and a timeout.
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import os
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Literal, NamedTuple, Self

import httpx

from .conversations import MessageAttachment
from .fences import fence_for

if TYPE_CHECKING:
    from .settings import Settings

__all__ = [
    "IMAGE_TYPES",
    "TEXT_EXTENSIONS",
    "Attachment",
    "AttachmentLimits",
    "Downloader",
    "Kind",
    "RemoteFile",
    "check_file_hosts",
    "classify",
    "is_allowed",
    "prepare",
    "prepare_all",
    "prepare_all_async",
    "prepare_async",
    "skipped",
    "too_many",
]

log = logging.getLogger("llmconnect.attachments")

Kind = Literal["image", "text", "pdf", "skipped"]

#: Image media types read (a GIF: its first frame), and the extensions that name them.
IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/webp", "image/gif"})
_IMAGE_EXTENSIONS = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".gif": "image/gif",
}
#: Pillow's format names of the accepted images.
_PIL_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}

#: Files read as text whatever media type the platform declares (often none, or
#: ``application/octet-stream``).
# fmt: off
TEXT_EXTENSIONS = frozenset((
    ".py", ".pyi", ".js", ".mjs", ".cjs", ".ts", ".tsx", ".jsx", ".md", ".markdown", ".rst",
    ".json", ".jsonl", ".yaml", ".yml", ".toml", ".csv", ".tsv", ".log", ".txt", ".text", ".html",
    ".htm", ".css", ".scss", ".sh", ".bash", ".zsh", ".ps1", ".bat", ".sql", ".go", ".rs", ".java",
    ".c", ".h", ".cc", ".cpp", ".hpp", ".cs", ".rb", ".php", ".kt", ".kts", ".swift", ".scala",
    ".lua", ".pl", ".r", ".m", ".dart", ".vue", ".svelte", ".xml", ".ini", ".cfg", ".conf", ".env",
    ".properties", ".gradle", ".tex", ".diff", ".patch", ".dockerfile", ".graphql", ".proto",
))
# fmt: on
#: Text files without an extension, by name (dot files included).
_TEXT_NAMES = frozenset(
    {
        "dockerfile",
        "makefile",
        "readme",
        "license",
        "gemfile",
        "procfile",
        ".gitignore",
        ".dockerignore",
        ".editorconfig",
        ".env",
    }
)
#: Non-``text/*`` media types that are text.
_TEXT_TYPES = frozenset(
    {
        "application/json",
        "application/x-ndjson",
        "application/xml",
        "application/yaml",
        "application/x-yaml",
        "application/toml",
        "application/javascript",
        "application/x-javascript",
        "application/typescript",
        "application/x-sh",
        "application/x-python",
        "application/sql",
        "application/x-httpd-php",
    }
)
_PDF = "application/pdf"
_PDF_MAGIC = b"%PDF-"

#: Redirects followed (each to an allowed host only).
MAX_REDIRECTS = 3
_NAME_MAX = 100
#: Images decoded at once in this process (each may take up to ``max_decode_pixels`` * 4 bytes).
_DECODING = threading.BoundedSemaphore(2)
# Control characters (a name is one line), backticks (the fence's info line) and angle brackets
# (Slack's <!channel> and <@U123> syntax).
_UNSAFE_NAME = re.compile(r"[\x00-\x1f\x7f\u2028\u2029`<>]+")


@dataclass(frozen=True, slots=True)
class AttachmentLimits:
    """The limits attachments are read under (the core's settings of the same names)."""

    max_attachments: int = 5
    max_bytes: int = 10 * 1024 * 1024
    max_image_pixels: int = 2048
    max_text_chars: int = 40_000
    download_timeout: float = 20.0
    #: Most pixels an image may decode to (after a JPEG's reduced decoding); more is refused as
    #: a decompression bomb before a pixel is decoded (40 M: 160 MB as RGBA).
    max_decode_pixels: int = 40_000_000

    @classmethod
    def from_settings(cls, settings: Settings) -> AttachmentLimits:
        return cls(
            max_attachments=settings.max_attachments,
            max_bytes=settings.max_attachment_bytes,
            max_image_pixels=settings.max_image_pixels,
            max_text_chars=settings.max_text_attachment_chars,
            download_timeout=settings.attachment_download_timeout,
        )

    @property
    def max_megabytes(self) -> str:
        """``MAX_ATTACHMENT_BYTES`` as users read it: ``10 MB`` (MiB, written MB)."""
        return f"{self.max_bytes / (1024 * 1024):.3g} MB"


@dataclass(frozen=True, slots=True)
class Attachment:
    """One prepared file.

    - ``image``: ``data`` is the image (maybe downscaled, re-encoded), ``media_type`` its type;
    - ``text``: ``text`` is the fenced block under the file's name (with a cut note if cut);
    - ``pdf``: ``data`` is the PDF, ``media_type`` ``application/pdf``;
    - ``skipped``: ``note`` says why, in one short line naming the file.

    ``note`` may also be set on a file that was read (a text file that was cut): a line the user
    may be shown.
    """

    name: str
    kind: Kind
    media_type: str = ""
    data: bytes = b""
    text: str = ""
    note: str = ""

    def __repr__(self) -> str:  # never the bytes themselves
        return (
            f"Attachment(name={self.name!r}, kind={self.kind!r}, media_type={self.media_type!r}, "
            f"data=<{len(self.data)} bytes>, text=<{len(self.text)} chars>, note={self.note!r})"
        )

    def stored(self) -> MessageAttachment | None:
        """What a user :class:`~core.conversations.Message` keeps of it (``None``: skipped)."""
        if self.kind == "skipped":
            return None
        if self.kind == "text":
            return MessageAttachment(self.name, "text", self.media_type, self.text)
        return MessageAttachment(
            self.name, self.kind, self.media_type, base64.b64encode(self.data).decode("ascii")
        )


def clean_name(name: str) -> str:
    """A file name as it may be shown and inlined: one line, no markup, at most 100 chars."""
    name = _UNSAFE_NAME.sub("_", os.path.basename(name.replace("\\", "/"))).strip()
    if len(name) > _NAME_MAX:
        _, dot, ext = name.rpartition(".")
        keep = f".{ext}" if dot and len(ext) <= 10 else ""
        name = name[: _NAME_MAX - len(keep) - 1] + "…" + keep
    return name or "file"


def skipped(name: str, why: str) -> Attachment:
    """A file that is not read, and the line that tells the user: ``Skipped name: why.``"""
    name = clean_name(name)
    return Attachment(name, "skipped", note=f"Skipped {name}: {why}.")


def _extension(name: str) -> str:
    base = name.rsplit("/", 1)[-1].lower()
    return "." + base.rsplit(".", 1)[1] if "." in base.strip(".") else ""


def _media_type(declared: str) -> str:
    return declared.split(";", 1)[0].strip().lower()


def classify(name: str, media_type: str = "") -> Kind:
    """What a file would be read as, from its name and declared media type alone (the bytes are
    checked by :func:`prepare`): ``skipped`` means its type is not read at all."""
    declared = _media_type(media_type)
    ext = _extension(name)
    if declared in IMAGE_TYPES or ext in _IMAGE_EXTENSIONS:
        return "image"
    if declared == _PDF or ext == ".pdf":
        return "pdf"
    if (
        declared.startswith("text/")
        or declared in _TEXT_TYPES
        or ext in TEXT_EXTENSIONS
        or (not ext and name.rsplit("/", 1)[-1].lower() in _TEXT_NAMES)
    ):
        return "text"
    return "skipped"


def prepare(
    name: str, media_type: str, data: bytes, limits: AttachmentLimits | None = None
) -> Attachment:
    """Read one file (CPU-bound for images: call :func:`prepare_async` on the event loop).
    Never raises: a file that cannot be read is ``skipped`` with its reason."""
    limits = limits or AttachmentLimits()
    shown = clean_name(name)
    try:
        kind = classify(name, media_type)
        if kind == "skipped":
            return _not_read(shown)
        if len(data) > limits.max_bytes:
            return skipped(shown, f"larger than the {limits.max_megabytes} limit")
        if kind == "image":
            return _prepare_image(shown, data, limits)
        if kind == "pdf":
            if _PDF_MAGIC not in data[:1024]:
                return skipped(shown, "not a readable PDF")
            return Attachment(shown, "pdf", _PDF, data)
        return _prepare_text(shown, _media_type(media_type) or "text/plain", data, limits)
    except Exception:  # a malformed file must never fail the message
        log.warning("could not read an attachment (%s)", shown, exc_info=True)
        return skipped(shown, "the file could not be read")


async def prepare_async(
    name: str, media_type: str, data: bytes, limits: AttachmentLimits | None = None
) -> Attachment:
    """:func:`prepare` in a worker thread (Pillow's decoding and resizing, the text's decoding)."""
    return await asyncio.to_thread(prepare, name, media_type, data, limits)


def prepare_all(
    files: Iterable[tuple[str, str, bytes]], limits: AttachmentLimits | None = None
) -> list[Attachment]:
    """:func:`prepare` each of a message's files; the ones past ``MAX_ATTACHMENTS`` are skipped
    (blocking: for tests and scripts; the front ends use :func:`prepare_async` per file)."""
    limits = limits or AttachmentLimits()
    return [
        prepare(name, media_type, data, limits)
        if i < limits.max_attachments
        else _too_many(name, limits)
        for i, (name, media_type, data) in enumerate(files)
    ]


async def prepare_all_async(
    files: Sequence[tuple[str, str, bytes]], limits: AttachmentLimits | None = None
) -> list[Attachment]:
    """:func:`prepare_all` off the event loop (each file in a worker thread, at once), in the
    files' order; the bytes of a file past ``MAX_ATTACHMENTS`` are not looked at (a caller may
    pass ``b""``). For a front end that receives the files themselves (the web chat's upload)."""
    limits = limits or AttachmentLimits()
    first = files[: limits.max_attachments]
    read = await asyncio.gather(*(prepare_async(n, t, d, limits) for n, t, d in first))
    return [*read, *(_too_many(n, limits) for n, _, _ in files[limits.max_attachments :])]


def _not_read(name: str) -> Attachment:
    return skipped(name, "this type of file is not read (images, text files and PDFs are)")


def too_many(name: str, limits: AttachmentLimits) -> Attachment:
    """A file past ``MAX_ATTACHMENTS`` in its message: skipped, saying so."""
    return _too_many(name, limits)


def _too_many(name: str, limits: AttachmentLimits) -> Attachment:
    if limits.max_attachments == 0:
        return skipped(name, "attachments are not read here")
    return skipped(name, f"at most {limits.max_attachments} files are read per message")


def _prepare_text(name: str, media_type: str, data: bytes, limits: AttachmentLimits) -> Attachment:
    text = data.decode("utf-8", "replace").removeprefix("\ufeff")
    text = text.replace("\r\n", "\n")
    cut = len(text) > limits.max_text_chars
    note = ""
    if cut:
        text = text[: limits.max_text_chars]
        note = f"{name} was cut to its first {limits.max_text_chars:,} characters."
    fence = fence_for(text)
    body = text if not text or text.endswith("\n") else text + "\n"
    block = f"{name}\n{fence}{_info_string(name)}\n{body}{fence}"
    if cut:
        block += f"\n[{note}]"
    return Attachment(name, "text", media_type, text=block, note=note)


def _info_string(name: str) -> str:
    ext = _extension(name)[1:]
    return ext if ext.isalnum() else ""


def _scaled(size: tuple[int, int], long_side: int) -> tuple[int, int]:
    """``size`` scaled so that its longer side is ``long_side``, keeping the aspect."""
    w, h = size
    scale = long_side / max(w, h)
    if w >= h:
        return long_side, max(1, round(h * scale))
    return max(1, round(w * scale)), long_side


def _prepare_image(name: str, data: bytes, limits: AttachmentLimits) -> Attachment:
    with _DECODING:  # a few images at a time in memory, however many messages arrive at once
        return _decode_image(name, data, limits)


def _decode_image(name: str, data: bytes, limits: AttachmentLimits) -> Attachment:
    from PIL import Image, ImageOps, UnidentifiedImageError

    unreadable = "not a readable image (PNG, JPEG, WebP or GIF)"
    too_large = "the image is too large to decode"
    try:
        image = Image.open(io.BytesIO(data), formats=list(_PIL_FORMATS))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return skipped(name, unreadable)
    except Image.DecompressionBombError:  # more than twice Pillow's MAX_IMAGE_PIXELS
        return skipped(name, too_large)
    with image:
        source = _PIL_FORMATS[str(image.format)]
        if source == "image/jpeg" and max(image.size) > limits.max_image_pixels:
            # JPEG decodes at 1/2, 1/4 or 1/8 scale: a huge photo costs a fraction of its memory.
            image.draft("RGB", _scaled(image.size, limits.max_image_pixels))
        width, height = image.size
        # A decompression bomb: a small file that decodes to a huge image. Refused from the
        # header, before any pixel is decoded.
        if width * height > limits.max_decode_pixels:
            return skipped(name, too_large)
        try:
            image.seek(0)  # a GIF's (or an animated WebP/PNG's) first frame
            image.load()
        except (OSError, ValueError, SyntaxError, EOFError):
            return skipped(name, unreadable)
        if max(width, height) <= limits.max_image_pixels and source != "image/gif":
            return Attachment(name, "image", source, data)
        frame = ImageOps.exif_transpose(image)
        alpha = frame.mode in ("RGBA", "LA", "PA") or (
            frame.mode == "P" and "transparency" in frame.info
        )
        frame = frame.convert("RGBA" if alpha else "RGB")
        if max(frame.size) > limits.max_image_pixels:
            frame = frame.resize(
                _scaled(frame.size, limits.max_image_pixels), Image.Resampling.LANCZOS
            )
        out = io.BytesIO()
        if alpha or source in ("image/png", "image/gif"):
            frame.save(out, "PNG")
            media_type = "image/png"
        else:
            frame.save(out, "JPEG", quality=85)
            media_type = "image/jpeg"
        return Attachment(name, "image", media_type, out.getvalue())


# --- Downloads -----------------------------------------------------------------------------------


class RemoteFile(NamedTuple):
    """A file on a platform's file host: its URL, name, declared media type and size (when the
    platform says it: a larger one is skipped without a request)."""

    url: str
    name: str
    media_type: str = ""
    size: int | None = None


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    port = url.port
    if port is None:
        port = {"https": 443, "http": 80}.get(url.scheme)
    return url.scheme, url.host.lower(), port


def check_file_hosts(urls: Sequence[str]) -> list[str]:
    """A settings validator for a list of file hosts: each an ``http(s)://host[:port]`` URL with no
    user name or password. Returns them without a trailing ``/``."""
    clean = []
    for raw in urls:
        try:
            url = httpx.URL(raw)
        except (httpx.InvalidURL, ValueError):
            raise ValueError(f"{raw!r} is not a URL") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"expected https://host URLs, got {raw!r}")
        if url.userinfo:
            raise ValueError("a file host URL may not hold a user name or password")
        clean.append(raw.rstrip("/"))
    return clean


def is_allowed(url: str | httpx.URL, allowed_base_urls: Iterable[str]) -> bool:
    """Whether ``url`` is on one of the file hosts: its scheme, host (exactly, case aside) and
    port are those of one of ``allowed_base_urls`` (their paths do not matter), and it holds no
    user name or password. The defaults are ``https`` hosts; a configured ``http://`` loopback
    stand-in (tests) is allowed on exactly its own port."""
    try:
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
    except (httpx.InvalidURL, ValueError, TypeError):
        return False
    if parsed.userinfo or parsed.scheme not in ("http", "https") or not parsed.host:
        return False
    origin = _origin(parsed)
    for base in allowed_base_urls:
        try:
            allowed = httpx.URL(base)
        except (httpx.InvalidURL, ValueError):
            continue
        if allowed.host and not allowed.userinfo and _origin(allowed) == origin:
            return True
    return False


class _Skip(Exception):
    """A download that stops, with the reason the user reads."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


class Downloader:
    """Downloads attachments from a platform's own file hosts, and reads them.

    ``allowed_base_urls``: the hosts (``DISCORD_CDN_URL``, ``SLACK_FILES_URL``); ``headers``: sent
    with every request to them (Slack's ``Authorization: Bearer xoxb-…``), never logged nor shown
    in an error or a repr, and not sent on after a redirect to another host. One connection pool
    per downloader (``async with``, or :meth:`aclose`).
    """

    def __init__(
        self,
        allowed_base_urls: Sequence[str],
        limits: AttachmentLimits | None = None,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.allowed = tuple(allowed_base_urls)
        self.limits = limits or AttachmentLimits()
        self.__headers = dict(headers or {})
        self._client = httpx.AsyncClient(
            follow_redirects=False,
            timeout=httpx.Timeout(self.limits.download_timeout),
            trust_env=False,  # no .netrc credentials nor proxies from the environment
        )

    def __repr__(self) -> str:
        return f"Downloader(allowed={list(self.allowed)!r}, headers=<{len(self.__headers)} hidden>)"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def fetch(
        self, url: str, name: str, media_type: str = "", *, size: int | None = None
    ) -> Attachment:
        """Download ``url`` and :func:`prepare` it (in a thread). Never raises (but for
        cancellation): a refused or failed download is a ``skipped`` attachment."""
        if classify(name, media_type) == "skipped" and (media_type or _extension(name)):
            return _not_read(name)  # not even downloaded (with neither: the served type decides)
        if size is not None and size > self.limits.max_bytes:
            return skipped(name, f"larger than the {self.limits.max_megabytes} limit")
        try:
            async with asyncio.timeout(self.limits.download_timeout):
                data, served_type = await self._download(url)
        except _Skip as stop:
            return skipped(name, stop.why)
        except (TimeoutError, httpx.TimeoutException):
            log.info("attachment download timed out (%s)", _where(url))
            return skipped(name, "the download timed out")
        except httpx.HTTPError as exc:
            log.info("attachment download failed (%s): %s", _where(url), type(exc).__name__)
            return skipped(name, "the download failed")
        except Exception as exc:  # never an exception to the caller: the text is still answered
            log.warning("attachment download failed (%s): %r", _where(url), exc)
            return skipped(name, "the download failed")
        if _media_type(served_type) == "text/html" and not _is_html(name, media_type):
            # Slack's file host answers a missing or wrong token with a 200 sign-in page.
            log.info("attachment download: a web page instead of the file (%s)", _where(url))
            return skipped(name, "the file host sent a web page instead of the file")
        return await prepare_async(name, media_type or served_type, data, self.limits)

    async def fetch_all(self, files: Iterable[RemoteFile]) -> list[Attachment]:
        """:meth:`fetch` a message's files at once; those past ``MAX_ATTACHMENTS`` are skipped
        without a request. In the files' order."""
        files = list(files)
        first = files[: self.limits.max_attachments]
        fetched = await asyncio.gather(
            *(self.fetch(f.url, f.name, f.media_type, size=f.size) for f in first)
        )
        return [
            *fetched,
            *(_too_many(f.name, self.limits) for f in files[self.limits.max_attachments :]),
        ]

    async def _download(self, url: str) -> tuple[bytes, str]:
        try:
            current = httpx.URL(url)
        except (httpx.InvalidURL, ValueError, TypeError):
            raise _Skip("not a file on this platform's file host") from None
        if not is_allowed(current, self.allowed):
            log.info("attachment refused: %s is not an allowed file host", _where(url))
            raise _Skip("not a file on this platform's file host")
        first = _origin(current)
        for _ in range(MAX_REDIRECTS + 1):
            # The headers (a token) only go to the origin they were meant for.
            headers = self.__headers if _origin(current) == first else {}
            request = self._client.build_request("GET", current, headers=headers)
            response = await self._client.send(request, stream=True)
            try:
                if response.is_redirect:
                    location = response.headers.get("location", "")
                    try:
                        target = current.join(location)
                    except (httpx.InvalidURL, ValueError):
                        raise _Skip("the download failed") from None
                    if not is_allowed(target, self.allowed):
                        log.info("attachment redirect refused: %s", _where(str(target)))
                        raise _Skip("the file is redirected off this platform's file host")
                    current = target
                    continue
                if response.status_code != 200:
                    log.info("attachment download: HTTP %d (%s)", response.status_code, _where(url))
                    raise _Skip(f"the download failed (HTTP {response.status_code})")
                return await self._read(response), response.headers.get("content-type", "")
            finally:
                await response.aclose()
        raise _Skip("the download was redirected too many times")

    async def _read(self, response: httpx.Response) -> bytes:
        cap = self.limits.max_bytes
        too_big = f"larger than the {self.limits.max_megabytes} limit"
        declared = response.headers.get("content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > cap:
            raise _Skip(too_big)
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > cap:
                raise _Skip(too_big)  # stop reading at the cap, whatever the header said
        return bytes(body)


def _is_html(name: str, media_type: str) -> bool:
    return _media_type(media_type) == "text/html" or _extension(name) in (".html", ".htm")


def _where(url: str) -> str:
    """A URL as logged: scheme, host and path (a signed query string is left out)."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError, TypeError):
        return "an invalid URL"
    return f"{parsed.scheme}://{parsed.host}{parsed.path}"
