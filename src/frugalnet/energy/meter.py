"""`Meter`: wall time, CPU time, energy and carbon of the work inside a `with` block (or a decorated function).

Energy is *measured* where hardware counters can be read (Linux powercap RAPL for the CPU packages, NVML for NVIDIA
GPUs) and *estimated* elsewhere as CPU time x a per-core power figure. The default figure is 12 W per core, the
"Any CPU" default of the Green Algorithms calculator (Lannelongue, Grealey & Inouye, "Green Algorithms: Quantifying
the Carbon Footprint of Computation", Advanced Science 8:2100707, 2021; TDP-per-core table of its calculator data);
`cpu_watts` (`--cpu-watts`) overrides it. Every result says which it is in `label` ("measured", "estimated" or
"partly estimated") and `source`.

Scope, honestly: RAPL counts the whole CPU package (other processes too); the estimate counts only this process and
the children it waited for, and leaves out memory, disk and fans. CPU time includes every thread of this process.
With `use_codecarbon=True` and CodeCarbon installed (the "energy" extra), CodeCarbon tracks the same work beside us
and its figures (which add RAM power and its own CPU power database) are reported next to ours, not merged.
"""
from __future__ import annotations

import contextlib
import logging
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from frugalnet.energy.carbon import PUE_SOURCE, carbon_grams, check_pue, grid_intensity
from frugalnet.energy.counters import NvmlReader, PeriodicSampler, RaplSampler, find_rapl_zones

DEFAULT_CPU_WATTS_PER_CORE = 12.0
CPU_WATTS_SOURCE = ("Green Algorithms calculator default for an unknown CPU, 12 W per core (Lannelongue et al., "
                    "Advanced Science 2021)")


def cpu_seconds() -> float:
    """User + system CPU time of this process (all threads) and of the children it has waited for."""
    try:
        import resource

        s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime
    except ImportError:  # not POSIX
        return time.process_time()


