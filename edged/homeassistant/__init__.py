"""Home Assistant integration by MQTT discovery (docs/web.md)."""
