"""Compact sparse checkpoints: each masked weight stored as its kept values plus their flat indices.

`save_sparse(model, path)` writes safetensors when the package is installed (else .npz, loaded without pickle):
masked weights as `<key>.values` + `<key>.indices` (int32, or int64 past 2^31 entries), every other state_dict entry
dense, the masks left out (the indices are the mask), and a JSON header with the shapes, the k-WTA modules that
replaced activations, and a SHA-256 over all stored bytes. `load_sparse(path, model)` checks the checksum and every
shape and index before use, turns the named layers of a fresh dense model of the same architecture sparse with
those masks (and re-creates the k-WTA modules), then loads the values bit-exact.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from frugalnet.nn.kwinners import KWinners, KWinners2d
from frugalnet.sparsity.targets import get_mask, masked_targets
from frugalnet.utils.io import atomic_replace
from frugalnet.utils.checksum import arrays_digest

FORMAT = "frugalnet-sparse-1"
_KW_FIELDS = ("percent_on", "k_inference_factor", "boost_strength_factor", "duty_cycle_period")


def _have_safetensors() -> bool:
    try:
        import safetensors  # noqa: F401
        return True
    except ImportError:
        return False


_digest = arrays_digest   # the file's checksum (utils.checksum)


def _np(t: torch.Tensor) -> np.ndarray:
    if t.dtype == torch.bfloat16:
        raise ValueError("save_sparse stores numpy dtypes; cast bfloat16 models to float32 first")
    return t.detach().cpu().contiguous().numpy()


def save_sparse(model: nn.Module, path: str | Path) -> Path:
    """Write `model`'s state compactly to `path` (.safetensors, or .npz when safetensors is missing)."""
    path = Path(path)
    state = model.state_dict()
    sparse_keys, mask_keys = {}, set()
    for t in masked_targets(model):
        key = t.state_key
        mask_keys.add(f"{key}_mask")     # SparseLinear's weight_mask, or the <param>_mask of other layers
        sparse_keys[key] = t
    arrays: dict[str, np.ndarray] = {}
    sparse_meta = {}
    for key, value in state.items():
        if key in mask_keys:
            continue
        if key in sparse_keys:
            t = sparse_keys[key]
            mask = get_mask(t).flatten()
            flat = value.detach().flatten()
            idx = torch.nonzero(mask.cpu(), as_tuple=False).flatten()
            idx_dtype = torch.int32 if mask.numel() < 2 ** 31 else torch.int64
            arrays[f"{key}.values"] = _np(flat[idx.to(flat.device)])
            arrays[f"{key}.indices"] = _np(idx.to(idx_dtype))
            sparse_meta[key] = {"shape": list(value.shape), "target": t.name}
        else:
            arrays[key] = _np(value)
    kwinners = {name: {"class": type(m).__name__, "units": m.n if isinstance(m, KWinners) else m.channels,
                       "local": bool(getattr(m, "local", False)), **{f: getattr(m, f) for f in _KW_FIELDS}}
                for name, m in model.named_modules() if isinstance(m, (KWinners, KWinners2d)) and name}
    header = {"format": FORMAT, "sparse": sparse_meta, "kwinners": kwinners, "sha256": _digest(arrays)}
    if path.suffix == "" or path.suffix not in (".safetensors", ".npz"):
        path = path.with_suffix(".safetensors" if _have_safetensors() else ".npz")
    if path.suffix == ".safetensors":
        from safetensors.numpy import save

        blob = save({k: np.ascontiguousarray(v) for k, v in arrays.items()}, metadata={"frugalnet": json.dumps(header)})
        atomic_replace(path, lambda f: f.write(blob))
    else:
        arrays["__frugalnet__"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
        atomic_replace(path, lambda f: np.savez(f, **arrays))
    return path


def _read(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    if not path.is_file():
        raise FileNotFoundError(f"sparse checkpoint {path} not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="numpy") as f:
                header = json.loads((f.metadata() or {})["frugalnet"])
                arrays = {k: f.get_tensor(k) for k in f.keys()}
        else:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            header = json.loads(arrays.pop("__frugalnet__").tobytes().decode())
    except Exception as e:   # noqa: BLE001  (any malformed file: one clear error naming it)
        raise ValueError(f"{path} is not a readable frugalnet sparse checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} file")
    if _digest(arrays) != header.get("sha256"):
        raise ValueError(f"{path}: checksum mismatch, the file is corrupted or was edited")
    return header, arrays


def _restore_kwinners(model: nn.Module, specs: dict) -> None:
    for name, spec in specs.items():
        cls = {"KWinners": KWinners, "KWinners2d": KWinners2d}.get(spec.get("class"))
        if cls is None:
            raise ValueError(f"unknown k-WTA class {spec.get('class')!r} for {name!r}")
        kwargs = {f: spec[f] for f in _KW_FIELDS}
        new = cls(spec["units"], local=spec["local"], **kwargs) if cls is KWinners2d else cls(spec["units"], **kwargs)
        current = model.get_submodule(name) if name in dict(model.named_modules()) else None
        if type(current) is cls:
            continue
        parent, _, child = name.rpartition(".")
        try:
            setattr(model.get_submodule(parent) if parent else model, child, new)
        except AttributeError:
            raise ValueError(f"the model has no module {parent!r} to hold the k-WTA {name!r}: another "
                             f"architecture?") from None


def load_sparse(path: str | Path, model: nn.Module) -> nn.Module:
    """Load a `save_sparse` file into `model` (dense or already sparse, same architecture), in place."""
    from frugalnet.sparsity.config import GivenMasksConfig
    from frugalnet.sparsity.convert import sparsify_

    path = Path(path)
    header, arrays = _read(path)
    _restore_kwinners(model, header.get("kwinners", {}))
    state = model.state_dict()
    masks, dense = {}, {}
    for key, meta in header["sparse"].items():
        if key not in state:
            raise ValueError(f"{path}: weight {key!r} is not in the model (another architecture?)")
        shape = tuple(int(s) for s in meta["shape"])
        if tuple(state[key].shape) != shape:
            raise ValueError(f"{path}: {key!r} has shape {shape}, the model's {tuple(state[key].shape)}")
        values, idx = arrays.get(f"{key}.values"), arrays.get(f"{key}.indices")
        numel = int(np.prod(shape))
        if values is None or idx is None or values.shape != idx.shape or idx.ndim != 1:
            raise ValueError(f"{path}: values/indices of {key!r} are missing or disagree in shape")
        if idx.dtype.kind != "i" or (idx.size and (idx.min() < 0 or idx.max() >= numel
                                                    or (np.diff(idx) <= 0).any())):
            raise ValueError(f"{path}: indices of {key!r} are out of range [0, {numel}) or not strictly increasing")
        mask = torch.zeros(numel, dtype=torch.bool)
        mask[torch.from_numpy(idx.astype(np.int64))] = True
        weight = torch.zeros(numel, dtype=state[key].dtype)
        weight[torch.from_numpy(idx.astype(np.int64))] = torch.from_numpy(values.copy()).to(weight.dtype)
        masks[meta["target"]] = mask.view(shape)
        dense[key] = weight.view(shape)
    if masks:
        sparsify_(model, GivenMasksConfig(masks=masks))
    new_state = model.state_dict()
    for key in new_state:
        if key in dense:
            new_state[key] = dense[key]
        elif key in arrays:
            if new_state[key].dim() == 0 and arrays[key].shape in ((), (1,)):   # safetensors stores 0-d as (1,)
                arrays[key] = arrays[key].reshape(())
            if tuple(arrays[key].shape) != tuple(new_state[key].shape):
                raise ValueError(f"{path}: {key!r} has shape {tuple(arrays[key].shape)}, the model's "
                                 f"{tuple(new_state[key].shape)}")
            new_state[key] = torch.from_numpy(arrays[key].copy())
        elif not key.endswith("_mask"):
            raise ValueError(f"{path}: the file has no entry for the model's {key!r} (another architecture?)")
    extra = [k for k in arrays if not k.endswith((".values", ".indices")) and k not in new_state]
    if extra:
        raise ValueError(f"{path}: entries the model does not have: {extra[:5]} (another architecture?)")
    model.load_state_dict(new_state)
    return model


SPARSE_FILE = "frugalnet_sparse.safetensors"


def save_pretrained_sparse(model: nn.Module, directory: str | Path, **kwargs) -> Path:
    """Hugging Face `model.save_pretrained(directory)` plus the masks and k-WTA modules in a compact sparse file
    beside it (`frugalnet_sparse.safetensors`, or .npz without safetensors)."""
    directory = Path(directory)
    model.save_pretrained(str(directory), **kwargs)
    name = SPARSE_FILE if _have_safetensors() else SPARSE_FILE.replace(".safetensors", ".npz")
    return save_sparse(model, directory / name)


def from_pretrained_sparse(model_cls, directory: str | Path, **kwargs) -> nn.Module:
    """`model_cls.from_pretrained(directory)` (a dense model of the saved architecture), then made sparse again
    and loaded bit-exact from the sparse file `save_pretrained_sparse` wrote."""
    import warnings

    directory = Path(directory)
    files = [directory / SPARSE_FILE, directory / SPARSE_FILE.replace(".safetensors", ".npz")]
    path = next((f for f in files if f.is_file()), None)
    if path is None:
        raise FileNotFoundError(f"no {SPARSE_FILE} in {directory}: was it written by save_pretrained_sparse?")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # the mask and k-WTA buffers are "unexpected" to a dense model
        model = model_cls.from_pretrained(str(directory), **kwargs)
    return load_sparse(path, model)
