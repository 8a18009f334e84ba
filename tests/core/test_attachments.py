"""core/attachments.py: real images through Pillow, real text files, real downloads from a local
file host (tests/fakes/file_host.py) over loopback."""

from __future__ import annotations

import base64
import io
import logging
import struct
import zlib
from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt
from PIL import Image

from core.attachments import (
    Attachment,
    AttachmentLimits,
    Downloader,
    RemoteFile,
    check_file_hosts,
    classify,
    is_allowed,
    prepare,
    prepare_all,
    prepare_async,
)
from tests.fakes.file_host import FakeFileHost

SMALL = AttachmentLimits(max_bytes=64 * 1024, max_text_chars=100, download_timeout=5.0)


def image_bytes(
    size: tuple[int, int], fmt: str = "PNG", mode: str = "RGB", color: object = (200, 30, 30)
) -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, color).save(out, fmt)  # type: ignore[arg-type]
    return out.getvalue()


def decoded(attachment: Attachment) -> Image.Image:
    image = Image.open(io.BytesIO(attachment.data))
    image.load()
    return image


# --- Classification --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "media_type", "kind"),
    [
        ("photo.PNG", "", "image"),
        ("photo", "image/jpeg", "image"),
        ("anim.gif", "image/gif", "image"),
        ("pic.webp", "application/octet-stream", "image"),
        ("paper.pdf", "", "pdf"),
        ("download", "application/pdf", "pdf"),
        ("main.py", "", "text"),
        ("App.tsx", "application/octet-stream", "text"),
        ("notes", "text/plain; charset=utf-8", "text"),
        ("data.json", "application/json", "text"),
        ("Dockerfile", "", "text"),
        (".gitignore", "", "text"),
        ("src/.env", "", "text"),
        ("report.docx", "application/vnd.openxmlformats", "skipped"),
        ("drawing.svg", "image/svg+xml", "skipped"),
        ("archive.zip", "", "skipped"),
        ("noextension", "", "skipped"),
    ],
)
def test_classify_by_declared_type_and_name(name: str, media_type: str, kind: str) -> None:
    assert classify(name, media_type) == kind


def test_an_unsupported_file_is_skipped_naming_it_and_why() -> None:
    result = prepare("report.docx", "application/octet-stream", b"PK\x03\x04")
    assert result.kind == "skipped"
    assert result.note == (
        "Skipped report.docx: this type of file is not read (images, text files and PDFs are)."
    )
    assert result.stored() is None


def test_a_name_is_one_line_without_markup() -> None:
    result = prepare("../../etc/evil\n<!channel>`x`.docx", "", b"")
    assert result.name == "evil_!channel_x_.docx"
    assert "\n" not in result.note
    long = prepare("a" * 300 + ".py", "", b"x")
    assert len(long.name) == 100
    assert long.name.endswith("….py")


# --- Images ------------------------------------------------------------------------------------


def test_a_large_png_is_downscaled_to_the_long_side_keeping_its_aspect() -> None:
    result = prepare("wide.png", "image/png", image_bytes((4096, 1024)))
    assert result.kind == "image"
    assert result.media_type == "image/png"
    assert decoded(result).size == (2048, 512)


def test_a_tall_jpeg_is_downscaled_and_stays_a_jpeg() -> None:
    result = prepare("tall.jpg", "image/jpeg", image_bytes((1000, 3000), "JPEG"))
    assert result.media_type == "image/jpeg"
    image = decoded(result)
    assert image.format == "JPEG"
    assert image.size == (683, 2048)  # 1000 * 2048 / 3000 = 682.7


def test_an_image_at_the_limit_is_kept_as_it_was_and_one_pixel_more_is_scaled() -> None:
    exact = image_bytes((2048, 1000))
    kept = prepare("exact.png", "image/png", exact)
    assert kept.data == exact
    over = prepare("over.png", "image/png", image_bytes((2049, 1500)))
    assert decoded(over).size == (2048, 1499)  # 1500 * 2048 / 2049 = 1499.3


