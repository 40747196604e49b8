"""The set-up commands: what ``make test`` and ``make train`` install (read with ``make -n``, which
prints the commands without running them), and what ``.ci/run`` does (run with a stand-in ``make``)."""
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CI_RUN = ROOT / ".ci" / "run"
needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def _make_n(target, venv):
    """The commands ``make <target>`` would run with the virtual environment at ``venv``."""
    out = subprocess.run(["make", "-n", "-C", str(ROOT), f"VENV={venv}", target],
                         capture_output=True, text=True, check=True).stdout
    return [ln for ln in out.splitlines() if not ln.startswith("make")]


def _stamp(venv, *names):
    """Stamps newer than pyproject.toml, as a finished install leaves them."""
    venv.mkdir(exist_ok=True)
    later = max(time.time(), (ROOT / "pyproject.toml").stat().st_mtime) + 60
    for name in names:
        (venv / name).touch()
        os.utime(venv / name, (later, later))


@needs_make
def test_make_test_installs_the_browser_extra_and_make_train_does_not(tmp_path):
    venv = tmp_path / "venv"
    test = _make_n("test", venv)
    assert any("-m venv" in c for c in test) and any('-e ".[test]"' in c for c in test)
    assert any('pip install --quiet -e ".[test,browser]"' in c for c in test), test
    assert "-m pytest" in test[-1]
    train = _make_n("train", venv)
    assert any("-m venv" in c for c in train) and any('-e ".[test]"' in c for c in train)
    assert not any("browser" in c or "playwright" in c for c in train), train
    assert "scratchcnn train" in train[-1]


@needs_make
def test_installed_stamps_stop_reinstalling(tmp_path):
    venv = tmp_path / "venv"
    _stamp(venv, ".installed")                     # made by make train: only the browser extra is left
    test = _make_n("test", venv)
    assert len(test) == 3 and '".[test,browser]"' in test[0] and "-m pytest" in test[2], test
    assert len(_make_n("train", venv)) == 1
    _stamp(venv, ".installed", ".test-installed")  # made by make test: nothing left to install
    assert [("-m pytest" in c) for c in _make_n("test", venv)] == [True]
    assert [("scratchcnn train" in c) for c in _make_n("train", venv)] == [True]


def _commands(script):
    """The script's lines that are not comments or blank, stripped."""
    return [ln.strip() for ln in script.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def test_ci_run_sets_ci_itself_and_runs_the_readmes_test_command():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(make train.*?)```", readme, re.S).group(1)   # the two set-up commands
    assert [ln.split("#")[0].strip() for ln in block.splitlines()] == ["make train", "make test"]
    commands = _commands(CI_RUN.read_text())
    assert "set -euo pipefail" in commands
    assert commands[-1] == "make test"
    assert "export CI=true" in commands
    assert commands.index("export CI=true") < commands.index("make test")
    assert os.access(CI_RUN, os.X_OK)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_ci_run_passes_ci_true_to_make_test_whoever_calls_it(tmp_path):
    """Run .ci/run with stand-ins for make and chromium (so it installs nothing) and CI unset."""
    record = tmp_path / "make-calls"
    for name, body in (("make", f'echo "$* CI=${{CI-unset}}" >> {record}\n'), ("chromium", "")):
        stub = tmp_path / name
        stub.write_text("#!/bin/sh\n" + body)
        stub.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PATH"] = f"{tmp_path}{os.pathsep}{env.get('PATH', '')}"
    subprocess.run(["bash", str(CI_RUN)], env=env, check=True, capture_output=True, timeout=60)
    assert record.read_text().splitlines() == ["test CI=true"]


def _browser_test(ci, tmp_path):
    """Run tests/test_explore_browser.py where no chromium can be found (an empty PATH)."""
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PATH"] = str(tmp_path)
    if ci:
        env["CI"] = "true"
    return subprocess.run([sys.executable, "-m", "pytest", "-rsf", "-p", "no:cacheprovider",
                           str(ROOT / "tests" / "test_explore_browser.py")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_the_browser_test_skips_without_chromium_naming_the_install_command(tmp_path):
    run = _browser_test(False, tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    # every browser test skips (none runs, none fails), each naming the install command
    summary = run.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"=+ \d+ skipped in [\d.]+s(?: \(.*\))? =+", summary), run.stdout
    skips = [line for line in run.stdout.splitlines() if line.startswith("SKIPPED")]
    assert skips and all("apt-get install chromium" in line for line in skips), run.stdout


@pytest.mark.slow
def test_the_browser_test_fails_without_chromium_in_ci(tmp_path):
    run = _browser_test(True, tmp_path)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "apt-get install chromium" in run.stdout and ".ci/run should have installed it" in run.stdout
