"""The layers import one way: api/ -> services/ -> services/engine/, with models/ as pure schemas; cluster/
sits on top (it wraps main's app) and is the only place Ray is imported.

Read from the source with `ast`, so a new module is checked the day it is added.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

OURS = ("api", "models", "services", "main", "run", "config", "bench", "tests", "cluster")
# What each layer may import of ours (prefixes); everything else of ours is a violation.
ALLOWED = {
    "services.engine": ("services.engine", "services.errors"),
    "services": ("services",),
    "models": (
        "models",
        "services.errors",
        "services.engine.languages",
        "services.engine.pcm",
        "services.formats",
        "services.ids",
    ),
    "api": ("api", "models", "services", "config"),
}
LEAVES = ("services/errors.py", "services/ids.py", "services/engine/languages.py", "config.py")


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")


def our_imports(source: str) -> list[str]:
    imported = []
    for node in ast.walk(ast.parse(source)):
        names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        imported += [name for name in names if name.split(".")[0] in OURS]
    return imported


def layer_of(module: str) -> str | None:
    return next((layer for layer in ALLOWED if module == layer or module.startswith(layer + ".")), None)


def sources() -> list[Path]:
    return sorted(path for folder in ("api", "models", "services") for path in (REPO / folder).rglob("*.py"))


def violations(module: str, source: str) -> list[str]:
    layer = layer_of(module)
    assert layer is not None, module
    allowed = ALLOWED[layer]
    return [name for name in our_imports(source) if not any(name == ok or name.startswith(ok + ".") for ok in allowed)]


@pytest.mark.parametrize("path", sources(), ids=lambda path: str(path.relative_to(REPO)))
def test_each_module_imports_only_its_own_layer_and_those_below(path: Path) -> None:
    module = module_name(path)
    assert violations(module, path.read_text()) == [], f"{module} imports across its layer"


@pytest.mark.parametrize("leaf", LEAVES)
def test_leaf_modules_import_nothing_of_ours(leaf: str) -> None:
    assert our_imports((REPO / leaf).read_text()) == []


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("services.engine.tts", "from services.speech import SpeechService"),
        ("services.engine.text", "import services.sessions"),
        ("services.voices", "from api.errors import ERROR_RESPONSES"),
        ("services.speech", "from models.inputs import SpeechRequest"),
        ("models.inputs", "from services.encoders import AudioEncoder"),
        ("api.speech", "from main import create_app"),
        ("services.peers", "from cluster.exchange import Exchange"),
    ],
)
def test_an_upward_import_is_caught(module: str, source: str) -> None:
    assert violations(module, source) != []


def test_only_cluster_imports_ray() -> None:
    """Ray is an optional extra: the server itself must run without it."""
    outside = [*sources(), REPO / "main.py", REPO / "run.py", REPO / "config.py"]
    importers = []
    for path in outside:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(name.split(".")[0] in {"ray", "cluster"} for name in names):
                importers.append(str(path.relative_to(REPO)))
    assert importers == []


def test_every_middleware_lives_in_api_middleware() -> None:
    """One folder holds the middleware, one module each; main.create_app adds them in the documented order."""
    misplaced = [
        f"{path.relative_to(REPO)}: {node.name}"
        for path in [*sources(), REPO / "main.py"]
        if not path.is_relative_to(REPO / "api" / "middleware")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef) and node.name.endswith("Middleware")
    ]
    assert misplaced == []
