"""``iotsec gateway coap``: CoAP over DTLS 1.2 for constrained devices, decided by the same
policy engine as MQTT and bridged to the MQTT broker.

A device connects with the certificate iotsec issued it (DTLS mutual authentication; the
chain is verified by OpenSSL against the fleet's trusted CAs). Then, at the end of the
handshake *and again on every request and every notification*, it is checked that the
certificate is still valid (not revoked, not expired, known) and the device still active
or pending: a device disabled or a certificate revoked after the handshake is refused on
its next request (4.03) and its session closed. The handshake reads the store; requests
read a per-process cache of that standing (:class:`~iotsec.app.coap.standing.StandingCache`:
this process's changes apply at once, another process's within
``IOTSEC_HOT_CACHE_SECONDS``). Requests map to actions on
topics (:mod:`iotsec.coap.pubsub`) and are decided by the device's roles
(:func:`iotsec.app.access.decisions.check`); a denial is answered 4.03 and recorded on the
event chain. Allowed publishes go to the broker through :class:`MqttBridge`; messages the
broker delivers on an observed topic go to each observer as RFC 7641 notifications.

An OSCORE listener (:mod:`iotsec.app.coap.oscore_endpoint`) opens beside it when asked:
CoAP over UDP where every request is protected end to end by OSCORE (RFC 8613). There is
no listener for unprotected CoAP.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import secrets
import socket
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from iotsec.app.access.decisions import check, warm_up
from iotsec.app.coap.bridge import MqttBridge, bridge_files
from iotsec.app.coap.oscore_contexts import OscoreContexts
from iotsec.app.coap.oscore_endpoint import OscoreEndpoint, serve_oscore
from iotsec.app.coap.standing import (
    common_name,
    follow_changes,
    refusal_at_handshake,
    refusal_now,
)
from iotsec.app.events import Event, EventSink
from iotsec.app.pki.authorities import trusted_authorities
from iotsec.app.pki.server_tls import ensure_server_tls
from iotsec.app.runtime import Runtime
from iotsec.coap.blockwise import (
    MAX_BODY,
    Assemblies,
    Block,
    block1_of,
    parse_block,
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
from iotsec.coap.pubsub import PubSubAction, interpret
from iotsec.dtls import DtlsLimits, DtlsServer, Peer, server_context
from iotsec.errors import (
    CoapGatewayError,
    CoapMessageError,
    CoapRequestError,
    InvalidInputError,
)
from iotsec.pki.serial import format_serial

__all__ = ["CoapGateway", "GatewayOptions", "run_gateway"]

log = logging.getLogger(__name__)
#: Responses kept per peer to answer a retransmitted confirmable request (RFC 7252 4.5).
_DEDUP = 32
#: Most topics one peer may observe at once.
MAX_OBSERVATIONS = 64
#: The largest block sent (1024 bytes): a notification above it goes out in Block2 blocks.
_BLOCK_SZX = 6


@dataclass(frozen=True, slots=True)
class GatewayOptions:
    bind: str = "127.0.0.1"
    port: int = 5684
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 8883
    max_peers: int = 1000
    idle_timeout: float = 300.0
    handshake_timeout: float = 10.0
    #: The OSCORE listener's UDP port (RFC 8613 over plain UDP), or None for none.
    oscore_port: int | None = None
    oscore_bind: str | None = None

    def __post_init__(self) -> None:
        try:
            ipaddress.ip_address(self.bind)
        except ValueError:
            raise InvalidInputError(f"--bind {self.bind!r} is not an IP address",
                                    hint="give an address such as 127.0.0.1 or ::") from None
        if self.oscore_bind is not None:
            try:
                ipaddress.ip_address(self.oscore_bind)
            except ValueError:
                raise InvalidInputError(f"--oscore-bind {self.oscore_bind!r} is not an IP "
                                        "address", hint="give an address such as 127.0.0.1"
                                        ) from None
        ports = [("--port", self.port), ("--mqtt-port", self.mqtt_port)]
        if self.oscore_port is not None:
            ports.append(("--oscore-port", self.oscore_port))
        for name, port in ports:
            if not 0 <= port <= 65535:
                raise InvalidInputError(f"{name} {port} is out of range (0-65535)")
        if self.max_peers < 1 or self.idle_timeout <= 0 or self.handshake_timeout <= 0:
            raise InvalidInputError("--max-peers and the timeouts must be positive")

    @property
    def limits(self) -> DtlsLimits:
        return DtlsLimits(max_peers=self.max_peers, handshake_timeout=self.handshake_timeout,
                          idle_timeout=self.idle_timeout)


@dataclass(frozen=True, slots=True)
class _Answer:
    code: int
    options: tuple[tuple[int, bytes], ...]
    payload: bytes


@dataclass(eq=False)
class _Session:
    device_id: str
    serial: str
    observers: dict[bytes, str] = field(default_factory=dict)
    #: The message id of the last notification sent for each observation (a Reset to it
    #: ends the observation, RFC 7641 3.6).
    notified: dict[bytes, int] = field(default_factory=dict)
    replies: OrderedDict[int, bytes] = field(default_factory=OrderedDict)
    next_mid: int = field(default_factory=lambda: secrets.randbelow(0x10000))
    observe_seq: int = 2
    #: Request bodies arriving in Block1 blocks, by (method, topic); at most
    #: :data:`MAX_ASSEMBLIES`, the oldest dropped first.
    assemblies: Assemblies[tuple[int, str]] = field(default_factory=Assemblies)
    #: The block size each observation asked for (a Block2 option in its registration).
    block_szx: dict[bytes, int] = field(default_factory=dict)
    #: The last notification of each observed topic too large for one datagram, with its
    #: ETag: its later blocks are fetched with GET and Block2 (RFC 7959 2.4, 3.4).
    bodies: dict[str, tuple[bytes, bytes]] = field(default_factory=dict)


class CoapGateway:
    """The DTLS peer handler: admission, requests, observations (serving thread only)."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.server: DtlsServer | None = None
        self.bridge: MqttBridge | None = None
        self._by_topic: dict[str, dict[tuple[tuple[str, int], bytes], Peer]] = {}

    # --- standing: checked at the handshake, each request, each notification ---------

    def _refusal(self, peer: Peer) -> str | None:
        """Why this peer may not be served now, or None (from the standing cache)."""
        session = peer.state.get("session")
        if not isinstance(session, _Session):
            return "no session"
        return refusal_now(self.rt, session.serial, session.device_id, self.rt.now())

    def _event(self, kind: str, outcome: str, peer: Peer, subject: str | None,
               detail: dict[str, str]) -> None:
        session = peer.state.get("session")
        actor = session.device_id if isinstance(session, _Session) else None
        if actor is None and peer.certificate is not None:
            actor = common_name(peer.certificate)
        self.rt.events.record_repeated(Event(
            self.rt.now(), kind, outcome, actor=actor, source=peer.address[0],
            subject=subject, detail=detail))

    def established(self, peer: Peer) -> bool:
        assert peer.certificate is not None
        reason = refusal_at_handshake(self.rt, peer.certificate)
        if reason is not None:
            self._event("coap.connect", "denied", peer, None, {"reason": reason})
            return False
        device_id = common_name(peer.certificate)
        assert device_id is not None
        peer.state["session"] = _Session(device_id, format_serial(peer.certificate.serial_number))
        return True

    def closed(self, peer: Peer) -> None:
        session = peer.state.pop("session", None)
        if isinstance(session, _Session):
            for token in list(session.observers):
                self._forget(peer, session, token)

    # --- requests ----------------------------------------------------------------------

    def received(self, peer: Peer, data: bytes) -> Sequence[bytes]:
        session = peer.state.get("session")
        if not isinstance(session, _Session):
            return ()
        try:
            msg = parse_message(data)
        except CoapMessageError:
            try:
                mtype, _, mid, _ = parse_header(data)
            except CoapMessageError:
                return ()  # not even a header: nothing to answer
            # RFC 7252 4.2/4.3: a message format error is answered with a Reset.
            return (Message(MessageType.RST, Code.EMPTY, mid).encode(),) \
                if mtype in (MessageType.CON, MessageType.NON) else ()
        if msg.type is MessageType.RST:
            for token, _ in list(session.observers.items()):
                if session.notified.get(token) == msg.mid:
                    self._forget(peer, session, token)
            return ()
        if msg.type is MessageType.ACK or not msg.is_request:
            if msg.code == Code.EMPTY and msg.type is MessageType.CON:
                return (Message(MessageType.RST, Code.EMPTY, msg.mid).encode(),)  # ping
            return ()
        if msg.type is MessageType.CON and msg.mid in session.replies:
            return (session.replies[msg.mid],)
        code, options, payload = self._request(peer, session, msg)
        if msg.type is MessageType.CON:
            reply = Message(MessageType.ACK, code, msg.mid, msg.token, options, payload)
        else:
            reply = Message(MessageType.NON, code, self._mid(session), msg.token, options,
                            payload)
        encoded = reply.encode()
        if msg.type is MessageType.CON:
            session.replies[msg.mid] = encoded
            while len(session.replies) > _DEDUP:
                session.replies.popitem(last=False)
        return (encoded,)

    @staticmethod
    def _mid(session: _Session) -> int:
        session.next_mid = (session.next_mid + 1) & 0xFFFF
        return session.next_mid

    def _request(self, peer: Peer, session: _Session, msg: Message
                 ) -> tuple[int, tuple[tuple[int, bytes], ...], bytes]:
        reason = self._refusal(peer)
        if reason is not None:
            self._event("coap.request", "denied", peer, None, {"reason": reason})
            peer.closing = True  # answered, then the session is closed
            return Code.FORBIDDEN, (), reason.encode()
        echo: tuple[tuple[int, bytes], ...] = ()
        if msg.first(Option.BLOCK1) is not None:
            try:
                assembled = self._block1(peer, session, msg)
            except CoapRequestError as exc:
                extra = ((Option.SIZE1, encode_uint(MAX_BODY)),) \
                    if exc.coap_code == Code.REQUEST_ENTITY_TOO_LARGE else ()
                return exc.coap_code, extra, str(exc).encode()[:200]
            if isinstance(assembled, _Answer):
                return assembled.code, assembled.options, assembled.payload
            msg, echo = assembled
        block2: Block | None = None
        raw2 = msg.first(Option.BLOCK2)
        if raw2 is not None:
            try:
                block2 = parse_block(raw2)
            except CoapRequestError as exc:
                return exc.coap_code, (), str(exc).encode()[:200]
            msg = Message(msg.type, msg.code, msg.mid, msg.token,
                          tuple((n, v) for n, v in msg.options
                                if n not in (Option.BLOCK2, Option.SIZE2)), msg.payload)
        code, options, payload = self._decide(peer, session, msg, block2)
        return code, (*options, *echo), payload

    def _block1(self, peer: Peer, session: _Session, msg: Message
                ) -> _Answer | tuple[Message, tuple[tuple[int, bytes], ...]]:
        """A Block1 block (RFC 7959 2.5): 2.31 Continue until the last one, then the whole
        request (and the Block1 option to echo in its answer). Publishing is decided on
        the first block, before anything is kept, and again on the whole request."""
        block, bare = block1_of(msg)
        req = interpret(bare)
        if req.action is not PubSubAction.PUBLISH:
            raise CoapRequestError("Block1 is taken with POST and PUT", Code.BAD_OPTION)
        key = (msg.code, req.topic)
        if block.num == 0:
            decision = check(self.rt, session.device_id, "publish", req.topic, session.serial)
            if not decision.allowed:
                self._event("coap.request", "denied", peer, req.topic,
                            {"action": "publish", "reason": decision.reason or "denied"})
                return _Answer(Code.FORBIDDEN, (), f"publish {req.topic} denied".encode())
            session.assemblies.start(key, block.szx)
        body = session.assemblies.add(key, block, msg.payload)
        echo = ((Option.BLOCK1, Block(block.num, body is None, block.szx).encode()),)
        if body is None:
            return _Answer(Code.CONTINUE, echo, b"")
        return Message(bare.type, bare.code, bare.mid, bare.token, bare.options, body), echo

    def _decide(self, peer: Peer, session: _Session, msg: Message, block2: Block | None
                ) -> tuple[int, tuple[tuple[int, bytes], ...], bytes]:
        try:
            req = interpret(msg)
        except CoapRequestError as exc:
            return exc.coap_code, (), str(exc).encode()[:200]
        actions = [req.action.policy_action]
        if req.action in (PubSubAction.SUBSCRIBE, PubSubAction.READ):
            actions.append("receive")
        if req.action is not PubSubAction.UNSUBSCRIBE:
            for action in actions:
                decision = check(self.rt, session.device_id, action, req.topic, session.serial)
                if not decision.allowed:
                    self._event("coap.request", "denied", peer, req.topic,
                                {"action": action, "reason": decision.reason or "denied"})
                    return Code.FORBIDDEN, (), f"{action} {req.topic} denied".encode()
        if req.action is PubSubAction.PUBLISH:
            if self.bridge is None or not self.bridge.publish(req.topic, req.payload):
                return Code.SERVICE_UNAVAILABLE, (), b"the MQTT broker is not connected"
            return Code.CHANGED, (), b""
        if req.action is PubSubAction.SUBSCRIBE:
            if msg.token not in session.observers and \
                    len(session.observers) >= MAX_OBSERVATIONS:
                return Code.SERVICE_UNAVAILABLE, (), b"too many observations"
            self._observe(peer, session, msg.token, req.topic)
            if block2 is not None:
                session.block_szx[msg.token] = min(block2.szx, _BLOCK_SZX)
            return Code.CONTENT, ((Option.OBSERVE, encode_uint(self._seq(session))),), b""
        if req.action is PubSubAction.UNSUBSCRIBE:
            self._forget(peer, session, msg.token)
            return Code.CONTENT, (), b""
        stored = session.bodies.get(req.topic)
        if block2 is not None and stored is not None:
            return self._block2(stored, block2)
        return Code.NOT_FOUND, (), b"no stored message: observe the topic (Observe: 0)"

    @staticmethod
    def _block2(stored: tuple[bytes, bytes], block2: Block
                ) -> tuple[int, tuple[tuple[int, bytes], ...], bytes]:
        """Block ``block2.num`` of the last large notification (RFC 7959 2.4): the ETag
        tells the client which notification the block belongs to."""
        etag, body = stored
        size = block2.size
        start = block2.num * size
        if start >= len(body) and block2.num:
            return Code.BAD_OPTION, (), b"no such block"
        more = start + size < len(body)
        return Code.CONTENT, ((Option.ETAG, etag),
                              (Option.BLOCK2, Block(block2.num, more, block2.szx).encode()),
                              (Option.SIZE2, encode_uint(len(body)))), body[start:start + size]

    @staticmethod
    def _seq(session: _Session) -> int:
        session.observe_seq = (session.observe_seq + 1) & 0xFFFFFF
        return session.observe_seq

    def _observe(self, peer: Peer, session: _Session, token: bytes, topic: str) -> None:
        old = session.observers.get(token)
        if old == topic:
            return
        if old is not None:
            self._forget(peer, session, token)
        session.observers[token] = topic
        watchers = self._by_topic.setdefault(topic, {})
        watchers[(peer.address, token)] = peer
        if len(watchers) == 1 and self.bridge is not None:
            self.bridge.subscribe(topic)

    def _forget(self, peer: Peer, session: _Session, token: bytes) -> None:
        topic = session.observers.pop(token, None)
        session.notified.pop(token, None)
        session.block_szx.pop(token, None)
        if topic is not None and topic not in session.observers.values():
            session.bodies.pop(topic, None)
        if topic is None:
            return
        watchers = self._by_topic.get(topic, {})
        watchers.pop((peer.address, token), None)
        if not watchers:
            self._by_topic.pop(topic, None)
            if self.bridge is not None:
                self.bridge.unsubscribe(topic)

    # --- messages from the broker --------------------------------------------------------

    def from_mqtt(self, topic: str, payload: bytes) -> None:
        """A message from the broker: notified once the serving loop's turn has read it."""
        if self.server is not None:
            self.server.call_soon(lambda: self.notify(topic, payload))

    def notify(self, topic: str, payload: bytes) -> None:
        """Send ``payload`` to every observer of ``topic`` still allowed to receive it."""
        server = self.server
        for (_, token), peer in list(self._by_topic.get(topic, {}).items()):
            session = peer.state.get("session")
            if not isinstance(session, _Session) or server is None:
                continue
            reason = self._refusal(peer)
            decision = None if reason else check(self.rt, session.device_id, "receive", topic,
                                                  session.serial)
            mid = self._mid(session)
            if reason is not None or decision is None or not decision.allowed:
                why = reason or (decision.reason if decision is not None else None) or "denied"
                self._event("coap.notify", "denied", peer, topic, {"reason": why})
                self._forget(peer, session, token)
                server.send(peer, Message(MessageType.NON, Code.FORBIDDEN, mid, token).encode())
                if reason is not None:
                    server.close_peer(peer)
                continue
            session.notified[token] = mid
            observe = (Option.OBSERVE, encode_uint(self._seq(session)))
            szx = session.block_szx.get(token, _BLOCK_SZX)
            if len(payload) <= 16 << szx:
                server.send(peer, Message(MessageType.NON, Code.CONTENT, mid, token,
                                          (observe,), payload).encode())
                continue
            if len(payload) > MAX_BODY:
                self._event("coap.notify", "denied", peer, topic,
                            {"reason": f"a message over {MAX_BODY} bytes"})
                continue
            # Larger than one block: the first block goes out, the client fetches the rest.
            etag = hashlib.sha256(payload).digest()[:8]
            session.bodies[topic] = (etag, payload)
            code, options, first = self._block2((etag, payload), Block(0, True, szx))
            server.send(peer, Message(MessageType.NON, code, mid, token,
                                      (observe, *options), first).encode())