def test_transparency_is_kept_as_a_png() -> None:
    result = prepare(
        "logo.webp", "image/webp", image_bytes((3000, 300), "WEBP", "RGBA", (9, 9, 9, 128))
    )
    image = decoded(result)
    assert result.media_type == "image/png"
    assert image.mode == "RGBA"
    assert image.size == (2048, 205)


def test_a_small_webp_is_sent_as_it_is() -> None:
    data = image_bytes((40, 30), "WEBP")
    result = prepare("small.webp", "", data)
    assert (result.kind, result.media_type, result.data) == ("image", "image/webp", data)


def test_the_format_comes_from_the_bytes_not_the_declared_type() -> None:
    data = image_bytes((10, 10), "JPEG")
    result = prepare("actually.png", "image/png", data)
    assert result.media_type == "image/jpeg"


def test_a_gif_is_its_first_frame_as_a_png() -> None:
    red = Image.new("RGB", (20, 10), (255, 0, 0))
    blue = Image.new("RGB", (20, 10), (0, 0, 255))
    out = io.BytesIO()
    red.save(out, "GIF", save_all=True, append_images=[blue], duration=100, loop=0)
    result = prepare("anim.gif", "image/gif", out.getvalue())
    image = decoded(result)
    assert result.media_type == "image/png"
    assert image.format == "PNG"
    assert image.size == (20, 10)
    assert image.convert("RGB").getpixel((5, 5)) == (255, 0, 0)


def test_a_file_named_png_that_is_no_image_is_skipped() -> None:
    result = prepare("fake.png", "image/png", b"this is not an image at all")
    assert result.kind == "skipped"
    assert result.note == "Skipped fake.png: not a readable image (PNG, JPEG, WebP or GIF)."


