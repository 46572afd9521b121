"""Every object the frames package knows by name: procedural shapes (objects3d) and meshes (OBJ files).

Named sets:
- `distinct`, `similar`: 10 procedural shapes each (objects3d).
- `meshes`: 77 distinct real meshes from the `pybullet_data` folder of the `pybullet` wheel (`pip install
  frugalnet[meshes]`): the scanned and modelled ones (bunny, duck, teddy, stone, mug, torus, lego, domino, soccer
  ball) and 68 of the 1000 `random_urdfs` objects, drawn with a fixed seed (`mesh_candidates`), a candidate being
  skipped when it is a near-duplicate of one already in the set (as YCB's 77 objects are 77 distinct shapes).
  Near-duplicate, the rule fixed before any recognition run on the new set: `similarity.shape_distance` (symmetric
  chamfer after ICP from 24 starts, spacing 0.02, object size 1) below MESH_DISTINCT_MARGIN = 1.25 times the larger
  of the two meshes' own resampling noise (the shape_distance between two independent samplings of one mesh: over
  the first draw's 77, median 0.024, 90th percentile 0.032, max 0.043 for lego). So a pair of urdf meshes with
  noise ~0.024 needs to be ~0.03 apart; 1.25 covers the spread of the noise estimate itself. `MESH_SET_SKIPPED` is
  the outcome of that rule (`distinct_mesh_draw` re-derives it, 445 CPU s; a slow test checks the two agree): 20
  candidates skipped, 13 of the first draw's 68 urdfs replaced (urdf643, urdf229, urdf722 as twins of urdf083, ...).
  Nothing is downloaded; the set is absent without pybullet.
- `meshes_v1`: the first draw (issue 21's first three sessions; the figures they report): the first 68 of the same
  candidates, near-duplicates included (urdf083/urdf643 0.024 apart, urdf115/urdf464 0.026, ...).

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
MESH_DISTINCT_MARGIN = 1.25
MESH_DISTINCT_SAMPLING = (0.02, (1, 1000))     # spacing and the two sampling seeds the rule compares
# distinct_mesh_draw()'s skipped candidates (near-duplicates of an earlier one), in the order they were met
MESH_SET_SKIPPED: tuple[str, ...] = (
    "urdf229", "urdf255", "urdf599", "urdf643", "urdf722", "urdf754", "urdf779", "urdf810", "urdf886", "urdf910",
    "urdf942", "urdf978", "urdf997", "urdf017", "urdf542", "urdf455", "urdf776", "urdf836", "urdf231", "urdf012",)
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


def mesh_candidates() -> tuple[tuple[str, Path], ...]:
    """(name, OBJ file) of the meshes set's candidates in draw order: the 9 named meshes, then the random_urdfs
    the first draw picked (68 of 1000 by seed MESH_SET_SEED, in file order), then the rest of the pool in an order
    drawn by the same generator (where the replacements for skipped near-duplicates come from)."""
    root = pybullet_data_dir()
    if root is None:
        raise ValueError("the 'meshes' object set needs pybullet's data files: pip install 'frugalnet[meshes]' "
                         "(or pip install pybullet)")
    named = [(k, root / v) for k, v in PYBULLET_NAMED.items()]
    pool = sorted((root / "random_urdfs").glob("*/*.obj"))
    need = MESH_SET_SIZE - len(named)
    if len(pool) < need + len(MESH_SET_SKIPPED):
        raise ValueError(f"{str(root)!r} holds {len(pool)} random_urdfs meshes; the meshes set needs "
                         f"{need + len(MESH_SET_SKIPPED)}")
    rng = np.random.default_rng(MESH_SET_SEED)
    pick = np.sort(rng.choice(len(pool), need, replace=False))
    rest = rng.permutation(np.setdiff1d(np.arange(len(pool)), pick))
    return tuple(named) + tuple((f"urdf{pool[i].stem}", pool[i]) for i in np.concatenate([pick, rest]))


@lru_cache(maxsize=2)
def mesh_set(distinct: bool = True) -> tuple[str, ...]:
    """The 77 pybullet_data meshes (see the module docstring); `distinct=False`: the first draw (`meshes_v1`).
    ValueError when pybullet is not installed."""
    skip = set(MESH_SET_SKIPPED) if distinct else set()
    keep = [(n, p) for n, p in mesh_candidates() if n not in skip][:MESH_SET_SIZE]
    return tuple(add_mesh(n, p) for n, p in keep)


def distinct_mesh_draw(progress=None) -> tuple[list[str], list[tuple[str, str, float, float]], dict[str, float]]:
    """Re-derive the meshes set by its rule (`similarity.distinct_draw` over `mesh_candidates`, MESH_DISTINCT_MARGIN,
    two samplings per mesh as MESH_DISTINCT_SAMPLING): (chosen, skipped (name, twin, distance, threshold), noise).
    Its skipped names are MESH_SET_SKIPPED."""
    from frugalnet.frames.similarity import distinct_draw

    spacing, seeds = MESH_DISTINCT_SAMPLING
    paths = dict(mesh_candidates())
    return distinct_draw(list(paths), MESH_SET_SIZE,
                         lambda n, k: make_object(add_mesh(n, paths[n]), spacing, seeds[k]).points,
                         MESH_DISTINCT_MARGIN, progress=progress)


def object_set(name: str) -> tuple[str, ...]:
    """Names of a set: 'distinct', 'similar', 'meshes', 'meshes_v1' (the first draw), or 'folder:<path>' (every
    .obj in that folder)."""
    if name in SHAPE_SETS:
        return SHAPE_SETS[name]
    if name in ("meshes", "meshes_v1"):
        return mesh_set(name == "meshes")
    if name.startswith("folder:"):
        return add_mesh_folder(name[len("folder:"):])
    sets = sorted(SHAPE_SETS) + ["meshes", "meshes_v1", "folder:<path>"]
    raise ValueError(f"object set must be one of {sets}, got {name!r}")


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
