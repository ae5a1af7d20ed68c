"""Systems by name: what a config's `system:` key names, in 3D and video alike.

`system:` names the code that runs the config (`text3d`, `video`, `builtin-prior`,
`builtin-controlnet`); `name:` names the method (and its run folder, outputs/<name>/...). A method
is a YAML file: `system: text3d` plus its parts (representation, guidance.type, stages) needs no code.
Older configs name their method under `system:` (`dreamfusion`, `tuneavideo`, ...): those names are
kept as aliases of the system they run on. Entries are "module:attr" references, imported on use.
"""

from __future__ import annotations

from dataclasses import dataclass

from gen3d.registry import Registry


@dataclass(frozen=True)
class SystemEntry:
    schema: str  # the config dataclass
    run: str  # run(cfg, run_dir, resume, export_only, **options) -> dict
    validate: str | None = None  # validate(cfg, run_dir=..., **options): before anything is written


SYSTEMS: Registry[SystemEntry] = Registry("system")
SYSTEMS.register(
    "text3d",
    SystemEntry(
        "gen3d.systems.config:Text3DConfig", "gen3d.systems.runner:run_text3d", "gen3d.systems.validate:validate"
    ),
)
SYSTEMS.register("video", SystemEntry("video.config:VideoEditConfig", "video.run:run_video", "video.validate:validate"))
SYSTEMS.register("builtin-prior", SystemEntry("gen3d.prior.train:PriorTrainConfig", "gen3d.prior.train:main"))
SYSTEMS.register(
    "builtin-controlnet", SystemEntry("gen3d.prior.controlnet:ControlNetTrainConfig", "gen3d.prior.controlnet:main")
)

# method names that older configs give as `system:`, and the system each runs on
METHOD_ALIASES = {
    "dreamfusion": "text3d",
    "magic3d": "text3d",
    "prolificdreamer": "text3d",
    "tuneavideo": "video",
    "controlvideo": "video",
}


def system_of(name: str | None) -> str | None:
    """The system a `system:` value names (an alias resolved), or the value itself."""
    return METHOD_ALIASES.get(name, name) if name is not None else None
