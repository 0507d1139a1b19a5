"""The deployed-plugin overlay: the config as read from the file, plus the plugins installed over MQTT and the
marketplace's playlist, gives the config the daemon runs. A pure function of its inputs (no daemon, no threads).

Deployed plugins that no playlist or sensor names are placed as ``[deploy]`` says (see
:class:`~edged.daemon.config.DeploySection`): drawing plugins on the deploy display's layer (replacing its playlist,
appended to it, or on a layer of their own on top), sensor plugins as that display's sensors. The marketplace's
playlist for this device plays in the same place.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ..engine.playlist import PlaylistItem
from ..host.plugin import Kind
from .config import OVERLAY_LAYER, DaemonConfig, LayerConfig, PlaylistConfig, PluginConfig, SensorSection


@dataclass(frozen=True)
class DeployedPlugin:
    """A plugin installed over MQTT: its catalog entry, and its kind as the host detected it when it loaded."""

    entry: PluginConfig
    kind: Kind


@dataclass(frozen=True)
class ReplacedPlaylist:
    """Deployed plugins took the place of a layer's configured playlist (``[deploy] mode = "replace"``)."""

    display: str
    layer: str
    playlist: str
    plugins: list[str]


@dataclass(frozen=True)
class Overlay:
    """The effective config, and what placing the deployed plugins had to say about it."""

    config: DaemonConfig
    #: deployed plugins that draw frames, on a device without a display (they do not run)
    undrawable: list[str] = field(default_factory=list)
    replaced: ReplacedPlaylist | None = None


def deploy_display(config: DaemonConfig) -> int | None:
    """The index of the display deployed plugins play on (``[deploy] display``, else the first), or None."""
    if not config.displays:
        return None
    want = config.deploy.display
    return next((i for i, d in enumerate(config.displays) if d.name == want), 0) if want else 0


def overlay(
    config: DaemonConfig, deployed: Mapping[str, DeployedPlugin], remote_playlist: Sequence[str] | None = None
) -> Overlay:
    """``config`` with the ``deployed`` plugins that no playlist or sensor names placed as ``[deploy]`` says, and
    the marketplace's ``remote_playlist`` (plugin names) playing there; ``config`` itself when nothing changes."""
    place = config.deploy
    playlists = dict(config.playlists)
    sensors = list(config.sensors)
    displays = list(config.displays)
    t = deploy_display(config)
    remote: list[PlaylistItem] | None = None
    if remote_playlist and t is not None:
        remote = [PlaylistItem(plugin=n, transition="crossfade") for n in remote_playlist]
    named = {i.plugin for pl in playlists.values() for i in pl.items} | {s.plugin for s in config.sensors}
    named |= {i.plugin for i in remote or []}
    undrawable: list[str] = []
    drawing: list[str] = []
    for name, record in deployed.items():
        if name in named:
            continue
        if record.kind == "sensor":
            sensors.append(SensorSection(plugin=name, display=displays[t].name if t is not None else None))
        elif t is None:
            undrawable.append(name)
        elif remote is None:  # the marketplace said what plays: installed extras wait until it names them
            drawing.append(name)
    if remote is None and not drawing:
        same = sensors == config.sensors
        return Overlay(config if same else config.model_copy(update={"sensors": sensors}), undrawable)
    assert t is not None
    section = displays[t]
    pl_name = "remote" if remote is not None else "deployed"
    if remote is not None:
        items = remote
    else:
        each = None if len(drawing) == 1 and place.mode != "append" else place.duration_s
        items = [PlaylistItem(plugin=n, duration_s=each) for n in drawing]
    replaced: ReplacedPlaylist | None = None
    if place.mode == "overlay":
        playlists[pl_name] = PlaylistConfig(items=items)
        layer = LayerConfig(
            name=OVERLAY_LAYER,
            playlist=pl_name,
            x=place.x,
            y=place.y,
            width=place.width,
            height=place.height,
            opacity=place.opacity,
        )
        displays[t] = section.model_copy(update={"layers": [*section.layers, layer]})
    else:
        j = next((k for k, layer in enumerate(section.layers) if layer.name == place.layer), 0)
        base = section.layers[j]
        if place.mode == "append" and remote is None:
            own = [
                i if i.duration_s else i.model_copy(update={"duration_s": place.duration_s})
                for i in config.playlists[base.playlist].items
            ]
            items = [*own, *items]
        else:
            replaced = ReplacedPlaylist(section.name, base.name, base.playlist, [i.plugin for i in items])
        playlists[pl_name] = PlaylistConfig(items=items)
        layers = list(section.layers)
        layers[j] = base.model_copy(update={"playlist": pl_name})
        displays[t] = section.model_copy(update={"layers": layers})
    effective = config.model_copy(update={"playlists": playlists, "sensors": sensors, "displays": displays})
    return Overlay(effective, undrawable, replaced)
