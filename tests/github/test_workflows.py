"""The GitHub Actions workflow for forks: lint-clean, and it runs what the README promises.

It cannot run here (hosted runners); actionlint, built from its Go module by
hack/provision.sh, checks its syntax, expressions, action inputs and (with Debian's
shellcheck) its shell steps.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from vyapaar_stack.config import REPO_ROOT, StackConfig

WORKFLOWS = sorted((REPO_ROOT / ".github" / "workflows").glob("*.y*ml"))


@pytest.fixture(scope="module")
def actionlint() -> Path:
    path = StackConfig().cache_dir / "bin" / "actionlint"
    if not path.exists():
        pytest.fail(f"actionlint not found at {path}: run `make provision`")
    return path


def lint(actionlint: Path, *paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(actionlint), "-no-color", *map(str, paths)],
                          capture_output=True, text=True, timeout=120, check=False)


def test_every_workflow_passes_actionlint_with_shellcheck(actionlint: Path) -> None:
    assert WORKFLOWS
    assert shutil.which("shellcheck"), "shellcheck (Debian) lints the run: steps"
    result = lint(actionlint, *WORKFLOWS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_would_catch_a_broken_workflow(actionlint: Path, tmp_path: Path) -> None:
    broken = tmp_path / ".github" / "workflows" / "broken.yaml"
    broken.parent.mkdir(parents=True)
    broken.write_text("on: push\njobs:\n  t:\n    runs-on: ubuntu-24.04\n"
                      "    steps:\n      - run: echo ${{ github.nope }}\n")
    result = lint(actionlint, broken)
    assert result.returncode == 1 and "nope" in result.stdout


def test_ci_runs_the_readme_test_command_and_the_kind_path_and_releases_on_tags() -> None:
    (ci,) = [w for w in WORKFLOWS if w.stem == "ci"]
    workflow = yaml.safe_load(ci.read_text())
    steps = {job: " ".join(str(s.get("run", "")) for s in spec["steps"])
             for job, spec in workflow["jobs"].items()}
    assert "make test" in steps["test"] and "make lint" in steps["test"]
    assert "-m docker" in steps["kind"]
    assert workflow["jobs"]["release"]["if"].startswith("startsWith(github.ref, 'refs/tags/v')")
    assert "helm package" in steps["release"]
