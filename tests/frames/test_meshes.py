"""OBJ reading (one test per bad input), mesh sampling (normals, curvatures, scale), the catalog of object sets, and
recognition of meshes; the pybullet_data set only where pybullet is installed."""
import numpy as np
import pytest

from frugalnet.frames import catalog
from frugalnet.frames.episodes import EpisodeConfig, learn_models, make_ensemble, run_episode
from frugalnet.frames.learning_module import lm_preset
from frugalnet.frames.meshes import mesh_pieces, read_obj, surface_from_mesh, winding_numbers
from frugalnet.frames.sensors import random_rotations

from .conftest import box, two_boxes, uv_sphere


def test_read_obj_fans_polygons_and_resolves_index_forms(tmp_path):
    p = tmp_path / "box.obj"
    p.write_text(box())
    v, f = read_obj(p)
    assert v.shape == (8, 3) and f.shape == (12, 3)          # 6 quads -> 12 triangles
    assert f.min() == 0 and f.max() == 7                      # v/vt/vn triples and the negative index resolved
    assert 7 in f[:, 1:].ravel()


@pytest.mark.parametrize("text, match", [
    ("", "no faces"),
    ("v 0 0 0\nv 1 0 0\nv 0 1 0\n", "no faces"),
    ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 4\n", "line 4: face index 4 is out of range"),
    ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 0 1 2\n", "face index 0 is out of range"),
    ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf -4 1 2\n", "face index -4 is out of range"),
    ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2\n", "at least 3 vertices"),
    ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 two 3\n", "not an integer"),
    ("v 0 0\n", "3 finite numbers"),
    ("v 0 nan 0\n", "3 finite numbers"),
])
def test_read_obj_rejects_bad_files_naming_them(tmp_path, text, match):
    p = tmp_path / "bad.obj"
    p.write_text(text)
    with pytest.raises(ValueError, match=match) as e:
        read_obj(p)
    assert "bad.obj" in str(e.value)


