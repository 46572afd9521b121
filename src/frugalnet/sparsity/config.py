"""What `sparsify_` does, as small frozen configs validated on construction (one handler per config type).

Weight configs say how each weight's mask is chosen: MagnitudeConfig (largest |w|, per layer or one global
threshold), RandomFanInConfig (each unit keeps a random fixed fan-in; the keyword form of `sparsify_`), NMConfig
(N:M structured, e.g. 2:4), GivenMasksConfig (masks by layer name). KWinnersConfig turns activations into k-WTA.
Common options of the weight configs: `per_layer` overrides ({layer name: sparsity}), `erk` (Erdos-Renyi-Kernel
layer-wise densities with the same total), `embeddings` (also make nn.Embedding weights sparse).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

from frugalnet.utils.validation import check_fraction, check_positive_int

SCOPES = ("layer", "global")

# Activation modules that become k-WTA, by class name (Hugging Face's transformers.activations.* included, matched
# by name so transformers need not be installed).
ACTIVATIONS = ("ReLU", "ReLU6", "GELU", "SiLU", "Hardswish", "LeakyReLU", "ELU", "Mish",
               "GELUActivation", "NewGELUActivation", "FastGELUActivation", "QuickGELUActivation",
               "GELUTanh", "PytorchGELUTanh", "AccurateGELUActivation", "MishActivation", "SiLUActivation",
               "ReLUSquaredActivation", "LinearActivation", "ClippedGELUActivation", "LaplaceActivation")


def _check_per_layer(per_layer: Mapping[str, float], label: str = "per_layer") -> Mapping[str, float]:
    if not isinstance(per_layer, Mapping):
        raise TypeError(f"{label} must be a mapping {{layer name: sparsity}}, got {type(per_layer).__name__}")
    for name, v in per_layer.items():
        if not isinstance(name, str):
            raise TypeError(f"{label} keys must be layer names (str), got {name!r}")
        check_fraction(f"{label}[{name!r}]", v)
    return MappingProxyType(dict(per_layer))


@dataclass(frozen=True)
class _WeightConfig:
    per_layer: Mapping[str, float] = field(default_factory=dict)
    erk: bool = False
    embeddings: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "per_layer", _check_per_layer(self.per_layer))


@dataclass(frozen=True)
class MagnitudeConfig(_WeightConfig):
    """Keep the largest |w|. scope="layer": every layer at `sparsity` (or its per_layer / ERK value);
    scope="global": one threshold over all chosen weights, so layers end at different sparsities."""
    sparsity: float = 0.9
    scope: str = "layer"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fraction("sparsity", self.sparsity)
        if self.scope not in SCOPES:
            raise ValueError(f"scope must be one of {SCOPES}, got {self.scope!r}")
        if self.scope == "global" and (self.erk or self.per_layer):
            raise ValueError("scope='global' picks each layer's sparsity itself; drop erk / per_layer or use "
                             "scope='layer'")


@dataclass(frozen=True)
class RandomFanInConfig(_WeightConfig):
    """Each output unit keeps exactly round((1 - sparsity) * fan_in) weights at random; layer i (in module order,
    Linear/Conv2d) draws from seed + i, so every process builds the same masks."""
    sparsity: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fraction("sparsity", self.sparsity)
        check_positive_int("seed", self.seed, minimum=0)


@dataclass(frozen=True)
class NMConfig(_WeightConfig):
    """N:M structured sparsity (keep the n largest |w| in every m consecutive inputs), e.g. 2:4."""
    n: int = 2
    m: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive_int("n", self.n)
        check_positive_int("m", self.m)
        if self.n >= self.m:
            raise ValueError(f"NMConfig needs n < m (n={self.n}, m={self.m}): n == m would keep every weight")
        if self.per_layer or self.erk:
            raise ValueError("NMConfig sets every layer to n:m; per_layer and erk do not apply")

    @property
    def sparsity(self) -> float:
        return 1.0 - self.n / self.m


@dataclass(frozen=True)
class GivenMasksConfig(_WeightConfig):
    """Masks given by layer name ({name: bool tensor shaped like the weight}; for nn.MultiheadAttention give
    "<name>.in_proj_weight" and "<name>.out_proj"). Only the named layers are converted."""
    masks: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.masks, Mapping) or not self.masks:
            raise ValueError("GivenMasksConfig needs a non-empty mapping {layer name: bool mask}")
        object.__setattr__(self, "masks", MappingProxyType(dict(self.masks)))


@dataclass(frozen=True)
class KWinnersConfig:
    """Activations (class names in `activations`) anywhere in the tree become k-WTA with `percent_on` of the units
    on (per sample for (B, n), per token for (..., n), over the map for (B, C, H, W) unless local=True).
    `per_layer`: {activation module name: percent_on} overrides. `keep_activation`: apply k-WTA after the
    activation instead of replacing it (keeps GELU's shape; ReLU is replaced either way)."""
    percent_on: float = 0.1
    k_inference_factor: float = 1.5
    boost_strength: float = 1.5
    boost_strength_factor: float = 0.85
    duty_cycle_period: int = 1000
    local: bool = False
    activations: tuple[str, ...] = ACTIVATIONS
    per_layer: Mapping[str, float] = field(default_factory=dict)
    keep_activation: bool = False

    def __post_init__(self) -> None:
        check_fraction("percent_on", self.percent_on, low_inclusive=False)
        if not self.k_inference_factor >= 1.0:
            raise ValueError(f"k_inference_factor must be >= 1.0, got {self.k_inference_factor}")
        if not self.boost_strength >= 0.0:
            raise ValueError(f"boost_strength must be >= 0, got {self.boost_strength}")
        check_fraction("boost_strength_factor", self.boost_strength_factor, high_inclusive=True)
        check_positive_int("duty_cycle_period", self.duty_cycle_period)
        if isinstance(self.activations, str):
            object.__setattr__(self, "activations", (self.activations,))
        object.__setattr__(self, "activations", tuple(self.activations))
        if not isinstance(self.per_layer, Mapping):
            raise TypeError(f"per_layer must be a mapping {{module name: percent_on}}, got {self.per_layer!r}")
        for name, v in self.per_layer.items():
            check_fraction(f"per_layer[{name!r}]", v, low_inclusive=False)
        object.__setattr__(self, "per_layer", MappingProxyType(dict(self.per_layer)))

    @classmethod
    def from_sparsity(cls, sparsity: float, **kwargs) -> "KWinnersConfig":
        """The same with the fraction of *inactive* units given instead (percent_on = 1 - sparsity)."""
        check_fraction("activation sparsity", sparsity, low_inclusive=False)
        return cls(percent_on=1.0 - sparsity, **kwargs)

    def module_kwargs(self) -> dict:
        return dict(k_inference_factor=self.k_inference_factor, boost_strength=self.boost_strength,
                    boost_strength_factor=self.boost_strength_factor, duty_cycle_period=self.duty_cycle_period)


WEIGHT_CONFIGS = (MagnitudeConfig, RandomFanInConfig, NMConfig, GivenMasksConfig)
