"""Meter: the estimated path on machines without counters, a faked powercap tree with wrap-around, carbon."""
import builtins
import json

import pytest

from frugalnet.energy import command
from frugalnet.energy.carbon import carbon_grams, check_pue, grid_intensity
from frugalnet.energy.counters import RaplSampler, counter_delta, find_rapl_zones
from frugalnet.energy.meter import DEFAULT_CPU_WATTS_PER_CORE, Meter, format_table


def busy(n=200_000):
    return sum(i * i for i in range(n))


def make_zone(root, folder, name, energy, max_range=10_000):
    z = root / folder
    z.mkdir(parents=True)
    (z / "name").write_text(name + "\n")
    (z / "energy_uj").write_text(f"{energy}\n")
    (z / "max_energy_range_uj").write_text(f"{max_range}\n")
    return z


@pytest.fixture
def fake_tree(tmp_path):
    root = tmp_path / "powercap"
    p0 = make_zone(root, "intel-rapl:0", "package-0", 1_000)
    make_zone(root, "intel-rapl:0:0", "core", 50)          # sub-zone: part of package-0, must not be added
    p1 = make_zone(root, "intel-rapl:1", "package-1", 2_000)
    make_zone(root, "intel-rapl-mmio:0", "package-0", 7)   # duplicate view of package-0 on some laptops
    return root, p0, p1


def test_counter_delta_undoes_one_wrap():
    assert counter_delta(100, 400, 1000) == 300
    assert counter_delta(900, 100, 1000) == 200
    with pytest.raises(ValueError, match="backwards"):
        counter_delta(5, 1, 0)


def test_zone_discovery_takes_packages_only(fake_tree):
    root, _, _ = fake_tree
    zones, why = find_rapl_zones(root)
    assert why == ""
    assert sorted(z.name for z in zones) == ["package-0", "package-1"]
    assert [z.path.name for z in zones] == ["intel-rapl:0", "intel-rapl:1"]


def test_measured_path_with_wraparound(fake_tree):
    root, p0, p1 = fake_tree
    with Meter(powercap_root=str(root), poll_s=3600) as m:
        busy()
        (p0 / "energy_uj").write_text("500\n")     # wrapped: 1000 -> 10000 -> 0 -> 500 = 9500 uJ
        (p1 / "energy_uj").write_text("2600\n")    # 600 uJ
    r = m.result
    assert r.label == "measured" and not r.estimated
    assert r.energy_j == pytest.approx((9_500 + 600) / 1e6)
    assert r.components_j == {"RAPL package-0": pytest.approx(0.0095), "RAPL package-1": pytest.approx(0.0006)}
    assert r.cpu_watts_per_core is None
    text = format_table(r) + json.dumps(r.to_dict())
    assert "estimated" not in text.replace('"estimated": false', "")
    assert "measured (RAPL package-0+package-1)" in text


def test_sampler_undoes_many_wraps(fake_tree):
    root, p0, _ = fake_tree
    zones, _ = find_rapl_zones(root)
    sampler = RaplSampler([z for z in zones if z.name == "package-0"])
    total = 0
    last = 1_000
    for value in (9_000, 2_000, 8_000, 1_000, 3_000):   # three wraps among these samples
        (p0 / "energy_uj").write_text(str(value))
        sampler.sample()
        total += counter_delta(last, value, 10_000)
        last = value
    assert sampler.joules()["RAPL package-0"] == pytest.approx(total / 1e6)
    assert total == 8_000 + 3_000 + 6_000 + 3_000 + 2_000


def test_env_var_points_at_fake_tree(fake_tree, monkeypatch):
    root, p0, _ = fake_tree
    monkeypatch.setenv("FRUGALNET_POWERCAP_ROOT", str(root))
    with Meter(poll_s=3600) as m:
        (p0 / "energy_uj").write_text("1500")
    assert m.result.label == "measured"
    assert m.result.energy_j == pytest.approx(500 / 1e6)


def test_estimated_without_counters(tmp_path):
    with Meter(powercap_root=str(tmp_path / "none")) as m:
        busy()
    r = m.result
    assert r.label == "estimated" and r.estimated
    assert r.cpu_s > 0 and r.wall_s > 0
    assert r.energy_j == pytest.approx(r.cpu_s * DEFAULT_CPU_WATTS_PER_CORE)
    assert r.source.startswith("estimated (CPU time x 12 W per core)")
    assert "Green Algorithms" in r.cpu_watts_source
    energy_rows = [row for row in r.table_rows() if row[0].startswith(("energy", "carbon"))]
    assert energy_rows and all("estimated" in row[0] for row in energy_rows)
    d = r.to_dict()
    assert d["label"] == "estimated" and d["estimated"] is True
    assert any("no powercap tree" in n for n in r.notes)


