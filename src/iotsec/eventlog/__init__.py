"""The security event log as data: the hash chain over its entries, signed checkpoints,
verification, and the export formats (JSON lines, CEF, RFC 5424 syslog). Pure: no store,
no keys, no I/O."""
