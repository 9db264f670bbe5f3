"""A quiet console: the project's command lines print no dependency warning on import.

Run as a user would, outside ``make``: a fresh interpreter with the default warning filters (no
PYTHONWARNINGS). ``sartm_d2.compat`` silences the known dependency warnings where they arise; a
new one from a dependency upgrade shows up here, on stderr, before it reaches a user.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.slow  # each test starts an interpreter that imports torch and detectron2


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONWARNINGS", "PYTHONDEVMODE")}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("script", ["train_net.py", "demo/demo.py"])
def test_help_prints_no_warning(script):
    out = _run(script, "--help")
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    assert "usage:" in out.stdout


def test_only_the_known_warnings_are_silenced():
    """The filters match by message and module: the same message from elsewhere still shows, and
    so do this project's own warnings."""
    code = (
        "import warnings, sartm_d2\n"
        "warnings.warn_explicit('`torch.jit.script` is deprecated. Please switch', FutureWarning, 'x.py', 1,"
        " module='torch.jit._script')\n"
        "warnings.warn_explicit('pkg_resources is deprecated as an API. See', UserWarning, 'y.py', 1,"
        " module='mypackage')\n"
        "warnings.warn_explicit('pkg_resources is deprecated as an API. See', UserWarning, 'clip.py', 1,"
        " module='clip.clip')\n"
        "warnings.warn('ours', UserWarning)\n"
    )
    out = _run("-c", code)
    assert out.returncode == 0, out.stderr
    # The torch.jit filter ended with the imports that needed it; the clip one names clip.clip only.
    assert "torch.jit.script` is deprecated" in out.stderr
    assert out.stderr.count("pkg_resources is deprecated") == 1 and "y.py" in out.stderr
    assert "UserWarning: ours" in out.stderr

