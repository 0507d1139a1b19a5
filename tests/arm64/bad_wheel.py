"""Wheels for the installer checks (tests/arm64/installer.sh).

python3 bad_wheel.py missing-dependency OUT.whl    # edged 9.9.9 needing a package that does not exist: pip fails
python3 bad_wheel.py variant-of WHEEL OUT.whl      # WHEEL plus one more file: installs fine, another venv ID
"""

from __future__ import annotations

import base64
import hashlib
import sys
import zipfile


def digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def write(path: str, files: dict[str, bytes], dist_info: str) -> None:
    """A wheel of ``files`` with a RECORD that lists each one's hash, as pip checks it."""
    record = "".join(f"{name},sha256={digest(data)},{len(data)}\n" for name, data in files.items())
    record += f"{dist_info}/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
        z.writestr(f"{dist_info}/RECORD", record)


def missing_dependency(out: str) -> None:
    dist = "edged-9.9.9.dist-info"
    files = {
        "edged_bad_wheel/__init__.py": b"",
        f"{dist}/METADATA": b"Metadata-Version: 2.1\nName: edged\nVersion: 9.9.9\n"
        b"Requires-Dist: edged-arm64-check-no-such-dependency\n",
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: edged-arm64-check\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    write(out, files, dist)


def variant_of(wheel: str, out: str, tag: str = "") -> None:
    with zipfile.ZipFile(wheel) as z:
        record = next(n for n in z.namelist() if n.endswith(".dist-info/RECORD"))
        files = {n: z.read(n) for n in z.namelist() if n != record}
    files["edged/_installer_check_variant.txt"] = f"a variant of the wheel for the installer's checks {tag}\n".encode()
    write(out, files, record.rsplit("/", 1)[0])


if __name__ == "__main__":
    if sys.argv[1] == "missing-dependency":
        missing_dependency(sys.argv[2])
    elif sys.argv[1] == "variant-of":
        variant_of(*sys.argv[2:5])
    else:
        raise SystemExit(__doc__)
