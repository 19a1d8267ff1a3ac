"""The contract suites run every backend: the SoftHSM2 token fixtures of ``tests/custody_hsm``
serve them here too (skipped with the reason off CI when SoftHSM2 is missing, failed
under ``CI=true``)."""

from tests.custody_hsm.conftest import hsm as hsm
from tests.custody_hsm.conftest import softhsm_module as softhsm_module
