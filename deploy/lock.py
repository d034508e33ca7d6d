"""Write constraints.txt: the installed versions of stream-app's runtime dependency closure.

    .venv/bin/python deploy/lock.py > constraints.txt       # after `pip install -e .`

The closure is what the production image installs: the main dependencies of
pyproject.toml and what they require, transitively, with environment markers evaluated
for this interpreter (run it on Linux with the image's Python, 3.11). The `onnx` extra is
in (the faster text encoder is a setting away in the image: STREAM_APP_ENCODER_BACKEND);
the `local` and `test` extras are left out: the embedded broker and Valkey are not in the
image.
Versions come from this environment (`pip freeze`, filtered); a local version label such
as torch's `+cpu` is dropped so the pin matches the CPU wheel (taken from the PyTorch CPU
index) and, elsewhere, the plain one.

`--check` prints nothing and exits 1 if constraints.txt does not pin exactly the closure's
names (the versions are not compared: a newer venv does not make the lock wrong).
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "stream-app"
IMAGE_EXTRAS = frozenset({"onnx"})  # the extras the image installs
HEADER = """\
# Pinned runtime dependencies of stream-app (the dependency closure of pyproject.toml's
# main dependencies and the `onnx` extra): deploy/Dockerfile installs exactly these, in a
# layer of their own, before it copies the code.
# Generated from the project's venv; regenerate after changing dependencies with
#     .venv/bin/pip install -e . && .venv/bin/python deploy/lock.py > constraints.txt
# (on Linux, Python 3.11, as in the image). Install with the CPU torch wheel:
#     pip install -r constraints.txt --extra-index-url https://download.pytorch.org/whl/cpu
"""


def _requires(dist: str, extras: frozenset[str]) -> list[Requirement]:
    out = []
    for raw in metadata.requires(dist) or []:
        req = Requirement(raw)
        if req.marker is None:
            out.append(req)
            continue
        envs = [{"extra": e} for e in extras] or [{"extra": ""}]
        if any(req.marker.evaluate(env) for env in envs):
            out.append(req)
    return out


def closure(root: str = PROJECT, extras: frozenset[str] = IMAGE_EXTRAS) -> dict[str, str]:
    """canonical name -> installed version, for everything ``root`` with ``extras`` needs
    (not ``root``)."""
    seen: dict[str, str] = {}
    todo: list[tuple[str, frozenset[str]]] = [(root, extras)]
    done: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, extras = todo.pop()
        if (name, extras) in done:
            continue
        done.add((name, extras))
        for req in _requires(name, extras):
            key = canonicalize_name(req.name)
            dist = metadata.distribution(req.name)
            seen[key] = dist.version
            todo.append((req.name, frozenset(req.extras)))
    seen.pop(canonicalize_name(root), None)
    return seen


def render(pins: dict[str, str]) -> str:
    lines = [f"{name}=={version.split('+', 1)[0]}" for name, version in sorted(pins.items())]
    return HEADER + "\n".join(lines) + "\n"


def pinned_names(text: str) -> set[str]:
    names = set()
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(canonicalize_name(re.split(r"[=<>!~;\[ ]", line, maxsplit=1)[0]))
    return names


def main(argv: list[str]) -> int:
    pins = closure()
    if "--check" in argv:
        return 0 if pinned_names((ROOT / "constraints.txt").read_text()) == set(pins) else 1
    sys.stdout.write(render(pins))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
