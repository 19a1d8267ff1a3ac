"""Firmware integrity: signed MCUboot images (sign, verify, inspect).

The library entry points for device-side agents, secure-boot simulations and the OTA
service are :func:`verify_image` (streams; raises one ``FirmwareError`` subclass per
failure), :func:`sign_image`/:func:`sign_stream` and :func:`inspect_image`.
"""

from iotsec.firmware.image import Dependency, ImageHeader, ImageVersion, Tlv, TlvType
from iotsec.firmware.image_keys import (
    FirmwareKeyType,
    ImageSigner,
    LocalImageSigner,
    TrustedKey,
    generate_signer,
    load_private_key,
)
from iotsec.firmware.layout import ImageInfo, inspect_image
from iotsec.firmware.sign import SignedImage, SignOptions, sign_image, sign_stream
from iotsec.firmware.verify import VerifiedImage, verify_image

__all__ = [
    "Dependency", "FirmwareKeyType", "ImageHeader", "ImageInfo", "ImageSigner", "ImageVersion",
    "LocalImageSigner", "SignOptions", "SignedImage", "Tlv", "TlvType", "TrustedKey",
    "VerifiedImage", "generate_signer", "inspect_image", "load_private_key", "sign_image",
    "sign_stream", "verify_image"
]
