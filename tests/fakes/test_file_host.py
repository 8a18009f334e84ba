"""Self-test of the file host stand-in over raw httpx, so the fake itself is trusted."""

from __future__ import annotations

import httpx

from tests.fakes.file_host import SIGN_IN_PAGE, FakeFileHost


async def test_serves_files_with_their_length_and_records_requests() -> None:
    async with FakeFileHost() as host, httpx.AsyncClient() as client:
        url = host.add("/a/b.txt", b"x" * 10_000, "text/plain")
        response = await client.get(url, headers={"Authorization": "Bearer t"})
        missing = await client.get(host.base_url + "/nope")
    assert response.status_code == 200
    assert response.content == b"x" * 10_000
    assert response.headers["content-length"] == "10000"
    assert response.headers["content-type"] == "text/plain"
    assert missing.status_code == 404
    assert [(r.path, r.authorization) for r in host.requests] == [
        ("/a/b.txt", "Bearer t"),
        ("/nope", None),
    ]


async def test_chunked_without_a_length_and_a_lying_length() -> None:
    async with FakeFileHost() as host, httpx.AsyncClient() as client:
        chunked = host.add("/c", b"y" * 9_000, length=None)
        liar = host.add("/l", b"tiny", length=10**9)
        response = await client.get(chunked)
        async with client.stream("GET", liar) as lying:
            announced = lying.headers["content-length"]
    assert "content-length" not in response.headers
    assert response.headers["transfer-encoding"] == "chunked"
    assert response.content == b"y" * 9_000
    assert announced == str(10**9)


async def test_a_token_host_answers_a_sign_in_page_without_it_and_redirects() -> None:
    async with FakeFileHost(token="xoxb-1") as host, httpx.AsyncClient() as client:
        url = host.add("/f.png", b"png", "image/png")
        moved = host.add("/m", b"", redirect="https://elsewhere.example/x")
        anonymous = await client.get(url)
        signed = await client.get(url, headers={"Authorization": "Bearer xoxb-1"})
        redirect = await client.get(moved, headers={"Authorization": "Bearer xoxb-1"})
    assert anonymous.status_code == 200
    assert anonymous.content == SIGN_IN_PAGE
    assert anonymous.headers["content-type"].startswith("text/html")
    assert signed.content == b"png"
    assert redirect.status_code == 302
    assert redirect.headers["location"] == "https://elsewhere.example/x"
