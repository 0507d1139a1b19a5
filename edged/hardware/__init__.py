"""edged's hardware layer: LED displays, GPIO and sensors, real and emulated."""