def test_a_truncated_image_is_skipped() -> None:
    noisy = Image.effect_noise((300, 300), 80)
    out = io.BytesIO()
    noisy.save(out, "PNG")
    data = out.getvalue()
    result = prepare("cut.png", "image/png", data[: len(data) // 2])
    assert result.kind == "skipped"
    assert "not a readable image" in result.note


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that says it is ``width`` x ``height`` with almost no data: a decompression bomb."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("side", [10_000, 100_000])  # over Pillow's limit, and over twice it
def test_a_decompression_bomb_is_refused_before_decoding(side: int) -> None:
    with pytest.warns(Image.DecompressionBombWarning) if side == 10_000 else _no_warning():
        result = prepare("bomb.png", "image/png", png_header_only(side, side))
    assert result.kind == "skipped"
    assert result.note == "Skipped bomb.png: the image is too large to decode."


def test_an_image_over_the_decode_limit_is_refused_and_a_big_jpeg_decodes_reduced() -> None:
    limits = AttachmentLimits(max_image_pixels=512, max_decode_pixels=600_000)
    assert prepare("p.png", "", png_header_only(7000, 7000)).note == (
        "Skipped p.png: the image is too large to decode."  # 49 M pixels: over the default 40 M
    )
    refused = prepare("p.png", "image/png", image_bytes((1000, 700)), limits)
    assert refused.note == "Skipped p.png: the image is too large to decode."
    photo = prepare("p.jpg", "image/jpeg", image_bytes((2000, 1000), "JPEG"), limits)
    assert photo.kind == "image"  # 2 M pixels, decoded at half scale: 500 K
    assert decoded(photo).size == (512, 256)


class _no_warning:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


# --- Text files --------------------------------------------------------------------------------


def test_a_source_file_is_inlined_as_a_fenced_block_under_its_name() -> None:
    result = prepare("main.py", "", b"print('hi')\n")
    assert result.kind == "text"
    assert result.text == "main.py\n```py\nprint('hi')\n```"
    assert result.note == ""


def fenced_content(block: str) -> list[str]:
    tokens = MarkdownIt("commonmark").parse(block)
    return [t.content for t in tokens if t.type == "fence"]


@pytest.mark.parametrize(
    "content",
    [
        "Use:\n```sh\nls\n```\nthen go.\n",
        "````\nfour\n````\n",
        "  ```\nindented three\n",
        "no newline at the end ```",
    ],
)
def test_a_file_holding_fences_gets_a_longer_fence_and_stays_one_block(content: str) -> None:
    result = prepare("README.md", "text/markdown", content.encode())
    assert fenced_content(result.text) == [content if content.endswith("\n") else content + "\n"]


def test_text_at_the_limit_is_whole_and_one_more_character_is_cut_with_a_note() -> None:
    exact = prepare("a.log", "", b"x" * 100, SMALL)
    assert exact.note == ""
    assert exact.text == "a.log\n```log\n" + "x" * 100 + "\n```"
    over = prepare("a.log", "", b"x" * 101, SMALL)
    assert over.note == "a.log was cut to its first 100 characters."
    assert (
        over.text
        == "a.log\n```log\n" + "x" * 100 + "\n```\n[a.log was cut to its first 100 characters.]"
    )


def test_the_default_text_cap_is_forty_thousand_characters() -> None:
    result = prepare("big.txt", "text/plain", b"y" * 40_001)
    assert fenced_content(result.text) == ["y" * 40_000 + "\n"]
    assert "40,000" in result.note


def test_text_is_utf8_with_bad_bytes_replaced_bom_and_crlf_dropped() -> None:
    result = prepare("n.csv", "text/csv", b"\xef\xbb\xbfa,b\r\nc,\xff\r\n")
    assert fenced_content(result.text) == ["a,b\nc,\ufffd\n"]
    assert result.media_type == "text/csv"


# --- PDF, sizes, counts ------------------------------------------------------------------------


def test_a_pdf_is_kept_as_bytes() -> None:
    data = b"%PDF-1.7\n" + b"0" * 100 + b"\n%%EOF"
    result = prepare("paper.pdf", "", data)
    assert (result.kind, result.media_type, result.data) == ("pdf", "application/pdf", data)
    stored = result.stored()
    assert stored is not None
    assert stored.raw() == data


def test_a_pdf_that_is_not_one_is_skipped() -> None:
    result = prepare("paper.pdf", "application/pdf", b"<html>")
    assert result.note == "Skipped paper.pdf: not a readable PDF."


def test_a_file_at_the_size_limit_is_read_and_one_byte_more_is_skipped() -> None:
    limits = AttachmentLimits(max_bytes=2048)
    assert prepare("a.txt", "", b"z" * 2048, limits).kind == "text"
    over = prepare("a.txt", "", b"z" * 2049, limits)
    assert over.kind == "skipped"
    assert over.note == "Skipped a.txt: larger than the 0.00195 MB limit."
    default = prepare("big.txt", "", b"z" * (10 * 1024 * 1024 + 1))
    assert default.note == "Skipped big.txt: larger than the 10 MB limit."
    assert prepare("big.txt", "", b"z" * (10 * 1024 * 1024)).kind == "text"


def test_at_most_max_attachments_files_are_read() -> None:
    files = [(f"f{i}.txt", "text/plain", b"hi") for i in range(6)]
    results = prepare_all(files)
    assert [r.kind for r in results] == ["text"] * 5 + ["skipped"]
    assert results[5].note == "Skipped f5.txt: at most 5 files are read per message."
    none = prepare_all(files[:1], AttachmentLimits(max_attachments=0))
    assert none[0].note == "Skipped f0.txt: attachments are not read here."


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(["a.png", "a.jpg", "a.gif", "a.webp", "a.pdf", "a.py", "a", "a.bin"]),
    media_type=st.sampled_from(["", "image/png", "text/plain", "application/pdf", "bogus/;;"]),
    data=st.binary(max_size=512),
)
def test_prepare_never_raises(name: str, media_type: str, data: bytes) -> None:
    result = prepare(name, media_type, data)
    assert result.kind in ("image", "text", "pdf", "skipped")
    assert (result.kind == "skipped") == bool(result.note.startswith("Skipped "))


async def test_prepare_async_gives_what_prepare_gives() -> None:
    data = image_bytes((3000, 10))
    assert await prepare_async("w.png", "image/png", data) == prepare("w.png", "image/png", data)


def test_stored_image_round_trips_through_base64_and_repr_hides_the_bytes() -> None:
    result = prepare("w.png", "image/png", image_bytes((10, 10)))
    stored = result.stored()
    assert stored is not None
    assert stored.raw() == result.data
    assert base64.b64decode(stored.data) == result.data
    assert str(len(result.data)) in repr(result)
    assert "\\x89PNG" not in repr(result)
    assert stored.data not in repr(stored)


# --- Allowed hosts -----------------------------------------------------------------------------

DISCORD = ["https://cdn.discordapp.com", "https://media.discordapp.net"]


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://cdn.discordapp.com/attachments/1/2/a.png?ex=1&hm=2", True),
        ("https://CDN.DiscordApp.com/a.png", True),
        ("https://media.discordapp.net:443/a.png", True),
        ("http://cdn.discordapp.com/a.png", False),
        ("https://cdn.discordapp.com:8443/a.png", False),
        ("https://cdn.discordapp.com.evil.example/a.png", False),
        ("https://evil.example/cdn.discordapp.com/a.png", False),
        ("https://evilcdn.discordapp.com/a.png", False),
        ("https://user:pw@cdn.discordapp.com/a.png", False),
        ("https://cdn.discordapp.com@evil.example/a.png", False),
        ("https://evil.example\\@cdn.discordapp.com/a.png", False),
        ("ftp://cdn.discordapp.com/a.png", False),
        ("//cdn.discordapp.com/a.png", False),
        ("cdn.discordapp.com/a.png", False),
        ("", False),
        ("https://[::1/", False),
    ],
)
def test_only_the_exact_origin_of_a_file_host_is_allowed(url: str, allowed: bool) -> None:
    assert is_allowed(url, DISCORD) is allowed


