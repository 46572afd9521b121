"""frugalnet: deep learning that costs less energy, and proves it.

    import frugalnet as fn
    model = fn.sparsify_(my_cnn, weight_sparsity=0.7, activation_sparsity=0.9, exclude=["fc_out"])
    result = fn.run_study("sparse-vs-dense", fn.get_study("sparse-vs-dense").config_cls(epochs=3))
"""
from frugalnet import continual, data, energy, lowbit, nn, report, sparsity, studies, utils
from frugalnet.data import DataBundle, Split, add_pixel_noise
from frugalnet.energy import Ledger, Meter, model_cost
from frugalnet.lowbit import LayerRecipe, QuantSpec, Recipe, get_recipe, quantize_
from frugalnet.lowbit.packing import load_packed, save_packed
from frugalnet.nn import (DendriteSegments, DendriticLinear, DendriticMLP, KWinners, KWinners2d, SparseConv2d,
                          SparseLinear, update_boost_strength)
from frugalnet.sparsity.convert import sparsify_
from frugalnet.studies import (FitConfig, RunContext, StudyConfig, available_studies, evaluate, fit, get_study,
                               register_study, resume_run, run_study)

__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy: the engine and kernels pull in numba, frames pulls in scipy.spatial; `import frugalnet` need not pay.
    if name in ("engine", "frames", "kernels"):
        import importlib

        return importlib.import_module(f"frugalnet.{name}")
    raise AttributeError(f"module 'frugalnet' has no attribute {name!r}")

__all__ = [
    "continual", "data", "energy", "lowbit", "engine", "frames", "kernels", "nn", "report", "sparsity", "studies", "utils",
    "DataBundle", "Split", "add_pixel_noise", "Ledger", "Meter", "model_cost",
    "LayerRecipe", "QuantSpec", "Recipe", "get_recipe", "quantize_", "load_packed", "save_packed",
    "DendriteSegments", "DendriticLinear", "DendriticMLP", "KWinners", "KWinners2d", "SparseLinear", "SparseConv2d", "update_boost_strength", "sparsify_",
    "FitConfig", "RunContext", "StudyConfig", "available_studies", "evaluate", "fit", "get_study",
    "register_study", "resume_run", "run_study", "__version__",
]
