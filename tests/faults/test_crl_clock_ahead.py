"""A CRL signed while the clock ran ahead is rebuilt once the clock is right.

Such a CRL's thisUpdate lies in the future, and relying parties refuse it ("CRL is not yet
valid"), which fails every certificate check until the next revocation. ``current_crl``
sees it and signs a new one: thisUpdate now, and a higher CRL number (RFC 5280 5.2.3:
numbers only increase).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from iotsec.app.identity.devices import NewDevice, add_device
from iotsec.app.pki.bundles import chain_pem
from iotsec.app.pki.crl import current_crl
from iotsec.app.pki.issuance import issue_from_csr
from iotsec.app.runtime import Runtime
from iotsec.pki.x509 import to_pem
from tests.conftest import FakeClock
from tests.helpers import make_csr
from tests.pki.support import run_openssl


def _verify(openssl: str, tmp_path: Path, rt: Runtime, cert_pem: str, crl_der: bytes,
            name: str) -> tuple[int, str]:
    chain = tmp_path / "chain.pem"
    chain.write_text(chain_pem(rt))
    crl = tmp_path / f"{name}.crl.pem"
    crl.write_bytes(to_pem(crl_der, "X509 CRL"))
    cert = tmp_path / "dev-1.pem"
    cert.write_text(cert_pem)
    done = run_openssl(openssl, "verify", "-crl_check", "-CAfile", chain, "-CRLfile", crl,
                       cert)
    return done.returncode, done.stdout + done.stderr


def test_a_crl_from_the_future_is_rebuilt(rt: Runtime, clock: FakeClock, openssl: str,
                                          tmp_path: Path) -> None:
    add_device(rt, NewDevice.parse("dev-1"))
    cert = issue_from_csr(rt, "dev-1", make_csr())
    right = clock.now
    clock.advance(timedelta(days=2))  # the clock runs ahead while the CRL is signed
    ahead = current_crl(rt, force=True)
    assert ahead.this_update > right
    code, said = _verify(openssl, tmp_path, rt, cert.pem, ahead.der, "ahead")
    assert code != 0 and "not yet valid" in said.lower(), said  # the fault is real

    clock.now = right  # the clock is right again (openssl checks against the real one)
    fixed = current_crl(rt)
    assert fixed.this_update <= clock.now
    assert fixed.number > ahead.number
    code, said = _verify(openssl, tmp_path, rt, cert.pem, fixed.der, "fixed")
    assert code == 0, said
    # It is then cached and served like any other.
    assert current_crl(rt).number == fixed.number
