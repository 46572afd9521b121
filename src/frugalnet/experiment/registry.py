"""Study configs and the registry: a study is a config dataclass plus a function `fn(ctx) -> results`."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable

_STUDIES: dict[str, "StudySpec"] = {}


@dataclass
class StudyConfig:
    """Fields every study has. Subclass it, add fields with defaults, and extend `validate()`: it runs on
    construction, so an invalid config cannot exist (and again before a run, after any field was changed)."""

    name: str = field(default="run", metadata={"help": "run name: the folder is runs/<study>/<time>-<name>/"})
    seed: int = field(default=0, metadata={"help": "first seed; seeds are seed, seed+1, ..."})
    seeds: int = field(default=1, metadata={"help": "how many seeds to run (results give mean and sd)"})
    runs_dir: str = field(default="runs", metadata={"help": "where run folders go"})
    quiet: bool = field(default=False, metadata={"help": "no progress bars"})
    device: str = field(default="cpu", metadata={"help": "cpu, or cuda[:N] where a GPU is present"})
    cpu_watts: float = field(default=0.0, metadata={"help": "watts per busy core for the energy estimate "
                                                             "(0: 12 W, Green Algorithms 2021)"})
    country: str = field(default="", metadata={"help": "ISO code of the grid for carbon (empty: world average)"})
    intensity: float = field(default=0.0, metadata={"help": "grid intensity in g CO2e/kWh (0: from --country)"})

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the parameter, its value and the allowed range."""
        if not isinstance(self.seeds, int) or self.seeds < 1:
            raise ValueError(f"seeds must be an integer >= 1, got {self.seeds!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")
        if self.device not in ("cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {self.device!r}")
        if str(self.device).startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                raise ValueError(f"device={self.device!r} but no CUDA GPU is available; use --device cpu")
        for name in ("cpu_watts", "intensity"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0 means the default), got {getattr(self, name)}")
        if not self.name or "/" in self.name:
            raise ValueError(f"name must be a non-empty string without '/', got {self.name!r}")

    def meter_kwargs(self) -> dict:
        """Arguments for frugalnet.energy.Meter from the energy options."""
        return {"cpu_watts": self.cpu_watts or None, "country": self.country or None,
                "intensity": self.intensity or None}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "StudyConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields: {unknown}; known: {sorted(known)}")
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name in values:
                v = values[f.name]
                kwargs[f.name] = tuple(v) if isinstance(v, list) else v
        return cls(**kwargs)


@dataclass(frozen=True)
class StudySpec:
    name: str
    config_cls: type[StudyConfig]
    fn: Callable
    description: str


def register_study(name: str, config: type[StudyConfig], description: str = ""):
    """Decorator: `@register_study("my-study", MyConfig, "what it shows")` on `def my_study(ctx) -> dict`."""

    def deco(fn: Callable) -> Callable:
        _STUDIES[name] = StudySpec(name, config, fn, description or (fn.__doc__ or "").strip().split("\n")[0])
        return fn

    return deco


def get_study(name: str) -> StudySpec:
    _discover()
    if name not in _STUDIES:
        raise ValueError(f"unknown study {name!r}; available: {sorted(_STUDIES)}")
    return _STUDIES[name]


def study_for(config: StudyConfig) -> StudySpec:
    """The study whose config type `config` is (the config names its study; no name needed)."""
    _discover()
    for spec in _STUDIES.values():
        if type(config) is spec.config_cls:
            return spec
    raise ValueError(f"no study takes a {type(config).__name__}; register one with "
                     f"@register_study(name, {type(config).__name__})")


def available_studies() -> dict[str, StudySpec]:
    _discover()
    return dict(sorted(_STUDIES.items()))


def _discover() -> None:
    """Import every module in frugalnet.studies so that each registers its study (no central list to edit)."""
    import importlib
    import pkgutil

    import frugalnet.studies as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"frugalnet.studies.{info.name}")
