"""The one experiment runner every study uses.

`run_study(name, config)` checks the config and paths, makes the run folder `runs/<study>/<time>-<name>/`, writes
`config.json`, takes the folder's lock (`run.lock`), seeds everything, calls the study function with a `RunContext`,
writes `results.json` atomically and the report (`report.md`, `report.html`, plots). `resume_run(folder)` re-enters
an interrupted run: finished units are read back from `units/`, a half-trained model continues from its last epoch
checkpoint in `checkpoints/`; a config.json changed since the run started is refused unless `allow_changed_config`.
Every JSON file and checkpoint carries a checksum verified on load. Metered energy is kept per part in
`energy_parts.json`, so a resumed run reports the sum over its parts. A fresh run that fails before writing any
result removes its folder. Under torchrun only rank 0 writes; every rank runs the same code.
"""
from __future__ import annotations

import contextlib
import os
import platform
import shutil
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from frugalnet.energy.meter import Meter, MeterResult
from frugalnet.report import Report
from frugalnet.utils import distributed as dist_utils
from frugalnet.experiment.registry import StudyConfig, StudySpec, get_study, study_for
from frugalnet.utils.checksum import FileCheckError
from frugalnet.utils.io import append_jsonl, atomic_write_json, read_json, read_jsonl
from frugalnet.utils.lock import FileLock
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
            return read_json(path, fix="delete it to recompute this unit")
        result = fn()
        if self.is_main:
            atomic_write_json(path, result)
        dist_utils.barrier()
        return result

    # --- energy over the parts of a resumed run ----------------------------------------------------------------
    @contextlib.contextmanager
    def meter(self, key: str):
        """`with ctx.meter(key) as m:` meters the block like `Meter`, and `m.result` covers every part of the work
        under `key`: each part's figures are saved in energy_parts.json when it ends (also when interrupted), and
        a resumed run adds the earlier parts (`m.result.parts` counts them). Use one key per piece of work."""
        earlier = self._energy_parts(key)
        handle = _Metered()
        meter = Meter(**self.config.meter_kwargs())
        try:
            with meter:
                yield handle
        finally:
            if meter.result is not None:
                if self.is_main:
                    path = self.dir / ENERGY_PARTS
                    saved = read_json(path) if path.is_file() else {}
                    saved.setdefault(key, []).append(meter.result.to_dict())
                    atomic_write_json(path, saved)
                handle.result = MeterResult.combine(earlier + [meter.result])

    def _energy_parts(self, key: str) -> list[MeterResult]:
        path = self.dir / ENERGY_PARTS
        if not path.is_file():
            return []
        fix = ("delete it to go on without the energy of the earlier parts of this run (the energy figures will "
               "then cover the resumed parts only)")
        data = read_json(path, fix=fix)
        try:
            return [MeterResult.from_dict(d) for d in data.get(key, [])]
        except (ValueError, TypeError, AttributeError) as exc:
            raise FileCheckError(f"{path} does not hold energy parts ({exc}); {fix}") from None


class _Metered:
    """What `RunContext.meter` yields: `result` (a MeterResult over all parts) is set when the block ends."""

    result: MeterResult | None = None


LOCK_FILE = "run.lock"
ENERGY_PARTS = "energy_parts.json"
RUN_ENERGY_KEY = "run"


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
        resume: continue the run already in `run_dir` (use `resume_run`, which also checks its config.json).
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
    _check_paths(config, run_dir, resume)
    set_quiet(config.quiet)
    dist_utils.init_if_launched(config.device)

    path = Path(run_dir) if run_dir is not None else _new_run_dir(config, spec.name)
    path = Path(dist_utils.broadcast_object(str(path)))
    created = False
    if dist_utils.is_main():
        if not resume:
            _make_dir(path, config)
            created = True
            _write_config(path, spec, config)
    dist_utils.barrier()
    lock = FileLock(path / LOCK_FILE) if dist_utils.is_main() else contextlib.nullcontext()
    try:
        with lock:
            return _execute(spec, config, path, resume)
    except Exception:
        if created:
            _remove_if_unused(path)
        raise


def _execute(spec: StudySpec, config: StudyConfig, path: Path, resume: bool) -> RunResult:
    seed_everything(config.seed)
    ctx = RunContext(spec, config, path, resumed=resume)
    ctx.log(event="start" if not resume else "resume")
    wall0, cpu0 = time.perf_counter(), time.process_time()
    with ctx.meter(RUN_ENERGY_KEY) as meter:
        results = spec.fn(ctx)
    timing = {"wall_seconds": time.perf_counter() - wall0, "cpu_seconds": time.process_time() - cpu0}
    energy = meter.result.to_dict()

    payload = {"study": spec.name, "config": config.to_dict(), "results": results, "timing": timing,
               "energy": energy, "finished": datetime.now().isoformat(timespec="seconds")}
    if dist_utils.is_main():
        atomic_write_json(path / "results.json", payload)
        ctx.report.heading("Energy and carbon of this run")
        if meter.result.parts > 1:
            ctx.report.text(f"This run was resumed: the figures are sums over its {meter.result.parts} parts "
                            "(timing covers the last part only).")
        meter.result.add_to_report(ctx.report, "Energy and carbon of this run (this process)")
        ctx.report.write(path)
    ctx.log(event="end", **timing, energy_j=energy.get("energy_j"))
    dist_utils.barrier()
    return RunResult(spec.name, path, results)