def test_a_loopback_stand_in_is_allowed_on_its_own_scheme_and_port_only() -> None:
    base = ["http://127.0.0.1:8123"]
    assert is_allowed("http://127.0.0.1:8123/f/a.png", base)
    assert not is_allowed("http://127.0.0.1:8124/f/a.png", base)
    assert not is_allowed("https://127.0.0.1:8123/f/a.png", base)
    assert not is_allowed("http://localhost:8123/f/a.png", base)
    assert not is_allowed("http://127.0.0.1:8123/a.png", [])


def test_file_host_settings_refuse_what_is_not_a_plain_host_url() -> None:
    assert check_file_hosts(["https://files.slack.com/"]) == ["https://files.slack.com"]
    for bad in ["files.slack.com", "ftp://files.slack.com", "https://u:p@files.slack.com"]:
        with pytest.raises(ValueError):  # noqa: PT011 - the message is checked in the bots' tests
            check_file_hosts([bad])


# --- Downloads ---------------------------------------------------------------------------------


@pytest.fixture
async def host() -> AsyncIterator[FakeFileHost]:
    async with FakeFileHost() as server:
        yield server


@pytest.fixture
async def other_host() -> AsyncIterator[FakeFileHost]:
    async with FakeFileHost() as server:
        yield server


def downloader(host: FakeFileHost, limits: AttachmentLimits = SMALL, **kw: object) -> Downloader:
    return Downloader([host.base_url], limits, **kw)  # type: ignore[arg-type]


async def test_a_file_on_the_allowed_host_is_downloaded_and_read(host: FakeFileHost) -> None:
    url = host.add("/att/1/wide.png", image_bytes((4096, 512)), "image/png")
    async with downloader(host, AttachmentLimits()) as d:
        result = await d.fetch(url, "wide.png", "image/png")
    assert result.kind == "image"
    assert decoded(result).size == (2048, 256)


async def test_the_served_type_is_used_when_the_platform_declares_none(host: FakeFileHost) -> None:
    url = host.add("/f/notes", b"# notes\n", "text/markdown; charset=utf-8")
    async with downloader(host) as d:
        result = await d.fetch(url, "notes")
    assert result.kind == "text"
    assert result.text.startswith("notes\n```\n# notes")


