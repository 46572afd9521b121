"""frugalnet: deep learning that costs less energy, and proves it.

    import frugalnet as fn
    model = fn.sparsify_(my_cnn, weight_sparsity=0.7, activation_sparsity=0.9, exclude=["fc_out"])
    fn.fit(model, data.train, fn.FitConfig(epochs=3))
    engine = fn.engine.compile(model, example_input)

The top level holds what a user types: the in-place entry points (`sparsify_`, `quantize_`), their modules and
configs, training and studies, energy accounting. Everything else lives in the subpackages (`fn.nn`, `fn.lowbit`,
`fn.engine`, ...), which are imported on first use. Importing frugalnet changes no global state.
"""
import importlib as _importlib

from frugalnet.energy import Ledger, Meter, model_cost
from frugalnet.experiment import (FitConfig, StudyConfig, available_studies, evaluate, fit, get_study,
                                  register_study, resume_run, run_study)
from frugalnet.lowbit import get_recipe, quantize_
from frugalnet.lowbit.packing import load_packed, save_packed
from frugalnet.nn import DendriticMLP, KWinners, KWinners2d, SparseConv2d, SparseLinear, compact_layers_, fuse_blocks_
from frugalnet.sparsity.convert import sparsify_

__version__ = "0.1.0"

_SUBPACKAGES = ("bench", "continual", "data", "energy", "engine", "experiment", "frames", "kernels", "lowbit",
                "models", "nn", "report", "sparsity", "studies", "utils")


def __getattr__(name: str):
    # Subpackages on first use: the engine and kernels pull in numba, frames pulls in scipy.spatial.
    if name in _SUBPACKAGES:
        return _importlib.import_module(f"frugalnet.{name}")
    raise AttributeError(f"module 'frugalnet' has no attribute {name!r}")


__all__ = [
    "sparsify_", "compact_layers_", "fuse_blocks_", "SparseLinear", "SparseConv2d", "KWinners", "KWinners2d", "DendriticMLP",
    "quantize_", "get_recipe", "save_packed", "load_packed",
    "fit", "evaluate", "FitConfig", "run_study", "resume_run", "get_study", "available_studies", "register_study",
    "StudyConfig", "Meter", "Ledger", "model_cost", "__version__", *_SUBPACKAGES,
]
