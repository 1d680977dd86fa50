"""Test layers: every test belongs to exactly one, and a test cannot use more than its layer allows.

    unit     no model, no app: pure logic, the fake engine's scheduling, files
    engine   the tiny random-weight model in-process (equivalence with coqui, batching, precision)
    app      the app in-process (Starlette's TestClient, the lifespan runs), fake or tiny engine
    live     a real uvicorn on 127.0.0.1 (a thread or `python run.py`): streaming, sockets, signals, timing
    cluster  Ray Serve replicas
    browser  Chromium against a live server

`make test-fast` runs unit, engine and app; `make test` runs all (what CI runs).

A test's layer is its own marker if it has one, else the heaviest of what it and its fixtures start, read
from their code (`live_server(`, `start_server(` -> live; `app_client(`, `TestClient(` -> app; `load_model(`
-> engine), else its module's default. The heavy things check the layer of the test that uses them
(`require_layer`, called by `live_server`, `start_server`, `app_client` and the tiny model's loader): a test
marked lighter than what it starts fails at once, so `-m "not live"` really runs nothing that starts a server.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

import pytest

LAYERS = ("unit", "engine", "app", "live", "cluster", "browser")
FAST_LAYERS = ("unit", "engine", "app")

MODULE_LAYER = {
    "test_cluster": "cluster",
    "test_cluster_config": "cluster",
    "test_demo_page": "browser",
    "test_socket_keepalive": "live",
    "test_socket_shutdown": "live",
    "test_startup": "live",
}

# What a fixture's own code starts, read from its source once.
_CALL_LAYER = (
    ("start_server(", "live"),
    ("live_server(", "live"),
    ("uvicorn.Server(", "live"),
    ("app_client(", "app"),
    ("TestClient(", "app"),
    ("load_model(", "engine"),
)
_current: list[str] = ["unit"]


@functools.cache
def _layer_of_code(function: Callable[..., object]) -> str:
    try:
        source = inspect.getsource(function)
    except (OSError, TypeError):
        return "unit"
    found = [layer for call, layer in _CALL_LAYER if call in source]
    return max(found, key=LAYERS.index, default="unit")


def layer_of(item: pytest.Item) -> str:
    marked = [layer for layer in LAYERS if item.get_closest_marker(layer) is not None]
    if len(marked) > 1:
        raise pytest.UsageError(f"{item.nodeid} is marked with several layers: {marked}")
    if marked:
        return marked[0]
    names = getattr(item, "fixturenames", ())
    implied: list[str] = []
    definitions = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {})
    # the definition that applies is the last (a module's fixture overrides conftest's of the same name)
    implied += [_layer_of_code(definitions[name][-1].func) for name in names if definitions.get(name)]
    if isinstance(item, pytest.Function):
        implied.append(_layer_of_code(item.function))
    module = item.module.__name__.rsplit(".", 1)[-1] if getattr(item, "module", None) else ""
    implied.append(MODULE_LAYER.get(module, "unit"))
    return max(implied, key=LAYERS.index)


def require_layer(at_least: str, what: str) -> None:
    """Refuse `what` in a test whose layer is lighter than `at_least`."""
    current = _current[0]
    if LAYERS.index(current) < LAYERS.index(at_least):
        pytest.fail(
            f"this test ({current} layer) uses {what}, which belongs to the {at_least} layer or above: "
            f"mark it @pytest.mark.{at_least}",
            pytrace=False,
        )


def pytest_configure(config: pytest.Config) -> None:
    for layer in LAYERS:
        config.addinivalue_line("markers", f"{layer}: a test of the {layer} layer (see tests/layers.py)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        layer = layer_of(item)
        if item.get_closest_marker(layer) is None:
            item.add_marker(getattr(pytest.mark, layer))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    _current[0] = layer_of(item)
