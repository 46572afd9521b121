"""`Ledger`: what a run saves against its dense FP32 baseline, factor by factor, each marked how it was obtained.

Every factor is baseline cost / run cost, so > 1 is a saving and < 1 a loss:
- compute: effective MACs per training step (or inference) -- modelled by `costmodel` from measured sparsity;
- precision: compute energy per MAC -- modelled from the bit widths and an energy table;
- data: training samples seen until the run reaches the baseline's final test accuracy -- measured;
- epochs: epochs until then -- measured (on the same training set it restates the data factor, so by default it is
  shown but not multiplied in again);
- speed: inference-engine time -- measured (it realises the compute factor on one machine, so by default shown but not
  multiplied in);
- energy: metered energy -- measured or estimated (a check on the product, not a factor of it).
The product multiplies the factors marked `in_product`. A factor that cannot be computed (the run never reaches the
baseline's accuracy) is kept as "not reached" and left out of the product, which then says so.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

KINDS = ("measured", "modelled", "estimated")


@dataclass
class Factor:
    name: str
    value: float | None         # baseline / run; None when it cannot be computed
    kind: str                   # measured | modelled | estimated
    baseline: float | None = None
    run: float | None = None
    unit: str = ""
    note: str = ""
    in_product: bool = True
    low: float | None = None    # spread of the factor (e.g. quartiles over timing rounds or min-max over seeds)
    high: float | None = None
    spread: str = ""            # what low..high is, e.g. "IQR of 15 rounds"
    flag: str = ""              # a warning shown with the value, e.g. "wide spread"

    def to_dict(self) -> dict:
        return asdict(self)

    def value_text(self) -> str:
        """'2.64x', '2.64x [2.1-3.0]' with its spread, 'not reached' or 'n/a'; the flag in capitals after it."""
        if self.value is None:
            return "not reached" if "reached" in self.note else "n/a"
        text = f"{self.value:.4g}x"
        if self.low is not None and self.high is not None:
            text += f" [{self.low:.3g}-{self.high:.3g}]"
        return text + (f" {self.flag.upper()}" if self.flag else "")


def samples_to_reach(curve: Sequence[tuple[float, float]], target: float) -> float | None:
    """First x (samples seen, or epochs) at which the accuracy in a curve of (x, accuracy) reaches `target`."""
    points = sorted((float(x), float(a)) for x, a in curve)
    for x, acc in points:
        if acc >= target:
            return x
    return None


class Ledger:
    """Savings factors of a run (e.g. "sparse") against a baseline (e.g. "dense fp32").

        ledger = Ledger("dense fp32", "sparse")
        ledger.add_compute(model_cost(dense, x, training=True), model_cost(sparse, x, training=True))
        ledger.add_precision(dense_cost, sparse_cost)
        ledger.add_data_from_curves(dense_curve, sparse_curve)   # [(samples seen, test accuracy), ...]
        ledger.add_to_report(ctx.report, "sparse vs dense")
    """

    def __init__(self, baseline: str = "dense fp32", run: str = "sparse") -> None:
        self.baseline = str(baseline)
        self.run = str(run)
        self.factors: list[Factor] = []

    # --- adding factors -----------------------------------------------------------------------------------------
    def add(self, name: str, baseline: float, run: float, *, kind: str, unit: str = "", note: str = "",
            in_product: bool = True, low: float | None = None, high: float | None = None, spread: str = "",
            flag: str = "") -> Factor:
        """A factor baseline / run from the two costs (both finite and > 0).

        `low`/`high` give the factor's spread (e.g. the quartiles of per-round timing ratios), described by `spread`;
        `flag` is a warning printed with the value (e.g. "wide spread")."""
        _check_kind(kind)
        for label, v in (("baseline", baseline), ("run", run)):
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"factor {name!r}: {label} cost must be a finite number > 0, got {v!r}")
        if (low is None) != (high is None):
            raise ValueError(f"factor {name!r}: give both low and high for a spread, or neither")
        if low is not None and not (0 < low <= high and math.isfinite(high)):
            raise ValueError(f"factor {name!r}: spread must satisfy 0 < low <= high < inf, got {low!r}, {high!r}")
        return self._append(Factor(name, float(baseline) / float(run), kind, float(baseline), float(run), unit,
                                   note, in_product, None if low is None else float(low),
                                   None if high is None else float(high), spread, flag))

    def add_missing(self, name: str, reason: str, *, kind: str, in_product: bool = True,
                    baseline: float | None = None) -> Factor:
        """A factor that could not be computed; shown as such and never multiplied in."""
        _check_kind(kind)
        return self._append(Factor(name, None, kind, baseline, None, "", reason, in_product))

    def add_compute(self, baseline_cost, run_cost, *, baseline_macs: str = "effective") -> Factor:
        """Effective MACs (modelled), from two ModelCosts or their `to_dict()`s (e.g. read back from results). `baseline_macs="dense"` charges the baseline a dense kernel's MACs instead
        of its own effective MACs (the default, which credits the baseline with its ReLU zeros too)."""
        if baseline_macs not in ("effective", "dense"):
            raise ValueError(f"baseline_macs must be 'effective' or 'dense', got {baseline_macs!r}")
        b = _get(baseline_cost, "effective_macs" if baseline_macs == "effective" else "dense_macs")
        what = "training step" if _get(run_cost, "training") else "inference"
        return self.add("compute", b, _get(run_cost, "effective_macs"), kind="modelled", unit="MACs",
                        note=f"{baseline_macs} MACs of the baseline vs effective MACs of the run, per {what} "
                             f"(nonzero operand pairs measured in a real pass)")

    def add_precision(self, baseline_cost, run_cost) -> Factor:
        """Compute energy per effective MAC (modelled from bit widths and the energy table)."""
        bits = ", ".join(f"{k} {'/'.join(v)}" for k, v in _get(run_cost, "bits").items())
        table = _get(run_cost, "table")
        return self.add("precision", _get(baseline_cost, "energy_per_mac_j") * 1e12,
                        _get(run_cost, "energy_per_mac_j") * 1e12, kind="modelled", unit="pJ/MAC",
                        note=f"run bits: {bits}; table {getattr(table, 'name', table)}")

    def add_data_from_curves(self, baseline_curve: Sequence[tuple[float, float]],
                             run_curve: Sequence[tuple[float, float]], *, target: float | None = None,
                             tolerance: float = 0.0, name: str = "data", in_product: bool = True) -> Factor:
        """Training samples seen until each reaches `target` (default: the baseline's final accuracy - tolerance).

        Curves are sequences of (samples seen, test accuracy) in training order.
        """
        return self._from_curves(name, baseline_curve, run_curve, target, tolerance, "samples", in_product)

    def add_epochs_from_curves(self, baseline_acc: Sequence[float], run_acc: Sequence[float], *,
                               target: float | None = None, tolerance: float = 0.0,
                               in_product: bool = False) -> Factor:
        """Epochs until each reaches the target; accuracies are per epoch (epoch 1 first). Not in the product by
        default: on the same training set it restates the data factor."""
        return self._from_curves("epochs", [(i + 1, a) for i, a in enumerate(baseline_acc)],
                                 [(i + 1, a) for i, a in enumerate(run_acc)], target, tolerance, "epochs",
                                 in_product)

    def add_speed(self, baseline_seconds: float, run_seconds: float, *, note: str = "",
                  in_product: bool = False) -> Factor:
        """Measured inference time (medians of interleaved repeats, please)."""
        return self.add("speed", baseline_seconds, run_seconds, kind="measured", unit="s", in_product=in_product,
                        note=note or "inference-engine time; realises the compute factor, so not multiplied again")

    def add_energy(self, baseline_result, run_result, *, in_product: bool = False) -> Factor:
        """Metered energy of the two runs (MeterResults); 'estimated' unless both were measured."""
        kind = "measured" if not (baseline_result.estimated or run_result.estimated) else "estimated"
        return self.add("energy (metered)", baseline_result.energy_j, run_result.energy_j, kind=kind, unit="J",
                        in_product=in_product, note=f"{run_result.source}; a check on the product, not a factor")

    def _from_curves(self, name: str, base: Sequence, run: Sequence, target: float | None, tolerance: float,
                     unit: str, in_product: bool) -> Factor:
        if not base or not run:
            raise ValueError(f"{name} factor needs two non-empty learning curves, got {len(base)} and {len(run)} "
                             f"points")
        if not (isinstance(tolerance, (int, float)) and tolerance >= 0):
            raise ValueError(f"tolerance must be a number >= 0, got {tolerance!r}")
        final = float(list(base)[-1][1])
        goal = (final if target is None else float(target)) - float(tolerance)
        b, r = samples_to_reach(base, goal), samples_to_reach(run, goal)
        what = f"to reach test accuracy {goal:.4g}"
        if b is None:
            return self.add_missing(name, f"baseline never reached {goal:.4g}", kind="measured",
                                    in_product=in_product)
        if r is None:
            best = max(float(a) for _, a in run)
            return self.add_missing(name, f"not reached: the run's best accuracy {best:.4g} < {goal:.4g}",
                                    kind="measured", in_product=in_product, baseline=b)
        return self.add(name, b, r, kind="measured", unit=unit, note=f"{unit} {what}", in_product=in_product)

    def _append(self, factor: Factor) -> Factor:
        if any(f.name == factor.name for f in self.factors):
            raise ValueError(f"the ledger already has a {factor.name!r} factor")
        self.factors.append(factor)
        return factor

    # --- results -------------------------------------------------------------------------------------------------
    @property
    def product(self) -> float | None:
        """Product of the available factors marked in_product (None if there are none)."""
        vals = [f.value for f in self.factors if f.in_product and f.value is not None]
        return math.prod(vals) if vals else None

    @property
    def product_complete(self) -> bool:
        return all(f.value is not None for f in self.factors if f.in_product)

    def product_label(self) -> str:
        used = [f.name for f in self.factors if f.in_product and f.value is not None]
        missing = [f.name + (" (not reached)" if "reached" in f.note else " (n/a)")
                   for f in self.factors if f.in_product and f.value is None]
        label = "product (" + " x ".join(used) + ")"
        if missing:
            label += f"; excludes {', '.join(missing)}"
        return label

    def product_kind(self) -> str:
        kinds = {f.kind for f in self.factors if f.in_product and f.value is not None}
        return "+".join(k for k in KINDS if k in kinds) or "-"

    def to_dict(self) -> dict:
        return {"baseline": self.baseline, "run": self.run, "factors": [f.to_dict() for f in self.factors],
                "product": self.product, "product_complete": self.product_complete,
                "product_label": self.product_label(), "product_kind": self.product_kind()}

    def table_rows(self) -> list[list[Any]]:
        rows = []
        for f in self.factors:
            value = f.value_text()
            note = f.note + (f"; [low-high]: {f.spread}" if f.spread else "") + \
                ("" if f.in_product else " (not in product)")
            rows.append([f.name, value, f.kind, _num(f.baseline), _num(f.run), f.unit, note.strip()])
        p = self.product
        rows.append(["product", f"{p:.4g}x" if p is not None else "n/a", self.product_kind(), "", "", "",
                     self.product_label()])
        return rows

    def format_table(self) -> str:
        headers = ["factor", "saving", "kind", "baseline", "run", "unit", "note"]
        rows = [headers] + [[str(c) for c in r] for r in self.table_rows()]
        widths = [max(len(r[i]) for r in rows) for i in range(len(headers) - 1)]
        lines = []
        for r in rows:
            lines.append("  ".join(f"{c:<{w}}" for c, w in zip(r[:-1], widths)) + "  " + r[-1])
        return f"savings of {self.run} against {self.baseline} (baseline / run; > 1 saves)\n" + "\n".join(lines)

    def figure(self):
        """Log-scale bar chart: one bar per factor and the product, coloured by kind; missing factors marked."""
        from frugalnet.utils.plotting import pyplot

        plt = pyplot()

        colours = {"measured": "#2b8cbe", "modelled": "#f03b20", "estimated": "#fdae6b"}
        entries = [(f.name + ("" if f.in_product else " *"), f.value, f.kind) for f in self.factors]
        entries.append(("product", self.product, self.product_kind()))
        fig, ax = plt.subplots(figsize=(7, 0.5 * len(entries) + 1.2))
        ax.set_xscale("log")
        vals = [v for _, v, _ in entries if v is not None] or [1.0]
        vals += [f.low for f in self.factors if f.low is not None] + [f.high for f in self.factors if f.high]
        lo, hi = min(min(vals), 1.0) / 2, max(max(vals), 1.0) * 3
        for i, (name, v, kind) in enumerate(entries):
            y = len(entries) - 1 - i
            if v is None:
                ax.text(1.0, y, "  not reached / n/a", va="center", ha="left", fontsize=9, color="#555")
                continue
            colour = colours.get(kind.split("+")[0], "#888")
            ax.barh(y, v - 1.0, left=1.0, color=colour, hatch="//" if name == "product" else None,
                    edgecolor="black", linewidth=0.5)
            f = self.factors[i] if i < len(self.factors) else None
            if f is not None and f.low is not None:
                # The value (e.g. a ratio of medians) need not lie inside the spread (e.g. quartiles of per-round
                # ratios); matplotlib refuses negative error lengths, so a bar stops at the value on that side.
                ax.errorbar(v, y, xerr=[[max(v - f.low, 0.0)], [max(f.high - v, 0.0)]], fmt="none", ecolor="black",
                            capsize=3)
            label = f" {v:.3g}x ({kind})" + (f" {f.flag}" if f is not None and f.flag else "")
            ax.text(max(v, f.high if f is not None and f.high else 1.0, 1.0), y, label, va="center", ha="left",
                    fontsize=8)
        ax.axvline(1.0, color="black", linewidth=0.8)
        from matplotlib.patches import Patch

        ax.legend(handles=[Patch(color=c, label=k) for k, c in colours.items()], loc="lower right", fontsize=7)
        ax.set_xlim(lo, hi * 3)
        ax.set_yticks(range(len(entries)))
        ax.set_yticklabels([n for n, _, _ in reversed(entries)])
        ax.set_xlabel(f"saving factor: {self.baseline} / {self.run} (log scale; > 1 saves)")
        ax.set_title(f"Savings ledger: {self.run} vs {self.baseline}  (* not in product)", fontsize=10)
        fig.tight_layout()
        return fig

    def add_to_report(self, report, name: str = "ledger") -> None:
        """Append the ledger table and its log-scale bar chart to a frugalnet.report.Report."""
        report.table(["factor", "saving", "kind", "baseline", "run", "unit", "note"], self.table_rows(),
                     caption=f"{name}: savings of {self.run} against {self.baseline} (baseline / run; > 1 saves; "
                             f"each factor measured, modelled or estimated)")
        report.figure(self.figure(), f"{name}-ledger", caption=f"{name}: savings factors, log scale; colour = "
                                                               f"measured (blue), modelled (red), estimated (orange)")


def _get(cost, key: str):
    """A field of a ModelCost or of its to_dict() (so costs stored in resumable results work too)."""
    if isinstance(cost, dict):
        if key not in cost:
            raise ValueError(f"cost dict has no {key!r}; pass a ModelCost or ModelCost.to_dict()")
        return cost[key]
    return cost.bits_used() if key == "bits" else getattr(cost, key)


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")


def _num(v: float | None) -> str:
    if v is None:
        return ""
    return f"{v:.4g}"
