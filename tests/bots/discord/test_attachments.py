"""Discord attachments and context through discord.py against the stand-in: files downloaded
from the CDN stand-in (``DISCORD_CDN_URL``), a forward's snapshot, a reply chain."""

from __future__ import annotations

import io

from PIL import Image

from tests.fakes.llm_server import FakeLLMServer, ReceivedPart, Reply

from .conftest import BotStarter, World, wait_for


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (5, 3), (10, 200, 10)).save(out, "PNG")
    return out.getvalue()


async def first_request(llm: FakeLLMServer, count: int) -> None:
    await wait_for(lambda: len(llm.requests) > count)


async def test_an_image_reaches_a_vision_model_as_an_image_part(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    server = world.server
    await start_bot(
        discord_cdn_url=server.cdn_url,
        llmconnect_model="local/gpt-4o-mini",
        llmconnect_allowed_models="local/*",
    )
    image = png()
    file = server.add_file("green.png", image, "image/png")
    llm.enqueue(Reply(text="a green box"))
    prompt = await server.send_message(
        world.general, world.alice, "what is it?", attachments=[file]
    )
    await wait_for(lambda: [m.content for m in server.replies_to(prompt)] == ["a green box"])
    assert llm.requests[-1].parts() == [
        ReceivedPart("text", "text", text="what is it?"),
        ReceivedPart("image", "image_url", media_type="image/png", data=image),
    ]
    assert server.file_requests == [file["proxy_url"].removeprefix(server.cdn_url)]


async def test_a_file_off_the_cdn_is_refused_with_a_line_and_the_text_answered(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    server = world.server
    # The CDN is the stand-in at 127.0.0.1; the same server named "localhost" is another host.
    await start_bot(discord_cdn_url=server.cdn_url)
    file = server.add_file("notes.txt", b"secret", "text/plain")
    file["url"] = file["url"].replace("127.0.0.1", "localhost")
    llm.enqueue(Reply(text="hello back"))
    prompt = await server.send_message(world.general, world.alice, "hello", attachments=[file])
    expected = "hello back\nSkipped notes.txt: not a file on this platform's file host."
    await wait_for(lambda: [m.content for m in server.replies_to(prompt)] == [expected])
    assert server.file_requests == []  # never fetched
    assert llm.requests[-1].parts() == [ReceivedPart("text", "text", text="hello")]


async def test_a_text_file_is_inlined_and_a_forward_counts_as_the_messages_own(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    server = world.server
    await start_bot(discord_cdn_url=server.cdn_url)
    file = server.add_file("a.py", b"print(3)\n", "text/x-python")
    original = await server.send_message(
        world.general, world.bob, "look at this code", mention_bot=False, attachments=[file]
    )
    dm = server.dm_channel(world.alice)
    forward = await server.send_message(dm, world.alice, "", mention_bot=False, forward=original)
    await wait_for(lambda: len(server.replies_to(forward)) == 1)
    (content,) = [m["content"] for m in llm.requests[-1].json["messages"] if m["role"] == "user"]
    # The snapshot's text (the bot's mention is not in it: bob did not mention it) and its file.
    assert content == "look at this code\n\na.py\n```py\nprint(3)\n```"


async def test_a_reply_chain_of_three_messages_reaches_the_model_in_order(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    server = world.server
    await start_bot(discord_cdn_url=server.cdn_url)
    one = await server.send_message(world.general, world.alice, "first: apples", mention_bot=False)
    two = await server.send_message(
        world.general, world.bob, "second: pears", mention_bot=False, reply_to=one
    )
    three = await server.send_message(world.general, world.alice, "which fruit?", reply_to=two)
    await wait_for(lambda: len(server.replies_to(three)) == 1)
    (content,) = [m["content"] for m in llm.requests[-1].json["messages"] if m["role"] == "user"]
    assert content == (
        "which fruit?\n\n"
        "The message above replies to these earlier messages (oldest first):\n"
        "```\n@alice:\nfirst: apples\n\n@bob:\nsecond: pears\n```"
    )


async def test_the_chain_follows_the_bots_replies_and_stops_at_its_depth(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    server = world.server
    await start_bot(discord_cdn_url=server.cdn_url, discord_reply_chain_depth=2)
    llm.enqueue(Reply(text="Paris"))
    question = await server.send_message(world.general, world.alice, "capital of France?")
    await wait_for(lambda: [m.content for m in server.replies_to(question)] == ["Paris"])
    (answer,) = server.replies_to(question)
    follow = await server.send_message(world.general, world.bob, "and its river?", reply_to=answer)
    await wait_for(lambda: len(server.replies_to(follow)) == 1)
    again = await server.send_message(world.general, world.alice, "how long?", reply_to=follow)
    await wait_for(lambda: len(server.replies_to(again)) == 1)
    (content,) = [
        m["content"] for m in llm.requests[-1].json["messages"][-1:] if m["role"] == "user"
    ]
    # Two messages up: bob's question and the bot's answer, not alice's first question.
    assert content == (
        "how long?\n\n"
        "The message above replies to these earlier messages (oldest first):\n"
        "```\nyou (the assistant):\nParis\n\n@bob:\nand its river?\n```"
    )


async def test_a_reply_chain_depth_of_zero_reads_no_context(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    server = world.server
    await start_bot(discord_reply_chain_depth=0)
    one = await server.send_message(world.general, world.bob, "context", mention_bot=False)
    two = await server.send_message(world.general, world.alice, "question", reply_to=one)
    await wait_for(lambda: len(server.replies_to(two)) == 1)
    assert llm.requests[-1].json["messages"][-1] == {"role": "user", "content": "question"}


async def test_nothing_is_downloaded_for_a_blocked_user(
    world: World, llm: FakeLLMServer, start_bot: BotStarter
) -> None:
    server = world.server
    await start_bot(discord_cdn_url=server.cdn_url, blocked_users=world.alice)
    file = server.add_file("a.txt", b"hi", "text/plain")
    prompt = await server.send_message(world.general, world.alice, "read", attachments=[file])
    await wait_for(lambda: len(server.replies_to(prompt)) == 1)
    assert server.replies_to(prompt)[0].content == "Sorry, you are not allowed to use this bot."
    assert server.file_requests == []
    assert llm.requests == []
