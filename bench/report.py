"""Results of the benchmarks: checked, enriched, stored, and turned into docs/performance.md.

A scenario returns plain data (see bench/README.md for the contract).  This
module adds what every scenario needs the same way: the orbited/peer ratio,
a "times better" figure that respects which direction is better, whether the
target was met, the machine and the command.  It writes
``bench/results/<scenario>.json`` and regenerates ``docs/performance.md`` and
``docs/perf/*.png`` from *all* result files present, so scenarios can be run
one at a time.  It never runs anything; it only reads and writes files.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from bench.peers import REPO

RESULTS = REPO / "bench" / "results"
DOC = REPO / "docs" / "performance.md"
PLOTS = REPO / "docs" / "perf"

METRIC_KEYS = ("name", "unit", "orbited", "peer", "peer_name", "better", "target")


class ResultError(ValueError):
    """A scenario returned something that breaks the contract; names the field."""


def _number(value: Any) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


_RATIO_TARGET = re.compile(r"(\d+(?:\.\d+)?)\s*(?:x|×)", re.IGNORECASE)
_AT_MOST = re.compile(r"(?:<=|≤|at most|max(?:imum)?)\s*([\d,]+(?:\.\d+)?)", re.IGNORECASE)
_AT_LEAST = re.compile(r"(?:>=|≥|at least|min(?:imum)?)\s*([\d,]+(?:\.\d+)?)", re.IGNORECASE)


def evaluate_target(metric: dict[str, Any]) -> bool | None:
    """Whether the target string is met; None when there is none or it is not machine-readable.

    Forms understood: "≥ 10x" (times better than the peer, direction-aware),
    "≤ 40" / "at most 40" (Orbited's value, in the metric's unit),
    "≥ 9000" / "at least 9000".  A scenario may decide itself with ``"met": bool``.
    """
    if isinstance(metric.get("met"), bool):
        return metric["met"]
    target = str(metric.get("target") or "").strip()
    orbited = _number(metric.get("orbited"))
    if not target or target in ("-", "—") or orbited is None:
        return None
    found = _RATIO_TARGET.search(target)
    if found:
        better = metric.get("times_better")
        return None if better is None else better >= float(found.group(1))
    found = _AT_MOST.search(target)
    if found:
        return orbited <= float(found.group(1).replace(",", ""))
    found = _AT_LEAST.search(target)
    if found:
        return orbited >= float(found.group(1).replace(",", ""))
    return None


def enrich(result: dict[str, Any], name: str) -> dict[str, Any]:
    """Check the contract and add ratio, times_better and met to every metric."""
    if not isinstance(result, dict):
        raise ResultError(f"{name}: run() returned {type(result).__name__}, not a dict")
    if result.get("scenario") != name:
        raise ResultError(f"{name}: result 'scenario' is {result.get('scenario')!r}, expected {name!r}")
    metrics = result.get("metrics")
    if not isinstance(metrics, list):
        raise ResultError(f"{name}: 'metrics' must be a list")
    for index, metric in enumerate(metrics):
        missing = [key for key in METRIC_KEYS if key not in metric]
        if missing:
            raise ResultError(f"{name}: metrics[{index}] lacks {', '.join(missing)}")
        if metric["better"] not in ("higher", "lower"):
            raise ResultError(f"{name}: metrics[{index}].better must be 'higher' or 'lower'")
        orbited, peer = _number(metric["orbited"]), _number(metric["peer"])
        ratio = orbited / peer if orbited is not None and peer else None
        if ratio is None or orbited == 0:
            better = None
        else:
            better = ratio if metric["better"] == "higher" else 1 / ratio
        metric["ratio"] = ratio
        metric["times_better"] = better
        metric["met"] = evaluate_target(metric)
    result.setdefault("title", name)
    result.setdefault("notes", [])
    result.setdefault("series", {})
    return result


def write_result(result: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{result['scenario']}.json"
    text = json.dumps(_finite(result), indent=1, sort_keys=False, allow_nan=False, default=_json_default)
    path.write_text(text + "\n")
    return path


def _finite(value: Any) -> Any:
    """NaN and infinity (a percentile of no samples, a peer that failed) become null: JSON has neither."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def load_results() -> list[dict[str, Any]]:
    results = []
    for path in sorted(RESULTS.glob("*.json")):
        try:
            results.append(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            print(f"bench: skipping {path}: {exc}")
    return results


# --- docs/performance.md


def fmt(value: Any, digits: int = 3) -> str:
    """Numbers a reader can scan: 12,345 / 123 / 12.3 / 1.23 / 0.0123."""
    number = _number(value)
    if number is None:
        return "–"
    if number == 0:
        return "0"
    size = abs(number)
    if size >= 1000:
        return f"{number:,.0f}"
    if size >= 100:
        return f"{number:.0f}"
    if size >= 10:
        return f"{number:.1f}"
    return f"{number:.{digits - 1}f}" if size >= 1 else f"{number:.{digits}g}"


def _met(metric: dict[str, Any]) -> str:
    return {True: "**yes**", False: "**no**", None: "–"}[metric.get("met")]


def _times(metric: dict[str, Any]) -> str:
    better = metric.get("times_better")
    if better is None:
        return "–"
    return f"{better:.2f}x better" if better >= 1 else f"{1 / better:.2f}x worse"


def render(results: list[dict[str, Any]], plots: dict[str, list[Path]]) -> str:
    out = [
        "# Performance",
        "",
        "Generated by `make bench` (`venv/bin/python -m bench.run`) from `bench/results/*.json`;",
        "do not edit by hand. How to run and what each scenario measures: `bench/README.md`.",
        "Each server runs on the same 2-core machine as its load client and backend, so",
        "absolute numbers are lower than on separate machines; the ratios are the point.",
        "",
        "| scenario | run | targets met |",
        "|---|---|---|",
    ]
    for result in results:
        judged = [m for m in result["metrics"] if m.get("met") is not None]
        met = sum(1 for m in judged if m["met"])
        quick = " (quick)" if result.get("quick") else ""
        quick += " (profiled)" if result.get("profiled") else ""
        out.append(f"| [{result['title']}](#{_anchor(result['title'])}) | {result.get('date', '?')[:16]}"
                   f"{quick} | {met} of {len(judged)} |")
    for result in results:
        out += ["", f"## {result['title']}", ""]
        machine = result.get("machine", {})
        if result.get("quick"):
            out += ["**Quick run** (`--quick`): smaller counts and shorter windows; not the reference figures.", ""]
        if result.get("profiled"):
            out += ["**Profiled run** (`--profile`): py-spy sampled Orbited; not the reference figures.", ""]
        out += [
            (f"Scenario `{result['scenario']}`, run {result.get('date', '?')} with "
             f"`{result.get('command', '?')}` ({fmt(result.get('seconds'))} s) at commit "
             f"`{result.get('commit', '?')}`."),
            (f"Machine: {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, "
             f"{machine.get('memory_gib', '?')} GiB, Linux {machine.get('kernel', '?')}; "
             f"Python {machine.get('python', '?')}, Twisted {machine.get('twisted', '?')}, "
             f"autobahn {machine.get('autobahn', '?')}; load average at start "
             f"{', '.join(str(v) for v in machine.get('load_average', []))}."),
            "",
            "| metric | Orbited | peer | Orbited / peer | | target | met? |",
            "|---|---:|---:|---:|---|---|---|",
        ]
        for metric in result["metrics"]:
            unit = f" ({metric['unit']})" if metric.get("unit") else ""
            out.append(
                f"| {metric['name']}{unit} | {fmt(metric['orbited'])} | {fmt(metric['peer'])} "
                f"{metric.get('peer_name', '')} | {fmt(metric.get('ratio'))} | {_times(metric)} | "
                f"{metric.get('target') or '–'} | {_met(metric)} |")
        for path in plots.get(result["scenario"], []):
            rel = path.relative_to(DOC.parent)
            out += ["", f"![{path.stem}]({rel.as_posix()})"]
        if result.get("notes"):
            out += ["", "Notes:", ""]
            out += [f"- {note}" for note in result["notes"]]
    return "\n".join(out) + "\n"


def _anchor(title: str) -> str:
    slug = re.sub(r"[^\w\- ]", "", title.lower()).strip().replace(" ", "-")
    return slug


def regenerate_docs() -> Path:
    results = load_results()
    plots = {}
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("bench: matplotlib is missing (pip install -e '.[bench]'); docs/performance.md has no plots")
    else:
        PLOTS.mkdir(parents=True, exist_ok=True)
        for result in results:
            plots[result["scenario"]] = draw_plots(result)
    DOC.write_text(render(results, plots))
    return DOC


# --- plots


def draw_plots(result: dict[str, Any]) -> list[Path]:
    """One bar chart of every metric (Orbited vs peer), then one figure per ``series`` entry."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    metrics = [m for m in result["metrics"] if _number(m["orbited"]) is not None]
    if metrics:
        cols = min(3, len(metrics))
        rows = math.ceil(len(metrics) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
        for ax, metric in zip(axes.flat, metrics):
            peer = _number(metric["peer"])
            labels = ["Orbited", metric.get("peer_name") or "peer"]
            values = [_number(metric["orbited"]), peer or 0.0]
            bars = ax.bar(labels, values, color=["#2a6fdb", "#999999"])
            ax.bar_label(bars, labels=[fmt(v) for v in values], fontsize=8)
            better = "higher" if metric["better"] == "higher" else "lower"
            ax.set_title(f"{metric['name']}\n({better} is better)", fontsize=9)
            ax.set_ylabel(metric.get("unit", ""), fontsize=8)
            ax.tick_params(labelsize=8)
            ax.margins(y=0.15)
        for ax in list(axes.flat)[len(metrics):]:
            ax.set_visible(False)
        fig.tight_layout()
        paths.append(_save(fig, f"{result['scenario']}-metrics.png"))
        plt.close(fig)
    for key, spec in (result.get("series") or {}).items():
        path = _draw_series(plt, result["scenario"], key, spec)
        if path is not None:
            paths.append(path)
    return paths


def _draw_series(plt: Any, scenario: str, key: str, spec: dict[str, Any]) -> Path | None:
    kind = spec.get("kind", "line")
    data = spec.get("data") or {}
    if not data:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    if kind == "cdf":
        for label, values in data.items():
            ordered = sorted(v for v in values if _number(v) is not None)
            if ordered:
                ys = [(i + 1) / len(ordered) for i in range(len(ordered))]
                ax.step(ordered, ys, where="post", label=label)
        ax.set_ylabel(spec.get("ylabel", "fraction of samples"))
    elif kind == "line":
        for label, line in data.items():
            ax.plot(line["x"], line["y"], marker="o", label=label)
        ax.set_ylabel(spec.get("ylabel", ""))
    elif kind == "bar":
        labels = list(data)
        categories = list(dict.fromkeys(c for line in data.values() for c in line["x"]))
        width = 0.8 / max(1, len(labels))
        for i, label in enumerate(labels):
            lookup = dict(zip(data[label]["x"], data[label]["y"]))
            xs = [j + i * width for j in range(len(categories))]
            ax.bar(xs, [lookup.get(c, 0) for c in categories], width=width, label=label)
        ax.set_xticks([j + width * (len(labels) - 1) / 2 for j in range(len(categories))],
                      [str(c) for c in categories])
        ax.set_ylabel(spec.get("ylabel", ""))
    else:
        print(f"bench: {scenario}: series {key!r} has unknown kind {kind!r}; skipped")
        plt.close(fig)
        return None
    if spec.get("logx"):
        ax.set_xscale("log")
    if spec.get("logy"):
        ax.set_yscale("log")
    ax.set_xlabel(spec.get("xlabel", ""))
    ax.set_title(spec.get("title", key), fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = _save(fig, f"{scenario}-{key}.png")
    plt.close(fig)
    return path


def _save(fig: Any, name: str) -> Path:
    path = PLOTS / name
    fig.savefig(path, dpi=90, metadata={"Software": None})
    return path

