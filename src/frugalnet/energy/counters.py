"""Hardware energy counters: Linux powercap RAPL (Intel and AMD) and NVIDIA NVML, each optional.

RAPL exposes a cumulative `energy_uj` per zone that wraps to 0 after `max_energy_range_uj`; `counter_delta` undoes
one wrap, and `RaplSampler.sample()` (called by the Meter's background thread every few seconds, far more often than
a counter can wrap) undoes any number of them over a long run. Only top-level package zones are summed: sub-zones
(core, uncore, dram) are parts of a package and would be counted twice; `psys` (whole platform) is used only where
no package zone exists. The powercap root is /sys/class/powercap unless `FRUGALNET_POWERCAP_ROOT` or the `root`
argument points elsewhere (tests build a fake tree).
"""
from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

POWERCAP_ENV = "FRUGALNET_POWERCAP_ROOT"
DEFAULT_POWERCAP_ROOT = "/sys/class/powercap"
_TOP_ZONE = re.compile(r"^[a-z-]*rapl:\d+$")


def counter_delta(start: int, end: int, max_range: int) -> int:
    """Increase of a counter that wraps to 0 after `max_range`: end - start, or end + max_range - start if wrapped."""
    if end >= start:
        return end - start
    if max_range <= 0:
        raise ValueError(f"counter went backwards ({start} -> {end}) and max_range={max_range} cannot undo it")
    return end + max_range - start


@dataclass(frozen=True)
class RaplZone:
    name: str           # e.g. "package-0"
    path: Path          # the zone folder
    max_range_uj: int

    def read_uj(self) -> int:
        return int((self.path / "energy_uj").read_text().strip())


def powercap_root(root: str | os.PathLike | None = None) -> Path:
    return Path(root if root is not None else os.environ.get(POWERCAP_ENV, DEFAULT_POWERCAP_ROOT))


def find_rapl_zones(root: str | os.PathLike | None = None) -> tuple[list[RaplZone], str]:
    """Readable top-level RAPL zones under the powercap root, and a note saying why none are, when none are."""
    base = powercap_root(root)
    if not base.is_dir():
        return [], f"no powercap tree at {base}"
    zones: list[RaplZone] = []
    unreadable: list[str] = []
    for entry in sorted(base.iterdir()):
        if not _TOP_ZONE.match(entry.name) or "mmio" in entry.name or not (entry / "energy_uj").exists():
            continue
        try:
            name = (entry / "name").read_text().strip() if (entry / "name").exists() else entry.name
            max_range = int((entry / "max_energy_range_uj").read_text().strip())
            zone = RaplZone(name, entry, max_range)
            zone.read_uj()
        except PermissionError:
            unreadable.append(entry.name)
            continue
        except (OSError, ValueError):
            continue
        zones.append(zone)
    packages = [z for z in zones if z.name.startswith("package")]
    chosen = packages or [z for z in zones if z.name != "psys"] or zones
    if chosen:
        return chosen, ""
    if unreadable:
        return [], f"RAPL zones {', '.join(unreadable)} exist but are not readable (energy_uj needs root)"
    return [], f"no RAPL zones under {base}"


class RaplSampler:
    """Accumulates energy over RAPL zones, undoing counter wrap-around between samples (thread-safe)."""

    def __init__(self, zones: list[RaplZone]) -> None:
        self.zones = list(zones)
        self._lock = threading.Lock()
        self._last = {z.path: z.read_uj() for z in self.zones}
        self.total_uj = {z.name + "@" + z.path.name: 0 for z in self.zones}

    def sample(self) -> None:
        with self._lock:
            for z in self.zones:
                now = z.read_uj()
                self.total_uj[z.name + "@" + z.path.name] += counter_delta(self._last[z.path], now, z.max_range_uj)
                self._last[z.path] = now

    def joules(self) -> dict[str, float]:
        with self._lock:
            return {f"RAPL {k.split('@')[0]}": v / 1e6 for k, v in self.total_uj.items()}


class PeriodicSampler:
    """Calls `fn` every `interval_s` seconds on a daemon thread until `stop()` (which calls it once more)."""

    def __init__(self, fn, interval_s: float) -> None:
        self._fn = fn
        self._interval = float(interval_s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="frugalnet-energy-sampler", daemon=True)

    def start(self) -> "PeriodicSampler":
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._fn()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._fn()


class NvmlReader:
    """Total energy of every NVIDIA GPU via NVML (nvidia-ml-py), where the driver and the GPU (Volta+) support it."""

    def __init__(self) -> None:
        self.note = ""
        self._nvml = None
        self._handles: list = []
        try:
            import pynvml  # type: ignore[import-not-found]

            pynvml.nvmlInit()
            handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
            for h in handles:
                pynvml.nvmlDeviceGetTotalEnergyConsumption(h)
            self._nvml, self._handles = pynvml, handles
            if not handles:
                self.note = "NVML found no GPU"
        except ImportError:
            self.note = "NVML not installed (pip install nvidia-ml-py)"
        except Exception as exc:  # NVMLError and friends: no driver, no GPU, unsupported GPU
            name = type(exc).__name__
            self.note = ("no NVIDIA driver" if "LibraryNotFound" in name or "DriverNotLoaded" in name
                         else f"NVML unavailable ({name})")
            self._handles = []

    @property
    def available(self) -> bool:
        return bool(self._handles)

    def read_mj(self) -> list[int]:
        return [int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(h)) for h in self._handles]  # type: ignore
