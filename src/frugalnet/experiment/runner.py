"""The one experiment runner every study uses.

`run_study(name, config)` makes the run folder `runs/<study>/<time>-<name>/`, writes `config.json`, seeds
everything, calls the study function with a `RunContext`, writes `results.json` atomically and the report
(`report.md`, `report.html`, plots). `resume_run(folder)` re-enters an interrupted run: finished units are read back
from `units/`, a half-trained model continues from its last epoch checkpoint in `checkpoints/`.
Under torchrun only rank 0 writes; every rank runs the same code.
"""
from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from frugalnet.energy.meter import Meter
from frugalnet.report import Report
from frugalnet.utils import distributed as dist_utils
from frugalnet.experiment.registry import StudyConfig, StudySpec, get_study, study_for
from frugalnet.utils.io import append_jsonl, atomic_write_json, read_jsonl
from frugalnet.utils.progress import progress, set_quiet
from frugalnet.utils.seeding import seed_everything


@dataclass
class RunResult:
    study: str
    dir: Path
    results: dict


class RunContext:
    """What a study function gets: its config, its folder, logging, resumable units, progress, the report."""

    def __init__(self, spec: StudySpec, config: StudyConfig, run_dir: Path, resumed: bool) -> None:
        self.spec = spec
        self.config = config
        self.dir = run_dir
        self.resumed = resumed
        self.report = Report(title=f"{spec.name}: {config.name}")
        self.device = torch.device(config.device)

    # --- ranks -----------------------------------------------------------------------------------------------
    @property
    def is_main(self) -> bool:
        return dist_utils.is_main()

    @property
    def world_size(self) -> int:
        return dist_utils.world_size()

    # --- seeds, logging, progress ----------------------------------------------------------------------------
    @property
    def seeds(self) -> list[int]:
        return [self.config.seed + i for i in range(self.config.seeds)]

    def log(self, **record: Any) -> None:
        """Append one record to metrics.jsonl (rank 0 only), stamped with the time."""
        if self.is_main:
            append_jsonl(self.dir / "metrics.jsonl", {"time": round(time.time(), 3), **record})

    def metrics(self) -> list[dict]:
        return list(read_jsonl(self.dir / "metrics.jsonl"))

    def progress(self, iterable: Iterable, desc: str = "", total: int | None = None, **kwargs) -> Iterable:
        if not self.is_main:
            return iterable
        return progress(iterable, desc=desc, total=total, **kwargs)

    # --- resumable units of work ------------------------------------------------------------------------------
    def unit_path(self, key: str) -> Path:
        return self.dir / "units" / f"{_safe(key)}.json"

    def checkpoint_path(self, key: str) -> Path:
        return self.dir / "checkpoints" / f"{_safe(key)}.pt"

    def unit(self, key: str, fn: Callable[[], dict]) -> dict:
        """Run `fn()` once for `key` and keep its JSON result; a resumed run reads it back instead of re-running."""
        path = self.unit_path(key)
        if path.is_file():
            return json.loads(path.read_text())
        result = fn()
        if self.is_main:
            atomic_write_json(path, result)
        dist_utils.barrier()
        return result


def _safe(key: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in key)


def _environment() -> dict:
    import numpy

    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
            "machine": platform.machine(), "processor": platform.processor(), "system": platform.system(),
            "threads": torch.get_num_threads(), "world_size": dist_utils.world_size()}


def _new_run_dir(config: StudyConfig, study: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(config.runs_dir) / study
    path = base / f"{stamp}-{config.name}"
    n = 1
    while path.exists():
        n += 1
        path = base / f"{stamp}-{config.name}-{n}"
    return path


def run_study(study: str | StudySpec | StudyConfig, config: StudyConfig | None = None, *, run_dir: str | Path | None = None,
              resume: bool = False) -> RunResult:
    """Run a study and return its results and folder.

    Args:
        study: a study's config (`run_study(SparseVsDenseConfig(epochs=3))`: its type names the study), or a
            registered name (see `frugalnet list`) or StudySpec with `config`.
        config: the study's config dataclass when `study` is a name (defaults if None).
        run_dir: use this folder instead of a new timestamped one.
        resume: continue the run already in `run_dir`.
    """
    if isinstance(study, StudyConfig):
        if config is not None:
            raise TypeError("run_study takes a config once: run_study(config) or run_study(name, config)")
        study, config = study_for(study), study
    spec = get_study(study) if isinstance(study, str) else study
    config = config if config is not None else spec.config_cls()
    if not isinstance(config, spec.config_cls):
        raise TypeError(f"study {spec.name!r} takes a {spec.config_cls.__name__}, got {type(config).__name__}")
    config.validate()
    set_quiet(config.quiet)
    dist_utils.init_if_launched(config.device)

    path = Path(run_dir) if run_dir is not None else _new_run_dir(config, spec.name)
    path = Path(dist_utils.broadcast_object(str(path)))
    if dist_utils.is_main():
        path.mkdir(parents=True, exist_ok=True)
        if not resume:
            atomic_write_json(path / "config.json", {"study": spec.name, "config": config.to_dict(),
                                                     "environment": _environment(),
                                                     "started": datetime.now().isoformat(timespec="seconds")})
    dist_utils.barrier()

    seed_everything(config.seed)
    ctx = RunContext(spec, config, path, resumed=resume)
    ctx.log(event="start" if not resume else "resume")
    wall0, cpu0 = time.perf_counter(), time.process_time()
    with Meter(**config.meter_kwargs()) as meter:
        results = spec.fn(ctx)
    timing = {"wall_seconds": time.perf_counter() - wall0, "cpu_seconds": time.process_time() - cpu0}
    energy = meter.result.to_dict()

    payload = {"study": spec.name, "config": config.to_dict(), "results": results, "timing": timing,
               "energy": energy, "finished": datetime.now().isoformat(timespec="seconds")}
    if dist_utils.is_main():
        atomic_write_json(path / "results.json", payload)
        ctx.report.heading("Energy and carbon of this run")
        if resume:
            ctx.report.text("This run was resumed: the figures cover the resumed part only.")
        meter.result.add_to_report(ctx.report, "Energy and carbon of this run (this process)")
        ctx.report.write(path)
    ctx.log(event="end", **timing, energy_j=energy.get("energy_j"))
    dist_utils.barrier()
    return RunResult(spec.name, path, results)


def load_run_config(run_dir: str | Path) -> tuple[StudySpec, StudyConfig]:
    path = Path(run_dir)
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{cfg_file} not found: is {path} a frugalnet run folder?")
    saved = json.loads(cfg_file.read_text())
    spec = get_study(saved["study"])
    return spec, spec.config_cls.from_dict(saved["config"])


def resume_run(run_dir: str | Path, **overrides: Any) -> RunResult:
    """Continue an interrupted run from its folder (finished units are kept, training resumes from checkpoints)."""
    spec, config = load_run_config(run_dir)
    for key, value in overrides.items():
        setattr(config, key, value)
    return run_study(spec, config, run_dir=run_dir, resume=True)
