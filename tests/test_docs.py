"""README.md, docs/ and deploy/README.md name things that exist: the tests they cite,
the repository's files, the command-line options of ``hpo-coord`` and ``hpo-worker``,
each on the command that has it (also through ``docker compose run coordinator``), and
the services of docker-compose.yml.

What the documents say about documents in MongoDB is checked elsewhere: the README's
Mongo queries in ``tests/coordinator/test_monitor.py``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "deploy" / "README.md"]
TOP_LEVEL = ("bench", "cli_support", "coordinator", "deploy", "docs", "examples", "jobstore", "objectives",
             "tests", "user_errors", "worker")


def _name(doc: Path) -> str:
    return str(doc.relative_to(REPO))


def _code_spans(text: str) -> Iterator[str]:
    """Inline code spans, then each line of the fenced blocks."""
    yield from re.findall(r"`([^`\n]+)`", text)
    for block in re.findall(r"```[\w-]*\n(.*?)```", text, re.S):
        yield from block.splitlines()


def test_cited_tests_exist() -> None:
    """``tests/x.py::test_name`` names a test of that file; ``...::test_name`` and
    ``::test_name`` one of the file named last before it."""
    cited = re.compile(r"(?<![\w/.-])(tests/[\w/]+\.py)(?:::(\w+))?|(?<=`)(?:\.\.\.)?::(\w+)")
    missing = []
    for doc in DOCS:
        last = None
        for match in cited.finditer(doc.read_text()):
            if match.group(1):
                last = match.group(1)
                assert (REPO / last).is_file(), f"{_name(doc)}: {last} does not exist"
            test = match.group(2) or match.group(3)
            if test is None:
                continue
            assert last is not None, f"{_name(doc)}: ::{test} follows no test file"
            if not re.search(rf"^(async )?def {test}\(", (REPO / last).read_text(), re.M):
                missing.append(f"{_name(doc)}: {last}::{test}")
    assert not missing, "cited tests that do not exist:\n" + "\n".join(missing)


def test_repository_paths_exist() -> None:
    path = re.compile(rf"(?<![\w./-])(?:\./)?((?:{'|'.join(TOP_LEVEL)})/[\w./-]*\w)")
    missing = sorted({f"{_name(doc)}: {found}" for doc in DOCS for span in _code_spans(doc.read_text())
                      for found in path.findall(span) if not (REPO / found).exists()})
    assert not missing, "paths that do not exist:\n" + "\n".join(missing)


def _commands() -> dict[str, Any]:
    """``"hpo-worker"`` and ``"hpo-coord NAME"`` for each command, as ``main`` builds them."""
    from coordinator import monitor_cli
    from coordinator.cli import app as coordinator_app
    from coordinator.dashboard import cli as dashboard_cli
    from worker.cli import app as worker_app

    more = typer.Typer()  # main() registers these on the real app; not twice in one process
    monitor_cli.register(more, Console())
    dashboard_cli.register(more, Console())
    groups = [typer.main.get_command(coordinator_app), typer.main.get_command(more)]
    commands = {f"hpo-coord {name}": command for group in groups
                for name, command in group.commands.items()}  # type: ignore[attr-defined]
    return {"hpo-worker": typer.main.get_command(worker_app), **commands}


COMPOSE_RUN = re.compile(r"docker compose run(?:[ \t]+(?:--rm|-d))*[ \t]+coordinator(?=[ \t])")
"""``docker compose run coordinator ARGS`` runs ``hpo-coord ARGS`` (the image's entrypoint)."""


def _command_lines(text: str) -> Iterator[tuple[str, list[str]]]:
    """``(program, words)`` of each ``hpo-coord``/``hpo-worker`` command line in code."""
    for span in _code_spans(text):
        span = COMPOSE_RUN.sub("hpo-coord", span)
        for match in re.finditer(r"(?<![\w/-])(hpo-coord|hpo-worker)((?:[ \t]+[^\s#|;&>]+)*)", span):
            yield match.group(1), match.group(2).split()


def test_commands_and_options_in_the_docs_exist() -> None:
    commands = _commands()
    wrong = []
    for doc in DOCS:
        for program, words in _command_lines(doc.read_text()):
            if program == "hpo-coord":
                if not words or not re.fullmatch(r"[a-z]+", words[0]):
                    continue  # the program alone, or a placeholder
                program, words = f"{program} {words[0]}", words[1:]
                if program not in commands:
                    wrong.append(f"{_name(doc)}: no command {program!r}")
                    continue
            options = {name for param in commands[program].params for name in param.opts} | {"--help"}
            for word in words:
                option = word.split("=")[0].strip("[]")
                if re.fullmatch(r"--[a-z][a-z-]*", option) and option not in options:
                    wrong.append(f"{_name(doc)}: {program} has no {option}")
    assert not wrong, "\n".join(wrong)


def test_docker_compose_commands_name_its_services() -> None:
    """``docker compose VERB [options] SERVICE`` and ``--scale SERVICE=N`` in the
    documents name services of docker-compose.yml."""
    import yaml

    services = set(yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"])
    verbs = r"(?:up|stop|logs|exec|run|build|start|restart|rm|pull)"
    wrong = []
    for doc in [*DOCS, REPO / "docker-compose.yml"]:
        text = doc.read_text()
        text = text if doc.suffix == ".yml" else "\n".join(_code_spans(text))
        options = r"(?:[ \t]+(?:--scale[ \t]+[\w-]+=(?:<[^>\n]*>|\S+)|--build-arg[ \t]+\S+|-[-\w]+))*"
        named = re.findall(rf"docker compose {verbs}({options})[ \t]+([a-z][\w-]*)\b", text)
        scaled = re.findall(r"--scale[ \t]+([\w-]+)=", text)
        for name in [service for _, service in named] + scaled:
            if name not in services:
                wrong.append(f"{_name(doc)}: no service {name!r}")
    assert not wrong, "\n".join(wrong)


def _anchors(doc: Path) -> set[str]:
    """GitHub's anchors of ``doc``'s headings (lower case, punctuation dropped, spaces
    to dashes), outside fenced code."""
    text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
            for heading in re.findall(r"^#+ (.+)$", text, re.M)}


def test_links_reach_their_files_and_headings() -> None:
    wrong = []
    for doc in DOCS:
        for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text()):
            if re.match(r"[a-z]+://", target):
                continue
            path, _, anchor = target.partition("#")
            linked = (doc.parent / path).resolve() if path else doc
            if not linked.exists():
                wrong.append(f"{_name(doc)}: {target} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
                wrong.append(f"{_name(doc)}: {target} (no such heading)")
    assert not wrong, "\n".join(wrong)
