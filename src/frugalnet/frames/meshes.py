"""Triangle meshes as objects: a small OBJ reader (validated) and surface sampling with normals and curvatures.

`read_obj` keeps only what recognition needs (vertices and faces; polygons are fanned into triangles; texture and
normal indices, groups and materials are ignored) and checks every index before it is used, so a bad file is a
`ValueError` naming the file and the line, never a crash deep inside numpy.

`surface_from_mesh` scales the mesh to diameter 1 about its bounding-box centre, draws points uniformly by area,
thins them to an even `spacing` and gives each point its face normal and the principal curvatures and directions of a
shape operator fitted to how the normals of its neighbours (within a few `smoothing` radii) turn as one moves along
the surface: dn = S dp in the tangent plane, least squares for the symmetric 2x2 S. So an edge between two faces
reads as strongly curved across the edge and flat along it, as on the procedural shapes (objects3d).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from frugalnet.frames.objects3d import SurfaceCloud, voxel_thin
from frugalnet.frames.observations import curvature_directions_defined, right_handed

MAX_OBJ_BYTES = 64 * 2**20          # a mesh bigger than this is refused rather than read into memory


def read_obj(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (V, 3) float64 and triangles (F, 3) int64 of a Wavefront OBJ file.

    Raises ValueError naming the file when it is missing, too large, has a malformed `v`/`f` line, a face index
    of 0 or outside [-V, V], non-finite coordinates, or no faces at all."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"mesh file {str(path)!r} does not exist")
    if path.stat().st_size > MAX_OBJ_BYTES:
        raise ValueError(f"mesh file {str(path)!r} is {path.stat().st_size} bytes; at most {MAX_OBJ_BYTES} are read")
    verts: list[tuple[float, float, float]] = []
    tris: list[tuple[int, int, int]] = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if parts[0] == "v":
                try:
                    xyz = tuple(float(t) for t in parts[1:4])
                except ValueError:
                    xyz = ()
                if len(xyz) != 3 or not all(np.isfinite(xyz)):
                    raise ValueError(f"mesh file {str(path)!r} line {lineno}: a vertex needs 3 finite numbers, "
                                     f"got {line.strip()[:80]!r}")
                verts.append(xyz)
            elif parts[0] == "f":
                idx = []
                for tok in parts[1:]:
                    try:
                        i = int(tok.split("/")[0])
                    except ValueError:
                        raise ValueError(f"mesh file {str(path)!r} line {lineno}: face index {tok!r} is not an "
                                         f"integer") from None
                    n = len(verts)
                    if i == 0 or not -n <= i <= n:
                        raise ValueError(f"mesh file {str(path)!r} line {lineno}: face index {i} is out of range "
                                         f"for the {n} vertices defined so far (1..{n}, or -1..-{n} counting back)")
                    idx.append(i - 1 if i > 0 else n + i)
                if len(idx) < 3:
                    raise ValueError(f"mesh file {str(path)!r} line {lineno}: a face needs at least 3 vertices, "
                                     f"got {len(idx)}")
                tris.extend((idx[0], idx[k], idx[k + 1]) for k in range(1, len(idx) - 1))
    if not tris:
        raise ValueError(f"mesh file {str(path)!r} has no faces ({len(verts)} vertices); an OBJ mesh needs 'f' lines")
    return np.asarray(verts, float), np.asarray(tris, np.int64)


def _tangent_basis(n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors spanning the plane orthogonal to each normal (N, 3)."""
    helper = np.where(np.abs(n[:, :1]) < 0.9, np.array([[1.0, 0, 0]]), np.array([[0, 1.0, 0]]))
    t1 = np.cross(n, helper)
    t1 /= np.linalg.norm(t1, axis=1, keepdims=True)
    return t1, np.cross(n, t1)


