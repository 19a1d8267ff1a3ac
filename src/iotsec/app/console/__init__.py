"""Read models of the web console: the fleet overview and the device search, from the same
store queries the CLI and the API use, shaped for pages."""

__all__: list[str] = []
