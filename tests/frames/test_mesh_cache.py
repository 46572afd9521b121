import numpy as np

from frugalnet.frames import catalog, mesh_cache

from .conftest import box


def _sample(path, calls):
    from frugalnet.frames.meshes import read_obj, surface_from_mesh

    def sample():
        calls.append(1)
        return surface_from_mesh("crate", *read_obj(path), 0.05, 3)
    return sample


def test_cached_surface_round_trips_and_refuses_corrupt_entries(tmp_path, monkeypatch):
    monkeypatch.setenv(mesh_cache.ENV, str(tmp_path / "cache"))
    obj = tmp_path / "crate.obj"
    obj.write_text(box())
    calls: list = []
    a = mesh_cache.cached_surface(obj, "crate", 0.05, 3, _sample(obj, calls))
    b = mesh_cache.cached_surface(obj, "crate", 0.05, 3, _sample(obj, calls))
    assert len(calls) == 1                                   # the second came from the cache
    for f in ("points", "pose", "curvatures", "pose_defined"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    assert b.name == "crate" and b.size == a.size
    entry = next((tmp_path / "cache").glob("*.npz"))
    raw = bytearray(entry.read_bytes())
    raw[len(raw) // 2] ^= 0xFF                               # corrupt: the entry is ignored and rewritten
    entry.write_bytes(bytes(raw))
    c = mesh_cache.cached_surface(obj, "crate", 0.05, 3, _sample(obj, calls))
    assert len(calls) == 2
    np.testing.assert_array_equal(c.points, a.points)
    assert mesh_cache.load_cloud(tmp_path / "cache", entry.stem, "crate") is not None
    mesh_cache.cached_surface(obj, "crate", 0.05, 4, _sample(obj, calls))   # another seed: another key
    assert len(calls) == 3
    obj.write_text(box(1.0, 0.5, 0.5))                       # an edited mesh never hits the old entry
    assert mesh_cache.cache_key(obj, 0.05, 3) != entry.stem


def test_cache_off_and_wrong_arrays(tmp_path, monkeypatch):
    monkeypatch.setenv(mesh_cache.ENV, "off")
    assert mesh_cache.cache_dir() is None
    obj = tmp_path / "crate.obj"
    obj.write_text(box())
    calls: list = []
    mesh_cache.cached_surface(obj, "crate", 0.05, 3, _sample(obj, calls))
    mesh_cache.cached_surface(obj, "crate", 0.05, 3, _sample(obj, calls))
    assert len(calls) == 2
    np.savez(tmp_path / "k.npz", points=np.zeros((2, 3)))    # foreign file under a key: not trusted
    assert mesh_cache.load_cloud(tmp_path, "k", "x") is None
    (tmp_path / "j.npz").write_bytes(b"not a zip")
    assert mesh_cache.load_cloud(tmp_path, "j", "x") is None


def test_catalog_uses_the_cache(mesh_folder):
    names = catalog.object_set(f"folder:{mesh_folder}")
    catalog._mesh_object.cache_clear()
    a = catalog.make_object(names[0], 0.05, 11)
    catalog._mesh_object.cache_clear()
    b = catalog.make_object(names[0], 0.05, 11)
    np.testing.assert_array_equal(a.points, b.points)
    assert any(mesh_cache.cache_dir().glob("*.npz"))
