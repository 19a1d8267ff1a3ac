"""A clock running behind: nothing is signed before the signing CA's own notBefore.

With the clock two years back, iotsec used to issue a certificate that expired before its
CA existed. Every signing path in the core checks the time against the CA certificate, so
certificates, server certificates, CRLs and issuing CAs are all refused, with an error
that says why.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from iotsec.errors import ClockBehindError
from iotsec.pki import x509 as enc
from iotsec.pki.ca import create_issuing
from iotsec.pki.crl import build_crl
from iotsec.pki.issue import issue_server
from iotsec.pki.keys import KeyType, LocalSigner
from tests.cli.support import use_home
from tests.faults.support import assert_one_line, command_env, run_cli
from tests.helpers import make_csr
from tests.pki.support import Chain, build_chain, issue_leaf
from tests.services import require_tool

TWO_YEARS = timedelta(days=730)


@pytest.fixture(scope="module")
def chain() -> Chain:
    return build_chain(KeyType.ECDSA_P256, datetime.now(UTC))


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _sign_attempts(chain: Chain) -> dict[str, Callable[[datetime], object]]:
    spki = enc.spki_der(KeyType.ECDSA_P256.generate().public_key())
    return {
        "device certificate": lambda now: issue_leaf(chain.issuing, "dev-1", now),
        "server certificate": lambda now: issue_server(
            chain.issuing, spki=spki, common_name="iotsec", dns_names=("iotsec.test",),
            ips=(), now=now),
        "CRL": lambda now: build_crl(chain.issuing, [], number=2, this_update=now,
                                     next_update=now + timedelta(days=7)),
        "issuing CA": lambda now: create_issuing(
            chain.root, LocalSigner(KeyType.ECDSA_P256.generate()), now),
    }


@pytest.mark.parametrize("what", ["device certificate", "server certificate", "CRL",
                                  "issuing CA"])
def test_signing_before_the_ca_exists_is_refused(chain: Chain, what: str) -> None:
    behind = datetime.now(UTC).replace(microsecond=0) - TWO_YEARS
    signer = chain.root if what == "issuing CA" else chain.issuing
    with pytest.raises(ClockBehindError) as caught:
        _sign_attempts(chain)[what](behind)
    message = str(caught.value)
    assert "clock is behind" in message
    assert _iso(behind) in message  # what time it thinks it is
    assert _iso(signer.not_before) in message  # and the CA's notBefore
    assert caught.value.hint


@pytest.mark.parametrize("what", ["device certificate", "server certificate", "CRL",
                                  "issuing CA"])
def test_signing_from_the_ca_notbefore_on_is_accepted(chain: Chain, what: str) -> None:
    signer = chain.root if what == "issuing CA" else chain.issuing
    _sign_attempts(chain)[what](signer.not_before)


def test_a_certificate_never_starts_before_its_ca(chain: Chain) -> None:
    # Issued in the first minute of the CA's life: the usual back-dating stops at the CA.
    issued = issue_leaf(chain.issuing, "dev-1", chain.issuing.not_before + timedelta(seconds=5))
    assert issued.not_before == chain.issuing.not_before


def test_the_real_cli_two_years_back_signs_nothing(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    faketime = require_tool("faketime", "Debian package 'faketime'")
    home = use_home(monkeypatch, tmp_path / "home")
    env = command_env(home)
    assert run_cli("device", "add", "dev-1", env=env).returncode == 0
    csr = tmp_path / "dev-1.csr"
    csr.write_bytes(make_csr())
    behind = [faketime, "-f", "-2y"]

    issued = run_cli("cert", "issue", "dev-1", "--csr", str(csr), env=env, prefix=behind)
    line = assert_one_line(issued)
    assert "clock is behind" in line and "notBefore" in line, line
    said = datetime.now(UTC) - TWO_YEARS
    assert str(said.year) in line  # the time the clock gave
    assert "[]" in run_cli("cert", "list", "--json", env=env).stdout  # nothing was issued

    crl = run_cli("crl", "--pem", "--force", env=env, prefix=behind)
    assert "clock is behind" in assert_one_line(crl)

    # With the clock right again, both work.
    assert run_cli("cert", "issue", "dev-1", "--csr", str(csr), env=env).returncode == 0
    assert run_cli("crl", "--pem", "--force", env=env).returncode == 0
