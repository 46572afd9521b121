"""Every object the frames package knows by name: procedural shapes (objects3d) and meshes (OBJ files).

Named sets:
- `distinct`, `similar`: 10 procedural shapes each (objects3d).
- `meshes`: 77 real meshes from the `pybullet_data` folder of the `pybullet` wheel (`pip install frugalnet[meshes]`):
  the scanned and modelled ones (bunny, duck, teddy, stone, mug, torus, lego, domino, soccer ball) and 68 of the
  1000 `random_urdfs` objects drawn with a fixed seed. Nothing is downloaded; the set is absent without pybullet.

Your own meshes: `add_mesh_folder("my_objects/")` registers every `*.obj` in the folder under its file name (stem)
and returns the names; `object_set("folder:my_objects/")` does the same and returns them as a set, which is what the
`frames` study's `--mesh-dir` uses. Every file is validated when first sampled (`meshes.read_obj`); sampled surfaces
are cached on disk, checksummed (`mesh_cache`; `FRUGALNET_MESH_CACHE=off` turns that off).
"""
from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np

from frugalnet.frames.mesh_cache import cached_surface
from frugalnet.frames.meshes import read_obj, surface_from_mesh
from frugalnet.frames.objects3d import DISTINCT, SIMILAR, SurfaceCloud, available_shapes
from frugalnet.frames.objects3d import make_object as make_shape

SHAPE_SETS = {"distinct": DISTINCT, "similar": SIMILAR}
PYBULLET_NAMED = {"bunny": "bunny.obj", "duck": "duck.obj", "teddy": "teddy2_VHACD_CHs.obj", "stone": "stone.obj",
                  "mug_mesh": "objects/mug.obj", "torus_mesh": "torus/torus_textured.obj", "lego": "lego/lego.obj",
                  "domino": "domino/domino.obj", "soccerball": "soccerball.obj"}
MESH_SET_SIZE = 77
MESH_SET_SEED = 21
_MESHES: dict[str, Path] = {}          # mesh name -> OBJ file


def pybullet_data_dir() -> Path | None:
    """The `pybullet_data` folder of an installed pybullet wheel (found without importing pybullet), or None."""
    spec = importlib.util.find_spec("pybullet_data")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def add_mesh(name: str, path: str | Path) -> str:
    """Register one OBJ file under `name` (a name may not shadow a procedural shape or another file)."""
    path = Path(path)
    if name in available_shapes():
        raise ValueError(f"mesh name {name!r} is taken by a procedural shape; rename the file")
    if name in _MESHES and _MESHES[name].resolve() != path.resolve():
        raise ValueError(f"mesh name {name!r} is already registered for {str(_MESHES[name])!r}")
    if path.suffix.lower() != ".obj" or not path.is_file():
        raise ValueError(f"mesh {name!r}: {str(path)!r} is not an existing .obj file")
    _MESHES[name] = path
    return name


def add_mesh_folder(folder: str | Path) -> tuple[str, ...]:
    """Register every `*.obj` in `folder` under its file stem; returns the names in sorted order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"mesh folder {str(folder)!r} does not exist or is not a folder")
    files = sorted(folder.glob("*.obj"))
    if len(files) < 2:
        raise ValueError(f"mesh folder {str(folder)!r} holds {len(files)} .obj files; recognition needs at least 2")
    return tuple(add_mesh(p.stem, p) for p in files)


@lru_cache(maxsize=1)
def mesh_set() -> tuple[str, ...]:
    """The 77 pybullet_data meshes (see the module docstring); ValueError when pybullet is not installed."""
    root = pybullet_data_dir()
    if root is None:
        raise ValueError("the 'meshes' object set needs pybullet's data files: pip install 'frugalnet[meshes]' "
                         "(or pip install pybullet)")
    names = [add_mesh(k, root / v) for k, v in PYBULLET_NAMED.items()]
    pool = sorted((root / "random_urdfs").glob("*/*.obj"))
    need = MESH_SET_SIZE - len(names)
    if len(pool) < need:
        raise ValueError(f"{str(root)!r} holds {len(pool)} random_urdfs meshes; the meshes set needs {need}")
    pick = np.sort(np.random.default_rng(MESH_SET_SEED).choice(len(pool), need, replace=False))
    names += [add_mesh(f"urdf{pool[i].stem}", pool[i]) for i in pick]
    return tuple(names)


def object_set(name: str) -> tuple[str, ...]:
    """Names of a set: 'distinct', 'similar', 'meshes', or 'folder:<path>' (every .obj in that folder)."""
    if name in SHAPE_SETS:
        return SHAPE_SETS[name]
    if name == "meshes":
        return mesh_set()
    if name.startswith("folder:"):
        return add_mesh_folder(name[len("folder:"):])
    raise ValueError(f"object set must be one of {sorted(SHAPE_SETS) + ['meshes', 'folder:<path>']}, got {name!r}")


def available_objects() -> list[str]:
    """Procedural shapes and the meshes registered so far."""
    return available_shapes() + sorted(_MESHES)


@lru_cache(maxsize=512)
def _mesh_object(path: Path, name: str, spacing: float, seed: int) -> SurfaceCloud:
    def sample() -> SurfaceCloud:
        v, f = read_obj(path)
        try:
            return surface_from_mesh(name, v, f, spacing, seed)
        except ValueError as e:
            raise ValueError(f"mesh file {str(path)!r}: {e}") from None
    return cached_surface(path, name, spacing, seed, sample)


def make_object(name: str, spacing: float = 0.02, seed: int = 0) -> SurfaceCloud:
    """A surface sample of a procedural shape or a registered mesh, diameter 1, about `spacing` between points."""
    if name in _MESHES:
        if not 0.002 <= spacing <= 0.2:
            raise ValueError(f"spacing must be in [0.002, 0.2], got {spacing}")
        return _mesh_object(_MESHES[name], name, float(spacing), int(seed))
    if name not in available_shapes():
        raise ValueError(f"unknown object {name!r}: not a procedural shape ({available_shapes()}) and no mesh of "
                         "that name is registered (object_set('meshes') or add_mesh_folder(...) registers meshes)")
    return make_shape(name, spacing, seed)
