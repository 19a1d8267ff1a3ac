"""``iotsec payload``: end-to-end COSE messages, for debugging. (``iotsec data``, files
encrypted at rest, is :mod:`iotsec.cli.data`.)"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from iotsec.app import payloads as service
from iotsec.cli.options import JsonOpt
from iotsec.cli.output import console, emit_json, err_console, read_input, write_output
from iotsec.errors import InvalidInputError
from iotsec.protect.pairing import MAX_KEY_FILE, Algorithm, new_salt
from iotsec.protect.payload import MAX_MESSAGE, MAX_PAYLOAD, Opened, parse

__all__ = [
    "AadOpt", "InArg", "SaltOpt", "SenderIdOpt", "inspect", "keygen", "open_", "pair",
    "payload_app", "seal"
]

payload_app = typer.Typer(help="End-to-end protected payloads (COSE_Encrypt0 / COSE_Sign1): "
                          "make keys, seal and open single messages for debugging.",
                          no_args_is_help=True)

SenderIdOpt = Annotated[str, typer.Option("--sender-id", help="The sender's identity.")]
InArg = Annotated[str, typer.Argument(metavar="IN", help="Input file ('-' = stdin).")]
SaltOpt = Annotated[str | None, typer.Option("--salt", help="The pair's salt, hex (from "
                                             "'iotsec payload pair').")]
AadOpt = Annotated[str, typer.Option("--external-aad", help="Text authenticated with the "
                                     "message but not sent in it (e.g. the MQTT topic).")]


def _hex_salt(text: str | None) -> bytes | None:
    if text is None:
        return None
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise InvalidInputError("--salt is not hexadecimal") from None


def _key(path: str, what: str) -> bytes:
    return read_input(path, MAX_KEY_FILE, what)


# --- iotsec payload ----------------------------------------------------------------------


@payload_app.command("keygen")
def keygen(
    private_out: Annotated[str, typer.Argument(metavar="PRIVATE", help="New private key file "
                                               "(PKCS#8 PEM, mode 0600, not encrypted).")],
    public_out: Annotated[str, typer.Argument(metavar="PUBLIC", help="New public key file "
                                              "(PEM).")],
    key_type: Annotated[str, typer.Option("--type", help="x25519 or p256 (encryption; p256 "
                                          "also signs), ed25519 (signing).")] = "x25519",
) -> None:
    """Generate a static key pair for a device or an application."""
    pair = service.generate_keypair(key_type)
    write_output(private_out, pair.private_pem, private=True)
    write_output(public_out, pair.public_pem, private=True)
    err_console.print(f"Wrote a {key_type} private key to {private_out} and its public key to "
                      f"{public_out}", markup=False)


@payload_app.command("pair")
def pair(
    own_key: Annotated[str, typer.Option("--own-key", help="This side's private key file.")],
    peer_pub: Annotated[str, typer.Option("--peer-pub", help="The other side's public key.")],
    own_id: Annotated[str, typer.Option("--own-id", help="This side's identity.")],
    peer_id: Annotated[str, typer.Option("--peer-id", help="The other side's identity.")],
    salt: SaltOpt = None,
    alg: Annotated[str, typer.Option("--alg", help="A256GCM or ChaCha20/Poly1305.")
                   ] = "A256GCM",
    as_json: JsonOpt = False,
) -> None:
    """Derive a pair's keys and show their kids (a new salt is generated if none is given).

    Both sides must show the same kids, crosswise: that proves they derived the same keys.
    """
    salt_bytes = _hex_salt(salt) or new_salt()
    context = service.pair(_key(own_key, "private key"), _key(peer_pub, "public key"),
                           own_id=own_id, peer_id=peer_id, salt=salt_bytes,
                           alg=Algorithm.parse(alg))
    data = {"own_id": own_id, "peer_id": peer_id, "alg": context.alg.cose_name,
            "salt": salt_bytes.hex(), "send_kid": context.send.kid.hex(),
            "receive_kid": context.receive.kid.hex()}
    if as_json:
        emit_json(data)
        return
    console.print(f"salt:        {data['salt']}\n"
                  f"send kid:    {data['send_kid']} ({own_id} -> {peer_id})\n"
                  f"receive kid: {data['receive_kid']} ({peer_id} -> {own_id})", markup=False)


@payload_app.command("seal")
def seal(
    source: InArg,
    output: Annotated[str, typer.Argument(metavar="OUT", help="New file for the message "
                                          "('-' = stdout).")],
    sender_key: Annotated[str, typer.Option("--sender-key", help="The sender's private key.")],
    sender_id: SenderIdOpt,
    recipient_pub: Annotated[str | None, typer.Option("--recipient-pub", help="The "
                             "recipient's public key (encryption only).")] = None,
    recipient_id: Annotated[str | None, typer.Option("--recipient-id", help="The recipient's "
                            "identity (encryption only).")] = None,
    salt: SaltOpt = None,
    alg: Annotated[str, typer.Option("--alg", help="A256GCM or ChaCha20/Poly1305 "
                                     "(COSE_Encrypt0); ES256 or EdDSA (COSE_Sign1).")
                   ] = "A256GCM",
    seq: Annotated[int | None, typer.Option("--seq", min=0, help="Sequence number (default: "
                                            "the time in microseconds).")] = None,
    external_aad: AadOpt = "",
) -> None:
    """Seal a file as one COSE message."""
    algorithm = Algorithm.parse(alg)
    data = read_input(source, MAX_PAYLOAD, "payload")
    message = service.seal_payload(
        data, sender_key=_key(sender_key, "private key"), sender_id=sender_id, alg=algorithm,
        seq=service.default_seq() if seq is None else seq,
        recipient_public=None if recipient_pub is None else _key(recipient_pub, "public key"),
        recipient_id=recipient_id, salt=_hex_salt(salt),
        external_aad=external_aad.encode("utf-8"))
    write_output(output, message, private=True)
    if output != "-":
        err_console.print(f"Sealed {len(data)} bytes as a {len(message)}-byte "
                          f"{'COSE_Encrypt0' if algorithm.is_aead else 'COSE_Sign1'} "
                          f"({algorithm.cose_name}) in {output}", markup=False)


def _opened_json(opened: Opened) -> dict[str, Any]:
    return {"kind": opened.kind, "alg": opened.alg.cose_name, "kid": opened.kid.hex(),
            "sender_id": opened.sender_id, "recipient_id": opened.recipient_id,
            "seq": opened.seq, "bytes": len(opened.payload)}


@payload_app.command("open")
def open_(
    source: InArg,
    output: Annotated[str, typer.Argument(metavar="OUT", help="New file for the payload "
                                          "('-' = stdout).")],
    sender_pub: Annotated[str, typer.Option("--sender-pub", help="The sender's public key.")],
    sender_id: SenderIdOpt,
    recipient_key: Annotated[str | None, typer.Option("--recipient-key", help="The "
                             "recipient's private key (encrypted messages).")] = None,
    recipient_id: Annotated[str | None, typer.Option("--recipient-id", help="The recipient's "
                            "identity (encrypted messages).")] = None,
    salt: SaltOpt = None,
    external_aad: AadOpt = "",
    replay_state: Annotated[Path | None, typer.Option("--replay-state", help="JSON file "
                            "holding the sender's replay window across runs (created, "
                            "then updated).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Authenticate (and decrypt) one COSE message; nothing is written unless it opens."""
    message = read_input(source, MAX_MESSAGE, "message")
    window = service.load_window(replay_state)
    opened = service.open_payload(
        message, sender_public=_key(sender_pub, "public key"), sender_id=sender_id,
        window=window,
        recipient_key=None if recipient_key is None else _key(recipient_key, "private key"),
        recipient_id=recipient_id, salt=_hex_salt(salt),
        external_aad=external_aad.encode("utf-8"))
    if replay_state is not None:
        service.save_window(replay_state, window)
    write_output(output, opened.payload, private=True)
    if as_json and output != "-":
        emit_json(_opened_json(opened))
    elif output != "-":
        err_console.print(f"Opened {opened.kind} ({opened.alg.cose_name}) from "
                          f"{opened.sender_id}, kid {opened.kid.hex()}, seq {opened.seq}: "
                          f"{len(opened.payload)} bytes in {output}", markup=False)


@payload_app.command("inspect")
def inspect(source: InArg, as_json: JsonOpt = False) -> None:
    """Show a message's structure and headers. Nothing is verified: no key is used."""
    parsed = parse(read_input(source, MAX_MESSAGE, "message"))
    data = {"kind": parsed.kind, "alg": parsed.algorithm_name, "kid": parsed.kid.hex(),
            "seq": parsed.seq, "iv": None if parsed.iv is None else parsed.iv.hex(),
            "protected_header_bytes": len(parsed.protected),
            ("ciphertext_bytes" if parsed.kind == "encrypt0" else "payload_bytes"):
                len(parsed.body), "verified": False}
    if as_json:
        emit_json(data)
        return
    for key, value in data.items():
        console.print(f"{key + ':':<24}{value}", markup=False)
