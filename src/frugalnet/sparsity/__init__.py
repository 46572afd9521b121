"""Making and keeping networks sparse: mask builders and in-place conversion."""
from frugalnet.sparsity import masks
from frugalnet.sparsity.masks import complementary, fixed_fan_in

__all__ = ["masks", "sparsify_", "fixed_fan_in", "complementary"]


def __getattr__(name: str):
    # Lazy: convert.py imports frugalnet.nn, whose sparse layers import the masks above.
    if name == "sparsify_":
        from frugalnet.sparsity.convert import sparsify_

        return sparsify_
    raise AttributeError(f"module 'frugalnet.sparsity' has no attribute {name!r}")
