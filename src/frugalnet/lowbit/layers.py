"""Quantized Linear / Conv2d modules (and their sparse twins), made by `quantize_` from existing layers.

A converted layer keeps its class's parameters, buffers, masks and hooks (the conversion swaps the class in place, so
a SparseLinear stays sparse and a quantized one is still an nn.Linear). It adds:
    lowbit          the LayerRecipe its GEMMs follow
    gemm_bits       {"forward": (w, a), "grad_input": (g, w), "grad_weight": (g, a)} bit widths (32 = FP32)
    act_alpha       PACT's trainable clip (a Parameter, only for PACT activations); set from the first batch's
                    max|x| (all-reduced) and then trained with PACT's straight-through gradient
    pact_signed     buffer: 1 if the layer's input can be negative (clip to [-alpha, alpha]), 0 for [0, alpha]
    qstep           buffer: training steps taken; with the layer seed it seeds stochastic rounding, so a resumed run
                    draws the same numbers
    hadamard_signs  buffer: the random signs of the Hadamard transform (recipes with hadamard=True)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from frugalnet.lowbit.functions import GemmState, QuantConv2dFunction, QuantLinearFunction, global_amax
from frugalnet.lowbit.recipes import LayerRecipe
from frugalnet.nn.sparse import SparseConv2d, SparseLinear
from frugalnet.utils.distributed import is_distributed

class _QuantMixin:
    """State and helpers shared by every quantized layer."""

    lowbit: LayerRecipe

    def _init_lowbit(self, layer_recipe: LayerRecipe, recipe_name: str, seed: int, pact_decay: float) -> None:
        self.lowbit = layer_recipe
        self.recipe_name = recipe_name
        self.lowbit_seed = int(seed)
        self.pact_decay = float(pact_decay)
        self.prequantized = False
        device = self.weight.device
        self.register_buffer("qstep", torch.zeros((), dtype=torch.int64, device=device))
        if layer_recipe.activation.format.startswith("pact"):
            self.act_alpha = nn.Parameter(torch.zeros((), device=device))
            self.register_buffer("pact_signed", torch.full((), -1, dtype=torch.int8, device=device))
        if layer_recipe.hadamard:
            gen = torch.Generator().manual_seed(self.lowbit_seed)
            signs = torch.randint(0, 2, (layer_recipe.hadamard_size,), generator=gen).float() * 2 - 1
            self.register_buffer("hadamard_signs", signs.to(device))

    @property
    def gemm_bits(self) -> dict[str, tuple[int, int]]:
        return self.lowbit.gemm_bits

    def gemm_state(self) -> GemmState:
        """What the autograd Functions need from this layer, as plain values (they never see the module)."""
        return GemmState(self.lowbit, self.lowbit_seed, int(self.qstep), self.training, bool(self.prequantized),
                         bool(hasattr(self, "pact_signed") and int(self.pact_signed) > 0), self.pact_decay,
                         getattr(self, "hadamard_signs", None), self.weight.device)

    def _prepare_pact(self, x: Tensor) -> Tensor | None:
        """PACT's clip; on the first call, pick signed/unsigned and set alpha to max|x| (all-reduced in training)."""
        if not hasattr(self, "act_alpha"):
            return None
        if int(self.pact_signed) < 0:
            with torch.no_grad():
                negative = (x.detach().amin() < 0).float().reshape(1)
                if self.training and is_distributed():
                    torch.distributed.all_reduce(negative, op=torch.distributed.ReduceOp.MAX)
                self.pact_signed.fill_(int(negative.item() > 0))
                amax = global_amax(x, reduce=self.training)
                self.act_alpha.fill_(float(amax) if float(amax) > 0 else 1.0)
        return self.act_alpha

    def _tick(self) -> None:
        if self.training and torch.is_grad_enabled():
            self.qstep += 1

    @torch.no_grad()
    def quantized_weight(self) -> Tensor:
        """The weight exactly as the forward GEMM sees it."""
        return self.gemm_state().weight(self.weight, dim=1).detach().clone()

    def _lowbit_repr(self) -> str:
        r = self.lowbit
        return (f", recipe={self.recipe_name}, w={r.weight.format}, a={r.activation.format}, "
                f"g={r.grad.format}{'/' + r.grad.rounding if r.grad.rounding != 'nearest' else ''}"
                f"{', hadamard' if r.hadamard else ''}")


class _QuantLinearMixin(_QuantMixin):
    def forward(self, x: Tensor) -> Tensor:
        if x.dim() < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"{type(self).__name__}(in_features={self.in_features}) expects input of shape "
                             f"(*, {self.in_features}), got {tuple(x.shape)}")
        self._tick()
        alpha = self._prepare_pact(x)
        return QuantLinearFunction.apply(x, self.weight, self.bias, alpha, self.gemm_state())

    def extra_repr(self) -> str:
        return super().extra_repr() + self._lowbit_repr()


class _QuantConv2dMixin(_QuantMixin):
    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"{type(self).__name__}(in_channels={self.in_channels}) expects input of shape "
                             f"(batch, {self.in_channels}, H, W), got {tuple(x.shape)}")
        self._tick()
        padding = self.padding
        if self.padding_mode != "zeros":
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding = (0, 0)
        elif isinstance(padding, str):
            if padding == "same":
                x = F.pad(x, self._reversed_padding_repeated_twice)
            padding = (0, 0)
        alpha = self._prepare_pact(x)
        conv = (tuple(self.stride), tuple(padding), tuple(self.dilation), self.groups)
        return QuantConv2dFunction.apply(x, self.weight, self.bias, alpha, self.gemm_state(), conv)

    def extra_repr(self) -> str:
        return super().extra_repr() + self._lowbit_repr()


class QuantLinear(_QuantLinearMixin, nn.Linear):
    """nn.Linear whose three GEMMs follow a low-bit recipe. Shape: (*, in_features) -> (*, out_features)."""


class QuantConv2d(_QuantConv2dMixin, nn.Conv2d):
    """nn.Conv2d whose three GEMMs follow a low-bit recipe. Shape: (B, C_in, H, W) -> (B, C_out, H', W')."""


class QuantSparseLinear(_QuantLinearMixin, SparseLinear):
    """SparseLinear (mask enforced as before) with low-bit GEMMs."""


class QuantSparseConv2d(_QuantConv2dMixin, SparseConv2d):
    """SparseConv2d (mask enforced as before) with low-bit GEMMs."""


QUANTIZED_CLASS: dict[type, type] = {nn.Linear: QuantLinear, nn.Conv2d: QuantConv2d,
                                     SparseLinear: QuantSparseLinear, SparseConv2d: QuantSparseConv2d}
QUANTIZED_TYPES = tuple(QUANTIZED_CLASS.values())
