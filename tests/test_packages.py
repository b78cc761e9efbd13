"""Installed packages count by their version: upgrading one re-runs the nodes that use it.

A real environment: a venv whose site-packages holds a package with its metadata, and
a project that imports it, each run in a new process of that venv.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path
from typing import Any

import flowdeco as fd

FLOW = """
import fakepkg
import flowdeco as fd

@fd.node
def uses(x):
    return x * fakepkg.rate()

@fd.node
def other(x):
    return x + 1
"""

DRIVER = """
import json, sys
import flowdeco as fd
import flow

result = fd.Pipeline.from_module(flow).run({"x": 5}, store="store")
print(json.dumps({n: [str(s), result.values.get(n), str(result.explain(n))]
                  for n, s in result.status.items()}))
"""


class _Environment:
    """A venv with ``fakepkg`` installed (files and metadata), and a project using it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        env = root / "env"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
        self.python = env / "bin" / "python"
        found = subprocess.run(
            [self.python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        )
        self.site = Path(found.stdout.strip())
        (self.site / "fakepkg").mkdir(parents=True)
        self.install("1.0", "def rate():\n    return 2\n")
        self.project = root / "project"
        self.project.mkdir()
        (self.project / "flow.py").write_text(textwrap.dedent(FLOW))
        (self.project / "run.py").write_text(textwrap.dedent(DRIVER))

    def install(self, version: str, source: str) -> None:
        """Put ``fakepkg`` at ``version`` in site-packages, as an installer would."""
        (self.site / "fakepkg" / "__init__.py").write_text(source)
        for old in self.site.glob("fakepkg-*.dist-info"):
            for file in old.iterdir():
                file.unlink()
            old.rmdir()
        dist = self.site / f"fakepkg-{version}.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: fakepkg\nVersion: {version}\n"
        )

    def run(self) -> dict[str, Any]:
        """Run the project in a new process of the venv; flowdeco and its dependencies
        come from this checkout and this environment, on the path."""
        here = Path(fd.__file__).parent.parent
        path = os.pathsep.join([str(here), sysconfig.get_paths()["purelib"]])
        done = subprocess.run(
            [self.python, "run.py"],
            cwd=self.project,
            env={**os.environ, "PYTHONPATH": path, "PYTHONDONTWRITEBYTECODE": "1"},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        report: dict[str, Any] = json.loads(done.stdout)
        return report


def test_upgrading_a_package_reruns_exactly_the_nodes_that_use_it(tmp_path: Path) -> None:
    """Same version: reused. A new version: the node importing it runs, and explain says
    which package; the node that does not use it stays cached. A package's files are not
    walked: an edit without a new version is the installer's business, not an edit."""
    env = _Environment(tmp_path)
    first = env.run()
    assert first["uses"][:2] == ["succeeded", 10]
    assert env.run()["uses"][0] == "cached"

    env.install("1.1", "def rate():\n    return 3\n")
    upgraded = env.run()
    assert upgraded["uses"] == ["succeeded", 15, "ran: fakepkg changed (now fakepkg 1.1)"]
    assert upgraded["other"][0] == "cached"

    env.install("1.1", "def rate():\n    return 4\n")  # same version, other files
    assert env.run()["uses"][:2] == ["cached", 15]
