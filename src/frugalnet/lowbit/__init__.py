"""Low-bit (4- and 8-bit) training, simulated faithfully on CPU: number formats, autograd Functions that quantize
every GEMM operand as a recipe says, named recipes, in-place conversion and real packed 4-bit storage."""
from frugalnet.lowbit import formats
from frugalnet.lowbit.formats import FORMATS, NumberFormat, get_format
from frugalnet.lowbit.convert import quantizable_layers, quantize_, quantized_layers
from frugalnet.lowbit.layers import QuantConv2d, QuantLinear, QuantSparseConv2d, QuantSparseLinear
from frugalnet.lowbit.recipes import (FP8, FP32_RECIPE, IBM4, IBM4_NEAREST, INT8, MXFP4, NVFP4, RECIPES, LayerRecipe,
                                      QuantSpec, Recipe, get_recipe)

__all__ = ["formats", "FORMATS", "NumberFormat", "get_format", "quantize_", "quantizable_layers", "quantized_layers",
           "QuantLinear", "QuantConv2d", "QuantSparseLinear", "QuantSparseConv2d", "Recipe", "LayerRecipe", "QuantSpec", "RECIPES", "get_recipe",
           "IBM4", "IBM4_NEAREST", "MXFP4", "NVFP4", "FP8", "INT8", "FP32_RECIPE"]
