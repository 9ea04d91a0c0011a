"""mlp as an installed package: pyproject's packages, dependencies and console scripts; an install
into a fresh venv imported from another folder; the library never needs the checkout's folders."""

import ast
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from mlp import cli, scripts

tomllib = pytest.importorskip("tomllib")  # (Python 3.11+)

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
TEST_TOOLS = {"pytest", "pytest-xdist", "ruff", "setuptools"}  # requirements.txt's: the test extra


def test_every_package_of_mlp_is_installed():
  """A subpackage missing from the list would be missing from the wheel (no error until used)."""
  found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "mlp").rglob("__init__.py")}
  listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
  assert listed == found | {"mlp.experiments"}
  assert PYPROJECT["tool"]["setuptools"]["package-dir"] == {"mlp.experiments": "experiments"}


def test_the_dependencies_are_requirements_txts():
  """Each runtime pin of requirements.txt satisfies pyproject's range for it, and pyproject asks
  for nothing else; the test tools are the ``test`` extra."""
  pins = {}
  for line in (ROOT / "requirements.txt").read_text().splitlines():
    line = line.split("#")[0].strip()
    if line:
      r = Requirement(line)
      pins[r.name] = r
  deps = {r.name: r for r in map(Requirement, PYPROJECT["project"]["dependencies"])}
  assert set(deps) == set(pins) - TEST_TOOLS
  for name, dep in deps.items():
    (pinned,) = [s.version for s in pins[name].specifier]
    assert dep.specifier.contains(pinned), f"{name}: requirements.txt's {pinned} is not {dep}"
    assert dep.extras == pins[name].extras
  test_extra = {Requirement(r).name for r in PYPROJECT["project"]["optional-dependencies"]["test"]}
  assert test_extra == TEST_TOOLS


def test_a_console_script_per_entry_point():
  entry_points = {p.stem for p in (ROOT / "experiments").glob("*.py") if p.stem != "__init__"}
  assert set(scripts.ENTRY_POINTS) == entry_points
  expected = {f"mlp-{n.replace('_', '-')}": f"mlp.scripts:{n}" for n in entry_points}
  assert PYPROJECT["project"]["scripts"] == expected
  assert all(callable(getattr(scripts, n)) for n in entry_points)


def test_the_library_imports_nothing_from_the_checkouts_folders():
  """mlp/ never imports configs, experiments, benchmarks or tests (only mlp.configs): an installed
  mlp has none of them."""
  found = []
  for path in (ROOT / "mlp").rglob("*.py"):
    for node in ast.walk(ast.parse(path.read_text())):
      names = []
      if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        names = [node.module]
      found += [
        f"{path.relative_to(ROOT)}:{node.lineno} {n}"
        for n in names
        if n.split(".")[0] in ("configs", "experiments", "benchmarks", "tests")
      ]
  assert not found, found


def test_a_config_path_that_is_no_file_here_names_the_packaged_config(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # (no configs/ folder here)
  packaged = cli.CONFIGS / "har.py"
  assert cli.packaged_config("--config=configs/har.py:quick") == f"--config={packaged}:quick"
  assert cli.packaged_config("--config=har.py") == f"--config={packaged}"
  assert cli.packaged_config("--config=har") == f"--config={packaged}"
  assert cli.packaged_config("--config=nope.py") == "--config=nope.py"  # its own error later
  assert cli.packaged_config("--config.train.l2=0.1") == "--config.train.l2=0.1"
  (tmp_path / "configs").mkdir()
  (tmp_path / "configs" / "har.py").write_text("")  # a file here is the user's: kept
  assert cli.packaged_config("--config=configs/har.py") == "--config=configs/har.py"


def _copy_checkout(dest: Path) -> Path:
  """The checkout's files that git tracks or would track (a clone of the working tree)."""
  files = subprocess.run(
    ["git", "ls-files", "-co", "--exclude-standard", "-z"],
    cwd=ROOT,
    capture_output=True,
    check=True,
  ).stdout.split(b"\0")
  for name in filter(None, files):
    src = ROOT / os.fsdecode(name)
    if src.is_file():
      (dest / os.fsdecode(name)).parent.mkdir(parents=True, exist_ok=True)
      shutil.copy2(src, dest / os.fsdecode(name))
  return dest


def _fresh_venv(path: Path) -> Path:
  """A venv whose dependencies are this interpreter's (a .pth file): no download, no pip of its
  own (this one's runs through the same .pth), the project installed into it alone."""
  subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
  python = path / "bin" / "python"
  site = subprocess.run(
    [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
    capture_output=True,
    text=True,
    check=True,
  ).stdout.strip()
  ours = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
  Path(site, "deps.pth").write_text("\n".join(ours) + "\n")
  return python


def _pip_install(python: Path, *args: str) -> None:
  r = subprocess.run(
    [python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", *args],
    capture_output=True,
    text=True,
    env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
  )
  assert r.returncode == 0, r.stdout + r.stderr


CHECK = """
import importlib, pkgutil, sys
import mlp
from mlp import MLPClassifier
import mlp.configs.har, mlp.experiments.har_ablation
for m in pkgutil.walk_packages(mlp.__path__, "mlp."):
  if not m.name.startswith("mlp.experiments."):  # (each defines --config: one per process)
    importlib.import_module(m.name)
print(mlp.__file__)
print(mlp.configs.har.get_config("quick").name)
print(sorted(m for m in sys.modules if m.split(".")[0] in ("configs", "experiments")))
"""


@pytest.mark.slow
def test_pip_install_into_a_fresh_venv_then_import_from_another_folder(tmp_path):
  """``pip install .`` from a copy of the checkout, then every module of mlp imported, a packaged
  config loaded and a console script run from a folder that is not the checkout; ``pip install
  -e .`` too. Dependencies come from this interpreter (--no-deps into a venv that sees them;
  --no-build-isolation with its setuptools), so nothing is downloaded."""
  src = _copy_checkout(tmp_path / "clone")
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  python = _fresh_venv(tmp_path / "venv")
  _pip_install(python, str(src))
  shutil.rmtree(src)  # a wheel install needs its source no more
  r = subprocess.run([python, "-c", CHECK], cwd=elsewhere, capture_output=True, text=True)
  assert r.returncode == 0, r.stderr
  location, config, extra = r.stdout.splitlines()
  assert location.startswith(str(tmp_path / "venv")), location
  assert config == "har_ablation_quick" and extra == "[]"
  script = tmp_path / "venv" / "bin" / "mlp-har-ablation"
  help_text = subprocess.run([script, "--help"], cwd=elsewhere, capture_output=True, text=True)
  assert help_text.returncode == 0 and "--config" in help_text.stdout
  assert str(tmp_path / "venv") in help_text.stdout  # the default config is the packaged one
  bad = subprocess.run(
    [script, "--config=configs/har.py:quick", "--config.train.max_epoch=1"],
    cwd=elsewhere,
    capture_output=True,
    text=True,
  )
  assert bad.returncode == 2 and "did you mean" in bad.stderr  # the config was found and read

  src = _copy_checkout(tmp_path / "editable")
  python = _fresh_venv(tmp_path / "venv-e")
  _pip_install(python, "-e", str(src))
  r = subprocess.run([python, "-c", CHECK], cwd=elsewhere, capture_output=True, text=True)
  assert r.returncode == 0, r.stderr
  assert r.stdout.splitlines()[0] == str(src / "mlp" / "__init__.py")
