"""``iotsec device-token``: device public keys, legacy secrets, and token verification."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer

from iotsec.app.identity import device_tokens as service
from iotsec.app.wire.identity import DeviceKeyOut, DeviceSecretOut, VerifiedOut
from iotsec.cli.context import runtime
from iotsec.cli.options import DeviceArg, JsonOpt
from iotsec.cli.output import console, emit_json, err_console, plural, read_input, table, when
from iotsec.errors import TokenError
from iotsec.identity.device_tokens import MAX_PUBLIC_KEY_BYTES, MAX_TOKEN_BYTES
from iotsec.timeutil import from_ts, parse_duration

__all__ = [
    "STDIN", "app", "key_add", "key_app", "key_list", "key_revoke", "secret_app", "secret_create",
    "secret_rotate", "verify"
]

app = typer.Typer(help="Device tokens (JWTs) for devices that cannot use mutual TLS.",
                  no_args_is_help=True)
key_app = typer.Typer(help="Public keys devices sign their tokens with.", no_args_is_help=True)
secret_app = typer.Typer(help="Legacy HS256 shared secrets (for devices that cannot sign "
                         "with a key pair).", no_args_is_help=True)
app.add_typer(key_app, name="key")
app.add_typer(secret_app, name="secret")

STDIN = "-"


@key_app.command("add")
def key_add(
    device_id: DeviceArg,
    public_key: Annotated[str, typer.Option("--public-key", help="PEM or DER public key file "
                                            "('-' = stdin): EC P-256 or Ed25519.")],
    as_json: JsonOpt = False,
) -> None:
    """Register a device's public key; prints the kid the device puts in its tokens."""
    data = read_input(public_key, MAX_PUBLIC_KEY_BYTES, "public key")
    with runtime() as rt:
        kid = service.register_key(rt, device_id, data)
        record = next(k for k in service.list_keys(rt, device_id) if k.kid == kid)
        now = rt.now()
    if as_json:
        emit_json(DeviceKeyOut.from_domain(record, now))
        return
    console.print(f"Registered {record.algorithm} key for {device_id}; kid: {kid}",
                  markup=False)


@key_app.command("list")
def key_list(device_id: DeviceArg, as_json: JsonOpt = False) -> None:
    """List the keys, certificates and secrets a device may sign its tokens with."""
    with runtime() as rt:
        found = service.list_keys(rt, device_id)
        now = rt.now()
    if as_json:
        emit_json([DeviceKeyOut.from_domain(k, now) for k in found])
        return
    table(f"{plural(len(found), 'key')} of {device_id}",
          ["kid", "algorithm", "source", "status", "created", "until"],
          [(k.kid, k.algorithm, k.source, k.status(now), when(k.created_at),
            when(k.revoked_at or k.expires_at)) for k in found])


# A kid is an RFC 7638 thumbprint in base64url, so one in 64 begins with "-": the command
# has no short options, so an unknown "option" is taken as the KID instead of refused.
@key_app.command("revoke", context_settings={"ignore_unknown_options": True})
def key_revoke(
    kid: Annotated[str, typer.Argument(metavar="KID", help="The key's id, as `key list` "
                                       "shows it (it may begin with '-').")],
    as_json: JsonOpt = False,
) -> None:
    """Revoke a registered key (or end a legacy secret now); tokens it signs stop working."""
    with runtime() as rt:
        record = service.revoke_key(rt, kid)
        now = rt.now()
    if as_json:
        emit_json(DeviceKeyOut.from_domain(record, now))
        return
    console.print(f"Revoked {record.source} key {kid} of {record.device_id}", markup=False)


def _print_secret(verb: str, device_id: str, kid: str, secret: str, as_json: bool,
                  previous_valid_until: datetime | None = None) -> None:
    if as_json:
        emit_json(DeviceSecretOut(device_id=device_id, kid=kid, secret=secret,
                                  previous_valid_until=previous_valid_until))
        return
    err_console.print(f"{verb} HS256 secret {kid} for {device_id}. The secret is shown once "
                      "and cannot be recovered; give it to the device now:", markup=False)
    console.print(f"  {secret}", markup=False)


@secret_app.command("create")
def secret_create(device_id: DeviceArg, as_json: JsonOpt = False) -> None:
    """Generate a legacy HS256 secret for a device (256 bits, shown once)."""
    with runtime() as rt:
        kid, secret = service.create_secret(rt, device_id)
    _print_secret("Created", device_id, kid, secret, as_json)


@secret_app.command("rotate")
def secret_rotate(
    device_id: DeviceArg,
    grace: Annotated[str, typer.Option("--grace", help="Keep the old secret working this "
                                       "long (e.g. 1d, 12h, 0s).")] = "1d",
    as_json: JsonOpt = False,
) -> None:
    """Replace a device's secret; the old one stops working after the grace period."""
    period = parse_duration(grace)
    with runtime() as rt:
        kid, secret = service.rotate_secret(rt, device_id, period)
        old_until = rt.now() + period
    _print_secret("Rotated in", device_id, kid, secret, as_json,
                  old_until.replace(microsecond=0))
    if not as_json:
        err_console.print(f"The previous secret works until {when(old_until)}.", markup=False)


@app.command("verify")
def verify(
    token: Annotated[str, typer.Argument(metavar="TOKEN", help="The JWT, or '-' to read it "
                                         "from stdin (keeps it out of the process list).")],
    as_json: JsonOpt = False,
) -> None:
    """Verify a device JWT as the server would; exit 1 if it is refused.

    Verifying uses the token up: its jti is recorded in the replay cache.
    """
    if token == STDIN:
        token = read_input(STDIN, MAX_TOKEN_BYTES + 2, "token").decode("ascii", "replace")
    token = token.strip()
    with runtime() as rt:
        try:
            verified = service.verify(rt, token)
        except TokenError as exc:
            if not as_json:
                raise
            emit_json({"valid": False, "error": exc.code, "detail": str(exc)})
            raise typer.Exit(1) from None
    if as_json:
        # The verdict rides beside the token's wire fields: ``--json`` also answers a
        # refused token (valid false, with the reason), which the API answers with a 401.
        emit_json({"valid": True, **VerifiedOut.from_domain(verified).model_dump(mode="json")})
        return
    console.print(f"Valid token from device {verified.device_id} (kid {verified.kid}, "
                  f"{verified.algorithm}), expires {when(from_ts(verified.expires_at))}",
                  markup=False)
    table("claims", ["claim", "value"], [(k, v) for k, v in sorted(verified.claims.items())])
