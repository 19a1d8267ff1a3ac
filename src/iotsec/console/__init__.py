"""The web console at ``/ui/``: server-rendered pages (Jinja2, htmx for partial updates)
over the same services as the CLI and the API, behind sessions opened with an API token."""

__all__: list[str] = []
