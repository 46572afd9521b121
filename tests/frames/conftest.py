"""Tiny OBJ meshes written by the tests themselves, so the mesh code is tested without pybullet's data."""
import numpy as np
import pytest


def uv_sphere(n_lat: int = 16, n_lon: int = 24, radius: float = 1.0) -> str:
    """A closed UV sphere as OBJ text: poles, rings, triangles at the poles and quads between rings."""
    lines = ["# uv sphere", "o sphere", f"v 0 0 {radius}"]
    for i in range(1, n_lat):
        th = np.pi * i / n_lat
        for j in range(n_lon):
            ph = 2 * np.pi * j / n_lon
            lines.append(f"v {radius * np.sin(th) * np.cos(ph):.6f} {radius * np.sin(th) * np.sin(ph):.6f} "
                         f"{radius * np.cos(th):.6f}")
    lines.append(f"v 0 0 {-radius}")
    south = 1 + (n_lat - 1) * n_lon + 1

    def ring(i, j):                          # 1-based index of ring i (1..n_lat-1), column j
        return 2 + (i - 1) * n_lon + j % n_lon

    for j in range(n_lon):
        lines.append(f"f 1 {ring(1, j)} {ring(1, j + 1)}")
        lines.append(f"f {south} {ring(n_lat - 1, j + 1)} {ring(n_lat - 1, j)}")
        for i in range(1, n_lat - 1):
            lines.append(f"f {ring(i, j)} {ring(i + 1, j)} {ring(i + 1, j + 1)} {ring(i, j + 1)}")
    return "\n".join(lines) + "\n"


def box(sx: float = 1.0, sy: float = 1.0, sz: float = 1.0) -> str:
    """A box with quad faces (outward winding), using v/vt/vn index triples and a negative index."""
    v = [(x * sx, y * sy, z * sz) for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)]
    faces = [(1, 2, 4, 3), (5, 7, 8, 6), (1, 5, 6, 2), (3, 4, 8, 7), (1, 3, 7, 5), (2, 6, 8, 4)]
    lines = ["o box", "vt 0 0", "vn 0 0 1"] + [f"v {x} {y} {z}" for x, y, z in v]
    for f in faces:
        lines.append("f " + " ".join(f"{i}/1/1" if i != 8 else "-1/1/1" for i in f))
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="session")
def mesh_folder(tmp_path_factory):
    """A folder with three meshes: a sphere, a cube and a long box."""
    d = tmp_path_factory.mktemp("meshes")
    (d / "ball.obj").write_text(uv_sphere())
    (d / "crate.obj").write_text(box())
    (d / "plank.obj").write_text(box(1.0, 0.35, 0.15))
    return d


def two_boxes() -> str:
    """Two overlapping closed boxes as separate pieces (like a mesh of convex parts): the second box's left end
    and part of the first box's right end are buried inside the other box."""
    a, b = box(0.6, 0.3, 0.3), box(0.6, 0.3, 0.3)
    va = [ln for ln in a.splitlines() if ln.startswith("v ")]
    fb = [ln for ln in b.splitlines() if ln.startswith("f ")]
    out = ["o a"] + va + [ln for ln in a.splitlines() if ln.startswith("f ")]
    out += ["o b"] + [f"v {float(x) + 0.8} {y} {z}" for _, x, y, z in (ln.split() for ln in va)]
    out += ["f " + " ".join(str(int(t.split("/")[0]) + 8 if not t.startswith("-") else 16)
                            for t in ln.split()[1:]) for ln in fb]
    return "\n".join(out) + "\n"


@pytest.fixture(autouse=True, scope="session")
def _mesh_cache_in_tmp(tmp_path_factory):
    """Tests never write the user's mesh cache: it goes to a session temporary folder."""
    import os

    old = os.environ.get("FRUGALNET_MESH_CACHE")
    os.environ["FRUGALNET_MESH_CACHE"] = str(tmp_path_factory.mktemp("mesh_cache"))
    yield
    if old is None:
        os.environ.pop("FRUGALNET_MESH_CACHE", None)
    else:
        os.environ["FRUGALNET_MESH_CACHE"] = old