@dataclass
class MeterResult:
    """What a Meter measured. `label` is "measured", "estimated" or "partly estimated"; `source` says how."""

    wall_s: float
    cpu_s: float
    energy_j: float
    label: str
    source: str
    components_j: dict[str, float]
    carbon_g: float
    intensity_g_per_kwh: float
    intensity_region: str
    intensity_source: str
    pue: float
    pue_source: str
    cpu_watts_per_core: float | None = None
    cpu_watts_source: str | None = None
    notes: list[str] = field(default_factory=list)
    codecarbon: dict[str, Any] | None = None
    parts: int = 1

    @classmethod
    def from_dict(cls, d: dict) -> "MeterResult":
        """The inverse of `to_dict` (ValueError if a field is missing or of the wrong kind)."""
        names = [f.name for f in fields(cls)]
        try:
            kw = {k: d[k] for k in names if k in d}
            result = cls(**kw)
            float(result.energy_j) + float(result.wall_s) + float(result.cpu_s) + float(result.carbon_g)
            {str(k): float(v) for k, v in dict(result.components_j).items()}
            if not (isinstance(result.notes, list) and all(isinstance(n, str) for n in result.notes)
                    and isinstance(result.label, str) and isinstance(result.source, str)
                    and isinstance(result.parts, int) and result.parts >= 1):
                raise ValueError("label, source, notes or parts of the wrong kind")
        except (TypeError, ValueError, KeyError) as exc:
            raise ValueError(f"not a meter result: {exc}") from None
        return result

    @classmethod
    def combine(cls, parts: "list[MeterResult]") -> "MeterResult":
        """One result for work done in several parts (a run interrupted and resumed): times, energy and carbon are
        sums over the parts; `parts` counts them."""
        if not parts:
            raise ValueError("combine needs at least one part")
        if len(parts) == 1:
            return parts[0]
        last = parts[-1]
        components: dict[str, float] = {}
        for p in parts:
            for k, v in p.components_j.items():
                components[k] = components.get(k, 0.0) + float(v)
        labels = {p.label for p in parts}
        notes: list[str] = []
        for p in parts:
            notes += [n for n in p.notes if n not in notes and not n.startswith("resumed: ")]
        n = sum(p.parts for p in parts)
        notes.append(f"resumed: {n} parts (times, energy and carbon summed over them)")
        if any(p.codecarbon for p in parts[:-1]):
            notes.append("CodeCarbon figures cover the last part only")
        return cls(wall_s=sum(p.wall_s for p in parts), cpu_s=sum(p.cpu_s for p in parts),
                   energy_j=sum(p.energy_j for p in parts), label=labels.pop() if len(labels) == 1
                   else "partly estimated", source="; ".join(dict.fromkeys(p.source for p in parts)),
                   components_j=components, carbon_g=sum(p.carbon_g for p in parts),
                   intensity_g_per_kwh=last.intensity_g_per_kwh, intensity_region=last.intensity_region,
                   intensity_source=last.intensity_source, pue=last.pue, pue_source=last.pue_source,
                   cpu_watts_per_core=last.cpu_watts_per_core, cpu_watts_source=last.cpu_watts_source,
                   notes=notes, codecarbon=last.codecarbon, parts=n)

    @property
    def estimated(self) -> bool:
        return self.label != "measured"

    @property
    def energy_wh(self) -> float:
        return self.energy_j / 3600.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["estimated"] = self.estimated
        return d

    def table_rows(self) -> list[list[Any]]:
        """(quantity, value, note) rows: the same content as `format_table`, for a Report table."""
        rows: list[list[Any]] = [
            ["wall time (s)", round(self.wall_s, 3), ""],
            ["CPU time (s)", round(self.cpu_s, 3), "this process and its waited-for children"],
            [f"energy (J), {self.label}", round(self.energy_j, 3), self.source],
            [f"energy (Wh), {self.label}", round(self.energy_wh, 6), ""],
        ]
        for name, j in self.components_j.items():
            rows.append([f"  {name} (J)", round(j, 3), ""])
        rows.append([f"carbon (g CO2e), {self.label}", round(self.carbon_g, 6),
                     f"x PUE {self.pue:g} x {self.intensity_g_per_kwh:g} g/kWh"])
        rows.append(["grid intensity (g CO2e/kWh)", self.intensity_g_per_kwh,
                     f"{self.intensity_region}: {self.intensity_source}"])
        rows.append(["PUE", self.pue, self.pue_source])
        if self.cpu_watts_per_core is not None:
            rows.append(["CPU power per core (W)", self.cpu_watts_per_core, self.cpu_watts_source or ""])
        if self.codecarbon:
            cc = self.codecarbon
            if "energy_j" in cc:
                lab = cc.get("label", "estimated")
                rows.append([f"CodeCarbon energy (J), {lab}", round(cc["energy_j"], 3), cc.get("method", "")])
                rows.append([f"CodeCarbon carbon (g CO2e), {lab}", round(cc["carbon_g"], 6),
                             cc.get("carbon_note", "")])
            else:
                rows.append(["CodeCarbon", "n/a", cc.get("note", "")])
        for note in self.notes:
            rows.append(["note", "", note])
        return rows

    def add_to_report(self, report, caption: str = "Energy and carbon of this run") -> None:
        """Append the table to a frugalnet.report.Report."""
        report.table(["quantity", "value", "source / note"], self.table_rows(), caption=f"{caption} ({self.label})")


def format_table(result: MeterResult) -> str:
    """Plain-text table of a MeterResult, for the terminal."""
    rows = [[str(a), _fmt(b), str(c)] for a, b, c in result.table_rows()]
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    return "\n".join(f"{a:<{w0}}  {b:>{w1}}  {c}".rstrip() for a, b, c in rows)


def _fmt(v: Any) -> str:
    from frugalnet.report.document import format_value

    return format_value(v)