async def test_a_file_on_another_host_is_never_requested(
    host: FakeFileHost, other_host: FakeFileHost
) -> None:
    url = other_host.add("/a.png", image_bytes((5, 5)), "image/png")
    async with downloader(host) as d:
        result = await d.fetch(url, "a.png", "image/png")
    assert result.note == "Skipped a.png: not a file on this platform's file host."
    assert other_host.requests == []


async def test_a_redirect_to_a_forbidden_host_is_not_followed(
    host: FakeFileHost, other_host: FakeFileHost
) -> None:
    target = other_host.add("/a.png", image_bytes((5, 5)), "image/png")
    url = host.add("/a.png", b"", redirect=target)
    async with downloader(host) as d:
        result = await d.fetch(url, "a.png", "image/png")
    assert result.note == "Skipped a.png: the file is redirected off this platform's file host."
    assert other_host.requests == []


async def test_a_redirect_within_the_allowed_hosts_is_followed_without_the_token_elsewhere(
    other_host: FakeFileHost,
) -> None:
    async with FakeFileHost(token="xoxb-SECRET-1") as host:
        target = other_host.add("/real.txt", b"hello", "text/plain")
        url = host.add("/start.txt", b"", redirect=target)
        local = host.add("/moved.txt", b"", redirect="/real2.txt")
        host.add("/real2.txt", b"again", "text/plain")
        d = Downloader(
            [host.base_url, other_host.base_url],
            SMALL,
            headers={"Authorization": "Bearer xoxb-SECRET-1"},
        )
        async with d:
            elsewhere = await d.fetch(url, "start.txt")
            same = await d.fetch(local, "moved.txt")
    assert "hello" in elsewhere.text
    assert other_host.requests[0].authorization is None  # the token stays with its own host
    assert "again" in same.text
    assert [r.authorization for r in host.requests[-2:]] == ["Bearer xoxb-SECRET-1"] * 2


async def test_redirects_are_bounded(host: FakeFileHost) -> None:
    url = host.add("/loop.txt", b"", redirect="/loop.txt")
    async with downloader(host) as d:
        result = await d.fetch(url, "loop.txt")
    assert result.note == "Skipped loop.txt: the download was redirected too many times."
    assert len(host.requests) == 4


@pytest.mark.parametrize("length", ["body", None])  # announced, and chunked without a length
async def test_a_download_at_the_size_limit_is_read_and_one_byte_more_is_refused(
    host: FakeFileHost, length: str | None
) -> None:
    limits = AttachmentLimits(max_bytes=50_000)
    exact = host.add("/exact.txt", b"e" * 50_000, "text/plain", length=length)  # type: ignore[arg-type]
    over = host.add("/over.txt", b"o" * 50_001, "text/plain", length=length)  # type: ignore[arg-type]
    async with downloader(host, limits) as d:
        ok = await d.fetch(exact, "exact.txt")
        refused = await d.fetch(over, "over.txt")
    assert ok.kind == "text"
    assert refused.note == "Skipped over.txt: larger than the 0.0477 MB limit."


async def test_a_content_length_over_the_limit_is_refused_before_reading(
    host: FakeFileHost,
) -> None:
    url = host.add("/liar.txt", b"tiny", "text/plain", length=10**9)
    async with downloader(host) as d:
        result = await d.fetch(url, "liar.txt")
    assert result.note == "Skipped liar.txt: larger than the 0.0625 MB limit."


async def test_a_size_the_platform_declares_over_the_limit_is_not_requested(
    host: FakeFileHost,
) -> None:
    url = host.add("/big.png", b"x", "image/png")
    async with downloader(host) as d:
        result = await d.fetch(url, "big.png", "image/png", size=SMALL.max_bytes + 1)
        unsupported = await d.fetch(url, "setup.exe")
    assert result.note == "Skipped big.png: larger than the 0.0625 MB limit."
    assert unsupported.note.startswith("Skipped setup.exe: this type of file is not read")
    assert host.requests == []