def test_cpu_watts_override_and_carbon(tmp_path):
    with Meter(cpu_watts=30, country="FR", pue=1.5, powercap_root=str(tmp_path)) as m:
        busy()
    r = m.result
    assert r.energy_j == pytest.approx(r.cpu_s * 30)
    assert r.intensity_g_per_kwh == 56.0 and "2023" in r.intensity_source
    assert r.carbon_g == pytest.approx(r.energy_j / 3.6e6 * 1.5 * 56.0)
    assert r.cpu_watts_source == "given by the user (--cpu-watts)"


def test_decorator_meters_each_call(tmp_path):
    meter = Meter(powercap_root=str(tmp_path))

    @meter
    def work():
        return busy(50_000)

    assert work() == busy(50_000)
    assert meter.result is not None and meter.result.label == "estimated"


def test_codecarbon_missing_is_reported_not_fatal(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_codecarbon(name, *args, **kwargs):
        if name.startswith("codecarbon"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_codecarbon)
    with Meter(use_codecarbon=True, powercap_root=str(tmp_path)) as m:
        busy(10_000)
    assert "not installed" in m.result.codecarbon["note"]
    assert any(row[0] == "CodeCarbon" for row in m.result.table_rows())


def test_intensity_table_and_validation():
    assert grid_intensity().region == "World average"
    assert grid_intensity("fra").g_per_kwh == grid_intensity("FR").g_per_kwh == 56.0
    assert grid_intensity("FR").iso3 == "FRA"
    user = grid_intensity("FR", intensity=100)
    assert user.g_per_kwh == 100 and "user" in user.source
    assert carbon_grams(3.6e6, 500.0, 1.2) == pytest.approx(600.0)
    with pytest.raises(ValueError, match="not in the built-in intensity table"):
        grid_intensity("XX")
    with pytest.raises(ValueError, match="intensity"):
        grid_intensity(intensity=-1)
    with pytest.raises(ValueError, match="pue"):
        check_pue(0.9)
    with pytest.raises(ValueError, match="cpu_watts"):
        Meter(cpu_watts=0)


def test_command_meters_child_and_returns_its_code(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FRUGALNET_POWERCAP_ROOT", str(tmp_path / "none"))
    out = tmp_path / "energy.json"
    code = command.main(["--cpu-watts", "10", "--json", str(out), "--",
                         "python", "-c", "import sys; sum(i*i for i in range(300000)); sys.exit(3)"])
    assert code == 3
    err = capsys.readouterr().err
    assert "energy (J), estimated" in err and "exit code 3" in err
    data = json.loads(out.read_text())
    assert data["label"] == "estimated" and data["exit_code"] == 3
    assert data["cpu_s"] > 0.01  # the child's CPU time is counted
    assert data["energy_j"] == pytest.approx(data["cpu_s"] * 10)


def test_command_usage_errors(capsys):
    assert command.main([]) == 2
    assert command.main(["--country", "XX", "--", "true"]) == 2
    assert "not in the built-in" in capsys.readouterr().err
    assert command.main(["--", "definitely-not-a-command-xyz"]) == 127


def test_fake_nvml_gpu_is_measured_and_cpu_still_estimated(tmp_path, monkeypatch):
    import sys
    import types

    reads = iter([1_000, 1_000, 4_500])  # probe at init, start, end (mJ)
    fake = types.SimpleNamespace(nvmlInit=lambda: None, nvmlDeviceGetCount=lambda: 1,
                                 nvmlDeviceGetHandleByIndex=lambda i: f"gpu{i}",
                                 nvmlDeviceGetTotalEnergyConsumption=lambda h: next(reads))
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    with Meter(powercap_root=str(tmp_path)) as m:
        busy(10_000)
    r = m.result
    assert r.components_j["NVML gpu0"] == pytest.approx(3.5)
    assert r.label == "partly estimated" and r.estimated
    assert r.source.startswith("measured (NVML) + estimated")
    assert r.energy_j == pytest.approx(3.5 + r.components_j["CPU estimate"])


def test_codecarbon_figures_beside_ours_when_installed(tmp_path):
    pytest.importorskip("codecarbon")
    with Meter(use_codecarbon=True, powercap_root=str(tmp_path)) as m:
        busy(300_000)
    cc = m.result.codecarbon
    assert "note" in cc or (cc["energy_j"] > 0 and cc["label"] == "estimated")
    assert m.result.energy_j == pytest.approx(m.result.cpu_s * DEFAULT_CPU_WATTS_PER_CORE)  # ours unchanged
