"""Study configs and the registry: a study is a config dataclass plus a function `fn(ctx) -> results`."""
from __future__ import annotations

import dataclasses
import math
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
        _check_field_types(self)
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
        if not self.name or "/" in self.name or self.name in (".", ".."):
            raise ValueError(f"name must be a non-empty string without '/', got {self.name!r}")
        _check_data_dir(self)

    def datasets(self) -> tuple[str, ...]:
        """The data sets a run of this config reads (by `frugalnet.data.load` name); a study whose data sets are
        not named by a `dataset` field overrides this, so that a missing --data-dir is caught before the run."""
        name = getattr(self, "dataset", None)
        return (name,) if isinstance(name, str) and name else ()

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


def _field_default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return dataclasses.MISSING


def _type_error(name: str, value, want: str) -> ValueError:
    return ValueError(f"{name} must be {want}, got {value!r} ({type(value).__name__}); fix the option --"
                      f"{name.replace('_', '-')} (or the \"{name}\" entry of config.json)")


def _check_value(name: str, value, default) -> None:
    """`value` has the kind of `default`: int (not bool), finite float, bool, str, or a tuple of such."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise _type_error(name, value, "true or false")
    elif isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise _type_error(name, value, "an integer")
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise _type_error(name, value, "a finite number")
        if (name == "lr" or name.endswith("_lr")) and not value > 0:
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    elif isinstance(default, str):
        if not isinstance(value, str):
            raise _type_error(name, value, "a string")
    elif isinstance(default, tuple):
        if not isinstance(value, tuple):
            raise _type_error(name, value, "a list of values")
        if default:
            for item in value:
                _check_value(name, item, default[0])


def _check_field_types(config: "StudyConfig") -> None:
    for f in dataclasses.fields(config):
        default = _field_default(f)
        if default is not dataclasses.MISSING and default is not None:
            _check_value(f.name, getattr(config, f.name), default)


def _check_data_dir(config: "StudyConfig") -> None:
    """A data set read from a local copy needs --data-dir; --data-dir with only embedded data sets is an error
    (it would be ignored silently)."""
    from frugalnet.data.core import needs_data_dir

    need = [name for name in config.datasets() if needs_data_dir(name)]
    if not hasattr(config, "data_dir"):
        return
    if need and not config.data_dir:
        raise FileNotFoundError(f"data set {need[0]!r} is read from a local copy: pass --data-dir FOLDER (data_dir=) "
                         f"naming the folder that holds it (see `frugalnet list`)")
    if config.data_dir and not need:
        used = ", ".join(config.datasets()) or "embedded data only"
        raise ValueError(f"--data-dir {config.data_dir!r} was given but this run reads no local data set ({used}); "
                         f"drop --data-dir, or choose a data set that is read from it (see `frugalnet list`)")


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


STUDIES_PACKAGE = "frugalnet.studies"


def _discover() -> None:
    """Load every module of the studies package by name, so that each registers its study (no central list to
    edit). A plugin load, not a dependency: the registry sits below the studies and knows only the package name."""
    import importlib
    import pkgutil

    pkg = importlib.import_module(STUDIES_PACKAGE)
    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{STUDIES_PACKAGE}.{info.name}")
