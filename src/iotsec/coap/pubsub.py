"""CoAP requests as publish-subscribe actions on MQTT topics (pure).

As in the CoAP publish-subscribe broker draft (draft-ietf-core-coap-pubsub), a topic is a
resource under ``/ps``: ``POST`` (or ``PUT``) ``/ps/<topic>`` publishes its payload on the
MQTT topic ``<topic>``; ``GET /ps/<topic>`` with ``Observe: 0`` subscribes to it (RFC 7641),
``Observe: 1`` ends that. Each Uri-Path segment after ``ps`` is one topic level, so a level
can neither hold a ``/`` nor be a wildcard: a CoAP URI names one topic, never a filter.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from iotsec.access.topics import parse_topic_name
from iotsec.coap.message import Code, Message, Option, decode_uint
from iotsec.errors import CoapMessageError, CoapRequestError, InvalidInputError

__all__ = ["PUBSUB_ROOT", "PubSubAction", "PubSubRequest", "interpret"]

#: The first Uri-Path segment of every topic resource.
PUBSUB_ROOT = "ps"
#: The options a request may carry; any other critical (odd) option gets 4.02 (RFC 7252
#: 5.4.1). Elective ones are ignored.
_UNDERSTOOD = frozenset({Option.URI_HOST, Option.URI_PORT, Option.URI_PATH, Option.OBSERVE,
                         Option.CONTENT_FORMAT, Option.ACCEPT})
_MAX_SEGMENT = 255


class PubSubAction(enum.Enum):
    PUBLISH = "publish"
    SUBSCRIBE = "subscribe"
    UNSUBSCRIBE = "unsubscribe"
    READ = "read"

    @property
    def policy_action(self) -> str:
        """The access engine's action: publish, or subscribe for the rest."""
        return "publish" if self is PubSubAction.PUBLISH else "subscribe"


@dataclass(frozen=True, slots=True)
class PubSubRequest:
    action: PubSubAction
    topic: str
    payload: bytes = b""


def _path(message: Message) -> list[str]:
    segments = []
    for raw in message.values(Option.URI_PATH):
        if len(raw) > _MAX_SEGMENT:
            raise CoapRequestError("a Uri-Path segment over 255 bytes", Code.BAD_OPTION)
        try:
            segments.append(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise CoapRequestError("a Uri-Path segment that is not UTF-8",
                                   Code.BAD_REQUEST) from exc
    return segments


def interpret(message: Message) -> PubSubRequest:
    """The publish-subscribe action a request asks for, or :class:`CoapRequestError` with
    the response code to answer."""
    if not message.is_request:
        raise CoapRequestError("not a CoAP request", Code.BAD_REQUEST)
    for number, _ in message.options:
        if number & 1 and number not in _UNDERSTOOD:
            raise CoapRequestError(f"critical option {number} is not supported",
                                   Code.BAD_OPTION)
    segments = _path(message)
    if len(segments) < 2 or segments[0] != PUBSUB_ROOT:
        raise CoapRequestError("no such resource: topics live under /ps/<topic>",
                               Code.NOT_FOUND)
    levels = segments[1:]
    if any("/" in level for level in levels):
        raise CoapRequestError("a topic level cannot contain '/'", Code.BAD_REQUEST)
    topic = "/".join(levels)
    try:
        parse_topic_name(topic)
    except InvalidInputError as exc:
        raise CoapRequestError(f"not a topic name: {exc}", Code.BAD_REQUEST) from exc
    if message.code in (Code.POST, Code.PUT):
        return PubSubRequest(PubSubAction.PUBLISH, topic, message.payload)
    if message.code != Code.GET:
        raise CoapRequestError("topics take POST, PUT or GET", Code.METHOD_NOT_ALLOWED)
    observe = message.first(Option.OBSERVE)
    if observe is None:
        return PubSubRequest(PubSubAction.READ, topic)
    try:
        value = decode_uint(observe, 3)
    except CoapMessageError as exc:
        raise CoapRequestError("an Observe value over 3 bytes", Code.BAD_OPTION) from exc
    if value == 0:
        return PubSubRequest(PubSubAction.SUBSCRIBE, topic)
    if value == 1:
        return PubSubRequest(PubSubAction.UNSUBSCRIBE, topic)
    raise CoapRequestError(f"Observe {value} in a request (0 registers, 1 deregisters)",
                           Code.BAD_REQUEST)
