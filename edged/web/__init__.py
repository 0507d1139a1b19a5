"""The device's face: the web page with the live view, the HTTP API and ``/metrics`` (docs/web.md)."""
