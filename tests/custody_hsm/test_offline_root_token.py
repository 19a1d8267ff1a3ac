"""An offline root kept in a PKCS#11 token of its own (SoftHSM2), on SQLite and
PostgreSQL: ``init --offline-root --root-token`` makes the root key in that token, the
home's key store never holds it, and the ceremony signs with the token (``ca
sign-intermediate --root-token``, ``ca sign-crl --root-token``)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from cryptography import x509

from iotsec.app.pki import authorities as ca
from iotsec.app.pki.ceremony import (
    import_issuing,
    import_root_crl,
    request_issuing,
    root_token_signer,
    sign_intermediate_offline,
)
from iotsec.app.runtime import open_runtime
from iotsec.app.setup import OfflineRoot, init_home
from iotsec.cli.main import main
from iotsec.config import Settings
from iotsec.errors import OfflineKeyError
from iotsec.pki.x509 import to_pem
from tests.conftest import FakeClock
from tests.custody_hsm.conftest import Hsm


def test_offline_root_in_a_token_of_its_own(hsm: Hsm, settings: Settings, clock: FakeClock,
                                            tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    made = init_home(settings, now=clock(), offline_root=OfflineRoot(token=hsm.config()),
                     store_passphrase=True)
    assert made.root_key_file is not None and hsm.label in made.root_key_file
    rt = open_runtime(settings, clock=clock)
    try:
        root = next(a for a in ca.list_authorities(rt) if a.role == "root")
        assert root.key_offline and not rt.keys.exists(root.key_label)
        with pytest.raises(OfflineKeyError):
            ca.rotate(rt)
        request = request_issuing(rt)
        root_pem = to_pem(root.der, "CERTIFICATE")
        with root_token_signer(hsm.config(), root.key_label) as signer:
            der = sign_intermediate_offline(root_key=signer, passphrase=b"",
                                            root_cert=root_pem, csr=request.csr_der,
                                            now=clock())
        new, old = import_issuing(rt, der)
        assert (new.state, old.state) == ("active", "retiring")
        x509.load_der_x509_certificate(der).verify_directly_issued_by(root.certificate)

        # The next root CRL, signed with the token through the command line.
        (tmp_path / "root.pem").write_bytes(root_pem)
        monkeypatch.setenv("IOTSEC_ROOT_TOKEN_PIN", hsm.pin)
        monkeypatch.setenv("IOTSEC_HOME", str(tmp_path / "no-home"))
        time.sleep(1.1)  # the CRL number is the signing second (the real clock, offline)
        code = main(["ca", "sign-crl", "--root-token", hsm.label, "--root-key-label",
                     root.key_label, "--pkcs11-module", str(hsm.module), "--root-cert",
                     str(tmp_path / "root.pem"), "-o", str(tmp_path / "root.crl")])
        assert code == 0, capsysbinary.readouterr()
        assert not (tmp_path / "no-home").exists()
        published = import_root_crl(rt, (tmp_path / "root.crl").read_bytes())
        assert ca.authority_crl(rt, root.id).number == published.number
        # Without the PIN nothing is signed.
        monkeypatch.delenv("IOTSEC_ROOT_TOKEN_PIN")
        assert main(["ca", "sign-crl", "--root-token", hsm.label, "--root-key-label",
                     root.key_label, "--pkcs11-module", str(hsm.module), "--root-cert",
                     str(tmp_path / "root.pem")]) == 1
    finally:
        rt.close()
