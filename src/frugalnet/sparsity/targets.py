"""The weights `sparsify_` can make sparse, found anywhere in a module tree, and one way to read and set their masks.

Kinds: nn.Linear and nn.Conv2d (swapped for SparseLinear / SparseConv2d, which enforce their masks), Hugging Face
`Conv1D` (weight (in, out), found by class name), nn.MultiheadAttention projections (in_proj_weight or q/k/v
weights, out_proj), other nn.Linear subclasses, and optionally nn.Embedding. Layers that are not swapped keep their
class (so `save_pretrained`, attention code that reads `out_proj.weight` directly, and subclasses behave as before)
and get a `<param>_mask` buffer plus a forward pre-hook that re-applies it before every forward: any update (any
optimizer, a manual `p -= lr * g`, `load_state_dict`) is masked before the weight is used.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from frugalnet.nn.sparse import SparseWeightMixin


@dataclass
class Target:
    """One weight to make sparse: `name` is how configs and `exclude` refer to it."""
    name: str
    module: nn.Module          # the module holding the parameter
    param: str                 # its attribute name ("weight", "in_proj_weight", ...)
    kind: str                  # linear | conv2d | conv1d | mha | linear_subclass | embedding | sparse
    hook_owner: nn.Module      # the module whose forward uses the parameter (the MHA for its out_proj)
    legacy_index: int = -1     # position among plain Linear/Conv2d layers (the seed offset of random masks)

    @property
    def weight(self) -> Tensor:
        return getattr(self.module, self.param)

    @property
    def state_key(self) -> str:
        """The parameter's key in the model's state_dict."""
        if self.kind == "mha" and self.param != "weight":     # "<mha>.in_proj_weight" is already the key
            return self.name
        return f"{self.name}.{self.param}" if self.name else self.param

    @property
    def transposed(self) -> bool:
        """True when the weight is stored (in, out) (HF Conv1D): masks are built on its transpose."""
        return self.kind == "conv1d"


def _is_conv1d(m: nn.Module) -> bool:
    return type(m).__name__ == "Conv1D" and isinstance(getattr(m, "weight", None), nn.Parameter) \
        and m.weight.dim() == 2


def find_targets(model: nn.Module, embeddings: bool = False) -> list[Target]:
    """Every weight `sparsify_` can convert, in module order."""
    targets: list[Target] = []
    mha_out: set[int] = set()
    legacy = 0
    for name, m in model.named_modules():
        if isinstance(m, nn.MultiheadAttention):
            params = ["in_proj_weight"] if m._qkv_same_embed_dim else ["q_proj_weight", "k_proj_weight",
                                                                       "v_proj_weight"]
            for p in params:
                targets.append(Target(f"{name}.{p}" if name else p, m, p, "mha", m))
            out_name = f"{name}.out_proj" if name else "out_proj"
            targets.append(Target(out_name, m.out_proj, "weight", "mha", m))
            mha_out.add(id(m.out_proj))
        elif id(m) in mha_out:
            continue
        elif isinstance(m, SparseWeightMixin):
            targets.append(Target(name, m, "weight", "sparse", m))
        elif type(m) in (nn.Linear, nn.Conv2d):
            targets.append(Target(name, m, "weight", "linear" if type(m) is nn.Linear else "conv2d", m,
                                  legacy_index=legacy))
            legacy += 1
        elif isinstance(m, nn.Linear):
            targets.append(Target(name, m, "weight", "linear_subclass", m))
        elif _is_conv1d(m):
            targets.append(Target(name, m, "weight", "conv1d", m))
        elif embeddings and isinstance(m, nn.Embedding):
            targets.append(Target(name, m, "weight", "embedding", m))
    return targets


# --- masks on layers that keep their class -------------------------------------------------------------------

class _ApplyMasks:
    """Forward pre-hook: multiply each registered (module, param) by its mask before the forward uses it."""

    def __init__(self) -> None:
        self.entries: list[tuple[nn.Module, str]] = []

    @torch.no_grad()
    def __call__(self, module: nn.Module, args) -> None:
        for owner, param in self.entries:
            getattr(owner, param).mul_(getattr(owner, f"{param}_mask"))


def attach_mask(target: Target, mask: Tensor) -> None:
    """Give a layer that keeps its class a `<param>_mask` buffer enforced by a forward pre-hook on its user."""
    module, param = target.module, target.param
    mask = mask.to(device=target.weight.device, dtype=torch.bool)
    buf = f"{param}_mask"
    if buf in module._buffers:
        module._buffers[buf].copy_(mask)
    else:
        module.register_buffer(buf, mask)
    owner = target.hook_owner
    hook = owner.__dict__.get("_frugalnet_mask_hook")
    if hook is None:
        hook = _ApplyMasks()
        owner.__dict__["_frugalnet_mask_hook"] = hook
        owner.register_forward_pre_hook(hook)
    if (module, param) not in [(m, p) for m, p in hook.entries]:
        hook.entries.append((module, param))
    with torch.no_grad():
        target.weight.mul_(getattr(module, buf))


def get_mask(target: Target) -> Tensor | None:
    if isinstance(target.module, SparseWeightMixin):
        return target.module.weight_mask
    return target.module._buffers.get(f"{target.param}_mask")


def set_mask(target: Target, mask: Tensor) -> None:
    """Replace a converted weight's mask (pruning, regrowth): SparseLinear/Conv2d through `set_mask_`."""
    if isinstance(target.module, SparseWeightMixin):
        target.module.set_mask_(mask)
    else:
        attach_mask(target, mask)


def masked_targets(model: nn.Module) -> list[Target]:
    """The targets of `model` that already carry a mask (after `sparsify_`)."""
    return [t for t in find_targets(model, embeddings=True) if get_mask(t) is not None]


def shared_parameters(model: nn.Module) -> dict[int, list[str]]:
    """id(parameter) -> every 'module.param' name that refers to it, for parameters used in more than one place."""
    seen: dict[int, list[str]] = {}
    for mname, m in model.named_modules(remove_duplicate=False):
        for pname, p in m.named_parameters(recurse=False):
            full = f"{mname}.{pname}" if mname else pname
            names = seen.setdefault(id(p), [])
            if full not in names:
                names.append(full)
    return {k: v for k, v in seen.items() if len(v) > 1}
