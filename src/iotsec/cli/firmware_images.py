"""``iotsec firmware sign``, ``verify`` and ``inspect``: MCUboot images.

Option names follow ``imgtool sign`` wherever they mean the same thing, so a build script
can switch tools by changing the command name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from iotsec.app.ota import firmware as service
from iotsec.cli.context import runtime
from iotsec.cli.firmware_keys import key_json, signing_passphrase
from iotsec.cli.options import JsonOpt
from iotsec.cli.output import console, emit_json, table
from iotsec.errors import InvalidInputError, IotsecError
from iotsec.firmware.image import (
    Dependency,
    ImageFlag,
    ImageVersion,
    Tlv,
    TlvType,
    unpack_u32,
)
from iotsec.firmware.layout import ImageInfo
from iotsec.firmware.sign import SignOptions, auto_security_counter

__all__ = ["info_json", "inspect", "sign", "verify"]


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
        signer = service.load_signer(key, lambda: signing_passphrase(new=False))
        result = service.sign_file(infile, outfile, signer, options)
    data = {"image": str(outfile), "version": str(result.header.version),
            "security_counter": counter, "header_size": result.header.hdr_size,
            "image_size": result.image_size, "total_size": result.total_size,
            "sha256": result.digest.hex(), "key": key_json(result.key)}
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
                   "key": key_json(result.key), "signed_by": list(result.signed_by)})
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
