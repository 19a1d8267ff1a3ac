"""Driving a real MQTT broker: iotsec renders what the broker enforces and proves it does.

- :mod:`iotsec.broker.acl` compiles the access-control policy into Mosquitto's ``acl_file``;
- :mod:`iotsec.broker.mosquitto` renders ``mosquitto.conf`` and the password line, and
  checks a rendered ACL the way Mosquitto's loader reads it;
- :mod:`iotsec.broker.logs` parses the broker's log into security events;
- :mod:`iotsec.broker.control` talks to a running broker (reload, probes, session kicks);
- :mod:`iotsec.broker.client` is the device SDK, exposed as :mod:`iotsec.device`.

The pure modules (acl, mosquitto, logs) take objects and return text or objects; the
service layer (:mod:`iotsec.app.broker.mosquitto`) reads the store, writes files and
drives the broker.
"""