class Meter(contextlib.ContextDecorator):
    """Meter the work inside `with Meter() as m:` (or every call of a function decorated with `@Meter()`).

    After the block, `m.result` is a MeterResult.

    Args:
        cpu_watts: power per busy CPU core for the estimate (default 12 W, Green Algorithms 2021); > 0.
        country: ISO 3166 code for the grid intensity (default: world average), see `carbon.available_countries()`.
        intensity: grid intensity in g CO2e/kWh; overrides `country`'s table value.
        pue: data-centre power usage effectiveness, >= 1 (default 1.0).
        use_codecarbon: also run CodeCarbon's offline tracker and report its figures beside ours (needs the
            "energy" extra; a note says so when it is missing).
        powercap_root: folder holding the RAPL zones (default $FRUGALNET_POWERCAP_ROOT or /sys/class/powercap).
        poll_s: how often counters are sampled in the background, so that wrap-around is undone on long runs.
    """

    def __init__(self, cpu_watts: float | None = None, country: str | None = None, intensity: float | None = None,
                 pue: float | None = None, use_codecarbon: bool = False, powercap_root: str | None = None,
                 poll_s: float = 5.0) -> None:
        if cpu_watts is not None and not (isinstance(cpu_watts, (int, float)) and cpu_watts > 0):
            raise ValueError(f"cpu_watts must be a number > 0 (watts per busy core), got {cpu_watts!r}")
        if not poll_s > 0:
            raise ValueError(f"poll_s must be > 0 seconds, got {poll_s!r}")
        self.cpu_watts = float(cpu_watts) if cpu_watts is not None else None
        self.grid = grid_intensity(country, intensity)
        self.pue = check_pue(pue)
        self.use_codecarbon = bool(use_codecarbon)
        self.powercap_root = powercap_root
        self.poll_s = float(poll_s)
        self.result: MeterResult | None = None

    # --- context manager ---------------------------------------------------------------------------------------
    def __enter__(self) -> "Meter":
        self._notes: list[str] = []
        zones, why = find_rapl_zones(self.powercap_root)
        self._rapl = RaplSampler(zones) if zones else None
        if why:
            self._notes.append(f"CPU energy counters: {why}")
        self._nvml = NvmlReader()
        self._nvml_start = self._nvml.read_mj() if self._nvml.available else []
        self._sampler = PeriodicSampler(self._rapl.sample, self.poll_s).start() if self._rapl else None
        self._codecarbon = _CodeCarbonProbe.start(self.grid.iso3) if self.use_codecarbon else None
        self._cpu0 = cpu_seconds()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        wall = time.perf_counter() - self._t0
        cpu = cpu_seconds() - self._cpu0
        if self._sampler is not None:
            self._sampler.stop()
        components: dict[str, float] = {}
        measured: list[str] = []
        watts = None
        if self._rapl is not None:
            components.update(self._rapl.joules())
            measured.append("RAPL " + "+".join(z.name for z in self._rapl.zones))
            self._notes.append("RAPL counts the whole CPU package, other processes included")
        else:
            watts = self.cpu_watts if self.cpu_watts is not None else DEFAULT_CPU_WATTS_PER_CORE
            components["CPU estimate"] = cpu * watts
        if self._nvml.available:
            for i, (a, b) in enumerate(zip(self._nvml_start, self._nvml.read_mj())):
                components[f"NVML gpu{i}"] = (b - a) / 1e3
            measured.append("NVML")
        elif self._nvml.note and "not installed" not in self._nvml.note:
            self._notes.append(f"GPU energy counters: {self._nvml.note}")
        energy = float(sum(components.values()))
        if watts is None:
            label, source = "measured", "measured (" + ", ".join(measured) + ")"
        else:
            est = f"estimated (CPU time x {watts:g} W per core)"
            label = "partly estimated" if measured else "estimated"
            source = ("measured (" + ", ".join(measured) + ") + " + est) if measured else est
        cc = None
        if self._codecarbon is not None:  # it can only read the counters we can read
            cc = self._codecarbon.stop(self.grid.g_per_kwh, self.pue, "measured" if measured else "estimated")
        if self.use_codecarbon and self._codecarbon is None:
            cc = {"note": "CodeCarbon not installed (pip install 'frugalnet[energy]')"}
        self.result = MeterResult(
            wall_s=wall, cpu_s=cpu, energy_j=energy, label=label, source=source, components_j=components,
            carbon_g=carbon_grams(energy, self.grid.g_per_kwh, self.pue),
            intensity_g_per_kwh=self.grid.g_per_kwh, intensity_region=self.grid.region,
            intensity_source=self.grid.source, pue=self.pue, pue_source=PUE_SOURCE,
            cpu_watts_per_core=watts,
            cpu_watts_source=None if watts is None else (
                "given by the user (--cpu-watts)" if self.cpu_watts is not None else CPU_WATTS_SOURCE),
            notes=list(self._notes), codecarbon=cc)
        return False


