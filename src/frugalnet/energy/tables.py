"""Energy per operation and per byte moved: the tables the cost model prices MACs and memory traffic with.

Default: Horowitz, "Computing's energy problem (and what we can do about it)", ISSCC 2014, 45 nm at 0.9 V:
FP32 mult 3.7 pJ, add 0.9 pJ; FP16 mult 1.1 pJ, add 0.4 pJ; INT8 mult 0.2 pJ, add 0.03 pJ; a 32-bit DRAM read
640 pJ and a 32-bit read from a small SRAM cache 5 pJ (the per-32-bit figures as tabulated from Horowitz's talk by
Han et al., "Learning both Weights and Connections", NeurIPS 2015).

4-bit is not in Horowitz's table; we extrapolate from INT8: an array multiplier has ~n^2 full-adder cells and a
ripple-carry adder ~n, so mult(4) = 0.2 x (4/8)^2 = 0.05 pJ and add(4) = 0.03 x 4/8 = 0.015 pJ. This is labelled an
extrapolation wherever it is used. A MAC whose operands have different widths is charged at the wider one (a
conservative choice: a real 4x8 multiplier costs less). Widths in between are charged at the next width in the table
(6 bits -> 8-bit figures).

A user can supply a table for other hardware as JSON:
    {"name": "...", "source": "...", "mult_pj": {"32": 3.7, "8": 0.2}, "add_pj": {"32": 0.9, "8": 0.03},
     "memory_pj_per_byte": {"dram": 160.0, "sram": 1.25}, "weight_level": "dram", "activation_level": "sram"}
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class EnergyTable:
    """Picojoules per multiply and per add by operand width, and per byte moved at each memory level.

    Weights are charged at `weight_level` (read from DRAM once per batch by default: they do not fit in a small
    cache), activations and gradients at `activation_level` (a nearby SRAM by default).
    """

    name: str
    source: str
    mult_pj: dict[int, float]
    add_pj: dict[int, float]
    memory_pj_per_byte: dict[str, float]
    weight_level: str = "dram"
    activation_level: str = "sram"
    extrapolated_bits: tuple[int, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.mult_pj or set(self.mult_pj) != set(self.add_pj):
            raise ValueError(f"energy table {self.name!r}: mult_pj and add_pj must list the same bit widths, got "
                             f"{sorted(self.mult_pj)} and {sorted(self.add_pj)}")
        for kind, table in (("mult_pj", self.mult_pj), ("add_pj", self.add_pj),
                            ("memory_pj_per_byte", self.memory_pj_per_byte)):
            for k, v in table.items():
                if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                    raise ValueError(f"energy table {self.name!r}: {kind}[{k!r}] must be a number >= 0, got {v!r}")
        for level in (self.weight_level, self.activation_level):
            if level not in self.memory_pj_per_byte:
                raise ValueError(f"energy table {self.name!r}: memory level {level!r} is not in memory_pj_per_byte "
                                 f"({sorted(self.memory_pj_per_byte)})")

    def width(self, bits: int) -> int:
        """The table width a `bits`-wide operand is charged at: the smallest listed width >= bits."""
        if not isinstance(bits, int) or bits < 1:
            raise ValueError(f"bit width must be a positive integer, got {bits!r}")
        fits = [w for w in self.mult_pj if w >= bits]
        if not fits:
            raise ValueError(f"energy table {self.name!r} has no entry for {bits}-bit operands "
                             f"(widths: {sorted(self.mult_pj)})")
        return min(fits)

    def mac_pj(self, *operand_bits: int) -> float:
        """Energy of one multiply-accumulate whose operands have these widths (charged at the widest)."""
        w = self.width(max(operand_bits))
        return self.mult_pj[w] + self.add_pj[w]

    def bytes_pj(self, level: str) -> float:
        return self.memory_pj_per_byte[level]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mult_pj"] = {str(k): v for k, v in self.mult_pj.items()}
        d["add_pj"] = {str(k): v for k, v in self.add_pj.items()}
        d["extrapolated_bits"] = list(self.extrapolated_bits)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "EnergyTable":
        required = ("name", "source", "mult_pj", "add_pj", "memory_pj_per_byte")
        missing = [k for k in required if k not in d]
        if missing:
            raise ValueError(f"energy table is missing {', '.join(missing)} (needs {', '.join(required)})")
        try:
            mult = {int(k): float(v) for k, v in d["mult_pj"].items()}
            add = {int(k): float(v) for k, v in d["add_pj"].items()}
            mem = {str(k): float(v) for k, v in d["memory_pj_per_byte"].items()}
        except (TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"energy table {d.get('name')!r}: widths must be integers and energies numbers "
                             f"({exc})") from None
        return cls(name=str(d["name"]), source=str(d["source"]), mult_pj=mult, add_pj=add, memory_pj_per_byte=mem,
                   weight_level=str(d.get("weight_level", "dram")),
                   activation_level=str(d.get("activation_level", "sram")),
                   extrapolated_bits=tuple(int(b) for b in d.get("extrapolated_bits", ())))

    @classmethod
    def from_json(cls, path: str | Path) -> "EnergyTable":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"energy table file not found: {path}")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"energy table {path} is not valid JSON: {exc}") from None
        return cls.from_dict(data)


HOROWITZ_45NM = EnergyTable(
    name="horowitz-45nm",
    source=("Horowitz, ISSCC 2014, 45 nm 0.9 V (FP32, FP16, INT8; DRAM 640 pJ and SRAM 5 pJ per 32-bit read); "
            "4-bit extrapolated from INT8 (mult ~ n^2, add ~ n)"),
    mult_pj={32: 3.7, 16: 1.1, 8: 0.2, 4: 0.2 * (4 / 8) ** 2},
    add_pj={32: 0.9, 16: 0.4, 8: 0.03, 4: 0.03 * (4 / 8)},
    memory_pj_per_byte={"dram": 640.0 / 4, "sram": 5.0 / 4},
    extrapolated_bits=(4,),
)


def resolve_table(table: "EnergyTable | str | Path | dict | None") -> EnergyTable:
    """An EnergyTable from a table, a JSON file path, a dict, or None (Horowitz 45 nm)."""
    if table is None:
        return HOROWITZ_45NM
    if isinstance(table, EnergyTable):
        return table
    if isinstance(table, dict):
        return EnergyTable.from_dict(table)
    if isinstance(table, (str, Path)):
        return EnergyTable.from_json(table)
    raise ValueError(f"energy_table must be an EnergyTable, a dict, a JSON path or None, got {type(table).__name__}")
