"""``/metrics`` (issue 17, point 5), parsed with prometheus_client's own parser: frame intervals as a histogram,
dropped frames, render time, per-plugin calls, strikes, quarantines and fuel, and the process's memory. (The MQTT
connection and install outcomes are checked with a real agent in tests/homeassistant/test_discovery.py.)"""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from .conftest import Face
from .test_api import eventually


def scrape(face: Face) -> dict[str, object]:
    text = httpx.get(f"{face.url}/metrics", timeout=10).text
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_metrics_parse_and_count_frames_plugins_and_memory(face: Face) -> None:
    eventually(lambda: face.daemon.stats()["displays"]["main"]["frames"] > 20)
    families = scrape(face)
    interval = families["edged_frame_interval_seconds"]
    assert interval.type == "histogram"
    buckets = [s for s in interval.samples if s.name.endswith("_bucket") and s.labels["display"] == "main"]
    counts = [s.value for s in buckets]
    assert counts == sorted(counts) and buckets[-1].labels["le"] == "+Inf"  # cumulative, ending at +Inf
    count = next(s.value for s in interval.samples if s.name.endswith("_count"))
    total = next(s.value for s in interval.samples if s.name.endswith("_sum"))
    assert count == buckets[-1].value >= 20
    assert 0.5 / 30 < total / count < 2 / 30  # about one period at 30 fps
    assert families["edged_render_seconds"].type == "histogram"
    assert families["edged_frames_dropped"].type == "counter"
    frames = {s.labels["display"]: s.value for s in families["edged_frames"].samples}
    assert frames["main"] >= count
    calls = {s.labels["plugin"]: s.value for s in families["edged_plugin_calls"].samples}
    assert calls["red"] > 0 and calls["distance_sensor"] > 0
    for name in ("edged_plugin_strikes", "edged_plugin_quarantines", "edged_plugin_fuel_used"):
        assert families[name].type == "counter"
        assert any(s.labels["plugin"] == "red" for s in families[name].samples)
    fuel = {s.labels["plugin"]: s.value for s in families["edged_plugin_fuel_used"].samples}
    assert fuel["distance_sensor"] > 0  # metered by its manifest's fuel budget
    rss = families["process_resident_memory_bytes"].samples[0].value
    assert rss > 10 * 1024 * 1024
    bright = {s.labels["display"]: s.value for s in families["edged_display_brightness"].samples}
    assert bright["main"] == face.daemon.display_state("main")["brightness"]
    # later scrapes count on
    eventually(
        lambda: (
            next(s.value for s in scrape(face)["edged_frame_interval_seconds"].samples if s.name.endswith("_count"))
            > count
        )
    )


def test_strikes_and_quarantines_show_up(face: Face) -> None:
    from tests.daemon.test_daemon import write_plugin
    from tests.engine.anims import trap_every

    write_plugin(face.root, "trapper", trap_every(1))
    text = face.daemon.config_path.read_text().replace('plugin = "red"', 'plugin = "trapper"')
    face.daemon.config_path.write_text(text)
    face.daemon.reload()

    def quarantined() -> bool:
        fams = scrape(face)
        q = {s.labels["plugin"]: s.value for s in fams["edged_plugin_quarantines"].samples}
        s_ = {s.labels["plugin"]: s.value for s in fams["edged_plugin_strikes"].samples}
        return q.get("trapper", 0) >= 1 and s_.get("trapper", 0) >= 3

    eventually(quarantined)
