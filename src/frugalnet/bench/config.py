"""`frugalnet bench`'s settings, validated on construction, and the case groups it knows."""
from __future__ import annotations

from dataclasses import dataclass

LAYER_GROUPS = ("linear", "cnn2")
MODEL_GROUP_NAMES = ("resnet-relu", "resnet-kwta", "bert", "gpt")
LOWBIT_GROUP_NAMES = ("lowbit-linear", "lowbit-gpt")
ALL_GROUPS = LAYER_GROUPS + MODEL_GROUP_NAMES + LOWBIT_GROUP_NAMES


def select_groups(spec: str | None) -> tuple[str, ...]:
    """Case groups named by a comma-separated filter: each item an exact group name or a part of one ("resnet"
    takes both ResNet groups, "lowbit" both low-bit ones); None or "all" takes every group."""
    if spec is None or spec.strip() in ("", "all"):
        return ALL_GROUPS
    chosen = []
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        hits = [g for g in ALL_GROUPS if item == g] or [g for g in ALL_GROUPS if item in g]
        if not hits:
            raise ValueError(f"--cases: no case group matches {item!r}; groups: {', '.join(ALL_GROUPS)}")
        chosen += [g for g in hits if g not in chosen]
    return tuple(g for g in ALL_GROUPS if g in chosen)


@dataclass(frozen=True)
class BenchConfig:
    """quick: fewer, shorter timing rounds; cases: the groups to run (select_groups); torch_compile: include
    torch.compile (its compile takes tens of seconds per model); repeats/min_time: 0 picks the mode's default."""

    quick: bool = False
    threads: int = 2
    seed: int = 0
    repeats: int = 0          # 0: 3 in quick mode, 15 otherwise
    min_time: float = 0.0     # seconds per timed block; 0: 0.01 quick, 0.1 otherwise
    cold_jit: bool = False    # also time a cold JIT compile of the kernels in a fresh cache (subprocess)
    quiet: bool = False
    cases: tuple[str, ...] = ALL_GROUPS
    torch_compile: bool = True
    profile: bool = False     # per model case, the engine's time per program node (engine.profile)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1:
            raise ValueError(f"threads must be an integer >= 1, got {self.threads!r}")
        if not isinstance(self.repeats, int) or self.repeats < 0:
            raise ValueError(f"repeats must be an integer >= 0, got {self.repeats!r}")
        if self.min_time < 0:
            raise ValueError(f"min_time must be >= 0 seconds, got {self.min_time}")
        bad = [c for c in self.cases if c not in ALL_GROUPS]
        if bad:
            raise ValueError(f"cases {bad} unknown; groups: {', '.join(ALL_GROUPS)}")

    @property
    def reps(self) -> int:
        return self.repeats or (3 if self.quick else 15)

    @property
    def block(self) -> float:
        return self.min_time or (0.01 if self.quick else 0.1)

    @property
    def max_seconds(self) -> float:
        """Cap on one case's timing rounds (at least 3 rounds run)."""
        return 10.0 if self.quick else 120.0
