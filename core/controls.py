"""The buttons on a reply, neutral of any platform: what they are, their action ids, what a
press does.

While a reply streams its message carries **Stop**; the final edit replaces it with
**Regenerate**, 👍 and 👎 (the renderer sends the buttons in the same request as the text:
:class:`~core.render.StreamRenderer` ``controls``). A front end draws each :class:`Control`
its own way (a Discord button, a Slack ``actions`` block, a web button) with its
:attr:`Control.action_id` as the platform's ``custom_id``/``action_id``, and hands a click
to :func:`press` with the conversation key it derives from where the click happened.

Action ids survive a restart: ``llmc:<action>:<reply id>:<conversation hash>`` (at most 34
characters: Discord's ``custom_id`` allows 100, Slack's ``action_id`` 255), with no state behind
them in memory: the reply is found in the conversation's history by its id (the message stores
it), and the hash ties the id to the conversation it was posted in.

While a call of a ``"confirm": true`` MCP server waits, the message also carries **Approve**
and **Deny** for it (:func:`approval_controls`; the action id ends with the call's number):
Approve only the asker (an admin may not run a tool on someone's behalf), Deny the asker or an
admin, like Stop.

Who may press what: Stop and Regenerate only the reply's asker or an admin
(:meth:`~core.policy.AccessPolicy.may_control`), others get :data:`~core.engine.ONLY_ASKER`;
👍/👎 anyone the access lists admit, one vote per user per reply (:mod:`core.feedback`).
Only the latest reply of a conversation can be regenerated: an older message keeps its buttons
(removing them would cost a request per reply), and pressing its Regenerate answers
:data:`~core.engine.NOT_LATEST`; its 👍/👎 still count.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from .conversations import ConversationKey, Status
from .engine import NOT_IN_HISTORY, ONLY_ASKER, ChatEngine, Refused, Reply, StoreUnavailable
from .feedback import DOWN, UP, vote_name
from .policy import Actor

__all__ = [
    "ACTION_ID_PATTERN",
    "ACTION_PREFIX",
    "APPROVAL_BUTTONS",
    "OPERATOR",
    "Action",
    "Control",
    "Press",
    "PressResult",
    "action_id",
    "approval_controls",
    "final_controls",
    "key_hash",
    "live_controls",
    "parse_action_id",
    "press",
    "renderer_controls",
    "streaming_controls",
    "voter",
]

ACTION_PREFIX = "llmc"


class Action(StrEnum):
    STOP = "stop"
    REGENERATE = "regen"
    UP = "up"
    DOWN = "down"
    #: A call to a ``"confirm": true`` MCP server waits for one of these (the call's number
    #: is the action id's last part).
    APPROVE = "approve"
    DENY = "deny"


#: An action id: ``llmc:<action>:<reply id, 12 hex>:<conversation hash, 8 hex>``, and for
#: Approve/Deny ``:<call number>``; the groups ``action``, ``reply``, ``conv`` and ``call`` (a
#: Discord ``DynamicItem`` template can use it as it is). At most 64 characters.
ACTION_ID_PATTERN = (
    rf"{ACTION_PREFIX}:(?P<action>stop|regen|up|down|approve|deny):"
    r"(?P<reply>[0-9a-f]{1,32}):(?P<conv>[0-9a-f]{8})(?::(?P<call>[0-9]{1,4}))?"
)
#: At most this many calls waiting at once get buttons (two each, Stop besides: 25, what a
#: Discord message's five rows of five and a Slack actions block hold); the others wait
#: their turn, their time-out running.
APPROVAL_BUTTONS = 12
#: A tool's name on an Approve button is cut to this many characters.
BUTTON_NAME_CHARS = 40
_ACTION_ID = re.compile(ACTION_ID_PATTERN)

Style = Literal["primary", "secondary", "danger"]


@dataclass(frozen=True, slots=True)
class Control:
    """One button: what it does, its id on the platform, and how to draw it."""

    action: Action
    action_id: str
    label: str
    emoji: str
    style: Style


@dataclass(frozen=True, slots=True)
class Press:
    """A parsed action id."""

    action: Action
    reply_id: str
    conv: str
    #: Approve/Deny: the number of the call (its index among the reply's progress lines).
    call: int | None = None

    def belongs_to(self, key: ConversationKey) -> bool:
        return self.conv == key_hash(key)


def key_hash(key: ConversationKey) -> str:
    """8 hex digits naming a conversation in action ids (not a secret: a consistency check)."""
    return hashlib.blake2b(str(key).encode("utf-8", "replace"), digest_size=4).hexdigest()


def action_id(action: Action, key: ConversationKey, reply_id: str, call: int | None = None) -> str:
    tail = "" if call is None else f":{call}"
    return f"{ACTION_PREFIX}:{action}:{reply_id}:{key_hash(key)}{tail}"


def parse_action_id(value: str) -> Press | None:
    """The action an id names; ``None`` for an id that is not one of ours."""
    match = _ACTION_ID.fullmatch(value)
    if match is None:
        return None
    action = Action(match["action"])
    call = match["call"]
    if (call is None) != (action not in (Action.APPROVE, Action.DENY)):
        return None  # Approve/Deny name their call; the others none
    return Press(action, match["reply"], match["conv"], None if call is None else int(call))


_LOOKS: dict[Action, tuple[str, str, Style]] = {
    Action.STOP: ("Stop", "⏹", "danger"),
    Action.REGENERATE: ("Regenerate", "🔄", "secondary"),
    Action.UP: ("", "👍", "secondary"),
    Action.DOWN: ("", "👎", "secondary"),
    Action.APPROVE: ("Approve", "✅", "primary"),
    Action.DENY: ("Deny", "✖️", "secondary"),
}


def _control(action: Action, key: ConversationKey, reply_id: str) -> Control:
    label, emoji, style = _LOOKS[action]
    return Control(action, action_id(action, key, reply_id), label, emoji, style)


#: Who votes for a request without an actor (the web chat has no users: its operator).
OPERATOR = "operator"


def voter(actor: Actor | None) -> str:
    """The user id a vote is kept under."""
    return actor.user_id if actor is not None else OPERATOR


def streaming_controls(key: ConversationKey, reply_id: str) -> tuple[Control, ...]:
    """What a reply's message carries while it is written: Stop."""
    return (_control(Action.STOP, key, reply_id),)