@pytest.mark.parametrize("hang", ["headers", "body"])
async def test_a_download_that_stalls_is_skipped_at_the_timeout(
    host: FakeFileHost, hang: str
) -> None:
    url = host.add("/slow.txt", b"s" * 10_000, "text/plain", hang=hang)  # type: ignore[arg-type]
    async with downloader(host, AttachmentLimits(download_timeout=0.05)) as d:
        result = await d.fetch(url, "slow.txt")
    assert result.note == "Skipped slow.txt: the download timed out."


async def test_a_failed_download_is_a_short_note(host: FakeFileHost) -> None:
    missing = host.base_url + "/missing.txt"
    async with downloader(host) as d:
        not_found = await d.fetch(missing, "missing.txt")
    assert not_found.note == "Skipped missing.txt: the download failed (HTTP 404)."
    closed = FakeFileHost()
    await closed.start()
    gone = closed.base_url + "/a.txt"
    await closed.close()
    async with Downloader([gone.rsplit("/", 1)[0]], SMALL) as d:
        refused = await d.fetch(gone, "a.txt")
    assert refused.note == "Skipped a.txt: the download failed."


async def test_the_bot_token_is_sent_and_never_logged_nor_shown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = "xoxb-VERY-SECRET-42"
    caplog.set_level(logging.DEBUG)
    async with FakeFileHost(token=token) as host:
        url = host.add("/files-pri/T1-F1/a.py", b"x = 1\n", "text/plain")
        missing = host.base_url + "/files-pri/none.py"
        d = Downloader([host.base_url], SMALL, headers={"Authorization": f"Bearer {token}"})
        async with d:
            result = await d.fetch(url, "a.py")
            failed = await d.fetch(missing, "none.py")
            shown = repr(d)
        async with Downloader([host.base_url], SMALL) as anonymous:
            sign_in = await anonymous.fetch(url, "a.py")
    assert result.text == "a.py\n```py\nx = 1\n```"
    assert host.requests[0].authorization == f"Bearer {token}"
    assert failed.kind == "skipped"
    assert sign_in.note == "Skipped a.py: the file host sent a web page instead of the file."
    assert "xoxb" not in shown
    assert "hidden" in shown
    for text in [caplog.text, shown, repr(result), repr(failed), failed.note, sign_in.note]:
        assert token not in text
    assert any(r.name == "llmconnect.attachments" for r in caplog.records)


async def test_fetch_all_reads_at_most_max_attachments_in_order(host: FakeFileHost) -> None:
    files = [
        RemoteFile(host.add(f"/f{i}.txt", f"file {i}".encode(), "text/plain"), f"f{i}.txt")
        for i in range(7)
    ]
    async with downloader(host, AttachmentLimits(max_attachments=5)) as d:
        results = await d.fetch_all(files)
    assert [r.name for r in results] == [f"f{i}.txt" for i in range(7)]
    assert [r.kind for r in results] == ["text"] * 5 + ["skipped"] * 2
    assert "file 4" in results[4].text
    assert results[6].note == "Skipped f6.txt: at most 5 files are read per message."
    assert sorted(r.path for r in host.requests) == [f"/f{i}.txt" for i in range(5)]


async def test_prepare_all_async_keeps_the_order_and_skips_past_the_limit_unread() -> None:
    from core.attachments import prepare_all_async, too_many

    limits = AttachmentLimits(max_attachments=2)
    files = [
        ("a.txt", "text/plain", b"one"),
        ("b.bin", "", b"x"),
        ("c.txt", "text/plain", b""),  # past the limit: its bytes are not looked at
    ]
    done = await prepare_all_async(files, limits)
    assert [(a.name, a.kind) for a in done] == [
        ("a.txt", "text"),
        ("b.bin", "skipped"),
        ("c.txt", "skipped"),
    ]
    assert done[2] == too_many("c.txt", limits)
    assert done[2].note == "Skipped c.txt: at most 2 files are read per message."
