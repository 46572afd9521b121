import json

import pytest

from frugalnet.studies import get_study, resume_run, run_study
from frugalnet.studies.frames import FramesConfig

TINY = dict(quiet=True, episodes=4, n_objects=3, object_sets=("distinct",), columns_sweep=(1, 2), sweep_episodes=2,
            abstract_objects=20, abstract_repeats=2, abstract_columns=(1, 2), capacity_objects=(10, 20), capacity_cells=(4,),
            baseline_walks=3, baseline_epochs=1, continual_first=2, continual_episodes=1, unsupervised_repeats=1,
            max_steps=30, spacing=0.05, voxel=0.07, baseline_views=(1, 2), view_walks=2)


def test_config_validation():
    with pytest.raises(ValueError, match="parts"):
        FramesConfig(parts=("3d", "dance")).validate()
    with pytest.raises(ValueError, match="object set"):
        FramesConfig(object_sets=("weird",)).validate()
    with pytest.raises(ValueError, match="episodes"):
        FramesConfig(episodes=0).validate()
    with pytest.raises(ValueError, match="voxel"):
        FramesConfig(spacing=0.05, voxel=0.01).validate()
    with pytest.raises(ValueError, match="mesh_step"):
        FramesConfig(mesh_step=0.5).validate()
    assert FramesConfig().setting("distinct").step == 0.05
    assert FramesConfig(mesh_step=0.07).setting(f"folder:{__file__}").step == 0.07    # any mesh set


def test_study_runs_end_to_end_and_resumes(tmp_path):
    assert get_study("frames").config_cls is FramesConfig
    res = run_study("frames", FramesConfig(name="t", runs_dir=str(tmp_path), **TINY))
    r = res.results
    assert set(r) == {"abstract", "3d", "columns", "continual", "unsupervised"}
    assert len(r["abstract"]["curves"]["ideal"]) == 10
    lm = r["3d"]["distinct"]["evidence_lm"]
    assert lm["episodes"] == 4 and 0 <= lm["accuracy"] <= 1
    assert set(r["3d"]["distinct"]["baselines"]) == {"pointnet", "pointnet_rot_aug", "d2_nn"}
    assert (res.dir / "report.md").is_file() and (res.dir / "steps_vs_columns.png").is_file()
    saved = json.loads((res.dir / "results.json").read_text())
    assert saved["results"]["unsupervised"]["presentations"] == 3
    assert list((res.dir / "units").glob("3d-distinct*.json"))
    again = resume_run(res.dir)                       # finished units are read back, not re-run
    assert again.results["3d"] == r["3d"] and again.results["abstract"] == r["abstract"]


def test_study_runs_a_mesh_folder_beside_the_shapes(tmp_path, mesh_folder):
    import argparse

    from frugalnet.cli import add_config_arguments, config_from_args

    parser = argparse.ArgumentParser()
    add_config_arguments(parser, FramesConfig)
    cfg = config_from_args(FramesConfig, parser.parse_args(["--set", f"folder:{mesh_folder}"]))
    assert cfg.set == f"folder:{mesh_folder}" and cfg.sets() == ("distinct", "similar", f"folder:{mesh_folder}")
    with pytest.raises(ValueError, match="mesh folder '/no/such/folder' does not exist"):
        FramesConfig(set="folder:/no/such/folder").validate()
    tiny = dict(TINY, parts=("3d", "baselines"), object_sets=(), columns_sweep=(), episodes=2, set=f"folder:{mesh_folder}",
                mesh_columns=2, mesh_max_steps=22, scaling_objects=(2, 3), scaling_episodes=1, voxel=0.1)
    res = run_study("frames", FramesConfig(name="m", runs_dir=str(tmp_path), **tiny))
    mesh = res.results["3d"][mesh_folder.name]
    assert mesh["objects"] == 3 and mesh["evidence_lm"]["episodes"] == 2
    assert mesh["voting"]["columns"] == 2 and mesh["voting"]["episodes"] == 2
    assert set(mesh["scaling"]) == {"2", "3"} and mesh["scaling"]["2"]["episodes"] == 1
    assert set(mesh["views"]) == {"1", "2"}
    factors = {f["name"]: f for f in mesh["ledger"]["factors"]}
    assert set(factors) == {"views: PointNet, one pose", "views: PointNet + rotation aug.",
                            "views: D2 + nearest neighbour"}
    for f in factors.values():                       # either the views needed, or "not reached at 2 views"
        assert (f["value"] is not None and f["baseline"] in (1.0, 2.0)) or f["note"].startswith("not reached at 2")
    report = (res.dir / "report.md").read_text()
    assert f"Scaling on {mesh_folder.name}" in report and "views per object" in report
    again = resume_run(res.dir)
    assert again.results["3d"][mesh_folder.name]["scaling"] == mesh["scaling"]
