"""``iotsec firmware``: signing keys, and signing, verifying and inspecting MCUboot images.

Option names follow ``imgtool sign`` wherever they mean the same thing, so a build script
can switch tools by changing the command name.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from iotsec.app.ota import firmware as service
from iotsec.cli.context import runtime
from iotsec.cli.options import JsonOpt
from iotsec.cli.output import console, emit_json, err_console, table
from iotsec.errors import FirmwareKeyError, InvalidInputError, IotsecError
from iotsec.firmware.image import (
    Dependency,
    ImageFlag,
    ImageVersion,
    Tlv,
    TlvType,
    unpack_u32,
)
from iotsec.firmware.image_keys import FirmwareKeyType, TrustedKey, public_pem
from iotsec.firmware.layout import ImageInfo
from iotsec.firmware.sign import SignOptions, auto_security_counter

__all__ = [
    "app",
    "import_key",
    "info_json",
    "inspect",
    "keygen",
    "public_key",
    "sign",
    "verify",
]

app = typer.Typer(help="Signed firmware images (MCUboot format): keys, sign, verify, inspect.",
                  no_args_is_help=True)


# --------------------------------------------------------------------------- helpers


def _passphrase(*, new: bool) -> bytes:
    """The signing-key passphrase: the environment, else a prompt on a terminal."""
    value = os.environ.get(service.PASSPHRASE_ENV)
    if value:
        return value.encode("utf-8")
    if sys.stdin.isatty():
        text = typer.prompt("New key passphrase" if new else "Key passphrase",
                            hide_input=True, confirmation_prompt=new, err=True)
        return str(text).encode("utf-8")
    raise FirmwareKeyError("no passphrase for the firmware signing key",
                           hint=f"set {service.PASSPHRASE_ENV}, or run in a terminal to be "
                           "prompted" + (", or use --generate-passphrase" if new else ""))


def _int(text: str | None, name: str) -> int | None:
    if text is None:
        return None
    try:
        return int(text.strip(), 0)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not an integer (use 0x.. for hex)",
                                 param_hint=name) from None


def _version(text: str, name: str = "--version") -> ImageVersion:
    try:
        return ImageVersion.parse(text)
    except InvalidInputError as exc:
        raise typer.BadParameter(str(exc), param_hint=name) from None


def _key_json(key: TrustedKey) -> dict[str, Any]:
    return {"type": key.key_type.value, "key_id": key.key_id, "key_hash": key.key_hash.hex()}


# --------------------------------------------------------------------------- keys


@app.command("keygen")
def keygen(
    output: Annotated[Path | None, typer.Option(
        "-o", "--output", "-k", "--key",
        help="Standalone key file to write (encrypted PKCS#8), instead of --label.")] = None,
    label: Annotated[str | None, typer.Option(
        "--label", help="Keep the key in the home's key custody under this label (file key "
        "store or PKCS#11 token, as 'iotsec init' configured).")] = None,
    key_type: Annotated[str, typer.Option("-t", "--type", help="ecdsa-p256, ed25519, "
                                          "rsa-2048 or rsa-3072.")] = "ecdsa-p256",
    public_out: Annotated[Path | None, typer.Option("--public-out", help="Also write the "
                                                    "public key (PEM) here.")] = None,
    generate_passphrase: Annotated[bool, typer.Option(
        "--generate-passphrase", help="Generate a strong passphrase and print it once "
        "(key files only).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Generate a firmware signing key: in key custody (--label) or in a key file (-o).

    A key file is encrypted under a passphrase from IOTSEC_FIRMWARE_KEY_PASSPHRASE, a
    prompt on a terminal, or --generate-passphrase; there is no default. A custody key
    never leaves its store (inside a PKCS#11 token it is non-extractable); its public key
    goes to --public-out or, without it, to standard output."""
    kind = FirmwareKeyType.parse(key_type)
    if (output is None) == (label is None):
        raise typer.BadParameter("give either --label (key custody) or -o KEY (a key file)",
                                 param_hint="--label / -o")
    if label is not None:
        if generate_passphrase:
            raise typer.BadParameter("a custody key has no passphrase of its own",
                                     param_hint="--generate-passphrase")
        _keygen_custody(label, kind, public_out, as_json)
        return
    assert output is not None
    generated: str | None = None
    if generate_passphrase:
        if os.environ.get(service.PASSPHRASE_ENV):
            raise typer.BadParameter(f"{service.PASSPHRASE_ENV} is set; drop "
                                     "--generate-passphrase or unset it")
        generated = secrets.token_urlsafe(24)
        passphrase = generated.encode("ascii")
    else:
        passphrase = _passphrase(new=True)
    key = service.generate_key(output, kind, passphrase, public_out=public_out)
    if as_json:
        emit_json({**_key_json(key), "key": str(output),
                   "public_key": str(public_out) if public_out else None,
                   "passphrase": generated})
        return
    console.print(f"Wrote {kind} signing key {key.key_id} to {output} (encrypted PKCS#8)"
                  + (f"; public key to {public_out}" if public_out else ""), markup=False)
    if generated is not None:
        err_console.print("Key passphrase (shown once; keep it with the key's custodian):",
                          markup=False)
        console.print(f"  {generated}", markup=False)


