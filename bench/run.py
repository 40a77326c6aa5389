"""The benchmark harness: ``python -m bench.run [--quick] [--only NAME ...]``.

Finds every scenario module in ``bench/scenarios/`` (a module with ``NAME``
and ``run(ctx) -> dict``), runs the selected ones one after another with a
fresh scratch directory each, stores each result in
``bench/results/<NAME>.json`` and regenerates ``docs/performance.md`` from all
result files.  A scenario that fails is reported and the others still run;
the exit status is then 1.  Every process a scenario started is stopped
afterwards, on failure and on SIGINT/SIGTERM too.
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

from bench import report
from bench.context import ScenarioContext
from bench.measure import machine_info
from bench.peers import BENCH, REPO, WORK
from bench.procs import stop_all

SCENARIOS = BENCH / "scenarios"
KEEP_RUNS = 5  # scratch directories kept per scenario, for their logs


def discover() -> dict[str, ModuleType]:
    """Scenario modules by NAME, in file order; a module that fails to import is an error."""
    found: dict[str, ModuleType] = {}
    for path in sorted(SCENARIOS.glob("*.py")):
        if path.name.startswith("_"):
            continue
        module = importlib.import_module(f"bench.scenarios.{path.stem}")
        name = getattr(module, "NAME", None)
        if not isinstance(name, str) or not callable(getattr(module, "run", None)):
            raise SystemExit(f"bench: {path} needs NAME = '<name>' and def run(ctx) -> dict")
        if name in found:
            raise SystemExit(f"bench: scenario name {name!r} is used twice")
        found[name] = module
    return found


def commit() -> str:
    def git(*args: str) -> str:
        # --no-optional-locks: reading the status must not rewrite the index of a shared tree.
        done = subprocess.run(["git", "--no-optional-locks", *args], check=False, cwd=REPO,
                              capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return head + ("+changes" if dirty else "")


def scratch(name: str) -> Path:
    runs = WORK / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    old = sorted(runs.glob(f"{name}-*"))
    for stale in old[:max(0, len(old) - KEEP_RUNS + 1)]:
        shutil.rmtree(stale, ignore_errors=True)
    path = runs / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    path.mkdir()
    return path


def command_line(argv: list[str]) -> str:
    python = Path(sys.executable)
    try:
        shown = str(python.relative_to(REPO))
    except ValueError:
        shown = str(python)
    return " ".join([shown, "-m", "bench.run", *map(shlex.quote, argv)])


def run_one(name: str, module: ModuleType, quick: bool, command: str, profile: bool = False) -> dict:
    ctx = ScenarioContext(workdir=scratch(name), quick=quick, repo=REPO, python=sys.executable, name=name,
                          profile=profile)
    ctx.log(f"starting ({'quick' if quick else 'full'}); scratch {ctx.workdir.relative_to(REPO)}")
    machine = machine_info()
    started = time.monotonic()
    date = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    try:
        result = module.run(ctx)
    finally:
        ctx.procs.close()
    result = report.enrich(result, name)
    result.update({
        "quick": quick,
        "profiled": profile,
        "date": date,
        "seconds": round(time.monotonic() - started, 1),
        "command": command,
        "commit": commit(),
        "machine": machine,
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "workdir": str(ctx.workdir.relative_to(REPO)),
    })
    path = report.write_result(result)
    ctx.log(f"done in {result['seconds']} s; wrote {path.relative_to(REPO)}")
    for metric in result["metrics"]:
        ctx.log(f"  {metric['name']}: orbited {report.fmt(metric['orbited'])} {metric['unit']}, "
                f"{metric['peer_name']} {report.fmt(metric['peer'])}; target {metric['target']!r}: "
                f"{ {True: 'met', False: 'NOT met', None: 'n/a'}[metric['met']] }")
    return result


def _terminate(signum: int, frame: object) -> None:
    # Unwind through every finally: block so each ProcessSet stops what it started.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts and shorter windows (development)")
    parser.add_argument("--only", nargs="+", action="extend", metavar="NAME", default=[],
                        help="run only these scenarios")
    parser.add_argument("--profile", action="store_true",
                        help="attach py-spy to Orbited during each measurement; summaries land in the scratch dir")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("--docs-only", action="store_true",
                        help="regenerate docs/performance.md from bench/results without running anything")
    args = parser.parse_args(argv)
    os.chdir(REPO)
    scenarios = discover()
    if args.list:
        for name, module in scenarios.items():
            print(f"{name}: {(module.__doc__ or '').strip().splitlines()[0] if module.__doc__ else ''}")
        return 0
    unknown = [name for name in args.only if name not in scenarios]
    if unknown:
        parser.error(f"unknown scenario {', '.join(unknown)}; known: {', '.join(scenarios)}")
    signal.signal(signal.SIGTERM, _terminate)
    atexit.register(stop_all)
    failed = []
    if not args.docs_only:
        command = command_line(argv)
        for name, module in scenarios.items():
            if args.only and name not in args.only:
                continue
            try:
                run_one(name, module, args.quick, command, args.profile)
            except Exception:  # noqa: BLE001 (one broken scenario must not stop the others)
                failed.append(name)
                print(f"bench: scenario {name} failed:\n{traceback.format_exc()}", file=sys.stderr)
            finally:
                stop_all()
    doc = report.regenerate_docs()
    print(f"bench: regenerated {doc.relative_to(REPO)}", file=sys.stderr)
    if failed:
        print(f"bench: failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
