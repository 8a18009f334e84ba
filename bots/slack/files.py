"""Files shared with a Slack message (``files`` on ``app_mention`` and ``message.im`` events).

Each is downloaded from its ``url_private_download`` with the bot token in the ``Authorization``
header, only from ``SLACK_FILES_URL`` (:class:`core.attachments.Downloader`: the token goes to no
other host, not even after a redirect), and read as every front end reads files
(:mod:`core.attachments`). Needs the ``files:read`` scope.

Slack sometimes sends a file's event before the file is ready: the event's file object then has
only its id (``file_access: check_file_info``), or no download URL. Such a file is looked up with
``files.info``; while that says it is still being processed (no ``url_private_download``, no
``mimetype``) the lookup is retried after :data:`READY_WAITS` seconds (bounded: about 7 s in all),
then the file is skipped with a line (``Skipped a.png: the file was not ready in time.``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from core.attachments import (
    Attachment,
    AttachmentLimits,
    Downloader,
    RemoteFile,
    skipped,
    too_many,
)
from core.clock import Clock

__all__ = ["READY_WAITS", "shared_files"]

log = logging.getLogger("llmconnect.slack")

#: Seconds waited before each further ``files.info`` of a file still being processed.
READY_WAITS = (0.5, 1.5, 5.0)


def _ready(file: dict[str, Any]) -> bool:
    return bool(file.get("url_private_download")) and bool(
        file.get("mimetype") or file.get("filetype")
    )


def _remote(file: dict[str, Any]) -> RemoteFile:
    size = file.get("size")
    return RemoteFile(
        str(file.get("url_private_download") or ""),
        str(file.get("name") or file.get("title") or "file"),
        str(file.get("mimetype") or ""),
        size if isinstance(size, int) else None,
    )


async def _when_ready(
    client: AsyncWebClient, file: dict[str, Any], clock: Clock
) -> RemoteFile | Attachment:
    """The file once ready (``files.info``, retried while it is processed), else its line."""
    name = str(file.get("name") or file.get("title") or file.get("id") or "file")
    file_id = file.get("id")
    if not isinstance(file_id, str) or not file_id:
        return skipped(name, "the file could not be read")
    for wait in (0.0, *READY_WAITS):
        if wait:
            await clock.sleep(wait)
        try:
            info = (await client.files_info(file=file_id)).get("file") or {}
        except Exception as exc:  # an API error, or Slack unreachable: a line, not a failure
            response = exc.response if isinstance(exc, SlackApiError) else None
            error = str(response.get("error") or "") if response is not None else ""
            log.info("files.info failed for a shared file (%s)", error or type(exc).__name__)
            why = "the bot may not read files (files:read)" if error == "missing_scope" else ""
            return skipped(name, why or "the file could not be looked up")
        if isinstance(info, dict):
            name = str(info.get("name") or name)
            if _ready(info):
                return _remote(info)
    return skipped(name, "the file was not ready in time")


async def shared_files(
    client: AsyncWebClient,
    files: Sequence[Any],
    *,
    hosts: Sequence[str],
    token: str,
    limits: AttachmentLimits,
    clock: Clock,
) -> list[Attachment]:
    """The message's ``files`` as :class:`~core.attachments.Attachment` s, in order (those past
    ``MAX_ATTACHMENTS`` skipped with a line, neither looked up nor downloaded)."""
    objects = [f for f in files if isinstance(f, dict)]
    wanted = objects[: limits.max_attachments]
    found = await asyncio.gather(
        *(
            asyncio.sleep(0, _remote(f)) if _ready(f) else _when_ready(client, f, clock)
            for f in wanted
        )
    )
    remote = [f for f in found if isinstance(f, RemoteFile)]
    fetched: list[Attachment] = []
    if remote:
        async with Downloader(
            hosts, limits, headers={"Authorization": f"Bearer {token}"}
        ) as downloader:
            fetched = await downloader.fetch_all(remote)
    downloaded = iter(fetched)
    ordered = [next(downloaded) if isinstance(f, RemoteFile) else f for f in found]
    rest = objects[limits.max_attachments :]
    return [*ordered, *(too_many(_remote(f).name, limits) for f in rest)]