def _bind(address: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.bind((address, port))
    except OSError as exc:
        sock.close()
        raise CoapGatewayError(f"cannot bind UDP {address}:{port}: "
                               f"{exc.strerror or exc}") from None
    return sock


def _reachable(options: GatewayOptions) -> None:
    """Refuse an unreachable broker before any certificate is issued for the gateway."""
    try:
        socket.create_connection((options.mqtt_host, options.mqtt_port), timeout=3).close()
    except OSError as exc:
        raise CoapGatewayError(f"the MQTT broker at {options.mqtt_host}:{options.mqtt_port} "
                               f"is not reachable: {exc.strerror or exc}") from None


def run_gateway(rt: Runtime, options: GatewayOptions, stop: threading.Event, *,
                ready: Callable[[tuple[str, int]], None] | None = None,
                oscore_ready: Callable[[tuple[str, int]], None] | None = None) -> None:
    """Serve CoAP over DTLS (and OSCORE over UDP when ``options.oscore_port`` is set)
    until ``stop`` is set. ``ready`` is called with the bound DTLS address (after
    ``oscore_ready`` with the OSCORE one) once the broker accepted the bridge and the
    sockets listen. The addresses and the broker are checked before the gateway's
    certificates are issued or renewed."""
    sock = _bind(options.bind, options.port)
    oscore_sock: socket.socket | None = None
    try:
        if options.oscore_port is not None:
            oscore_sock = _bind(options.oscore_bind or options.bind, options.oscore_port)
        _reachable(options)
        tls = ensure_server_tls(rt, options.bind)
        trust = [a.certificate for a in trusted_authorities(rt) if a.role != "cross"]
        ctx = server_context(tls.chain_file, tls.key_file, tls.key_password.encode("utf-8"),
                             trust, DtlsServer.new_cookie_secret())
        files = bridge_files(rt)
    except BaseException:
        sock.close()
        if oscore_sock is not None:
            oscore_sock.close()
        raise
    gateway = CoapGateway(rt)
    server = DtlsServer(sock, ctx, gateway, options.limits)
    gateway.server = server
    endpoint = OscoreEndpoint(rt, OscoreContexts(rt), None) if oscore_sock is not None \
        else None

    def from_mqtt(topic: str, payload: bytes) -> None:
        # The serving thread, which reads the broker's connection: the DTLS observers'
        # notifications are queued for the end of its turn, the OSCORE observers' are
        # protected and sent from here.
        gateway.from_mqtt(topic, payload)
        if endpoint is not None:
            endpoint.from_mqtt(topic, payload)

    bridge = MqttBridge(files, options.mqtt_host, options.mqtt_port, from_mqtt)
    # A server's events go through a buffer flushed by a background thread (as 'serve'
    # does): no store write on a request's path.
    direct, rt.events = rt.events, EventSink(rt.engine, buffered=True)
    oscore_thread: threading.Thread | None = None
    try:
        bridge.start()
        # The broker's connection is driven by the serving loop: no thread is woken to
        # write a publish, and it is written after the answer to its request went out.
        server.add_source(bridge)
        gateway.bridge = bridge
        # The policy compiled, registry entries and the policy version kept fresh by a
        # background thread, and (on PostgreSQL) every cache following the change feed.
        warm_up(rt)
        follow_changes(rt)
        bound = sock.getsockname()
        detail: dict[str, object] = {"protocol": "coap+dtls", "bind": options.bind,
                                     "port": int(bound[1])}
        if oscore_sock is not None and endpoint is not None:
            endpoint.bridge = bridge
            oscore_thread = threading.Thread(target=serve_oscore, name="coap-oscore",
                                             args=(endpoint, oscore_sock, stop), daemon=True)
            oscore_thread.start()
            oscore_bound = oscore_sock.getsockname()
            detail["oscore_port"] = int(oscore_bound[1])
            if oscore_ready is not None:
                oscore_ready((str(oscore_bound[0]), int(oscore_bound[1])))
        rt.events.record(Event(rt.now(), "gateway.start", "success", actor="gateway",
                               detail=detail))
        if ready is not None:
            ready((str(bound[0]), int(bound[1])))
        server.serve(stop)
    finally:
        stop.set()
        if oscore_thread is not None:
            oscore_thread.join(5)
        if oscore_sock is not None:
            oscore_sock.close()
        bridge.stop()
        sock.close()
        rt.events.close()
        rt.events = direct
