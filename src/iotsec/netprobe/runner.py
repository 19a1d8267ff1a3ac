"""The scan itself: ports, then identification, then the checks, per open port.

:func:`run_scan` takes a checked :class:`~iotsec.scan.targets.ScanPlan` and returns a
:class:`ScanResult`: every open service found, what it is, and the findings. It raises
nothing for what the targets do: a host that stalls, floods or hangs up is a note on its
service, and the scan goes on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from iotsec.findings.model import Finding, Location, sort_findings
from iotsec.netprobe import credentials as creds
from iotsec.netprobe import mqtt
from iotsec.netprobe import tls as tls_probe
from iotsec.netprobe.dtls import client_auth, identify_dtls, observe_dtls
from iotsec.netprobe.identify import identify_tcp, identify_udp
from iotsec.netprobe.net import open_conversation
from iotsec.netprobe.ports import tcp_connect_scan
from iotsec.scan import probes, rules, tls
from iotsec.scan.model import HostResult, ScanOptions, ScanResult, Service
from iotsec.scan.targets import HostTarget, ScanPlan

__all__ = ["run_scan"]


def _tls_summary(obs: tls.TlsObservation) -> dict[str, Any]:
    from cryptography import x509

    chain: list[dict[str, str]] = []
    for der in obs.chain:
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError:
            chain.append({"subject": "(unparsable certificate)"})
            continue
        chain.append({"subject": cert.subject.rfc4514_string(),
                      "issuer": cert.issuer.rfc4514_string(),
                      "not_after": cert.not_valid_after_utc.isoformat()})
    return {"version": obs.version, "cipher": obs.cipher, "accepted_old": obs.accepted_old,
            "weak_suites": obs.weak_suites, "static_rsa_suites": obs.rsa_kex,
            "dh_bits": obs.dh_bits, "curve": obs.curve, "chain": chain, "error": obs.error,
            "probes": obs.probes}


async def _fetch(service: Service, path: str, timeout: float) -> probes.HttpResponse | None:
    """One more GET on the same service (to follow a redirect to a login page)."""
    try:
        conv = await open_conversation(service.host, service.port, timeout,
                                       tls=tls_probe.permissive_context() if service.tls else None,
                                       server_hostname=service.server_name)
    except (OSError, TimeoutError):
        return None
    try:
        shown = service.server_name or (f"[{service.host}]" if ":" in service.host
                                        else service.host)
        await conv.send(probes.http_request(f"{shown}:{service.port}", path), timeout)
        await conv.read(timeout, until=lambda d: b"</form" in d.lower())
    except (OSError, TimeoutError):
        pass
    finally:
        await conv.close()
    return probes.parse_http_response(bytes(conv.received))


def _local_redirect(response: probes.HttpResponse, service: Service) -> str | None:
    if response.status not in (301, 302, 303, 307, 308):
        return None
    target = response.header("location")
    if not target:
        return None
    parts = urlsplit(target)
    if parts.scheme and parts.scheme not in ("http", "https"):
        return None
    if parts.scheme and ((parts.scheme == "https") != service.tls):
        return None  # a redirect to HTTPS (or away from it) leaves this service
    if parts.hostname and parts.hostname not in (service.host, service.server_name):
        return None
    if parts.port is not None and parts.port != service.port:
        return None
    path = parts.path or "/"
    return path if path.startswith("/") else "/" + path


class _Examiner:
    def __init__(self, options: ScanOptions, now: datetime, trust: tls.TrustStore) -> None:
        self.options = options
        self.now = now
        self.trust = trust

    async def examine(self, service: Service, target: HostTarget) -> list[Finding]:
        loc = Location.endpoint(service.host, service.port, service.transport,
                                name=target.name, device=target.device)
        out: list[Finding] = []
        proto = service.protocol
        if service.tls and service.transport == "udp":
            out.extend(await self._dtls(service, loc))
        elif service.tls:
            obs = await tls_probe.observe(service.host, service.port,
                                    server_name=service.server_name, config=self.options.tls)
            service.details["tls"] = _tls_summary(obs)
            if obs.error:
                service.notes.append(f"TLS audit: {obs.error}")
            service.notes.extend(f"TLS audit: {n}" for n in obs.notes if obs.error is None)
            out.extend(tls.assess(obs, now=self.now, trust=self.trust, location=loc))
        if proto == "telnet":
            out.append(rules.PLAINTEXT_TELNET.at(
                loc, "Telnet is open", evidence={"banner": service.banner}))
            out.extend(await self._credentials(service, loc))
        elif proto == "ftp" and not service.tls:
            out.append(rules.PLAINTEXT_FTP.at(loc, "FTP is open",
                                              evidence={"banner": service.banner}))
            out.extend(await self._credentials(service, loc))
        elif proto == "http":
            out.extend(await self._http(service, loc))
        elif proto == "mqtt":
            out.extend(await self._mqtt(service, loc))
        elif proto == "modbus":
            out.append(rules.PLAINTEXT_MODBUS.at(
                loc, "Modbus/TCP answers a read request from the scanner",
                evidence={"exception": service.details.get("exception")}))
        elif proto == "coap" and not service.tls:
            out.append(rules.PLAINTEXT_COAP.at(
                loc, "CoAP answers without DTLS",
                evidence={"code": service.details.get("code"),
                          "resources": service.details.get("resources")}))
        return out

    async def _dtls(self, service: Service, loc: Location) -> list[Finding]:
        obs, first = await observe_dtls(service, self.options.probe.probe_timeout * 2)
        service.details["tls"] = _tls_summary(obs)
        service.details["client_certificate"] = client_auth(first)
        if obs.error:
            service.notes.append(f"DTLS audit: {obs.error}")
            return []
        out = tls.assess(obs, now=self.now, trust=self.trust, location=loc)
        if first.completed:
            out.append(rules.DTLS_NO_CLIENT_CERT.at(
                loc, "the DTLS handshake completes without a client certificate",
                evidence={"client_certificate": client_auth(first),
                          "version": first.version, "cipher": first.cipher,
                          "coap": first.coap_code}))
        return out

    async def _http(self, service: Service, loc: Location) -> list[Finding]:
        response = service.http
        if response is None:
            return []
        path = "/"
        redirect = _local_redirect(response, service)
        if redirect is not None:
            followed = await _fetch(service, redirect, self.options.probe.probe_timeout)
            if followed is not None:
                response, path = followed, redirect
        challenge = probes.auth_challenge(response)
        form = probes.has_login_form(response)
        if challenge is None and not form:
            return []
        how = (f"HTTP {challenge[0]} authentication" if challenge else "a login form")
        service.details["login"] = how
        service.details["login_path"] = path
        out: list[Finding] = []
        if not service.tls:
            evidence: dict[str, object] = {"path": path, "login": how}
            if challenge and challenge[1]:
                evidence["realm"] = challenge[1]
            out.append(rules.PLAINTEXT_HTTP_LOGIN.at(
                loc, f"asks for a password over plain HTTP ({how} at {path})",
                evidence=evidence))
        if challenge and challenge[0] == "basic":
            out.extend(await self._credentials(service, loc, path=path))
        elif challenge or form:
            service.notes.append(f"credentials not tried: {how} is not HTTP basic")
        return out

    async def _mqtt(self, service: Service, loc: Location) -> list[Finding]:
        out: list[Finding] = []
        if not service.tls:
            out.append(rules.PLAINTEXT_MQTT.at(loc, "MQTT is served without TLS"))
        if service.connack == 0:
            out.append(rules.MQTT_ANONYMOUS.at(
                loc, "the broker accepted an anonymous CONNECT", evidence={"connack": 0}))
            wildcard = await mqtt.check_wildcard(
                service.host, service.port, self.options.probe.probe_timeout * 2,
                tls=service.tls, server_name=service.server_name)
            service.details["wildcard_suback"] = list(wildcard.suback or ()) or None
            service.notes.extend(wildcard.notes)
            if wildcard.granted:
                out.append(rules.MQTT_WILDCARD.at(
                    loc, "the broker granted an anonymous subscription to '#'",
                    evidence={"suback": ",".join(str(c) for c in wildcard.suback or ()),
                              "messages_received": wildcard.messages}))
        elif service.connack in (4, 5, 0x86, 0x87):
            out.extend(await self._credentials(service, loc))
        return out

    async def _credentials(self, service: Service, loc: Location, *,
                           path: str = "/") -> list[Finding]:
        config = self.options.credentials
        if not config.enabled:
            return []
        attempt = creds.attempt_for(service.protocol, service.host, service.port,
                                    tls=service.tls, server_name=service.server_name,
                                    path=path, timeout=config.timeout)
        if attempt is None:
            return []
        outcome = await creds.check_credentials(attempt, config)
        summary: dict[str, Any] = {"verdict": outcome.verdict, "attempts": outcome.attempts}
        if outcome.credential is not None:
            summary["username"] = outcome.credential.username
        service.details["credentials"] = summary
        service.notes.extend(outcome.notes)
        what = {"telnet": "Telnet login", "ftp": "FTP login", "http": "HTTP basic login",
                "mqtt": "MQTT CONNECT"}[service.protocol]
        if outcome.verdict == "accepts-any":
            return [rules.CREDENTIALS_ANY.at(
                loc, f"{what} accepted a random user name and password (control attempt)",
                evidence={"attempts": outcome.attempts})]
        cred = outcome.credential
        if cred is None:
            return []
        if outcome.verdict == "any-password":
            return [rules.CREDENTIALS_ANY_PASSWORD.at(
                loc, f"{what} accepted user {cred.username!r} with a random password",
                evidence={"username": cred.username})]
        shown = cred.password if cred.password else "(empty)"
        return [rules.CREDENTIALS_DEFAULT.at(
            loc, f"{what} accepted the default credentials {cred.username}:{shown}",
            evidence={"username": cred.username, "password": shown,
                      "attempts": outcome.attempts})]


async def run_scan(plan: ScanPlan, options: ScanOptions | None = None, *, now: datetime,
                   trust: tls.TrustStore | None = None, clock: Callable[[], datetime],
                   ) -> ScanResult:
    """Scan every host and port of ``plan``; ``now`` is the time certificates are judged
    at, ``clock`` stamps the start and the end."""
    options = options or ScanOptions()
    trust = trust or tls.TrustStore.of()
    started = clock()
    t0 = time.perf_counter()

    def target_of(address: str) -> HostTarget:
        name, device = plan.labels.get(address, (None, None))
        return HostTarget(address, name, device)

    items = ((h.address, p) for h in plan.hosts() for p in plan.ports.tcp)
    examiner = _Examiner(options, now, trust)
    gate = asyncio.Semaphore(options.service_concurrency)

    async def tcp_service(address: str, port: int) -> tuple[Service, list[Finding]]:
        target = target_of(address)
        async with gate:
            service = await identify_tcp(address, port, options.probe,
                                         server_name=target.name)
            found = await examiner.examine(service, target)
        return service, found

    # Each service is identified from the moment its port is found open, while the port
    # phase goes on: a silent service's banner wait passes during the rest of the scan.
    early: dict[tuple[str, int], asyncio.Task[tuple[Service, list[Finding]]]] = {}

    def found_open(address: str, port: int) -> None:
        if (address, port) not in early:
            early[address, port] = asyncio.ensure_future(tcp_service(address, port))

    try:
        stats = await tcp_connect_scan(items, options.ports, on_open=found_open)
    except BaseException:
        await _cancelled(early.values())
        raise
    # A port the scan reached on this host that proved not to be open (one of the scan's
    # own sockets answered): its identification is dropped, whatever it found.
    opened = set(stats.open)
    await _cancelled(task for key, task in early.items() if key not in opened)
    hosts: dict[str, HostResult] = {}

    async def udp_worker(work: Iterator[tuple[HostTarget, int]]) -> list[Finding]:
        found: list[Finding] = []
        for target, port in work:
            service = await identify_udp(target.address, port, options.probe)
            if service is None:
                # Not plain CoAP: perhaps DTLS (coaps), which ignores a bare CoAP request.
                service = await identify_dtls(target.address, port,
                                              options.probe.probe_timeout)
            if service is None:
                continue
            async with gate:
                found.extend(await examiner.examine(service, target))
            hosts.setdefault(target.address, HostResult(
                target.address, target.name, target.device)).services.append(service)
        return found

    async def tcp_worker() -> list[Finding]:
        found: list[Finding] = []
        examined = await asyncio.gather(*(early.pop(key) if key in early
                                          else tcp_service(*key) for key in stats.open))
        for (address, _port), (service, findings) in zip(stats.open, examined, strict=True):
            target = target_of(address)
            hosts.setdefault(address, HostResult(address, target.name, target.device)) \
                .services.append(service)
            found.extend(findings)
        return found

    jobs = [tcp_worker()]
    if plan.ports.udp:
        # A fixed pool of workers shares one lazy iterator: memory stays flat however
        # many hosts the plan holds.
        work = ((h, p) for h in plan.hosts() for p in plan.ports.udp)
        jobs.extend(udp_worker(work) for _ in range(options.udp_concurrency))
    findings: list[Finding] = []
    for found in await asyncio.gather(*jobs):
        findings.extend(found)
    ordered = sorted(hosts.values(), key=lambda h: _address_key(h.address))
    return ScanResult(
        started_at=started, finished_at=clock(), targets=plan.targets,
        ports=str(plan.ports), host_count=plan.host_count, hosts=ordered,
        findings=sort_findings(findings), port_stats=stats, options=options.to_dict(),
        seconds=time.perf_counter() - t0)


async def _cancelled(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` and wait until they have ended (their connections closed)."""
    ending = list(tasks)
    for task in ending:
        task.cancel()
    if ending:
        await asyncio.gather(*ending, return_exceptions=True)


def _address_key(address: str) -> tuple[int, int]:
    import ipaddress

    ip = ipaddress.ip_address(address)
    return (ip.version, int(ip))
