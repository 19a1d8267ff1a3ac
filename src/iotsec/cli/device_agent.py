"""``iotsec device-agent``: enrol a device over EST and keep its certificate renewed.

For devices (and gateways) that run Linux: the process enrols when its directory holds no
certificate yet (a bootstrap secret read from a file or standard input, never from the
command line, or a claim certificate), then renews over the device's own mutual TLS until
SIGTERM or SIGINT, after which it exits 0. It uses only the device SDK
(:mod:`iotsec.device`): no home, no store, no operator token.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer

from iotsec.cli.options import JsonOpt
from iotsec.cli.output import console, read_input
from iotsec.device import AgentStatus, DeviceCertificate, EnrolmentPending, RenewalAgent, enrol
from iotsec.errors import InvalidInputError, NotFoundError
from iotsec.timeutil import parse_duration

__all__ = ["MAX_SECRET_BYTES", "device_agent"]

#: The largest enrolment-secret file read.
MAX_SECRET_BYTES = 4096


class _Report:
    """Status lines: one JSON object per line with ``--json``, else one sentence."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def __call__(self, state: str, text: str, data: dict[str, Any]) -> None:
        if self.as_json:
            sys.stdout.write(json.dumps({"state": state, **data}, sort_keys=True) + "\n")
            sys.stdout.flush()
        else:
            console.print(f"{state}: {text}", markup=False, soft_wrap=True)

    def certificate(self, state: str, cert: DeviceCertificate) -> None:
        self(state, f"{cert.device_id}, certificate {cert.serial} until "
             f"{cert.not_after:%Y-%m-%d %H:%M:%SZ}", cert.to_json())

    def status(self, status: AgentStatus) -> None:
        cert = status.certificate
        text = (f"{cert.device_id}, certificate {cert.serial} until "
                f"{cert.not_after:%Y-%m-%d %H:%M:%SZ}; renewal at "
                f"{status.renew_at:%Y-%m-%d %H:%M:%SZ}")
        if status.error is not None:
            text += f"; failed ({status.error}), next attempt at " \
                    f"{status.next_check:%Y-%m-%d %H:%M:%SZ}"
        self(status.state, text, status.to_json())


@contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """An event set by SIGTERM or SIGINT while the block runs (handlers restored after)."""
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _credential(secret_id: str | None, secret_file: str | None, claim_cert: Path | None,
                claim_key: Path | None) -> tuple[tuple[str, str] | None,
                                                 tuple[Path, Path] | None]:
    if (secret_id is None) != (secret_file is None):
        raise InvalidInputError("give --secret-id and --secret-file together")
    if (claim_cert is None) != (claim_key is None):
        raise InvalidInputError("give --claim-cert and --claim-key together")
    if secret_id is not None and claim_cert is not None:
        raise InvalidInputError("enrol with a bootstrap secret or a claim certificate, not both")
    if secret_id is not None and secret_file is not None:
        text = read_input(secret_file, MAX_SECRET_BYTES, "enrolment secret")
        secret = text.decode("utf-8", "replace").strip()
        if not secret or "\n" in secret:
            raise InvalidInputError("the enrolment secret file must hold the secret on one line")
        return (secret_id, secret), None
    if claim_cert is not None and claim_key is not None:
        return None, (claim_cert, claim_key)
    raise InvalidInputError("the directory holds no certificate yet: give --secret-id and "
                            "--secret-file, or --claim-cert and --claim-key, to enrol")


def device_agent(
    directory: Annotated[Path, typer.Option(
        "--dir", metavar="DIR", help="The device's key and certificate (created 0700).")],
    server: Annotated[str, typer.Option(
        "--server", metavar="URL", help="The EST server: https://HOST:PORT (iotsec serve's "
        "--est-port).")],
    ca: Annotated[Path, typer.Option(
        "--ca", metavar="FILE", help="The CA chain the device trusts ('iotsec ca chain').")],
    secret_id: Annotated[str | None, typer.Option(
        "--secret-id", metavar="ID", help="Enrolment secret id (with --secret-file).")] = None,
    secret_file: Annotated[str | None, typer.Option(
        "--secret-file", metavar="FILE", help="File holding the enrolment secret ('-' = "
        "standard input).")] = None,
    claim_cert: Annotated[Path | None, typer.Option(
        "--claim-cert", metavar="FILE", help="Claim certificate to enrol with (mutual TLS).")
    ] = None,
    claim_key: Annotated[Path | None, typer.Option(
        "--claim-key", metavar="FILE", help="The claim certificate's key.")] = None,
    label: Annotated[str | None, typer.Option(
        "--label", help="EST label (/.well-known/est/LABEL/): a provisioning template.")
    ] = None,
    common_name: Annotated[str | None, typer.Option(
        "--cn", metavar="NAME", help="CN to put in the CSR (for a template whose device id "
        "comes from it).")] = None,
    serial_number: Annotated[str | None, typer.Option(
        "--serial-number", metavar="TEXT", help="serialNumber to put in the CSR.")] = None,
    key_type: Annotated[str, typer.Option(
        "--key-type", help="ecdsa-p256, ecdsa-p384 or rsa-3072.")] = "ecdsa-p256",
    renew_before: Annotated[str | None, typer.Option(
        "--renew-before", metavar="DURATION", help="Renew when this much is left (e.g. 30d); "
        "default: at about two thirds of the lifetime.")] = None,
    wait: Annotated[str, typer.Option(
        "--wait", metavar="DURATION", help="How long to wait for an operator's approval.")
    ] = "1h",
    once: Annotated[bool, typer.Option(
        "--once", help="Enrol if needed, renew if due, then exit.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Enrol the device if DIR holds no certificate, then renew it until stopped."""
    report = _Report(as_json)
    before = parse_duration(renew_before) if renew_before is not None else None
    waiting = parse_duration(wait).total_seconds()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("iotsec device-agent: %(message)s"))
    logger = logging.getLogger("iotsec.device")
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    try:
        with _stop_on_signals() as stop:
            agent = RenewalAgent(directory, server, ca, label=label, key_type=key_type,
                                 renew_before=before)
            try:
                report.certificate("holding", agent.current())
            except NotFoundError:
                secret, claim = _credential(secret_id, secret_file, claim_cert, claim_key)
                report("enrolling", f"asking {agent.client.url}", {"server": agent.client.url})
                try:
                    enrolled = enrol(agent.client, dir=directory, ca_file=ca, secret=secret,
                                     claim=claim, key_type=key_type,
                                     common_name=common_name, serial_number=serial_number,
                                     wait=waiting, stop=stop)
                except EnrolmentPending:
                    if not stop.is_set():
                        raise
                else:
                    report.certificate("enrolled", enrolled)
            if once and not stop.is_set():
                status = agent.run_once()
                report.status(status)
                if status.error is not None:
                    raise typer.Exit(1)
                return
            agent.run(stop, on_status=report.status)
            report("stopped", "the agent stopped", {})
    finally:
        logger.removeHandler(handler)