def approval_controls(reply: Reply) -> tuple[Control, ...]:
    """Approve and Deny for each call of ``reply`` that waits for the asker's approval (the
    first :data:`APPROVAL_BUTTONS`), named after its tool when several wait."""
    waiting = [(n, p) for n, p in enumerate(reply.tool_progress) if p.waiting]
    found: list[Control] = []
    for n, line in waiting[:APPROVAL_BUTTONS]:
        name = line.name if len(line.name) <= BUTTON_NAME_CHARS else line.name[:39] + "…"
        for action in (Action.APPROVE, Action.DENY):
            label, emoji, style = _LOOKS[action]
            if len(waiting) > 1:
                label = f"{label} {name}"
            found.append(
                Control(action, action_id(action, reply.key, reply.id, n), label, emoji, style)
            )
    return tuple(found)


def renderer_controls(
    engine: ChatEngine, reply: Reply, buttons: bool
) -> tuple[Control, ...] | None:
    """The buttons a renderer of ``reply`` starts with: Stop with ``buttons``
    (``REPLY_BUTTONS``); without, none but still drawn (``()``) when a ``confirm`` MCP server
    is configured, whose calls need Approve/Deny; ``None``: this renderer draws no buttons."""
    if buttons:
        return streaming_controls(reply.key, reply.id)
    return () if engine.mcp.confirming else None


def live_controls(reply: Reply, buttons: bool) -> tuple[Control, ...]:
    """What ``reply``'s message carries while it streams now: Stop (with ``buttons``), and
    Approve/Deny for the calls that wait."""
    base = streaming_controls(reply.key, reply.id) if buttons else ()
    return base + approval_controls(reply)


def final_controls(reply: Reply) -> tuple[Control, ...]:
    """What a reply's message carries once it has ended: Regenerate (when its turn is in the
    history), and 👍/👎 when it completed with text. Nothing for a reply that never ran."""
    if not reply.stored or not reply.done:
        return ()
    actions = [Action.REGENERATE]
    if reply.status is Status.COMPLETE and reply.text:
        actions += [Action.UP, Action.DOWN]
    return tuple(_control(a, reply.key, reply.id) for a in actions)


@dataclass(frozen=True, slots=True)
class PressResult:
    """What a press did, for the front end to show.

    ``text``: a short answer for the presser only (ephemeral; ``""``: nothing to say, the
    message itself shows the effect). ``reply``: a regeneration to render into the same
    message (its first edit replaces the old text and buttons). ``ok``: False for a refusal;
    ``unavailable``: the refusal is the store being unreachable (try again shortly: the web
    answers 503).
    """

    text: str
    ok: bool = True
    reply: Reply | None = None
    vote: int = 0
    unavailable: bool = False


async def press(
    engine: ChatEngine,
    key: ConversationKey,
    action: str | Press,
    actor: Actor | None,
    *,
    parent: ConversationKey | None = None,
) -> PressResult:
    """Carry out a button press in ``key`` (where the clicked message is) by ``actor``.

    Never raises for a refusal (someone else's reply, not the latest, the store away): the
    refusal is the result's ``text`` with ``ok=False``."""
    pressed = parse_action_id(action) if isinstance(action, str) else action
    if pressed is None or not pressed.belongs_to(key):
        return PressResult("That button does not belong to this conversation.", ok=False)
    refusal = engine.policy.refusal(actor, key.channel, parent.channel if parent else None)
    if refusal:
        return PressResult(refusal, ok=False)
    try:
        return await _press(engine, key, pressed, actor, parent)
    except Refused as exc:
        unavailable = isinstance(exc, StoreUnavailable)
        return PressResult(exc.user_message, ok=False, unavailable=unavailable)


async def _press(
    engine: ChatEngine,
    key: ConversationKey,
    pressed: Press,
    actor: Actor | None,
    parent: ConversationKey | None,
) -> PressResult:
    if pressed.action in (Action.APPROVE, Action.DENY):
        approve = pressed.action is Action.APPROVE
        await engine.answer_approval(key, pressed.reply_id, pressed.call or 0, actor, approve)
        return PressResult("")
    if pressed.action is Action.REGENERATE:
        reply = await engine.regenerate(key, pressed.reply_id, actor=actor, parent=parent)
        return PressResult("", reply=reply)
    if pressed.action is Action.STOP:
        found, _, _ = await engine.find_reply(key, pressed.reply_id)
        if found is None:
            return PressResult(NOT_IN_HISTORY, ok=False)
        if not engine.policy.may_control(actor, found.user):
            return PressResult(ONLY_ASKER, ok=False)
        if await engine.stop_reply(key, pressed.reply_id):
            return PressResult("")
        return PressResult("This reply has already ended.", ok=False)
    wanted = UP if pressed.action is Action.UP else DOWN
    user = voter(actor)
    vote = await engine.vote(key, pressed.reply_id, user, wanted)
    if vote:
        return PressResult(f"Thanks for the feedback: {vote_name(vote)}.", vote=vote)
    return PressResult(f"Your {vote_name(wanted)} was withdrawn.")
