"""`frugalnet bench`'s tables, plots and report: one table per kind of case (layers, whole models, low-bit), every
method's median time and speedup over the case's reference side by side, the limit and how much of it the engine
reaches, and every unavailable method's reason."""
from __future__ import annotations

from pathlib import Path

import numpy as np

TABLE_TITLES = {"layers": "Layers: sparse Linear 4096 and CNN-2 (speedup over PyTorch dense)",
                "models": "Whole models, same weights in every runtime (speedup over PyTorch eager)",
                "lowbit": "Low-bit weights (speedup over PyTorch FP32)"}


def _tables(results: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in results:
        out.setdefault(r.get("table", "layers"), []).append(r)
    return out


def _methods(cases: list[dict]) -> list[str]:
    names: list[str] = []
    for r in cases:
        names += [m for m in r["methods"] if m not in names]
    return names


def _cell(e: dict | None) -> str:
    if not e or not e.get("available") or "seconds" not in e:
        return "n/a"
    text = f"{e['seconds'] * 1e3:.3g} ({e['speedup']:.2f}x)"
    if e.get("precision", "fp32") not in ("fp32", None):
        text += f" [{e['precision']}]"
    if e.get("spread", {}).get("wide"):
        text += " ~"
    if e.get("outputs_match") is False:
        text += " !"
    return text


def table_rows(results: list[dict]) -> tuple[list[str], list[list]]:
    """Headers and rows of one table: per method 'ms (speedup x)' (suffix ' ~' wide spread, ' !' outputs differ,
    '[bf16]' reduced precision), then the limit, the engine's share of it, its ratio to the fastest exact dense
    runtime, weight MB and whether every exact method matched."""
    methods = _methods(results)
    headers = ["case"] + [f"{m} ms (x)" for m in methods] + ["limit", "engine % of limit", "engine vs fastest dense",
                                                            "engine weights MB", "dense weights MB", "match"]
    rows = []
    for r in results:
        ms = r["methods"]
        row = [r["case"]] + [_cell(ms.get(m)) for m in methods]
        fr = ms.get("frugalnet", {})
        ref = ms.get(r.get("reference", "torch_dense"), {})
        vs = r.get("engine_vs_fastest_dense")
        row += [round(r["limit"], 1),
                f"{100 * fr['fraction_of_limit']:.1f}%" if fr.get("available") and "fraction_of_limit" in fr else "n/a",
                f"{vs:.2f}x vs {r['fastest_dense']}" if vs else "n/a",
                round(fr["weight_bytes"] / 2**20, 2) if fr.get("weight_bytes") else "n/a",
                round(ref["weight_bytes"] / 2**20, 2) if ref.get("weight_bytes") else "n/a",
                all(e.get("outputs_match") in (True, None) for e in ms.values()
                    if e.get("available") and e.get("precision", "fp32") == "fp32")]
        rows.append(row)
    return headers, rows


def notes_lines(results: list[dict]) -> list[str]:
    """One line per case and method that is unavailable, mismatched or carries a plan/how note."""
    lines = []
    for r in results:
        for key, text in (r.get("notes") or {}).items():
            if key in ("model", "kwta") and isinstance(text, str):
                lines.append(f"- {r['case']}: {text}")
        for m, e in r["methods"].items():
            note = e.get("note", "")
            if not e.get("available"):
                lines.append(f"- {r['case']} / {m}: n/a: {note}")
            elif e.get("outputs_match") is False:
                lines.append(f"- {r['case']} / {m}: outputs differ from the reference (max abs diff "
                             f"{e.get('max_abs_diff', float('nan')):.3g} at rtol {e.get('rtol', 1e-4):g}); {note}")
            elif m == "frugalnet" and note:
                lines.append(f"- {r['case']} / {m}: {note}")
    return lines


def plot(results: list[dict]):
    """Bar chart: speedup over the reference per case and method (log scale), limit marked."""
    from frugalnet.utils.plotting import pyplot

    plt = pyplot()
    methods = _methods(results)
    fig, ax = plt.subplots(figsize=(max(8, 1.2 * len(results) + 4), 5))
    width = 0.8 / max(1, len(methods))
    pos = np.arange(len(results))
    for i, m in enumerate(methods):
        vals = [r["methods"].get(m, {}).get("speedup", np.nan) if r["methods"].get(m, {}).get("available") else np.nan
                for r in results]
        ax.bar(pos + i * width, vals, width, label=m)
    centre = pos + 0.4 - width / 2
    ax.plot(centre, [r["limit"] for r in results], "k_", markersize=14, label="limit (dense / effective MACs)")
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_yscale("log")
    ax.set_xticks(centre)
    ax.set_xticklabels([r["case"] for r in results], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("speedup over the case's reference")
    ax.legend(fontsize=7, ncol=4)
    fig.tight_layout()
    return fig


def machine_line(result: dict) -> str:
    m = result.get("machine") or {}
    if not m:
        return f"{result.get('threads', '?')} threads, torch {result.get('torch', '?')}"
    return (f"CPU {m.get('cpu')} ({m.get('cpu_count')} logical cores; widest ISA {m.get('widest_isa')}; flags "
            f"{' '.join(m.get('isa', []))}), {result.get('threads')} threads, torch {m.get('torch')}, onnxruntime "
            f"{m.get('onnxruntime')}, openvino {m.get('openvino')}")


def write_report(result: dict, folder: str | Path, command: str = "") -> Path:
    from frugalnet.report import Report

    rep = Report("Sparse inference on CPU: frugalnet engine vs the alternatives")
    rep.text(f"{machine_line(result)}. Every method of a case timed in the same run, interleaved; median of the "
             f"rounds' per-call times; ' ~' marks an IQR over 20% of the median, ' !' outputs that differ from the "
             f"reference (rtol 1e-4 for fp32, 5e-2 for bf16/int8/int4). Limit = dense MACs / effective MACs "
             f"(nonzero weight x nonzero input). Command: `{command}`")
    for i, (table, cases) in enumerate(_tables(result["cases"]).items()):
        headers, rows = table_rows(cases)
        rep.heading(TABLE_TITLES.get(table, table))
        rep.table(headers, rows, caption="time in ms (speedup over the reference)")
        rep.figure(plot(cases), "speedups" if i == 0 else f"speedups_{table}",
                   f"{table}: speedup per case and method (log scale)")
        lines = notes_lines(cases)
        if lines:
            rep.text("\n".join(lines))
    if "jit" in result:
        rep.text(f"JIT: cold compile of all kernels {result['jit']['cold_s']:.1f} s; with the on-disk cache "
                 f"{result['jit']['cached_s']:.1f} s.")
    if "engine_compile_s_total" in result:
        rep.text(f"Engine compile (layer cases, incl. JIT/cache load): {result['engine_compile_s_total']:.1f} s.")
    rep.text(f"Benchmark wall time {result.get('wall_s', float('nan')):.1f} s.")
    return rep.write(folder)


def print_table(result: dict) -> None:
    for table, cases in _tables(result["cases"]).items():
        headers, rows = table_rows(cases)
        print(f"\n{TABLE_TITLES.get(table, table)}\n")
        print("| " + " | ".join(headers) + " |")
        print("|" + "|".join("---" for _ in headers) + "|")
        for r in rows:
            print("| " + " | ".join(str(c) for c in r) + " |")
        for line in notes_lines(cases):
            print(line)
