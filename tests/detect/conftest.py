"""The broker fixtures (a home on the real clock, a short broker directory, a port, the
mosquitto binary) for the tests that follow a real Mosquitto's log."""

from tests.broker.conftest import broker_dir, brt, mosquitto, port

__all__ = ["broker_dir", "brt", "mosquitto", "port"]
