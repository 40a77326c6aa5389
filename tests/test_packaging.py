"""What ``pip install .`` (not ``-e``) puts on a server: every module and every bundled static file.

The test suite and ``make run`` use an editable install, which reads the source tree and so
cannot notice a directory that setuptools leaves out: orbited/transports was missing from
the wheel until it got an ``__init__.py``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile

from tests.support.procs import REPO


def test_the_wheel_holds_every_module_and_static_file(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for name in ("setup.py", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "orbited", source / "orbited", ignore=shutil.ignore_patterns("__pycache__"))
    # the same build as `pip install .` (an isolated build environment, as `make test`'s own install)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "-q",
                            "-w", str(tmp_path / "dist")], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    assert "absent from the `packages` configuration" not in built.stderr  # setuptools' warning about data dirs
    wheel = next((tmp_path / "dist").glob("orbited-*.whl"))
    shipped = set(zipfile.ZipFile(wheel).namelist())
    expected = {path.relative_to(source).as_posix() for path in (source / "orbited").rglob("*") if path.is_file()}
    assert expected - shipped == set()
    assert "orbited/transports/sockjs/tcpsocket.py" in shipped and "orbited/static/Orbited.js" in shipped
