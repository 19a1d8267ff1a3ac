"""CoAP (RFC 7252) as data: the message codec with bounded parsing, and the mapping of
publish-subscribe requests to the actions and topics the access engine decides (pure)."""