def _check_paths(config: StudyConfig, run_dir: str | Path | None, resume: bool) -> None:
    """Everything about paths that can be checked before the run folder exists."""
    data_dir = getattr(config, "data_dir", "")
    if data_dir and not Path(data_dir).expanduser().is_dir():
        names = ", ".join(config.datasets()) or "the data set"
        raise FileNotFoundError(f"--data-dir {data_dir!r} not found (or not a folder): pass the folder that holds "
                                f"{names}")
    if resume:
        if run_dir is None or not Path(run_dir).is_dir():
            raise FileNotFoundError(f"run folder {run_dir} not found")
        return
    target = Path(run_dir) if run_dir is not None else Path(config.runs_dir)
    option = "run_dir" if run_dir is not None else "--runs-dir"
    probe = target
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ValueError(f"{option} {str(target)!r}: {probe} is a file, not a folder; choose a folder with {option}")
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {str(target)!r}: {probe} is not writable; choose a writable folder with "
                         f"{option}")


def _make_dir(path: Path, config: StudyConfig) -> None:
    try:
        path.mkdir(parents=True, exist_ok=False)
    except FileExistsError:
        raise ValueError(f"run folder {path} already exists: resume it with `frugalnet resume {path}`, or give "
                         f"another name (--name)") from None
    except OSError as exc:
        raise ValueError(f"cannot create the run folder {path} ({exc.strerror or exc}); choose a writable folder "
                         f"with --runs-dir (now {config.runs_dir!r})") from None


def _write_config(path: Path, spec: StudySpec, config: StudyConfig) -> None:
    atomic_write_json(path / "config.json", {"study": spec.name, "config": config.to_dict(),
                                             "environment": _environment(),
                                             "started": datetime.now().isoformat(timespec="seconds")})


def _remove_if_unused(path: Path) -> None:
    """Remove a fresh run's folder after an early failure, only if nothing but its own bookkeeping is in it."""
    try:
        names = {p.name for p in path.iterdir()}
        if not names <= {"config.json", "metrics.jsonl", LOCK_FILE, ENERGY_PARTS}:
            return
        if "metrics.jsonl" in names and sum(1 for r in read_jsonl(path / "metrics.jsonl")
                                            if r.get("event") not in ("start", "resume")) > 0:
            return
        shutil.rmtree(path)
        if path.parent.is_dir() and not any(path.parent.iterdir()):
            path.parent.rmdir()   # runs/<study>/ made for this run alone
    except OSError:
        pass


def load_run_config(run_dir: str | Path, *, allow_changed_config: bool = False) -> tuple[StudySpec, StudyConfig]:
    """The study and config of a run folder, from its config.json (checksum verified: a config edited since the
    run started is refused unless `allow_changed_config`)."""
    path = Path(run_dir)
    cfg_file = path / "config.json"
    if not path.is_dir():
        raise FileNotFoundError(f"run folder {path} not found")
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{cfg_file} not found: is {path} a frugalnet run folder?")
    try:
        saved = read_json(cfg_file)
    except FileCheckError:
        if not allow_changed_config:
            raise FileCheckError(f"{cfg_file} was changed since the run started (its checksum does not match): "
                                 "resuming would mix results of two configs. Restore it, or resume with --force "
                                 "(allow_changed_config=True) to accept the changed config") from None
        saved = read_json(cfg_file, checksum="ignore")
    if not isinstance(saved, dict) or not isinstance(saved.get("study"), str) \
            or not isinstance(saved.get("config"), dict):
        raise FileCheckError(f"{cfg_file} must hold {{\"study\": NAME, \"config\": {{...}}}}; it does not (was it "
                             "edited?)")
    try:
        spec = get_study(saved["study"])
        config = spec.config_cls.from_dict(saved["config"])
    except (ValueError, TypeError, FileNotFoundError) as exc:
        raise FileCheckError(f"{cfg_file}: {exc}") from None
    return spec, config


def resume_run(run_dir: str | Path, *, allow_changed_config: bool = False, **overrides: Any) -> RunResult:
    """Continue an interrupted run from its folder (finished units are kept, training resumes from checkpoints).

    `allow_changed_config=True` accepts a config.json edited since the run started (its checksum is renewed and the
    change logged); `overrides` set config fields for this part only (e.g. quiet=True).
    """
    spec, config = load_run_config(run_dir, allow_changed_config=allow_changed_config)
    for key, value in overrides.items():
        if not hasattr(config, key):
            raise ValueError(f"{type(config).__name__} has no field {key!r}")
        setattr(config, key, value)
    config.validate()
    path = Path(run_dir)
    if allow_changed_config and dist_utils.is_main():
        try:
            read_json(path / "config.json")
        except FileCheckError:
            saved = read_json(path / "config.json", checksum="ignore")
            with FileLock(path / LOCK_FILE):
                atomic_write_json(path / "config.json", saved)
                append_jsonl(path / "metrics.jsonl", {"time": round(time.time(), 3), "event": "config changed",
                                                      "config": saved.get("config")})
    return run_study(spec, config, run_dir=run_dir, resume=True)
