"""The gateway's OSCORE listener: CoAP over UDP where every request is OSCORE-protected
(RFC 8613) end to end, decided by the same policy engine and bridged to the same broker as
the DTLS listener.

It opens only when asked (``iotsec gateway coap --oscore-port``). OSCORE protects the
request and the response end to end (confidentiality, integrity, replay protection, the
response bound to its request), so this listener may be bound to any address; what it
never does is serve an unprotected request: one without an OSCORE option is answered 4.01.

Per datagram: the OSCORE option is parsed (strict, bounded), its kid finds the device's
context, the sequence number is checked against the device's replay window, the request is
decrypted and verified, the window is persisted, and only then is the inner request
interpreted (:mod:`iotsec.coap.pubsub`) and decided with the device's roles. The answer is
protected with the request's nonce. Failures before decryption are answered unprotected
with the codes RFC 8613 8.2 names (4.02, 4.01, 4.00) and recorded as events.

A context may also be established by EDHOC (RFC 9528) with the device's certificate key
(:mod:`iotsec.coap.edhoc`): message_1 to ``/.well-known/edhoc`` (the one request served
without OSCORE), message_3 in front of the first OSCORE request (RFC 9668). Such a context
lives in memory, and the certificate it was established with is checked on every request.

Publishing and observing are served. An Observe registration (``GET /ps/<topic>``,
Observe 0, the subscribe and receive actions decided by the same engine) is answered, and
each message the broker then delivers on the topic is notified, protected with the
gateway's own sender sequence numbers (RFC 8613 4.1.3.5, 8.3), reserved in the store so
that none is used twice, even across restarts
(:meth:`~iotsec.app.coap.oscore_contexts.OscoreContexts.sender_seq`); the device's standing
and its right to receive are checked again for every notification. Block-wise transfer
(RFC 7959) works end to end: a large publish arrives in inner Block1 blocks, each protected
on its own, bounded as on the DTLS listener; a notification larger than one block sends its
first block and the device fetches the rest with an inner Block2. Outer Block1 blocks (RFC
8613 4.1.3.4.2, a fragmenting proxy) are reassembled, up to :data:`MAX_UNFRAGMENTED` bytes,
before the message is verified; any other unprotected outer option is discarded.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import select
import socket
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from iotsec.app.access.decisions import check
from iotsec.app.coap.bridge import MqttBridge
from iotsec.app.coap.oscore_contexts import (
    GATEWAY_ID,
    GATEWAY_SENDER_ID,
    GatewayContext,
    OscoreContexts,
    edhoc_by_kid,
    edhoc_device,
    edhoc_key,
)
from iotsec.app.coap.standing import refusal_now
from iotsec.app.events import Event
from iotsec.app.runtime import Runtime
from iotsec.coap.blockwise import (
    MAX_ASSEMBLIES,
    MAX_BODY,
    Assemblies,
    Block,
    block1_of,
    parse_block,
)
from iotsec.coap.edhoc import (
    EDHOC_PATH,
    KidReference,
    Responder,
    ccs,
    connection_ids,
    split_message_3,
)
from iotsec.coap.message import (
    Code,
    Message,
    MessageType,
    Option,
    encode_uint,
    parse_header,
    parse_message,
)
from iotsec.coap.oscore import (
    RequestId,
    Unprotected,
    protect_response,
    request_option,
    unprotect_request,
)
from iotsec.coap.pubsub import PubSubAction, interpret
from iotsec.errors import (
    CoapMessageError,
    CoapRequestError,
    IotsecError,
    NotFoundError,
    OscoreError,
    PayloadReplayError,
    PayloadTooOldError,
)
from iotsec.protect.replay import ReplayWindow

__all__ = ["MAX_ALL_OBSERVATIONS", "MAX_ASSEMBLIES", "MAX_OBSERVATIONS", "MAX_UNFRAGMENTED",
           "OscoreEndpoint", "serve_oscore"]

log = logging.getLogger(__name__)
#: Answers kept to repeat for a retransmitted confirmable request (RFC 7252 4.5): its
#: sequence number is spent, so it is answered from here, not decrypted again.
_DEDUP = 1024
_MAX_DATAGRAM = 2048
#: Most topics one device may observe at once over OSCORE (as over DTLS), and in all.
MAX_OBSERVATIONS = 64
MAX_ALL_OBSERVATIONS = 10_000
#: The largest OSCORE message reassembled from outer Block1 blocks (RFC 8613 4.1.3.4.2's
#: MAX_UNFRAGMENTED_SIZE): a whole body, its options and the tag.
MAX_UNFRAGMENTED = MAX_BODY + 1024
#: Messages reassembled from outer blocks at once, from any sender (nothing in them is
#: verified yet, so they are few and the oldest is dropped).
_OUTER_ASSEMBLIES = 16
#: The largest block sent (1024 bytes): a notification above it goes out in blocks.
_BLOCK_SZX = 6

Address = tuple[str, int]
_ObsKey = tuple[Address, bytes, bytes]


class OscoreEndpoint:
    """Turns one datagram into at most one answer (the serving thread), and a message
    from the broker into notifications (the DTLS serving thread, which reads the broker's
    connection); a lock keeps them apart."""

    def __init__(self, rt: Runtime, contexts: OscoreContexts, bridge: MqttBridge | None
                 ) -> None:
        self.rt = rt
        self.contexts = contexts
        self.bridge = bridge
        self._edhoc_key, gateway_public = edhoc_key(rt)
        self._edhoc_credential = ccs(gateway_public, GATEWAY_ID, GATEWAY_SENDER_ID)
        #: EDHOC sessions after message_2, and the contexts they established, by C_R (the
        #: kid of the device's requests); together at most 48 (lakers' one-byte C_R), the
        #: least recently used dropped first.
        self._edhoc_pending: OrderedDict[bytes, Responder] = OrderedDict()
        self._edhoc_ready: OrderedDict[bytes, GatewayContext] = OrderedDict()
        self._replies: OrderedDict[tuple[Address, int], bytes] = OrderedDict()
        self._next_mid = secrets.randbelow(0x10000)
        self._lock = threading.Lock()
        self._outer: Assemblies[tuple[Address, bytes]] = Assemblies(_OUTER_ASSEMBLIES,
                                                                    MAX_UNFRAGMENTED)
        self._assemblies: dict[str, Assemblies[tuple[int, str]]] = {}
        #: Observations by (device's address, token, kid): one device cannot replace or
        #: end another's from the same address.
        self._observations: dict[_ObsKey, _Observation] = {}
        self._by_topic: dict[str, dict[_ObsKey, _Observation]] = {}
        self._count: dict[str, int] = {}
        #: The last large notification of each (device, topic), by ETag, for its blocks.
        self._bodies: dict[tuple[str, str], tuple[bytes, bytes]] = {}
        #: Sends a datagram (set by :func:`serve_oscore`).
        self.transport: Callable[[bytes, Address], None] | None = None

    def _event(self, outcome: str, address: Address, actor: str | None, subject: str | None,
               detail: dict[str, str]) -> None:
        self.rt.events.record_repeated(Event(
            self.rt.now(), "coap.request", outcome, actor=actor, source=address[0],
            subject=subject, detail={"protection": "oscore", **detail}))

    def received(self, data: bytes, address: Address) -> bytes | None:
        with self._lock:
            return self._received(data, address)

    def _received(self, data: bytes, address: Address) -> bytes | None:
        try:
            msg = parse_message(data)
        except CoapMessageError:
            try:
                mtype, _, mid, _ = parse_header(data)
            except CoapMessageError:
                return None
            return Message(MessageType.RST, Code.EMPTY, mid).encode() \
                if mtype in (MessageType.CON, MessageType.NON) else None
        if msg.type is MessageType.RST:
            self._reset(msg, address)
            return None
        if msg.type is MessageType.ACK or not msg.is_request:
            if msg.code == Code.EMPTY and msg.type is MessageType.CON:
                return Message(MessageType.RST, Code.EMPTY, msg.mid).encode()
            return None
        key = (address, msg.mid)
        if msg.type is MessageType.CON and key in self._replies:
            return self._replies[key]
        if msg.first(Option.OSCORE) is not None and msg.first(Option.BLOCK1) is not None:
            whole = self._outer_block1(msg, address)
            answer = whole if isinstance(whole, bytes) else self._answer(whole, address).encode()
        else:
            answer = self._answer(msg, address).encode()
        if msg.type is MessageType.CON:
            self._replies[key] = answer
            while len(self._replies) > _DEDUP:
                self._replies.popitem(last=False)
        return answer

    def _reply(self, request: Message, code: int, payload: bytes = b"",
               options: tuple[tuple[int, bytes], ...] = ()) -> Message:
        if request.type is MessageType.CON:
            return Message(MessageType.ACK, code, request.mid, request.token, options, payload)
        self._next_mid = (self._next_mid + 1) & 0xFFFF
        return Message(MessageType.NON, code, self._next_mid, request.token, options, payload)

    # --- EDHOC (RFC 9528, the combined request of RFC 9668) ---------------------------------

    def _free_ids(self) -> list[bytes]:
        used = set(self._edhoc_pending) | set(self._edhoc_ready)
        free = [c for c in connection_ids() if c not in used]
        if len(free) < 2:  # one may equal C_I: drop the least recently used
            victim = self._edhoc_pending if self._edhoc_pending else self._edhoc_ready
            victim.popitem(last=False)
            return self._free_ids()
        return free

    def _message_1(self, msg: Message, address: Address) -> Message:
        if msg.code != Code.POST:
            return self._reply(msg, Code.METHOD_NOT_ALLOWED, b"EDHOC takes POST")
        try:
            responder = Responder(self._edhoc_key, self._edhoc_credential, msg.payload,
                                  self._free_ids())
            message_2 = responder.message_2()
        except OscoreError as exc:
            self._event("denied", address, None, None, {"reason": str(exc)})
            return self._reply(msg, exc.coap_code, str(exc).encode()[:120])
        self._edhoc_pending[responder.c_r] = responder
        return self._reply(msg, Code.CHANGED, message_2)

    def _message_3(self, msg: Message, kid: bytes) -> tuple[GatewayContext, Message]:
        """Complete the EDHOC session ``kid`` with the message_3 in front of an OSCORE
        request: the new context, and the request with its plain OSCORE payload."""
        responder = self._edhoc_pending.pop(kid, None)
        if responder is None:
            raise OscoreError("EDHOC: no session for this C_R", Code.UNAUTHORIZED)
        message_3, ciphertext = split_message_3(msg.payload)
        named = responder.device_credential(message_3)
        if isinstance(named, KidReference):
            credential, device_id, serial = edhoc_by_kid(self.rt, named)
        else:
            credential = named
            device_id, serial = edhoc_device(self.rt, credential)
        context = GatewayContext(device_id, responder.finish(credential), ReplayWindow(),
                                 threading.Lock(), serial=serial, persisted=False)
        self._edhoc_ready[kid] = context
        rest = tuple((n, v) for n, v in msg.options if n != Option.EDHOC)
        return context, Message(msg.type, msg.code, msg.mid, msg.token, rest, ciphertext)

    def _find(self, kid: bytes) -> GatewayContext | None:
        found = self._edhoc_ready.get(kid)
        if found is not None:
            self._edhoc_ready.move_to_end(kid)
            return found
        return self.contexts.find(kid)

    # --- OSCORE ------------------------------------------------------------------------------

    def _outer_block1(self, msg: Message, address: Address) -> Message | bytes:
        """An OSCORE message sent in outer Block1 blocks (RFC 8613 4.1.3.4.2, as a proxy
        may fragment it): 2.31 Continue (unprotected, as the outer layer is) until the
        last block, then the whole message, to be verified as one. At most
        :data:`MAX_UNFRAGMENTED` bytes, at most :data:`_OUTER_ASSEMBLIES` messages at once
        (the oldest dropped): nothing is trusted before the whole message verifies."""
        key = (address, msg.token)
        try:
            block, bare = block1_of(msg, MAX_UNFRAGMENTED)
            if block.num == 0:
                self._outer.start(key, block.szx)
            body = self._outer.add(key, block, msg.payload)
        except CoapRequestError as exc:
            extra = ((Option.SIZE1, encode_uint(MAX_UNFRAGMENTED)),) \
                if exc.coap_code == Code.REQUEST_ENTITY_TOO_LARGE else ()
            return self._reply(msg, exc.coap_code, str(exc).encode()[:120], extra).encode()
        if body is None:
            echo = ((Option.BLOCK1, Block(block.num, True, block.szx).encode()),)
            return self._reply(msg, Code.CONTINUE, b"", echo).encode()
        return Message(bare.type, bare.code, bare.mid, bare.token, bare.options, body)

    def _answer(self, msg: Message, address: Address) -> Message:
        if msg.first(Option.OSCORE) is None:
            path = tuple(v.decode("utf-8", "replace") for v in msg.values(Option.URI_PATH))
            if path == EDHOC_PATH:
                return self._message_1(msg, address)
            self._event("denied", address, None, None, {"reason": "not OSCORE-protected"})
            return self._reply(msg, Code.UNAUTHORIZED, b"OSCORE-protected requests only")
        context: GatewayContext | None = None
        try:
            opt = request_option(msg)
            assert opt.kid is not None
            if msg.first(Option.EDHOC) is not None:
                context, msg = self._message_3(msg, opt.kid)
            else:
                context = self._find(opt.kid)
            if context is None:
                raise OscoreError("Security context not found", Code.UNAUTHORIZED)
            context.window.check(int.from_bytes(opt.piv, "big"))
            verified = unprotect_request(context.keys, msg)
            self.contexts.accept(context, verified.seq)
        except (PayloadReplayError, PayloadTooOldError) as exc:
            self._event("denied", address, context.device_id if context else None, None,
                        {"reason": f"replay: {exc}"})
            return self._reply(msg, Code.UNAUTHORIZED, b"Replay detected")
        except OscoreError as exc:
            self._event("denied", address, context.device_id if context else None, None,
                        {"reason": str(exc)})
            return self._reply(msg, exc.coap_code, str(exc).encode()[:120])
        except NotFoundError:
            return self._reply(msg, Code.UNAUTHORIZED, b"Security context not found")
        assert context is not None
        answer = self._serve(context, verified, address)
        inner = self._reply(verified.message, answer.code, answer.payload, answer.options)
        try:
            return protect_response(context.keys, verified.request, inner, answer.seq)
        except OscoreError as exc:  # a sequence number out of range: never sent
            return self._reply(msg, Code.INTERNAL_SERVER_ERROR, str(exc).encode()[:120])

    def _serve(self, context: GatewayContext, verified: Unprotected, address: Address
               ) -> _Answer:
        device_id = context.device_id
        msg = verified.message
        if context.serial is not None:
            # Established with a certificate's key: that certificate must still be valid.
            reason = refusal_now(self.rt, context.serial, device_id, self.rt.now())
            if reason is not None:
                self._event("denied", address, device_id, None, {"reason": reason})
                self._edhoc_ready.pop(context.keys.recipient_id, None)
                self._drop_context(context)
                return _Answer(Code.FORBIDDEN, reason.encode())
        echo: tuple[tuple[int, bytes], ...] = ()
        block2: Block | None = None
        try:
            if msg.first(Option.BLOCK1) is not None:
                step = self._inner_block1(context, msg, address)
                if isinstance(step, _Answer):
                    return step
                msg, echo = step
            raw2 = msg.first(Option.BLOCK2)
            if raw2 is not None:
                block2 = parse_block(raw2)
                msg = _without(msg, Option.BLOCK2, Option.SIZE2)
            req = interpret(msg)
        except CoapRequestError as exc:
            extra = ((Option.SIZE1, encode_uint(MAX_BODY)),) \
                if exc.coap_code == Code.REQUEST_ENTITY_TOO_LARGE else ()
            return _Answer(exc.coap_code, str(exc).encode()[:200], extra)
        actions = [req.action.policy_action]
        if req.action in (PubSubAction.SUBSCRIBE, PubSubAction.READ):
            actions.append("receive")
        if req.action is not PubSubAction.UNSUBSCRIBE:
            for action in actions:
                refusal = self._denied(device_id, action, req.topic, address)
                if refusal is not None:
                    return refusal
        if req.action is PubSubAction.PUBLISH:
            if self.bridge is None or not self.bridge.publish(req.topic, req.payload):
                return _Answer(Code.SERVICE_UNAVAILABLE, b"the MQTT broker is not connected")
            return _Answer(Code.CHANGED, b"", echo)
        key = (address, msg.token, context.keys.recipient_id)
        if req.action is PubSubAction.UNSUBSCRIBE:
            self._forget(key)
            return _Answer(Code.CONTENT, b"")
        if req.action is PubSubAction.SUBSCRIBE:
            if key not in self._observations and (
                    self._count.get(device_id, 0) >= MAX_OBSERVATIONS
                    or len(self._observations) >= MAX_ALL_OBSERVATIONS):
                return _Answer(Code.SERVICE_UNAVAILABLE, b"too many observations")
            try:
                seq = self.contexts.sender_seq(context)
            except (OscoreError, NotFoundError) as exc:
                return _Answer(Code.SERVICE_UNAVAILABLE, str(exc).encode()[:120])
            szx = min(block2.szx, _BLOCK_SZX) if block2 is not None else _BLOCK_SZX
            self._observe(_Observation(context, req.topic, verified.request, address,
                                       msg.token, szx))
            return _Answer(Code.CONTENT, b"", ((Option.OBSERVE, _observe_value(seq)),), seq)
        stored = self._bodies.get((device_id, req.topic))
        if block2 is not None and stored is not None:
            return _block2(stored, block2)
        return _Answer(Code.NOT_FOUND, b"no stored message: observe the topic (Observe: 0)")

    def _denied(self, device_id: str, action: str, topic: str, address: Address
                ) -> _Answer | None:
        try:
            decision = check(self.rt, device_id, action, topic)
        except IotsecError as exc:
            self._event("denied", address, device_id, topic, {"reason": str(exc)})
            return _Answer(Code.FORBIDDEN, b"device not served")
        if not decision.allowed:
            self._event("denied", address, device_id, topic,
                        {"action": action, "reason": decision.reason or "denied"})
            return _Answer(Code.FORBIDDEN, f"{action} {topic} denied".encode())
        return None

    def _inner_block1(self, context: GatewayContext, msg: Message, address: Address
                      ) -> _Answer | tuple[Message, tuple[tuple[int, bytes], ...]]:
        """An end-to-end (inner) Block1 block, each one protected and verified on its own
        (RFC 8613 4.1.3.4.1, RFC 7959 2.5): 2.31 Continue until the last, then the whole
        request and the Block1 option to echo. Bounded as on the DTLS listener: in order,
        at most :data:`MAX_BODY` bytes, :data:`MAX_ASSEMBLIES` bodies per device at once;
        publishing is decided on the first block, before anything is kept, and again on
        the whole request."""
        block, bare = block1_of(msg)
        req = interpret(bare)
        if req.action is not PubSubAction.PUBLISH:
            raise CoapRequestError("Block1 is taken with POST and PUT", Code.BAD_OPTION)
        mine = self._assemblies.setdefault(context.device_id, Assemblies(MAX_ASSEMBLIES))
        key = (msg.code, req.topic)
        if block.num == 0:
            refusal = self._denied(context.device_id, "publish", req.topic, address)
            if refusal is not None:
                return refusal
            mine.start(key, block.szx)
        body = mine.add(key, block, msg.payload)
        echo = ((Option.BLOCK1, Block(block.num, body is None, block.szx).encode()),)
        if body is None:
            return _Answer(Code.CONTINUE, b"", echo)
        if not mine:
            del self._assemblies[context.device_id]
        return Message(bare.type, bare.code, bare.mid, bare.token, bare.options, body), echo

    # --- observations (RFC 7641 with OSCORE, RFC 8613 4.1.3.5) -----------------------------

    def _observe(self, obs: _Observation) -> None:
        key = obs.key
        old = self._observations.get(key)
        if old is not None:
            self._forget(key)
        self._observations[key] = obs
        self._count[obs.context.device_id] = self._count.get(obs.context.device_id, 0) + 1
        watchers = self._by_topic.setdefault(obs.topic, {})
        watchers[key] = obs
        if len(watchers) == 1 and self.bridge is not None:
            self.bridge.subscribe(obs.topic)

    def _forget(self, key: _ObsKey) -> None:
        obs = self._observations.pop(key, None)
        if obs is None:
            return
        device_id = obs.context.device_id
        left = self._count.get(device_id, 1) - 1
        if left:
            self._count[device_id] = left
        else:
            self._count.pop(device_id, None)
        if not any(o.topic == obs.topic and o.context.device_id == device_id
                   for o in self._observations.values()):
            self._bodies.pop((device_id, obs.topic), None)
        watchers = self._by_topic.get(obs.topic, {})
        watchers.pop(key, None)
        if not watchers:
            self._by_topic.pop(obs.topic, None)
            if self.bridge is not None:
                self.bridge.unsubscribe(obs.topic)

    def _drop_context(self, context: GatewayContext) -> None:
        for key, obs in list(self._observations.items()):
            if obs.context is context:
                self._forget(key)

    def _reset(self, msg: Message, address: Address) -> None:
        """A Reset to a notification ends its observation (RFC 7641 3.6)."""
        for key, obs in list(self._observations.items()):
            if obs.address == address and obs.last_mid == msg.mid:
                self._forget(key)

    def from_mqtt(self, topic: str, payload: bytes) -> None:
        """A message the broker delivered (on the DTLS serving thread): a notification to
        each OSCORE observer of ``topic`` still allowed to receive it, protected with a sender
        sequence number of the gateway's own."""
        with self._lock:
            sends = [(d, obs.address) for obs in list(self._by_topic.get(topic, {}).values())
                     if (d := self._notification(obs, payload)) is not None]
        transport = self.transport
        if transport is not None:
            for datagram, address in sends:
                transport(datagram, address)

    def _notification(self, obs: _Observation, payload: bytes) -> bytes | None:
        device_id = obs.context.device_id
        key = obs.key
        reason: str | None = None
        if not self.contexts.still_there(obs.context):
            self._forget(key)  # its keys are gone: nothing is sent under them
            return None
        if obs.context.serial is not None:
            reason = refusal_now(self.rt, obs.context.serial, device_id, self.rt.now())
        if reason is None:
            try:
                decision = check(self.rt, device_id, "receive", obs.topic)
                reason = None if decision.allowed else (decision.reason or "denied")
            except IotsecError as exc:
                reason = str(exc)
        code, body = Code.CONTENT, payload
        options: tuple[tuple[int, bytes], ...] = ()
        if reason is not None:
            self.rt.events.record_repeated(Event(
                self.rt.now(), "coap.notify", "denied", actor=device_id,
                source=obs.address[0], subject=obs.topic,
                detail={"protection": "oscore", "reason": reason}))
            self._forget(key)
            code, body = Code.FORBIDDEN, b"receive denied"
        elif len(payload) > MAX_BODY:
            self.rt.events.record_repeated(Event(
                self.rt.now(), "coap.notify", "denied", actor=device_id,
                source=obs.address[0], subject=obs.topic,
                detail={"protection": "oscore", "reason": f"a message over {MAX_BODY} bytes"}))
            return None
        elif len(payload) > 16 << obs.szx:
            # Larger than one block: the first block goes out, the device fetches the rest
            # with GET and an inner Block2 (RFC 7959 2.4); the ETag names the message.
            etag = hashlib.sha256(payload).digest()[:8]
            self._bodies[(device_id, obs.topic)] = (etag, payload)
            first = _block2((etag, payload), Block(0, True, obs.szx))
            options, body = first.options, first.payload
        try:
            seq = self.contexts.sender_seq(obs.context)
        except (OscoreError, NotFoundError) as exc:
            log.info("no notification to %s: %s", device_id, exc)
            self._forget(key)
            return None
        self._next_mid = (self._next_mid + 1) & 0xFFFF
        obs.last_mid = self._next_mid
        if code == Code.CONTENT:
            options = ((Option.OBSERVE, _observe_value(seq)), *options)
        inner = Message(MessageType.NON, code, self._next_mid, obs.token, options, body)
        return protect_response(obs.context.keys, obs.request, inner, seq).encode()


