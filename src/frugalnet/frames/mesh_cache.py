"""Sampled mesh surfaces cached on disk, so a process does not re-sample every mesh (about 50 CPU s for the 77).

A cache entry is one `.npz` (loaded with `allow_pickle=False`: no code runs) holding the cloud's arrays and an
`arrays_digest` of them. Its file name is a SHA-256 of the OBJ file's bytes, the spacing, the seed and the source of
`meshes.py` (the sampler), so an edited mesh or a changed sampler never hits a stale entry. An entry that fails to
load, to verify or to validate is ignored (and rewritten), never trusted.

Where: `$FRUGALNET_MESH_CACHE` if set (`off` or `0` turns caching off), else `$XDG_CACHE_HOME/frugalnet/meshes`
(default `~/.cache/frugalnet/meshes`).
"""
from __future__ import annotations

import hashlib
import io
import os
import zipfile
from pathlib import Path

import numpy as np

from frugalnet.frames import meshes as _meshes
from frugalnet.frames.objects3d import SurfaceCloud
from frugalnet.utils.checksum import arrays_digest
from frugalnet.utils.io import atomic_replace

ENV = "FRUGALNET_MESH_CACHE"
_FIELDS = ("points", "pose", "curvatures", "pose_defined", "size")


def cache_dir() -> Path | None:
    """The cache folder, or None when `$FRUGALNET_MESH_CACHE` is 'off' or '0'."""
    env = os.environ.get(ENV, "").strip()
    if env.lower() in ("off", "0", "false", "no"):
        return None
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or str(Path.home() / ".cache")
    return Path(base) / "frugalnet" / "meshes"


def cache_key(path: str | os.PathLike, spacing: float, seed: int) -> str:
    """SHA-256 of the mesh file's bytes, the sampling arguments and the sampler's source."""
    h = hashlib.sha256()
    h.update(Path(path).read_bytes())
    h.update(f"|{float(spacing)!r}|{int(seed)}|".encode())
    h.update(Path(_meshes.__file__).read_bytes())
    return h.hexdigest()


def _arrays(cloud: SurfaceCloud) -> dict[str, np.ndarray]:
    return {"points": np.asarray(cloud.points, np.float64), "pose": np.asarray(cloud.pose, np.float64),
            "curvatures": np.asarray(cloud.curvatures, np.float64),
            "pose_defined": np.asarray(cloud.pose_defined, bool), "size": np.asarray(float(cloud.size))}


def save_cloud(folder: Path, key: str, cloud: SurfaceCloud) -> Path:
    """Write `cloud` under `folder/key.npz` atomically, with the digest of its arrays."""
    arrays = _arrays(cloud)
    buf = io.BytesIO()
    np.savez(buf, digest=np.frombuffer(arrays_digest(arrays).encode(), np.uint8), **arrays)
    path = Path(folder) / f"{key}.npz"
    atomic_replace(path, lambda h: h.write(buf.getvalue()))
    return path


def load_cloud(folder: Path, key: str, name: str) -> SurfaceCloud | None:
    """The cloud cached under `key`, or None when it is absent or fails to load, verify or validate."""
    path = Path(folder) / f"{key}.npz"
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if set(z.files) != set(_FIELDS) | {"digest"}:
                return None
            arrays = {k: z[k] for k in _FIELDS}
            digest = z["digest"].tobytes().decode("ascii", "replace")
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError):
        return None
    if digest != arrays_digest(arrays):
        return None
    p, pose, k, d, size = (arrays[f] for f in _FIELDS)
    n = len(p)
    if (n == 0 or p.shape != (n, 3) or pose.shape != (n, 3, 3) or k.shape != (n, 2) or d.shape != (n,)
            or d.dtype != bool or size.shape != () or not all(np.isfinite(a).all() for a in (p, pose, k, size))):
        return None
    return SurfaceCloud(name, p, pose, k, d, float(size))


def cached_surface(path: str | os.PathLike, name: str, spacing: float, seed: int, sample) -> SurfaceCloud:
    """`sample()` (a SurfaceCloud of the mesh at `path`), read from the cache when an entry verifies, else computed
    and written there. Caching is skipped silently when the folder cannot be written."""
    folder = cache_dir()
    if folder is None:
        return sample()
    key = cache_key(path, spacing, seed)
    hit = load_cloud(folder, key, name)
    if hit is not None:
        return hit
    cloud = sample()
    try:
        save_cloud(folder, key, cloud)
    except OSError:
        pass
    return cloud
