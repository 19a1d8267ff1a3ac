"""The CoAP gateway: CoAP over DTLS for constrained devices, decided by the access engine
and bridged to the MQTT broker."""