@dataclass(frozen=True, slots=True)
class _Answer:
    code: int
    payload: bytes
    options: tuple[tuple[int, bytes], ...] = ()
    #: The gateway's own sequence number to protect the answer with (an Observe
    #: registration), or None for the request's nonce.
    seq: int | None = None


@dataclass(eq=False, slots=True)
class _Observation:
    context: GatewayContext
    topic: str
    #: The registration's kid and Partial IV: every notification is bound to it.
    request: RequestId
    address: Address
    token: bytes
    #: The block size of notifications (a Block2 option in the registration).
    szx: int
    last_mid: int | None = None

    @property
    def key(self) -> _ObsKey:
        return self.address, self.token, self.context.keys.recipient_id


def _without(msg: Message, *numbers: int) -> Message:
    return Message(msg.type, msg.code, msg.mid, msg.token,
                   tuple((n, v) for n, v in msg.options if n not in numbers), msg.payload)


def _observe_value(seq: int) -> bytes:
    """The Observe value of a notification: the low 3 bytes of its Partial IV, so it grows
    with the sequence number (RFC 8613 4.1.3.5.2)."""
    return encode_uint(seq & 0xFFFFFF)


def _block2(stored: tuple[bytes, bytes], block2: Block) -> _Answer:
    """Block ``block2.num`` of the last large notification, with its ETag and Size2."""
    etag, body = stored
    start = block2.num * block2.size
    if start >= len(body) and block2.num:
        return _Answer(Code.BAD_OPTION, b"no such block")
    more = start + block2.size < len(body)
    return _Answer(Code.CONTENT, body[start:start + block2.size],
                   ((Option.ETAG, etag),
                    (Option.BLOCK2, Block(block2.num, more, block2.szx).encode()),
                    (Option.SIZE2, encode_uint(len(body)))))

def serve_oscore(endpoint: OscoreEndpoint, sock: socket.socket, stop: threading.Event
                 ) -> None:
    """Answer datagrams on ``sock`` until ``stop`` is set (the calling thread)."""
    def send(datagram: bytes, address: Address) -> None:
        try:
            sock.sendto(datagram, address)
        except OSError as exc:
            log.info("cannot notify %s: %s", address[0], exc)

    endpoint.transport = send
    while not stop.is_set():
        ready, _, _ = select.select([sock], [], [], 0.2)
        if not ready:
            continue
        try:
            data, address = sock.recvfrom(_MAX_DATAGRAM)
        except OSError:
            continue
        try:
            answer = endpoint.received(data, (str(address[0]), int(address[1])))
        except IotsecError as exc:  # the store unreachable: nothing is served
            log.warning("OSCORE request from %s not served: %s", address[0], exc)
            continue
        except Exception:  # a bug must not stop the listener for every other device
            log.exception("OSCORE request from %s failed", address[0])
            continue
        if answer is not None:
            try:
                sock.sendto(answer, address)
            except OSError as exc:
                log.info("cannot answer %s: %s", address[0], exc)