def shape_operator(points: np.ndarray, normals: np.ndarray, ref_points: np.ndarray, ref_normals: np.ndarray,
                   k: int = 24, radius: float = 0.04) -> tuple[np.ndarray, np.ndarray]:
    """Principal curvatures (N, 2) with |k1| >= |k2| and the first principal direction (N, 3) at each point, from
    the least-squares S with (n_j - n_i) = S (p_j - p_i) over the reference points within `radius` (at most k)."""
    tree = cKDTree(ref_points)
    dist, idx = tree.query(points, k=min(k, len(ref_points)))
    dist, idx = dist.reshape(len(points), -1), idx.reshape(len(points), -1)
    w = (dist <= radius).astype(float)
    t1, t2 = _tangent_basis(normals)
    dp, dn = ref_points[idx] - points[:, None], ref_normals[idx] - normals[:, None]
    a, b = np.einsum("nkj,nj->nk", dp, t1), np.einsum("nkj,nj->nk", dp, t2)
    c, d = np.einsum("nkj,nj->nk", dn, t1), np.einsum("nkj,nj->nk", dn, t2)
    # unknowns (s11, s12, s22): c = s11 a + s12 b; d = s12 a + s22 b; weighted normal equations, lightly damped
    aa, ab, bb = (w * a * a).sum(1), (w * a * b).sum(1), (w * b * b).sum(1)
    m = np.zeros((len(points), 3, 3))
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0] = aa, ab, ab
    m[:, 1, 1], m[:, 1, 2], m[:, 2, 1], m[:, 2, 2] = aa + bb, ab, ab, bb
    m += np.eye(3)[None] * (1e-6 + 1e-3 * (aa + bb))[:, None, None]
    rhs = np.stack([(w * a * c).sum(1), (w * (b * c + a * d)).sum(1), (w * b * d).sum(1)], axis=1)
    s11, s12, s22 = np.linalg.solve(m, rhs[..., None])[..., 0].T
    vals, vecs = np.linalg.eigh(np.stack([np.stack([s11, s12], 1), np.stack([s12, s22], 1)], 1))
    first = np.argmax(np.abs(vals), axis=1)
    rows = np.arange(len(points))
    k1, k2 = vals[rows, first], vals[rows, 1 - first]
    v = vecs[rows, :, first]                                             # (N, 2) in the (t1, t2) basis
    return np.stack([k1, k2], 1), v[:, :1] * t1 + v[:, 1:] * t2


def corner_normals(faces: np.ndarray, face_normals: np.ndarray, weights: np.ndarray,
                   crease_deg: float = 40.0) -> np.ndarray:
    """Normals (F, 3, 3) at each face's corners: the weighted mean of the normals of the faces around that vertex
    that turn less than `crease_deg` from this face (smooth across a fine tessellation, sharp at a real edge)."""
    flat_v = faces.reshape(-1)
    flat_f = np.repeat(np.arange(len(faces)), 3)
    order = np.argsort(flat_v, kind="stable")
    sv, sf = flat_v[order], flat_f[order]
    start = np.searchsorted(sv, flat_v)                     # first incidence of each corner's vertex
    degree = np.searchsorted(sv, flat_v, side="right") - start
    weighted = face_normals * weights[:, None]
    acc = np.zeros((len(flat_v), 3))
    cos_crease = np.cos(np.deg2rad(crease_deg))
    for k in range(int(degree.max())):
        has = degree > k
        g = sf[start[has] + k]
        close = (face_normals[flat_f[has]] * face_normals[g]).sum(1) >= cos_crease
        acc[has] += weighted[g] * close[:, None]
    acc /= np.maximum(np.linalg.norm(acc, axis=1, keepdims=True), 1e-12)
    return acc.reshape(-1, 3, 3)


def winding_numbers(points: np.ndarray, triangles: np.ndarray, chunk: int = 2_000_000) -> np.ndarray:
    """Generalised winding number (M,) of a triangle soup (F, 3, 3) at each point (M, 3): the sum of the signed
    solid angles of the triangles over 4 pi (Van Oosterom & Strackee). About 1 inside each closed, outward-wound
    piece that holds the point, 0 outside all of them, so it counts the pieces a point is buried in."""
    out = np.empty(len(points))
    step = max(1, chunk // max(len(triangles), 1))
    for s in range(0, len(points), step):
        r = triangles[None] - points[s:s + step, None, None]                  # (m, F, 3, 3)
        a, b, c = r[:, :, 0], r[:, :, 1], r[:, :, 2]
        la, lb, lc = (np.linalg.norm(v, axis=-1) for v in (a, b, c))
        num = np.einsum("mfi,mfi->mf", a, np.cross(b, c))
        den = la * lb * lc + (a * b).sum(-1) * lc + (a * c).sum(-1) * lb + (b * c).sum(-1) * la
        out[s:s + step] = np.arctan2(num, den).sum(1) / (2 * np.pi)
    return out


def mesh_pieces(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Connected piece (F,) of each face, vertices at the same position counted as one (UV seams split none)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    span = max(float(np.ptp(vertices, axis=0).max()), 1e-300)
    _, inv = np.unique(np.round(vertices / span, 7), axis=0, return_inverse=True)
    fm = inv.reshape(-1)[faces]
    e = np.concatenate([fm[:, [0, 1]], fm[:, [1, 2]]])
    n = int(inv.max()) + 1
    _, label = connected_components(coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n)), directed=False)
    return label[fm[:, 0]]