def _keygen_custody(label: str, kind: FirmwareKeyType, public_out: Path | None,
                    as_json: bool) -> None:
    with runtime() as rt:
        key = service.generate_custody_key(rt, label, kind, public_out=public_out)
        backend = rt.settings.keystore
    pem = public_pem(key.public_key).decode("ascii")
    if as_json:
        emit_json({**_key_json(key), "label": label, "backend": backend,
                   "public_key": str(public_out) if public_out else None,
                   "public_key_pem": pem})
        return
    err_console.print(f"Generated {kind} signing key {label!r} ({key.key_id}) in the "
                      f"{backend} key store"
                      + (f"; public key written to {public_out}" if public_out else ""),
                      markup=False, soft_wrap=True)
    if public_out is None:
        sys.stdout.write(pem)


@app.command("import-key")
def import_key(
    source: Annotated[Path, typer.Argument(metavar="IN", help="PEM private key, e.g. from "
                                           "'imgtool keygen'.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Encrypted key to write.")],
    as_json: JsonOpt = False,
) -> None:
    """Encrypt an existing signing key (unencrypted PEM) under the firmware passphrase."""
    key = service.import_key(source, output, _passphrase(new=True))
    if as_json:
        emit_json({**_key_json(key), "key": str(output)})
        return
    console.print(f"Wrote {key.key_type} signing key {key.key_id} to {output} "
                  "(encrypted PKCS#8); remove the unencrypted original", markup=False)


