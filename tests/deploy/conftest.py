"""Shared fixtures for the deployment-file checks (no Docker, cluster or GPU needed)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKER_DEFAULT_GRACE = 60
"""hpo-worker's --grace default, in seconds."""


class ComposeLoader(yaml.SafeLoader):
    """YAML loader that also accepts Compose's ``!reset`` and ``!override`` tags."""


def _tagged(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)


ComposeLoader.add_constructor("!reset", _tagged)
ComposeLoader.add_constructor("!override", _tagged)


def _load_compose(path: Path) -> dict[str, Any]:
    return yaml.load(path.read_text(), Loader=ComposeLoader)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    """docker-compose.yml, parsed (anchors and merge keys resolved)."""
    return _load_compose(ROOT / "docker-compose.yml")


@pytest.fixture(scope="session")
def compose_cpu_override() -> dict[str, Any]:
    """deploy/compose/cpu.yml, parsed."""
    return _load_compose(ROOT / "deploy" / "compose" / "cpu.yml")


@pytest.fixture(scope="session")
def compose_test_override() -> dict[str, Any]:
    """deploy/test-docker/compose.test.yml (the Docker test's override), parsed."""
    return _load_compose(ROOT / "deploy" / "test-docker" / "compose.test.yml")


@pytest.fixture(scope="session")
def worker_grace() -> Callable[[Sequence[str]], int]:
    """The drain time, in seconds, that hpo-worker arguments ask for."""

    def grace(args: Sequence[str]) -> int:
        args = list(args)
        if "--grace" in args:
            return int(args[args.index("--grace") + 1])
        return WORKER_DEFAULT_GRACE

    return grace
