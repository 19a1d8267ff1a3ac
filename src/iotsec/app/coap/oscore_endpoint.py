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

Publishing and reading are served; observing a topic over OSCORE is not (its
notifications need the gateway's own sequence numbers): it is answered 5.01 inside the
protection, and devices observe over DTLS.
"""

from __future__ import annotations

import logging
import secrets
import select
import socket
import threading
from collections import OrderedDict

from iotsec.app.access.decisions import check
from iotsec.app.coap.bridge import MqttBridge
from iotsec.app.coap.oscore_contexts import GatewayContext, OscoreContexts
from iotsec.app.events import Event
from iotsec.app.runtime import Runtime
from iotsec.coap.message import (
    Code,
    Message,
    MessageType,
    Option,
    parse_header,
    parse_message,
)
from iotsec.coap.oscore import (
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

__all__ = ["OscoreEndpoint", "serve_oscore"]

log = logging.getLogger(__name__)
#: Answers kept to repeat for a retransmitted confirmable request (RFC 7252 4.5): its
#: sequence number is spent, so it is answered from here, not decrypted again.
_DEDUP = 1024
_MAX_DATAGRAM = 2048

Address = tuple[str, int]


class OscoreEndpoint:
    """Turns one datagram into at most one answer (the serving thread only)."""

    def __init__(self, rt: Runtime, contexts: OscoreContexts, bridge: MqttBridge | None
                 ) -> None:
        self.rt = rt
        self.contexts = contexts
        self.bridge = bridge
        self._replies: OrderedDict[tuple[Address, int], bytes] = OrderedDict()
        self._next_mid = secrets.randbelow(0x10000)

    def _event(self, outcome: str, address: Address, actor: str | None, subject: str | None,
               detail: dict[str, str]) -> None:
        self.rt.events.record_repeated(Event(
            self.rt.now(), "coap.request", outcome, actor=actor, source=address[0],
            subject=subject, detail={"protection": "oscore", **detail}))

    def received(self, data: bytes, address: Address) -> bytes | None:
        try:
            msg = parse_message(data)
        except CoapMessageError:
            try:
                mtype, _, mid, _ = parse_header(data)
            except CoapMessageError:
                return None
            return Message(MessageType.RST, Code.EMPTY, mid).encode() \
                if mtype in (MessageType.CON, MessageType.NON) else None
        if msg.type in (MessageType.ACK, MessageType.RST) or not msg.is_request:
            if msg.code == Code.EMPTY and msg.type is MessageType.CON:
                return Message(MessageType.RST, Code.EMPTY, msg.mid).encode()
            return None
        key = (address, msg.mid)
        if msg.type is MessageType.CON and key in self._replies:
            return self._replies[key]
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

    def _answer(self, msg: Message, address: Address) -> Message:
        if msg.first(Option.OSCORE) is None:
            self._event("denied", address, None, None, {"reason": "not OSCORE-protected"})
            return self._reply(msg, Code.UNAUTHORIZED, b"OSCORE-protected requests only")
        context: GatewayContext | None = None
        try:
            opt = request_option(msg)
            assert opt.kid is not None
            context = self.contexts.find(opt.kid)
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
        code, payload = self._serve(context, verified, address)
        inner = self._reply(verified.message, code, payload)
        return protect_response(context.keys, verified.request, inner)

    def _serve(self, context: GatewayContext, verified: Unprotected, address: Address
               ) -> tuple[int, bytes]:
        device_id = context.device_id
        try:
            req = interpret(verified.message)
        except CoapRequestError as exc:
            return exc.coap_code, str(exc).encode()[:200]
        if req.action in (PubSubAction.SUBSCRIBE, PubSubAction.UNSUBSCRIBE):
            return Code.NOT_IMPLEMENTED, b"observe over DTLS: OSCORE serves POST and GET"
        action = req.action.policy_action
        try:
            decision = check(self.rt, device_id, action, req.topic)
        except IotsecError as exc:
            self._event("denied", address, device_id, req.topic, {"reason": str(exc)})
            return Code.FORBIDDEN, b"device not served"
        if not decision.allowed:
            self._event("denied", address, device_id, req.topic,
                        {"action": action, "reason": decision.reason or "denied"})
            return Code.FORBIDDEN, f"{action} {req.topic} denied".encode()
        if req.action is PubSubAction.PUBLISH:
            if self.bridge is None or not self.bridge.publish(req.topic, req.payload):
                return Code.SERVICE_UNAVAILABLE, b"the MQTT broker is not connected"
            return Code.CHANGED, b""
        return Code.NOT_FOUND, b"no stored message: observe the topic over DTLS"


def serve_oscore(endpoint: OscoreEndpoint, sock: socket.socket, stop: threading.Event
                 ) -> None:
    """Answer datagrams on ``sock`` until ``stop`` is set (the calling thread)."""
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
        if answer is not None:
            try:
                sock.sendto(answer, address)
            except OSError as exc:
                log.info("cannot answer %s: %s", address[0], exc)
