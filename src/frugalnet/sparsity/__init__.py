"""Making and keeping networks sparse: in-place conversion of any model (mask builders live in frugalnet.nn.masks)."""
from frugalnet.nn import masks
from frugalnet.nn.masks import complementary, fixed_fan_in
from frugalnet.sparsity.convert import sparsify_

__all__ = ["masks", "sparsify_", "fixed_fan_in", "complementary"]
