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
from iotsec.app.coap.oscore_contexts import (
    GATEWAY_ID,
    GATEWAY_SENDER_ID,
    GatewayContext,
    OscoreContexts,
    edhoc_device,
    edhoc_key,
)
from iotsec.app.coap.standing import refusal_now
from iotsec.app.events import Event
from iotsec.app.runtime import Runtime
from iotsec.coap.edhoc import EDHOC_PATH, Responder, ccs, connection_ids, split_message_3
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
from iotsec.protect.replay import ReplayWindow

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
        self._edhoc_key, gateway_public = edhoc_key(rt)
        self._edhoc_credential = ccs(gateway_public, GATEWAY_ID, GATEWAY_SENDER_ID)
        #: EDHOC sessions after message_2, and the contexts they established, by C_R (the
        #: kid of the device's requests); together at most 48 (lakers' one-byte C_R), the
        #: least recently used dropped first.
        self._edhoc_pending: OrderedDict[bytes, Responder] = OrderedDict()
        self._edhoc_ready: OrderedDict[bytes, GatewayContext] = OrderedDict()
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
        credential = responder.device_credential(message_3)
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
        code, payload = self._serve(context, verified, address)
        inner = self._reply(verified.message, code, payload)
        return protect_response(context.keys, verified.request, inner)

    def _serve(self, context: GatewayContext, verified: Unprotected, address: Address
               ) -> tuple[int, bytes]:
        device_id = context.device_id
        if context.serial is not None:
            # Established with a certificate's key: that certificate must still be valid.
            reason = refusal_now(self.rt, context.serial, device_id, self.rt.now())
            if reason is not None:
                self._event("denied", address, device_id, None, {"reason": reason})
                self._edhoc_ready.pop(context.keys.recipient_id, None)
                return Code.FORBIDDEN, reason.encode()
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
        except Exception:  # a bug must not stop the listener for every other device
            log.exception("OSCORE request from %s failed", address[0])
            continue
        if answer is not None:
            try:
                sock.sendto(answer, address)
            except OSError as exc:
                log.info("cannot answer %s: %s", address[0], exc)
