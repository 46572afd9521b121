"""The `continual` study end to end: a quick run, resuming an interrupted run, options and validation."""
import json

import pytest

import frugalnet.studies.continual as study
from frugalnet.studies import resume_run, run_study
from frugalnet.studies.continual import PAPER_SCHEDULE, ContinualConfig, acceptance_checks, command_line, paper_setup

QUICK = dict(tasks=2, epochs=1, hidden=(32, 32), train_per_task=256, test_per_task=100, kw_percent_on=0.25,
             batch_size=64, quiet=True)


def test_quick_run_writes_every_strategy_and_the_report(tmp_path):
    cfg = ContinualConfig(runs_dir=str(tmp_path), **QUICK)
    result = run_study("continual", cfg)
    res = result.results["strategies"]
    assert list(res) == list(cfg.strategies)
    for name, r in res.items():
        assert 0.0 <= r["average_accuracy"] <= 1.0
        if name == "joint":
            assert r["R"] is None and len(r["final"]) == 2
        else:
            assert len(r["R"]) == 2 and r["R"][0][1] is None and r["R"][1][0] is not None
            assert r["forgetting"] == pytest.approx(r["R"][0][0] - r["R"][1][0])
    # prototypes of permuted tasks are told apart on the test set
    assert res["dendrites"]["context_acc"] > 0.95
    assert res["finetune"]["context_acc"] is None
    md = (result.dir / "report.md").read_text()
    assert "dendrites-si" in md and "Iyer et al. 2022" in md and "frugalnet run continual" in md
    assert (result.dir / "accuracy_matrix.png").is_file() and (result.dir / "accuracy_vs_tasks.png").is_file()
    saved = json.loads((result.dir / "results.json").read_text())
    assert {c["check"] for c in saved["results"]["checks"]} >= {"dendrites > finetune", "dendrites-si >= si"}
    # the ledger: samples the learner processed were counted (2 tasks x 256 x 1 epoch); joint retrained at each
    # task processes 256 + 512; both accuracies stated beside the factor
    assert res["dendrites"]["samples"] == 512 and res["joint"]["samples"] == 512
    factors = {f["name"]: f for f in saved["results"]["ledger"]["factors"]}
    assert factors["samples processed"]["baseline"] == 768 and factors["samples processed"]["run"] == 512
    assert factors["samples processed"]["value"] == pytest.approx(1.5)
    assert f"{res['dendrites']['average_accuracy']:.4f}" in saved["results"]["ledger"]["run"]
    assert "Savings ledger" in md and (result.dir / "continual-ledger.png").is_file()


def test_ledger_counts_joint_retraining_at_every_task():
    res = {"dendrites": {"average_accuracy": 0.9, "samples": 10 * 3 * 100, "task_sizes": [100] * 10,
                         "train_seconds_per_seed": [30.0]},
           "joint": {"average_accuracy": 0.95, "samples": 3 * 1000, "train_seconds_per_seed": [40.0]}}
    ledger = study.build_ledger(res, tasks=10, epochs=3).to_dict()
    f = {x["name"]: x for x in ledger["factors"]}
    assert f["samples processed"]["baseline"] == 3 * 100 * 55       # sum over t of t x n, times epochs
    assert f["samples processed"]["value"] == pytest.approx(5.5)   # (T + 1) / 2
    assert f["task-epochs"]["value"] == pytest.approx(5.5) and not f["task-epochs"]["in_product"]
    assert f["training time"]["baseline"] == pytest.approx(40.0 / 3000 * 16500) and f["training time"]["kind"] == "estimated"
    assert "0.9500" in ledger["baseline"] and "0.9000" in ledger["run"]
    assert study.build_ledger({"joint": res["joint"]}, tasks=10, epochs=3) is None


