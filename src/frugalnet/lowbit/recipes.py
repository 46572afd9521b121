"""Training recipes: which number format each GEMM operand takes, as frozen dataclasses a user can copy and change.

    import dataclasses, frugalnet.lowbit as lb
    mine = dataclasses.replace(lb.IBM4, name="ibm4-all4", first_last=None)   # no 8-bit first/last layers
    lb.quantize_(model, mine)

Operands: `weight` (W), `activation` (the layer input X), `grad` (the incoming gradient dY). The forward GEMM takes
(W, X); the input-gradient GEMM dX = dY W takes (dY, W); the weight-gradient GEMM dW = dY^T X takes (dY, X).
Accumulation is FP32 and master weights stay FP32 in every recipe.
"""
from __future__ import annotations

from dataclasses import dataclass

from frugalnet.lowbit.formats import FORMATS, ROUNDING_MODES, NumberFormat, get_format


@dataclass(frozen=True)
class QuantSpec:
    """One operand's format and rounding mode ("nearest" = to nearest, ties to even; "stochastic" = seeded)."""

    format: str = "fp32"
    rounding: str = "nearest"

    def __post_init__(self) -> None:
        get_format(self.format)
        if self.rounding not in ROUNDING_MODES:
            raise ValueError(f"rounding must be one of {ROUNDING_MODES}, got {self.rounding!r}")

    @property
    def number_format(self) -> NumberFormat:
        return FORMATS[self.format]

    @property
    def bits(self) -> int:
        return self.number_format.bits

    @property
    def kind(self) -> str:
        return self.number_format.kind

    @property
    def deterministic(self) -> bool:
        return self.rounding == "nearest" or self.kind == "none"


FP32 = QuantSpec("fp32")


@dataclass(frozen=True)
class LayerRecipe:
    """Formats for one layer's three GEMMs. `hadamard`: random Hadamard transform (blocks of `hadamard_size`) on both
    inputs of the weight-gradient GEMM, along its reduction dimension (tokens / batch)."""

    weight: QuantSpec = FP32
    activation: QuantSpec = FP32
    grad: QuantSpec = FP32
    hadamard: bool = False
    hadamard_size: int = 16

    def __post_init__(self) -> None:
        n = self.hadamard_size
        if n < 2 or n & (n - 1):
            raise ValueError(f"hadamard_size must be a power of two >= 2, got {n}")
        for role, spec, wrong in (("activation", self.activation, "weight"), ("weight", self.weight, "activation"),
                                  ("grad", self.grad, "activation")):
            if spec.number_format.use == wrong:
                fits = sorted(n for n, f in FORMATS.items() if f.use in (role, "any") and n != "fp32")
                raise ValueError(f"{spec.format} is a{'n' if wrong[0] == 'a' else ''} {wrong} format and cannot "
                                 f"quantize the {role}; use one of {fits}")

    @property
    def gemm_bits(self) -> dict[str, tuple[int, int]]:
        w, a, g = self.weight.bits, self.activation.bits, self.grad.bits
        return {"forward": (w, a), "grad_input": (g, w), "grad_weight": (g, a)}


@dataclass(frozen=True)
class Recipe(LayerRecipe):
    """A named recipe: formats for every converted layer, and `first_last` for the first and last converted layers
    (in `model.named_modules()` order), or None to treat them like the rest. `pact_decay`: L2 coefficient on PACT
    clip values (the PACT paper's regulariser, added to alpha's gradient). `seed`: seeds stochastic rounding and the
    Hadamard signs (layer i uses seed + i)."""

    name: str = "custom"
    first_last: LayerRecipe | None = None
    pact_decay: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pact_decay < 0:
            raise ValueError(f"pact_decay must be >= 0, got {self.pact_decay}")

    def for_layer(self, boundary: bool) -> LayerRecipe:
        if boundary and self.first_last is not None:
            return self.first_last
        return LayerRecipe(self.weight, self.activation, self.grad, self.hadamard, self.hadamard_size)


_INT8_EDGES = LayerRecipe(QuantSpec("int8"), QuantSpec("int8"), QuantSpec("fp8-e5m2"))
_FP8_EDGES = LayerRecipe(QuantSpec("fp8-e4m3"), QuantSpec("fp8-e4m3"), QuantSpec("fp8-e5m2"))

FP32_RECIPE = Recipe(name="fp32")
# ibm4 rounds its radix-4 gradients stochastically (each of the two phases onto its own grid, unbiased). Why: with
# round-to-nearest the 4x gaps between radix-4 levels bias gradient magnitudes (more mass falls below a gap's
# midpoint than above it) and flush everything under half the smallest level; on the character Transformer of the
# lowbit study (400 steps, seed 0) nearest rounding cost +4.9% validation loss over FP32 (+5.4% at 1,000 steps),
# stochastic +1.2%. `ibm4-nearest` keeps the deterministic variant: bit-reproducible, and identical between one
# process and several (the 2-process test uses it).
IBM4 = Recipe(name="ibm4", weight=QuantSpec("int4-sawb"), activation=QuantSpec("pact4"),
              grad=QuantSpec("fp4-radix4", "stochastic"), first_last=_INT8_EDGES, pact_decay=1e-4)
IBM4_NEAREST = Recipe(name="ibm4-nearest", weight=QuantSpec("int4-sawb"), activation=QuantSpec("pact4"),
                      grad=QuantSpec("fp4-radix4"), first_last=_INT8_EDGES, pact_decay=1e-4)
MXFP4 = Recipe(name="mxfp4", weight=QuantSpec("mxfp4"), activation=QuantSpec("mxfp4"), grad=QuantSpec("mxfp4"),
               first_last=_FP8_EDGES)
NVFP4 = Recipe(name="nvfp4", weight=QuantSpec("nvfp4"), activation=QuantSpec("nvfp4"),
               grad=QuantSpec("nvfp4", "stochastic"), hadamard=True, first_last=_FP8_EDGES)
FP8 = Recipe(name="fp8", weight=QuantSpec("fp8-e4m3"), activation=QuantSpec("fp8-e4m3"),
             grad=QuantSpec("fp8-e5m2"))
INT8 = Recipe(name="int8", weight=QuantSpec("int8"), activation=QuantSpec("int8"), grad=QuantSpec("int8"))

RECIPES: dict[str, Recipe] = {r.name: r for r in (FP32_RECIPE, IBM4, IBM4_NEAREST, MXFP4, NVFP4, FP8, INT8)}


def get_recipe(recipe: str | Recipe) -> Recipe:
    """A Recipe by name ("ibm4", "ibm4-nearest", "mxfp4", "nvfp4", "fp8", "int8", "fp32"), or the Recipe itself."""
    if isinstance(recipe, Recipe):
        return recipe
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; choose one of {sorted(RECIPES)}")
    return RECIPES[recipe]
