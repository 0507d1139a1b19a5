"""Build hook: the wheel carries the hardware profiles, their scenarios and the demo plugins as package data.

They stay in the source tree where a reader looks for them (hardware/, plugins/gallery/); at build time they are
copied to ``edged/_bundled/`` inside the wheel, where :mod:`edged.bundled` finds them. Everything else is in
pyproject.toml.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent

#: (source folder, destination under edged/_bundled, glob patterns copied)
BUNDLED = [
    ("hardware", "hardware", ["*.toml"]),
    ("hardware/scenarios", "scenarios", ["*.toml"]),
    ("plugins/gallery", "plugins", ["*/manifest.json", "*/*.wasm"]),
]


class BuildWithBundled(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads the checkout's folders directly
        for src, dst, patterns in BUNDLED:
            for pattern in patterns:
                for path in sorted((ROOT / src).glob(pattern)):
                    target = Path(self.build_lib) / "edged" / "_bundled" / dst / path.relative_to(ROOT / src)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(path, target)


setup(cmdclass={"build_py": BuildWithBundled})
