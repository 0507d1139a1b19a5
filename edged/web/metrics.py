"""``/metrics``: the daemon's counters in Prometheus's text format, with the official ``prometheus_client``.

Nothing is updated per frame for this: the frame loop keeps its own counters and two small bucket arrays
(:class:`edged.engine.timing.Buckets`, one bisect per frame), and :class:`DaemonCollector` reads them at scrape
time. Process metrics (resident memory, CPU, open files) come from the client library's process collector.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from ..engine.timing import Buckets

if TYPE_CHECKING:
    from ..daemon.daemon import Daemon
    from ..deploy.agent_view import AgentSource
    from ..engine.supervisor import Supervised

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _histogram(family: HistogramMetricFamily, labels: list[str], b: Buckets) -> None:
    counts = list(b.counts)  # a snapshot: the frame thread keeps counting
    cumulative: list[tuple[str, float]] = []
    total = 0
    for bound, n in zip([*b.bounds, float("inf")], counts, strict=True):
        total += n
        cumulative.append(("+Inf" if bound == float("inf") else repr(bound), total))
    family.add_metric(labels, cumulative, b.sum)


class DaemonCollector(Collector):
    """Reads a :class:`~edged.daemon.daemon.Daemon` (and the MQTT agent, when there is one) at each scrape."""

    def __init__(self, daemon: Daemon, agent: AgentSource | None = None) -> None:
        self.daemon = daemon
        self.agent: AgentSource = agent or (lambda: None)

    def collect(self) -> Iterator[Metric]:
        d = self.daemon
        interval = HistogramMetricFamily(
            "edged_frame_interval_seconds", "Time between two frames shown on a display", labels=["display"]
        )
        render = HistogramMetricFamily(
            "edged_render_seconds", "Time to render a display's frame (every layer's plugins)", labels=["display"]
        )
        frames = CounterMetricFamily("edged_frames", "Frames shown", labels=["display"])
        dropped = CounterMetricFamily("edged_frames_dropped", "Frames dropped (rendered too late)", labels=["display"])
        fps = GaugeMetricFamily("edged_display_fps", "A display's frame rate", labels=["display"])
        bright = GaugeMetricFamily("edged_display_brightness", "A display's brightness (0-255)", labels=["display"])
        power = GaugeMetricFamily("edged_display_power", "1 while a display's LEDs are on", labels=["display"])
        plabels = ["display", "layer", "plugin"]
        calls = CounterMetricFamily("edged_plugin_calls", "Plugin calls (frames or sensor ticks)", labels=plabels)
        failures = CounterMetricFamily("edged_plugin_failures", "Plugin calls that failed", labels=plabels)
        strikes = CounterMetricFamily("edged_plugin_strikes", "Strikes against a plugin", labels=plabels)
        quarantines = CounterMetricFamily("edged_plugin_quarantines", "Times a plugin was quarantined", labels=plabels)
        quarantined = GaugeMetricFamily("edged_plugin_quarantined", "1 while a plugin is in quarantine", labels=plabels)
        fuel = CounterMetricFamily("edged_plugin_fuel_used", "Wasm fuel a plugin used", labels=plabels)
        seconds = CounterMetricFamily("edged_plugin_call_seconds", "Time spent in a plugin's calls", labels=plabels)

        def slot(labels: list[str], s: Supervised) -> None:
            st = s.stats
            calls.add_metric(labels, st.calls)
            failures.add_metric(labels, st.failures)
            strikes.add_metric(labels, st.strikes)
            quarantines.add_metric(labels, st.quarantines)
            quarantined.add_metric(labels, 1.0 if s.quarantined else 0.0)
            fuel.add_metric(labels, st.fuel_used_total)
            seconds.add_metric(labels, st.ms_total / 1e3)

        # no daemon lock: a scrape must never wait behind a reload that compiles plugins
        for name, rd in list(d.displays.items()):
            runner = rd.runner
            st = runner.stats
            _histogram(interval, [name], st.intervals.buckets)
            _histogram(render, [name], st.render)
            frames.add_metric([name], st.frames)
            dropped.add_metric([name], st.dropped)
            fps.add_metric([name], runner.fps)
            out = getattr(rd.sink, "output", rd.sink)
            pipeline = getattr(out, "pipeline", None)
            if pipeline is not None:
                bright.add_metric([name], pipeline.brightness)
                power.add_metric([name], 1.0 if pipeline.power else 0.0)
        for row in d.plugin_rows():
            slot([row.display or "", row.layer if row.layer is not None else "sensor", row.plugin], row.slot)
        yield from (interval, render, frames, dropped, fps, bright, power)
        yield from (calls, failures, strikes, quarantines, quarantined, fuel, seconds)
        yield GaugeMetricFamily("edged_problems", "Problems the daemon keeps (the last 100)", value=len(d.problems))
        yield CounterMetricFamily("edged_reloads", "Config reloads", value=d.reloads)
        agent = self.agent()
        if agent is not None:
            mqtt = agent.mqtt_state  # the agent's own account of its connection
            yield GaugeMetricFamily(
                "edged_mqtt_connected", "1 while connected to the MQTT broker", value=1.0 if mqtt.connected else 0.0
            )
            yield CounterMetricFamily("edged_mqtt_connects", "Connections made to the broker", value=mqtt.connects)
            outcomes = CounterMetricFamily(
                "edged_install_outcomes", "Plugin installs and refused messages by outcome", labels=["state", "reason"]
            )
            for (st_, reason), n in sorted(dict(agent.outcomes).items()):
                outcomes.add_metric([st_, reason], n)
            yield outcomes


def make_registry(daemon: Daemon, agent: AgentSource | None = None) -> CollectorRegistry:
    """A registry of its own (not the library's global one) with the daemon's and the process's metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DaemonCollector(daemon, agent))
    ProcessCollector(registry=registry)
    return registry


def render_metrics(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