def test_read_obj_missing_file_and_degenerate_meshes(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        read_obj(tmp_path / "nope.obj")
    v = np.zeros((3, 3))
    with pytest.raises(ValueError, match="zero area"):
        surface_from_mesh("flat", v, np.array([[0, 1, 2]]), 0.05, 0)
    with pytest.raises(ValueError, match="face indices"):
        surface_from_mesh("bad", np.eye(3), np.array([[0, 1, 3]]), 0.05, 0)


def test_sphere_mesh_has_unit_diameter_outward_normals_and_curvature_two(tmp_path):
    p = tmp_path / "s.obj"
    p.write_text(uv_sphere())
    c = surface_from_mesh("s", *read_obj(p), spacing=0.04, seed=0)
    d = np.linalg.norm(c.points[:, None] - c.points[None], axis=-1).max()
    assert 0.97 < d <= 1.01
    radial = c.points / np.linalg.norm(c.points, axis=1, keepdims=True)
    assert np.median((c.normals * radial).sum(1)) > 0.99      # outward, smooth across the tessellation
    k = c.curvatures
    assert np.all(np.abs(np.median(k, axis=0) - 2.0) < 0.35)   # radius 0.5 -> both principal curvatures 2
    assert np.allclose(np.einsum("nij,nkj->nik", c.pose, c.pose), np.eye(3), atol=1e-6)


def test_box_mesh_is_flat_on_faces_and_sharp_at_edges(tmp_path):
    p = tmp_path / "b.obj"
    p.write_text(box())
    c = surface_from_mesh("b", *read_obj(p), spacing=0.03, seed=0)
    edge_dist = np.sort(np.abs(np.abs(c.points) - np.abs(c.points).max()), axis=1)[:, 1]   # to the nearest edge
    face_pts, edge_pts = edge_dist > 0.08, edge_dist < 0.01
    assert np.median(np.abs(c.curvatures[face_pts, 0])) < 0.3
    assert np.median(np.abs(c.curvatures[edge_pts, 0])) > 3.0
    axis = np.abs(c.normals[face_pts]).max(1)
    assert np.median(axis) > 0.999                              # face normals stay axis-aligned (crease kept)


def test_catalog_folder_sets_and_names(mesh_folder, tmp_path):
    names = catalog.object_set(f"folder:{mesh_folder}")
    assert names == ("ball", "crate", "plank")
    cloud = catalog.make_object("plank", 0.05, 1)
    assert cloud.name == "plank" and len(cloud) > 50
    assert catalog.make_object("plank", 0.05, 1) is cloud            # cached
    assert "crate" in catalog.available_objects()
    (tmp_path / "cube.obj").write_text(box())
    with pytest.raises(ValueError, match="taken by a procedural shape"):
        catalog.add_mesh("cube", tmp_path / "cube.obj")
    with pytest.raises(ValueError, match="already registered"):
        catalog.add_mesh("crate", tmp_path / "cube.obj")
    with pytest.raises(ValueError, match="at least 2"):
        catalog.object_set(f"folder:{tmp_path}")                      # one .obj is not a set
    with pytest.raises(ValueError, match="does not exist"):
        catalog.add_mesh_folder(tmp_path / "missing")
    with pytest.raises(ValueError, match="unknown object"):
        catalog.make_object("no_such_thing")
    with pytest.raises(ValueError, match="object set must be one of"):
        catalog.object_set("weird")


def test_bad_mesh_in_a_folder_is_named(tmp_path):
    (tmp_path / "good.obj").write_text(box())
    (tmp_path / "broken.obj").write_text("v 0 0 0\nf 1 2 3\n")
    names = catalog.object_set(f"folder:{tmp_path}")
    with pytest.raises(ValueError, match="broken.obj"):
        learn_models(names, 0.08, 0.05)


def test_meshes_recognised_at_random_rotations(mesh_folder):
    names = catalog.object_set(f"folder:{mesh_folder}")
    models = learn_models(names, 0.07, 0.04, seed=1)
    lmc = lm_preset("meshes", voxel=0.07, radius=0.1, min_steps=10, min_lead=3.0)
    rng = np.random.default_rng(4)
    for true, name in enumerate(names):
        test = catalog.make_object(name, 0.04, 99)
        r = run_episode(make_ensemble(models, 1, lmc), test, random_rotations(1, rng)[0], rng.uniform(-1, 1, 3),
                        EpisodeConfig(max_steps=60), rng, true_index=true)
        assert r["correct"], (name, r["predicted"], r["steps"])
        assert r["hypotheses_first"] >= r["hypotheses_mean"] > 0       # pruning shrinks the hypothesis set


def test_pybullet_mesh_set():
    pytest.importorskip("pybullet_data")
    names = catalog.object_set("meshes")
    assert len(names) == 77 == len(set(names))
    assert {"bunny", "duck", "teddy"} <= set(names)
    assert catalog.object_set("meshes") == names                    # the same fixed draw every time
    first = catalog.object_set("meshes_v1")                          # the first draw, near-duplicates included
    assert len(first) == 77 and first[:9] == names[:9]
    skipped = set(catalog.MESH_SET_SKIPPED)
    assert skipped and not skipped & set(names)
    assert set(first) - set(names) == skipped & set(first)           # only the skipped ones were replaced
    c = catalog.make_object("bunny", 0.04, 0)
    assert np.isfinite(c.features).all() and np.isfinite(c.points).all()
    sub = c.points[:: max(1, len(c) // 800)]
    assert 0.95 < np.linalg.norm(sub[:, None] - sub[None], axis=-1).max() <= 1.01


def test_winding_number_counts_the_pieces_holding_a_point(tmp_path):
    p = tmp_path / "b.obj"
    p.write_text(box())
    v, f = read_obj(p)
    w = winding_numbers(np.array([[0.0, 0, 0], [0.5, -0.2, 0.9], [3.0, 0, 0], [0, 1.5, 0]]), v[f])
    assert np.allclose(w, [1, 1, 0, 0], atol=1e-9)


def test_points_buried_inside_another_piece_are_not_sampled(tmp_path):
    p = tmp_path / "two.obj"
    p.write_text(two_boxes())
    v, f = read_obj(p)
    assert len(np.unique(mesh_pieces(v, f))) == 2
    full = surface_from_mesh("two", v, f, 0.03, 0, exterior_only=False)
    ext = surface_from_mesh("two", v, f, 0.03, 0)
    # object frame: bounding-box centre (x = 0.4 before scaling) at 0, x span 2.0 scaled to s; the overlap of the
    # boxes is x in [0.2, 0.6], where the only surface points away from the sides are the two buried end caps
    s = np.ptp(full.points[:, 0]) / 2.0
    buried = lambda q: ((q[:, 0] > (0.2 - 0.4) * s - 0.005) & (q[:, 0] < (0.6 - 0.4) * s + 0.005)   # noqa: E731
                        & (np.abs(q[:, 1:]).max(1) < 0.3 * s - 0.01))
    assert buried(full.points).sum() > 20                     # the end caps inside the overlap are sampled ...
    assert buried(ext.points).sum() == 0                      # ... but not with exterior_only
    assert len(ext) > 0.8 * (len(full) - buried(full.points).sum())


@pytest.mark.slow
def test_pybullet_mesh_set_is_its_rule_no_two_meshes_closer_than_their_resampling_noise():
    """Re-derives the meshes set by its rule (~10 CPU minutes): every pair was compared, none is a near-duplicate."""
    pytest.importorskip("pybullet_data")
    chosen, skipped, noise = catalog.distinct_mesh_draw()
    assert tuple(chosen) == catalog.object_set("meshes")
    assert tuple(s[0] for s in skipped) == catalog.MESH_SET_SKIPPED
    assert all(d < thr for _, _, d, thr in skipped) and all(v > 0 for v in noise.values())
