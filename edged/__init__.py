"""edged: an IoT edge daemon that runs Extism-compatible WebAssembly plugins on LEDs, GPIO and sensors."""

__version__ = "0.1.0"