@pytest.mark.parametrize("keep_optimizer", [False, True])
def test_interrupted_run_resumes_from_the_last_task_checkpoint(tmp_path, monkeypatch, keep_optimizer):
    cfg = ContinualConfig(runs_dir=str(tmp_path), strategies=("dendrites-si",), keep_optimizer=keep_optimizer,
                          **{**QUICK, "tasks": 3})
    reference = run_study("continual", cfg, run_dir=tmp_path / "ref").results["strategies"]["dendrites-si"]

    real = study.train_task
    calls = []

    def dies_at_task_2(net, reg, provider, split, t, *args, **kwargs):
        calls.append(t)
        if t == 2:
            raise KeyboardInterrupt
        return real(net, reg, provider, split, t, *args, **kwargs)

    monkeypatch.setattr(study, "train_task", dies_at_task_2)
    with pytest.raises(KeyboardInterrupt):
        run_study("continual", cfg, run_dir=tmp_path / "cut")
    assert calls == [0, 1, 2]
    assert (tmp_path / "cut" / "checkpoints" / "s0-dendrites-si-after001.pt").is_file()

    calls.clear()
    monkeypatch.setattr(study, "train_task", lambda *a, **k: (calls.append(a[4]), real(*a, **k))[1])
    resumed = resume_run(tmp_path / "cut").results["strategies"]["dendrites-si"]
    assert calls == [2]                                       # tasks 0 and 1 were not trained again
    assert resumed["R"] == reference["R"]                     # and the numbers are those of an uninterrupted run


def test_options_and_validation(tmp_path):
    with pytest.raises(ValueError, match="strategies"):
        ContinualConfig(strategies=("finetune", "replay")).validate()
    with pytest.raises(ValueError, match="tasks"):
        ContinualConfig(tasks=0).validate()
    with pytest.raises(ValueError, match="split"):
        ContinualConfig(stream="split", tasks=12).validate()
    with pytest.raises(ValueError, match="context"):
        ContinualConfig(context="oracle").validate()
    with pytest.raises(ValueError, match="hidden"):
        ContinualConfig(hidden=()).validate()
    with pytest.raises(FileNotFoundError, match="data-dir"):
        ContinualConfig(paper=True).validate()
    with pytest.raises(ValueError, match="init"):
        ContinualConfig(init="xavier").validate()
    with pytest.raises(ValueError, match="init_gain"):
        ContinualConfig(init_gain=-1.0).validate()
    with pytest.raises(ValueError, match="adam_eps"):
        ContinualConfig(adam_eps=0.0).validate()
    with pytest.raises(FileNotFoundError, match="mnist"):
        run_study("continual", ContinualConfig(runs_dir=str(tmp_path), dataset="mnist",
                                               data_dir=str(tmp_path / "nowhere"), **QUICK))
    p = paper_setup(ContinualConfig(tasks=50, paper=True, data_dir="/data"))
    assert p.hidden == (2048, 2048) and p.kw_percent_on == 0.05 and p.num_segments == 50
    assert p.dataset == "mnist" and p.batch_size == 256 and p.weight_sparsity == 0.5
    assert (p.lr, p.epochs) == PAPER_SCHEDULE[50] and p.init == "kwta" and p.init_gain == 1.0 and p.adam_eps == 1e-8
    line = command_line(ContinualConfig(tasks=3, strategies=("si", "dendrites"), paper=True, data_dir="/d"))
    assert line == "frugalnet run continual --tasks 3 --strategies si dendrites --data-dir /d --paper"


def test_cli_exposes_the_options():
    from frugalnet.cli import build_parser

    args = build_parser().parse_args(["run", "continual", "--tasks", "5", "--strategies", "si", "dendrites",
                                      "--hidden", "64", "64", "--context", "online-prototype", "--paper",
                                      "--data-dir", "/x", "--init", "fan_in", "--init-gain", "1.5",
                                      "--adam-eps", "1e-4"])
    assert args.tasks == 5 and args.strategies == ["si", "dendrites"] and args.hidden == [64, 64]
    assert args.paper is True and args.data_dir == "/x" and args.context == "online-prototype"
    assert args.init == "fan_in" and args.init_gain == 1.5 and args.adam_eps == 1e-4


def test_acceptance_checks_compare_measured_accuracies():
    res = {k: {"average_accuracy": v} for k, v in
           dict(finetune=0.5, kwta=0.6, si=0.8, joint=0.9, dendrites=0.85, **{"dendrites-si": 0.82}).items()}
    got = {c["check"]: c["passed"] for c in acceptance_checks(res)}
    assert got == {"dendrites > finetune": True, "dendrites > kwta": True, "dendrites-si >= si": True,
                   "dendrites >= 0.93 x joint": True, "dendrites-si >= 0.9 x joint": True}
    res["dendrites"]["average_accuracy"] = 0.83
    assert {c["check"]: c["passed"] for c in acceptance_checks(res)}["dendrites >= 0.93 x joint"] is False
    assert acceptance_checks({"si": {"average_accuracy": 0.8}}) == []
