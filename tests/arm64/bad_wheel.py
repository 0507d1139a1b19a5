"""Write a wheel that pip cannot install: edged 9.9.9 needing a package that does not exist. The arm64 check gives it
to deploy/pi/install to show that a failed upgrade leaves the installed edged as it was."""

from __future__ import annotations

import base64
import hashlib
import sys
import zipfile

DIST = "edged-9.9.9.dist-info"
FILES = {
    "edged_bad_wheel/__init__.py": b"",
    f"{DIST}/METADATA": b"Metadata-Version: 2.1\nName: edged\nVersion: 9.9.9\n"
    b"Requires-Dist: edged-arm64-check-no-such-dependency\n",
    f"{DIST}/WHEEL": b"Wheel-Version: 1.0\nGenerator: edged-arm64-check\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}


def digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def main(path: str) -> None:
    record = "".join(f"{name},sha256={digest(data)},{len(data)}\n" for name, data in FILES.items())
    record += f"{DIST}/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as z:
        for name, data in FILES.items():
            z.writestr(name, data)
        z.writestr(f"{DIST}/RECORD", record)


if __name__ == "__main__":
    main(sys.argv[1])
