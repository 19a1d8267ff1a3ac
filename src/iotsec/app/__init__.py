"""The service layer: one function per use case, shared by the CLI and the API."""
