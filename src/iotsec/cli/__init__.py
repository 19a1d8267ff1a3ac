"""The ``iotsec`` command line: thin Typer commands over the service layer."""