@app.command("public-key")
def public_key(
    key_file: Annotated[Path | None, typer.Argument(
        metavar="[KEY]", help="Signing key or public key file (or use --label).")] = None,
    label: Annotated[str | None, typer.Option(
        "--label", help="A firmware key in the home's key custody.")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write the PEM here "
                                                "(default: print it).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Export the public key of a signing key (PEM), and show its MCUboot key hash."""
    if (key_file is None) == (label is None):
        raise typer.BadParameter("give either a KEY file or --label", param_hint="KEY / --label")
    if label is not None:
        with runtime() as rt:
            key = service.custody_public_key(rt, label)
    else:
        assert key_file is not None
        key = service.public_key_of(key_file, lambda: _passphrase(new=False))
    if output is not None:
        service.export_public_key(key, output)
    if as_json:
        emit_json({**_key_json(key), "public_key": str(output) if output else None})
    elif output is None:
        sys.stdout.write(public_pem(key.public_key).decode("ascii"))
    else:
        console.print(f"Wrote the public key of {key.key_type} key {key.key_id} to {output}; "
                      f"key hash {key.key_hash.hex()}", markup=False)


# --------------------------------------------------------------------------- sign


@app.command("sign")
def sign(
    infile: Annotated[Path, typer.Argument(metavar="IN", help="Firmware binary.")],
    outfile: Annotated[Path, typer.Argument(metavar="OUT", help="Signed image to write.")],
    version: Annotated[str, typer.Option("-v", "--version", help="major.minor.revision+build")],
    key: Annotated[Path | None, typer.Option("-k", "--key", help="Signing key file (encrypted "
                                             "PEM), or use --key-label.")] = None,
    key_label: Annotated[str | None, typer.Option(
        "--key-label", help="Sign with this firmware key in the home's key custody.")] = None,
    security_counter: Annotated[str | None, typer.Option(
        "-s", "--security-counter", help="Anti-rollback counter (protected TLV), or 'auto' "
        "(from the version, like imgtool).")] = None,
    header_size: Annotated[str, typer.Option("-H", "--header-size",
                                             help="Header size in bytes.")] = "0x200",
    pad_header: Annotated[bool, typer.Option("--pad-header", help="Prepend the header "
                                             "(else IN must start with it, zeroed).")] = False,
    align: Annotated[str, typer.Option("--align", help="Flash write alignment: 1, 2, 4, 8, "
                                       "16 or 32.")] = "1",
    max_align: Annotated[str | None, typer.Option("--max-align", help="Maximum flash "
                                                  "alignment: 8, 16 or 32.")] = None,
    slot_size: Annotated[str | None, typer.Option("-S", "--slot-size", help="Slot size; the "
                                                  "image and trailer must fit.")] = None,
    pad: Annotated[bool, typer.Option("--pad", help="Pad to --slot-size and write the "
                                      "trailer magic.")] = False,
    confirm: Annotated[bool, typer.Option("--confirm", help="With --pad: mark the image "
                                          "confirmed (image_ok).")] = False,
    max_sectors: Annotated[int, typer.Option("-M", "--max-sectors", help="Sectors the swap "
                                             "status allows for.")] = 128,
    overwrite_only: Annotated[bool, typer.Option("--overwrite-only", help="Trailer for "
                                                 "overwrite-only upgrades.")] = False,
    load_addr: Annotated[str | None, typer.Option("-L", "--load-addr", help="RAM load "
                                                  "address.")] = None,
    dependencies: Annotated[str | None, typer.Option(
        "-d", "--dependencies", help='Dependencies: "(IMAGE_ID,VERSION), ..."')] = None,
    erased_val: Annotated[str, typer.Option("-R", "--erased-val", help="0 or 0xff.")] = "0xff",
    endian: Annotated[str, typer.Option("-e", "--endian", help="little or big.")] = "little",
    public_key_format: Annotated[str, typer.Option(
        "--public-key-format", help="hash (KEYHASH TLV) or full (PUBKEY TLV).")] = "hash",
    non_bootable: Annotated[bool, typer.Option("--non-bootable")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Sign a firmware binary into an MCUboot image (imgtool-compatible)."""
    image_version = _version(version)
    counter: int | None
    if security_counter is not None and security_counter.strip().lower() == "auto":
        counter = auto_security_counter(image_version)
    else:
        counter = _int(security_counter, "--security-counter")
    deps: tuple[Dependency, ...] = ()
    if dependencies is not None:
        try:
            deps = Dependency.parse_list(dependencies)
        except InvalidInputError as exc:
            raise typer.BadParameter(str(exc), param_hint="--dependencies") from None
    if endian not in ("little", "big"):
        raise typer.BadParameter("use little or big", param_hint="--endian")
    if public_key_format not in ("hash", "full"):
        raise typer.BadParameter("use hash or full", param_hint="--public-key-format")
    byte_order: Literal["little", "big"] = "little" if endian == "little" else "big"
    key_format: Literal["hash", "full"] = "hash" if public_key_format == "hash" else "full"
    try:
        options = SignOptions(
            version=image_version, header_size=_int(header_size, "--header-size") or 0,
            pad_header=pad_header, security_counter=counter, dependencies=deps,
            load_addr=_int(load_addr, "--load-addr") or 0, non_bootable=non_bootable,
            align=_int(align, "--align") or 0, max_align=_int(max_align, "--max-align"),
            max_sectors=max_sectors, overwrite_only=overwrite_only,
            slot_size=_int(slot_size, "--slot-size") or 0, pad=pad or confirm,
            confirm=confirm, erased_val=_int(erased_val, "--erased-val") or 0,
            endian=byte_order, public_key_format=key_format)
    except InvalidInputError as exc:
        raise typer.BadParameter(str(exc) + (f" ({exc.hint})" if exc.hint else "")) from None
    if (key is None) == (key_label is None):
        raise typer.BadParameter("give either --key KEY (a key file) or --key-label NAME (key "
                                 "custody)", param_hint="--key / --key-label")
    if key_label is not None:
        with runtime() as rt:
            result = service.sign_file(infile, outfile, service.custody_signer(rt, key_label),
                                       options)
    else:
        assert key is not None
        signer = service.load_signer(key, lambda: _passphrase(new=False))
        result = service.sign_file(infile, outfile, signer, options)
    data = {"image": str(outfile), "version": str(result.header.version),
            "security_counter": counter, "header_size": result.header.hdr_size,
            "image_size": result.image_size, "total_size": result.total_size,
            "sha256": result.digest.hex(), "key": _key_json(result.key)}
    if as_json:
        emit_json(data)
        return
    padded = (f", padded to {result.total_size:#x}" if result.total_size != result.image_size
              else "")
    console.print(f"Signed {outfile}: version {result.header.version}, security counter "
                  f"{'none' if counter is None else counter}, {result.key.key_type} key "
                  f"{result.key.key_id}, {result.image_size:#x} bytes{padded}", markup=False,
                  soft_wrap=True)


# --------------------------------------------------------------------------- verify


@app.command("verify")
def verify(
    image: Annotated[str, typer.Argument(metavar="IMAGE", help="Signed image ('-' = stdin).")],
    keys: Annotated[list[Path] | None, typer.Option(
        "-k", "--key", help="Trusted public key (PEM or DER); repeat for several.")] = None,
    min_security_counter: Annotated[str, typer.Option(
        "--min-security-counter", help="Refuse images with a lower security counter.")] = "0",
    min_version: Annotated[str | None, typer.Option(
        "--min-version", help="Refuse images older than this version.")] = None,
    max_size: Annotated[str | None, typer.Option(
        "--max-size", help="Refuse images whose header declares more bytes.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Verify an image: magic, header, lengths, hash, key, signature and anti-rollback.

    With no --key it refuses: an image is never reported valid on its hash alone."""
    floor = _version(min_version, "--min-version") if min_version else None
    counter = _int(min_security_counter, "--min-security-counter") or 0
    trusted = service.load_trusted_keys(keys or [])
    result = service.verify_path(image, trusted, min_security_counter=counter,
                                 min_version=floor,
                                 max_image_size=_int(max_size, "--max-size"))
    if as_json:
        emit_json({"valid": True, "version": str(result.version),
                   "security_counter": result.security_counter,
                   "dependencies": [{"image_id": d.image_id,
                                     "min_version": str(d.min_version)}
                                    for d in result.dependencies],
                   "sha256": result.digest.hex(), "size": result.size,
                   "key": _key_json(result.key), "signed_by": list(result.signed_by)})
        return
    counter_text = "none" if result.security_counter is None else result.security_counter
    console.print(f"Image verified: version {result.version}, security counter "
                  f"{counter_text}, signed by {result.key_type} key {result.key.key_id}, "
                  f"sha256 {result.digest.hex()}", markup=False, soft_wrap=True)


# --------------------------------------------------------------------------- inspect


def _tlv_value(tlv: Tlv, endian: Literal["little", "big"]) -> str:
    if tlv.type == TlvType.SEC_CNT and len(tlv.value) == 4:
        return str(unpack_u32(tlv.value, endian))
    if tlv.type == TlvType.DEPENDENCY:
        try:
            return str(Dependency.decode(tlv.value, endian))
        except IotsecError:
            pass
    return tlv.value.hex()


def _tlv_json(tlv: Tlv, endian: Literal["little", "big"]) -> dict[str, Any]:
    return {"offset": tlv.offset, "type": tlv.type, "name": tlv.name, "len": len(tlv.value),
            "data": tlv.value.hex(), "value": _tlv_value(tlv, endian)}


def info_json(info: ImageInfo) -> dict[str, Any]:
    """The JSON ``inspect --json`` prints (field names follow ``imgtool dumpinfo``)."""
    h = info.header
    endian = h.endian
    return {
        "header": {"magic": 0x96F3B83D, "endian": h.endian, "load_addr": h.load_addr,
                   "hdr_size": h.hdr_size, "protected_tlv_size": h.protect_tlv_size,
                   "img_size": h.img_size, "flags": h.flags,
                   "flag_names": [f.name for f in ImageFlag if h.flags & f],
                   "version": str(h.version)},
        "protected_tlvs": [_tlv_json(t, endian) for t in info.protected],
        "tlvs": [_tlv_json(t, endian) for t in info.unprotected],
        "tlv_end": info.tlv_end,
        "padding": info.padding,
        "trailer": None if info.trailer is None else {
            "max_align": info.trailer.max_align, "image_ok": info.trailer.image_ok,
            "copy_done": info.trailer.copy_done, "swap_info": info.trailer.swap_info},
    }


@app.command("inspect")
def inspect(
    image: Annotated[str, typer.Argument(metavar="IMAGE", help="Image file ('-' = stdin).")],
    as_json: JsonOpt = False,
) -> None:
    """Show an image's header, TLVs and trailer (this does NOT verify it)."""
    info = service.inspect_path(image)
    data = info_json(info)
    if as_json:
        emit_json(data)
        return
    h = data["header"]
    table(f"{image} (not verified)", ["field", "value"], [
        ("magic", "0x96f3b83d" + (" (big-endian)" if h["endian"] == "big" else "")),
        ("version", h["version"]), ("load_addr", f"{h['load_addr']:#x}"),
        ("hdr_size", f"{h['hdr_size']:#x}"), ("img_size", f"{h['img_size']:#x}"),
        ("protected_tlv_size", f"{h['protected_tlv_size']:#x}"),
        ("flags", f"{h['flags']:#x} {' '.join(h['flag_names'])}".strip()),
        ("signed image ends at", f"{info.tlv_end:#x}"),
        ("padding after it", "unknown" if info.padding is None else f"{info.padding:#x}"),
        ("trailer", "none" if info.trailer is None else
         f"boot magic, max_align {info.trailer.max_align}, image_ok "
         f"{info.trailer.image_ok if info.trailer.image_ok is not None else '?'}"),
    ])
    rows = [("protected", f"{t['offset']:#x}", f"{t['type']:#04x}", t["name"], t["len"],
             _short(t["value"])) for t in data["protected_tlvs"]]
    rows += [("unprotected", f"{t['offset']:#x}", f"{t['type']:#04x}", t["name"], t["len"],
              _short(t["value"])) for t in data["tlvs"]]
    table("TLVs", ["area", "offset", "type", "name", "len", "value"], rows)


def _short(text: str, limit: int = 64) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