def exterior(points: np.ndarray, normals: np.ndarray, triangles: np.ndarray, pieces: np.ndarray,
             offset: float = 2e-3) -> np.ndarray:
    """True where a surface point is not buried inside another closed piece of the mesh: the winding number just
    outside the surface (along the normal) summed over the pieces whose bounding box holds the point stays below
    1/2. Meshes built from overlapping convex pieces (pybullet's random_urdfs, VHACD hulls) have faces inside other
    pieces that no sensor can touch; learning or walking them makes model and sensation disagree."""
    p = points + offset * normals
    w = np.zeros(len(p))
    ids = np.unique(pieces)
    if len(ids) < 2:                                      # one connected surface buries nothing
        return np.ones(len(p), bool)
    for c in ids:
        t = triangles[pieces == c]
        lo, hi = t.reshape(-1, 3).min(0) - offset, t.reshape(-1, 3).max(0) + offset
        near = np.flatnonzero(((p >= lo) & (p <= hi)).all(1))
        if len(near):
            w[near] += winding_numbers(p[near], t)
    return np.abs(w) < 0.5


def surface_from_mesh(name: str, vertices: np.ndarray, faces: np.ndarray, spacing: float, seed: int,
                      smoothing: float = 0.04, exterior_only: bool = True) -> SurfaceCloud:
    """Sample a mesh's surface at about `spacing` (object diameter 1) with normals, curvatures and directions;
    with `exterior_only`, points buried inside another piece of the mesh (see `exterior`) are left out."""
    v = np.asarray(vertices, float)
    f = np.asarray(faces, np.int64)
    if v.ndim != 2 or v.shape[1] != 3 or f.ndim != 2 or f.shape[1] != 3:
        raise ValueError(f"mesh {name!r}: vertices must be (V, 3) and faces (F, 3), got {v.shape} and {f.shape}")
    if len(f) == 0 or f.min() < 0 or f.max() >= len(v):
        raise ValueError(f"mesh {name!r}: face indices must lie in [0, {len(v) - 1}]")
    used = v[np.unique(f)]
    centre = (used.max(0) + used.min(0)) / 2
    tri = v[f] - centre                                                   # (F, 3, 3)
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    area2 = np.linalg.norm(cross, axis=1)
    keep = area2 > 1e-12 * max(float(area2.max()), 1e-300)
    if not keep.any():
        raise ValueError(f"mesh {name!r}: every face has zero area")
    tri, cross, area2 = tri[keep], cross[keep], area2[keep]
    hull = tri.reshape(-1, 3)
    sub = hull[np.random.default_rng(0).choice(len(hull), min(len(hull), 2000), replace=False)]
    diam = float(np.max(np.linalg.norm(sub[:, None] - sub[None], axis=-1)))
    if diam <= 0:
        raise ValueError(f"mesh {name!r} has no extent (all vertices coincide)")
    tri, area = tri / diam, area2 / 2 / diam**2
    normals_f = cross / area2[:, None]
    corners = corner_normals(f[keep], normals_f, area)
    all_tri = tri
    pieces = mesh_pieces(v, f[keep]) if exterior_only else np.zeros(len(tri), np.int64)
    if exterior_only and pieces.max() > 0:    # faces buried whole (4 test points inside) are not sampled at all
        probe = np.concatenate([tri.mean(1, keepdims=True), 0.8 * tri + 0.2 * tri.mean(1, keepdims=True)], 1)
        out = exterior(probe.reshape(-1, 3), np.repeat(normals_f, 4, axis=0), tri, pieces)
        out = out.reshape(-1, 4).any(1)
        if out.any():
            tri, area, corners = tri[out], area[out], corners[out]

    rng = np.random.default_rng(seed)
    dense_spacing = min(spacing, smoothing) / 2.5
    n_dense = int(np.clip(2.5 * area.sum() / dense_spacing**2, 4000, 300000))
    which = rng.choice(len(tri), n_dense, p=area / area.sum())
    r1, r2 = np.sqrt(rng.uniform(size=n_dense)), rng.uniform(size=n_dense)
    t = tri[which]
    pts = (1 - r1)[:, None] * t[:, 0] + (r1 * (1 - r2))[:, None] * t[:, 1] + (r1 * r2)[:, None] * t[:, 2]
    bary = np.stack([1 - r1, r1 * (1 - r2), r1 * r2], 1)
    nrm = np.einsum("nk,nkj->nj", bary, corners[which])
    nrm /= np.maximum(np.linalg.norm(nrm, axis=1, keepdims=True), 1e-12)
    keep = voxel_thin(pts + rng.uniform(0, spacing, 3), spacing)
    x, n = pts[keep], nrm[keep]
    if exterior_only and pieces.max() > 0:
        out = exterior(x, n, all_tri, pieces)
        if out.sum() >= 10:
            x, n = x[out], n[out]
    k, dir1 = shape_operator(x, n, pts, nrm, k=32, radius=smoothing * 1.5)
    pose = right_handed(n, dir1)
    return SurfaceCloud(name, x, pose, k, curvature_directions_defined(k[:, 0], k[:, 1]), 1.0)
