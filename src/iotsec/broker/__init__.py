"""What a real MQTT broker enforces, rendered from iotsec's policy and PKI (pure).

- :mod:`iotsec.broker.acl` compiles the access-control policy into Mosquitto's ``acl_file``,
  from what each role set grants at the broker (:mod:`iotsec.broker.acl_grants`);
- :mod:`iotsec.broker.mosquitto` renders ``mosquitto.conf`` and the password line, and
  checks a rendered ACL the way Mosquitto's loader reads it;
- :mod:`iotsec.broker.logs` parses the broker's log into security events;
- :mod:`iotsec.broker.emqx`, :mod:`~iotsec.broker.emqx_conf`: the same for EMQX 5;
- :mod:`iotsec.broker.adapter`: the contract both brokers' adapters honour.

Everything here takes objects and returns text or objects. Talking to a running Mosquitto
(reload, probes, session kicks) is the I/O adapter :mod:`iotsec.brokerctl`; the device's MQTT
client is :mod:`iotsec.sdk.mqtt` (exposed as :mod:`iotsec.device`); the service layer
(:mod:`iotsec.app.broker`) reads the store, writes files and drives the broker.
"""
