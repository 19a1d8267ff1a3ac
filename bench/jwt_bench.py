"""Device JWT verification: ours against joserfc's raw verify, in the same run.

Goal: our full verification is within 1.5x of the JOSE library's raw verify rate.

- Reference: ``joserfc.jwt.decode(token, key, algorithms=[alg])`` -- signature check and
  JSON decoding only, no claim validation, no key selection, no replay cache.
- Ours: ``iotsec.identity.device_tokens.verify_device_token`` -- size and shape limits, unverified
  header and subject, key selection by kid through a lookup over several devices' keys,
  verification bound to the key's algorithm, every claim check, and the replay check
  against an in-memory cache (the store is left out: the database round trip is measured by
  the service benchmarks, not here).

Both verify the same N distinct tokens (distinct jti, so none is a replay). Rounds are
interleaved (reference, ours, reference, ...) and the median of each is reported.

    python bench/jwt_bench.py [--tokens 2000] [--rounds 7] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import secrets
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cryptography
import joserfc
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from joserfc import jwt
from joserfc.jwk import ECKey, OKPKey

from iotsec.identity.device_tokens import (
    MemoryReplayCache,
    VerificationKey,
    load_public_key,
    public_verification_key,
    verify_device_token,
)

GOAL = 1.5
AUDIENCE = "iotsec"
DEVICES = 100  # keys in the lookup, so key selection is not a one-element list


def _spki(key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def make_case(alg: str, count: int, now: int) -> tuple[list[str], Any,
                                                      Callable[[str, str],
                                                               Sequence[VerificationKey]]]:
    """``count`` tokens of device ``dev-0``, the raw joserfc key, and a key lookup."""
    keys: dict[str, VerificationKey] = {}
    signer: Any = None
    raw_key: Any = None
    for i in range(DEVICES):
        private = (ec.generate_private_key(ec.SECP256R1()) if alg == "ES256"
                   else ed25519.Ed25519PrivateKey.generate())
        pub = load_public_key(_spki(private))
        verification = public_verification_key(pub.kid, pub.spki_der)
        assert verification is not None
        keys[f"dev-{i}"] = verification
        if i == 0:
            signer = (ECKey.import_key(private) if alg == "ES256"
                      else OKPKey.import_key(private))
            raw_key = verification.key
    kid = keys["dev-0"].kid
    tokens = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # joserfc flags the name "EdDSA" as deprecated
        for _ in range(count):
            claims = {"iss": "dev-0", "sub": "dev-0", "aud": AUDIENCE, "iat": now,
                      "exp": now + 600, "jti": secrets.token_urlsafe(12)}
            tokens.append(jwt.encode({"alg": alg, "kid": kid}, claims, signer,
                                     algorithms=[alg]))

    def lookup(device_id: str, wanted: str) -> Sequence[VerificationKey]:
        key = keys.get(device_id)
        return [key] if key is not None and key.kid == wanted else []

    return tokens, raw_key, lookup


def run_reference(tokens: list[str], key: Any, alg: str) -> float:
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for token in tokens:
            jwt.decode(token, key, algorithms=[alg])
    return time.perf_counter() - start


def run_ours(tokens: list[str], lookup: Callable[[str, str], Sequence[VerificationKey]],
             now: int) -> float:
    cache = MemoryReplayCache()
    start = time.perf_counter()
    for token in tokens:
        verify_device_token(token, device_keys=lookup, audience=AUDIENCE, now=now,
                            max_lifetime=3600, seen=cache)
    return time.perf_counter() - start


def bench(alg: str, count: int, rounds: int) -> dict[str, Any]:
    now = int(time.time())
    tokens, raw_key, lookup = make_case(alg, count, now)
    # Warm up both paths (imports, caches), and prove ours accepts every token.
    run_reference(tokens[:50], raw_key, alg)
    run_ours(tokens, lookup, now)
    reference, ours = [], []
    for _ in range(rounds):
        reference.append(run_reference(tokens, raw_key, alg))
        ours.append(run_ours(tokens, lookup, now))
    ref_rate = count / statistics.median(reference)
    our_rate = count / statistics.median(ours)
    ratio = ref_rate / our_rate
    return {"alg": alg, "tokens": count, "rounds": rounds,
            "joserfc_per_s": round(ref_rate), "iotsec_per_s": round(our_rate),
            "ratio": round(ratio, 3), "goal": GOAL, "met": ratio <= GOAL}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args(argv)

    machine = {"python": platform.python_version(), "machine": platform.machine(),
               "joserfc": joserfc.__version__, "cryptography": cryptography.__version__}
    print("# " + ", ".join(f"{k} {v}" for k, v in machine.items()), flush=True)
    results = [bench(alg, args.tokens, args.rounds) for alg in ("ES256", "EdDSA")]
    print(f"\n{'alg':<6} {'joserfc raw/s':>14} {'iotsec full/s':>14} {'ratio':>7}  goal")
    for r in results:
        verdict = "met" if r["met"] else "MISSED"
        print(f"{r['alg']:<6} {r['joserfc_per_s']:>14,} {r['iotsec_per_s']:>14,} "
              f"{r['ratio']:>7.3f}  <= {GOAL} {verdict}")
    if args.json is not None:
        args.json.write_text(json.dumps({"machine": machine, "results": results}, indent=2)
                             + "\n")
    return 0 if all(r["met"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
