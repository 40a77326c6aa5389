"""Setting up what a benchmark runs against, on a clean clone: peer venvs and npm packages.

Peers are installed from their registries by name and pinned version into
``bench/.work`` (gitignored), never committed; a stamp file holding the exact
requirement list makes a second run skip the install, and a changed list
rebuilds the venv.  npm packages come from ``bench/package.json`` and its
lock file, the same way ``.ci/test-deps`` installs ``tests/js``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
WORK = BENCH / ".work"
PEERS = WORK / "peers"


class SetupError(RuntimeError):
    """A peer or tool could not be installed; the message says what to run by hand."""


def python_venv(name: str, requirements: Sequence[str]) -> Path:
    """``bench/.work/peers/<name>/venv`` with exactly ``requirements`` installed; returns its bin/."""
    home = PEERS / name
    venv = home / "venv"
    stamp = home / ".installed"
    wanted = "\n".join(requirements) + "\n"
    if stamp.exists() and stamp.read_text() == wanted and (venv / "bin" / "python").exists():
        return venv / "bin"
    if venv.exists():
        shutil.rmtree(venv)
    home.mkdir(parents=True, exist_ok=True)
    # The base interpreter, not this venv's: a venv made from a venv points at the base anyway.
    base = Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    python = str(base if base.exists() else sys.executable)
    _run([python, "-m", "venv", str(venv)], f"create the {name} venv")
    _run([str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", *requirements],
         f"pip install {' '.join(requirements)} for {name}")
    stamp.write_text(wanted)
    return venv / "bin"


def python27() -> Path:
    """The image's CPython 2.7 (pyenv), for peers that only run on Python 2; never needed by CI."""
    roots = [Path(os.environ["PYENV_ROOT"])] if os.environ.get("PYENV_ROOT") else []
    roots.append(Path.home() / ".pyenv")
    for root in roots:
        for candidate in sorted((root / "versions").glob("2.7*/bin/python2.7"), reverse=True):
            return candidate
    raise SetupError("no CPython 2.7 under pyenv (pyenv install 2.7.18); the Orbited 0.7 peer needs it")


def python27_packages(name: str, requirements: Sequence[str]) -> Path:
    """``requirements`` pip-installed for CPython 2.7 into ``bench/.work/peers/<name>/lib`` (a PYTHONPATH dir).

    ``--target`` rather than a venv: 2.7's venv support is virtualenv, not in the
    image.  Namespace packages (zope) get the ``__init__.py`` that their .pth
    file would otherwise provide, since PYTHONPATH directories skip .pth files.
    """
    home = PEERS / name
    lib = home / "lib"
    stamp = home / ".installed"
    wanted = "\n".join(requirements) + "\n"
    if stamp.exists() and stamp.read_text() == wanted and lib.is_dir():
        return lib
    if lib.exists():
        shutil.rmtree(lib)
    home.mkdir(parents=True, exist_ok=True)
    _run([str(python27()), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target",
          str(lib), *requirements], f"pip install {' '.join(requirements)} for {name} (CPython 2.7)")
    for namespace in ("zope",):
        if (lib / namespace).is_dir():
            (lib / namespace / "__init__.py").touch()
    stamp.write_text(wanted)
    return lib


def node() -> str:
    path = shutil.which("node")
    if path is None:
        raise SetupError("node is not installed; the load client needs Node.js 18+ (apt-get install nodejs npm)")
    return path


def c_client(name: str) -> Path:
    """``bench/client/<name>.c`` compiled to ``bench/.work/bin/<name>``, rebuilt when the source is newer.

    Load clients that must cost the machine almost nothing per connection or per
    delivery are written in C (one epoll loop, fixed buffers); the servers they
    measure share the same two cores with them.
    """
    source = BENCH / "client" / f"{name}.c"
    binary = WORK / "bin" / name
    if binary.exists() and binary.stat().st_mtime >= source.stat().st_mtime:
        return binary
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise SetupError("no C compiler for the load clients (apt-get install gcc)")
    binary.parent.mkdir(parents=True, exist_ok=True)
    _run([compiler, "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(binary), str(source)], f"compile {source.name}")
    return binary


def node_modules() -> Path:
    """``bench/node_modules`` installed from ``bench/package-lock.json`` (npm ci) when missing or stale."""
    modules = BENCH / "node_modules"
    lock = BENCH / "package-lock.json"
    marker = modules / ".package-lock.json"  # npm writes it on install
    manifest = json.loads((BENCH / "package.json").read_text())
    if not manifest.get("dependencies") and not manifest.get("devDependencies"):
        return modules  # nothing to install (npm would not even create the directory)
    if marker.exists() and marker.stat().st_mtime >= lock.stat().st_mtime:
        return modules
    npm = shutil.which("npm")
    if npm is None:
        raise SetupError("npm is not installed; the load client needs it (apt-get install npm)")
    _run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], "npm ci in bench/", cwd=BENCH)
    return modules


def _run(argv: Sequence[str], what: str, cwd: Path | None = None) -> None:
    done = subprocess.run(argv, check=False, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SetupError(f"could not {what} (exit {done.returncode}):\n{done.stdout}{done.stderr}")