class _CodeCarbonProbe:
    """CodeCarbon's OfflineEmissionsTracker on the same work, when the package is installed."""

    def __init__(self, tracker, iso3: str | None) -> None:
        self.tracker = tracker
        self.iso3 = iso3
        self.error = ""

    @classmethod
    def start(cls, iso3: str | None) -> "_CodeCarbonProbe | None":
        try:
            from codecarbon import OfflineEmissionsTracker
        except ImportError:
            return None
        logging.getLogger("codecarbon").setLevel(logging.ERROR)
        try:
            with warnings.catch_warnings():  # its save_to_file deprecation notice is not the user's concern
                warnings.simplefilter("ignore", DeprecationWarning)
                tracker = OfflineEmissionsTracker(country_iso_code=iso3 or "USA", save_to_file=False,
                                                  log_level="error", measure_power_secs=5)
            tracker.start()
        except Exception as exc:  # e.g. another tracker holds CodeCarbon's lock: report it, keep our figures
            probe = cls(None, iso3)
            probe.error = f"CodeCarbon could not start: {type(exc).__name__}: {exc}"
            return probe
        return cls(tracker, iso3)

    def stop(self, intensity_g_per_kwh: float, pue: float, label: str) -> dict[str, Any]:
        if self.tracker is None:
            return {"note": self.error}
        try:
            emissions_kg = self.tracker.stop()
            data = self.tracker.final_emissions_data
        except Exception as exc:
            return {"note": f"CodeCarbon failed: {type(exc).__name__}: {exc}"}
        energy_j = float(data.energy_consumed) * 3.6e6
        parts = {k: float(getattr(data, k, 0.0)) * 3.6e6 for k in ("cpu_energy", "ram_energy", "gpu_energy")}
        out: dict[str, Any] = {"energy_j": energy_j, "parts_j": parts, "label": label,
                               "method": f"CodeCarbon {_codecarbon_version()}: CPU "
                                         f"{parts['cpu_energy']:.3g} J + RAM {parts['ram_energy']:.3g} J + GPU "
                                         f"{parts['gpu_energy']:.3g} J ({getattr(data, 'cpu_model', '?')})"}
        if self.iso3:
            out["carbon_g"] = float(emissions_kg or 0.0) * 1e3
            out["carbon_note"] = f"CodeCarbon's own grid data for {self.iso3}"
        else:  # no country given: CodeCarbon needs one, so apply our intensity to its energy
            out["carbon_g"] = carbon_grams(energy_j, intensity_g_per_kwh, pue)
            out["carbon_note"] = "CodeCarbon energy x our intensity and PUE (no --country given)"
        return out


def _codecarbon_version() -> str:
    try:
        import codecarbon

        return str(codecarbon.__version__)
    except Exception:  # pragma: no cover
        return "?"
