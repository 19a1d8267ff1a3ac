from iotsec.app import certs, devices
from tests.helpers import make_csr


def test_issue_on_both_backends(rt):
    devices.add_device(rt, devices.NewDevice.parse("dev-1"))
    record = certs.issue_from_csr(rt, "dev-1", make_csr())
    assert certs.get_certificate(rt, record.serial).serial == record.serial
