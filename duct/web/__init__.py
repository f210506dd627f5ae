"""duct's web server: one twisted.web Site for /stats, /metrics, /health, /events
and plugins' routes.

- `duct.web.site`: the root resource, `buildSite`, the routes plugins add;
- `duct.web.server`: `WebServer`, the service that listens (``web: {listen}``);
- `duct.web.stats`, `metrics`, `health`: the built-in resources;
- `duct.web.events.resource`, `duct.web.events.stream`: the live event stream, /events;
- `duct.web.auth`: the bearer token (``web: {token}``);
- `duct.web.responses`: JSON answers shared by the resources.

A source or an output adds routes by defining ``webRoutes(self)``, which
returns a mapping of path segment to `twisted.web.resource.IResource`:
``{"api": resource}`` answers ``/api`` and below, and the key ``""``
answers ``/``.
"""
