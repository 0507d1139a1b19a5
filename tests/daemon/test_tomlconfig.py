"""TOML config errors name the key and the line."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, Field

from edged.errors import ConfigError
from edged.tomlconfig import key_lines, load_toml


class Item(BaseModel):
    model_config = ConfigDict(extra="forbid")
    plugin: str
    duration_s: float = Field(default=1, gt=0)


class Layer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    item: list[Item] = []


class Display(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    fps: float = Field(default=30, gt=0)
    layer: list[Layer] = []


class Cfg(BaseModel):
    model_config = ConfigDict(extra="forbid")
    device: dict[str, str]
    display: list[Display] = []


TEXT = """\
[device]
id = "x"

[[display]]
name = "a"
fps = 60

[[display]]
name = "b"
fps = -1

[[display.layer]]
name = "bg"

[[display.layer.item]]
plugin = "rainbow"
duration_s = 0

[[display.layer.item]]
plugin = "fire"
durration = 3
"""


def test_key_lines_follow_nested_arrays_of_tables() -> None:
    lines = key_lines(TEXT)
    assert lines[("display", 1, "fps")] == 10
    assert lines[("display", 1, "layer", 0, "item", 0, "duration_s")] == 17
    assert lines[("display", 1, "layer", 0, "item", 1, "durration")] == 21


def test_every_problem_is_reported_with_its_line(tmp_path: Path) -> None:
    f = tmp_path / "edged.toml"
    f.write_text(TEXT)
    with pytest.raises(ConfigError) as ei:
        load_toml(Cfg, f)
    assert str(ei.value).splitlines() == [
        f"{f}:10: display.1.fps: Input should be greater than 0",
        f"{f}:17: display.1.layer.0.item.0.duration_s: Input should be greater than 0",
        f"{f}:21: display.1.layer.0.item.1.durration: unknown key",
    ]


def test_syntax_errors_missing_files_and_binary_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"invalid TOML: .*line 1"):
        load_toml(Cfg, text="[device\nid = 1")
    with pytest.raises(ConfigError, match="cannot read config .*missing.toml"):
        load_toml(Cfg, tmp_path / "missing.toml")
    b = tmp_path / "binary.toml"
    b.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_toml(Cfg, b)
    with pytest.raises(ConfigError, match=r"<config>: device: Field required"):
        load_toml(Cfg, text="")
