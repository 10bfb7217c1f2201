"""The host's local pip sources, mapped for image builds (used by setup-host.sh).

``python3 wheel_sources.py DIR PORT`` finds the find-links directories and ``file://``
indexes in this host's pip configuration (``pip config list``, else the configuration
files and ``PIP_*`` variables), links them into DIR as ``links<n>``/``index<n>`` for
``python -m http.server --directory DIR`` on 127.0.0.1:PORT, and prints the pip.conf
that points a build container (``--network host``) at them.
"""

from __future__ import annotations

import configparser
import os
import shlex
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

CONFIG_FILES = ("/etc/xdg/pip/pip.conf", "/etc/pip.conf", "~/.config/pip/pip.conf", "~/.pip/pip.conf")
KEYS = ("find-links", "index-url", "extra-index-url")


def pip_settings() -> dict[str, list[str]]:
    """find-links, index-url and extra-index-url, each a list of values, as pip sees them."""
    settings: dict[str, list[str]] = {key: [] for key in KEYS}
    try:
        listed = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"],
            capture_output=True, text=True, check=True, timeout=60,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        listed = None
    if listed is not None:
        for line in listed.splitlines():
            name, _, value = line.partition("=")
            key = name.rpartition(".")[2]
            if key in settings:
                settings[key] += shlex.split(value)[0].split() if value else []
    else:
        for file in CONFIG_FILES:
            parser = configparser.ConfigParser()
            parser.read(os.path.expanduser(file))
            for section in ("global", "install"):
                for key in KEYS:
                    if parser.has_option(section, key):
                        settings[key] += parser.get(section, key).split()
        for key in KEYS:
            settings[key] += os.environ.get("PIP_" + key.upper().replace("-", "_"), "").split()
    return {key: list(dict.fromkeys(values)) for key, values in settings.items()}


def local_path(value: str) -> Path | None:
    """The directory a pip source names on this disk, or None for a remote URL."""
    if value.startswith("file://"):
        return Path(unquote(urlsplit(value).path))
    if "://" not in value:
        return Path(value)
    return None


def find_links_dirs() -> list[Path]:
    return [p for v in pip_settings()["find-links"] if (p := local_path(v)) and p.is_dir()]


def pip_conf(served: Path, port: int) -> str:
    """Links the local sources into ``served`` and returns the pip.conf for them."""
    served.mkdir(parents=True, exist_ok=True)
    for old in served.iterdir():
        if old.is_symlink():
            old.unlink()
    base = f"http://127.0.0.1:{port}"
    settings = pip_settings()
    find_links, indexes, index_url = [], [], None
    for n, directory in enumerate(find_links_dirs()):
        (served / f"links{n}").symlink_to(directory.resolve())
        find_links.append(f"{base}/links{n}/")
    index_values = settings["index-url"][:1] + settings["extra-index-url"]
    for n, value in enumerate(index_values):
        path = local_path(value)
        if path is None:
            url = value  # a remote index: the container reaches it itself
        elif path.is_dir():
            # Serve the index's parent too: local indexes link to ../../files/.
            (served / f"index{n}").symlink_to(path.resolve().parent)
            url = f"{base}/index{n}/{path.name}/"
        else:
            continue
        if value in settings["index-url"][:1]:
            index_url = url
        else:
            indexes.append(url)
    lines = ["# Written by deploy/test-docker/setup-host.sh from this host's pip settings.", "[global]"]
    if index_url:
        lines.append(f"index-url = {index_url}")
    if indexes:
        lines.append("extra-index-url = " + " ".join(indexes))
    if find_links:
        lines.append("find-links = " + " ".join(find_links))
    lines += ["trusted-host = 127.0.0.1", "default-timeout = 180"]
    return "\n".join(lines) + "\n"


def main() -> None:
    if len(sys.argv) == 3:
        print(pip_conf(Path(sys.argv[1]), int(sys.argv[2])), end="")
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
