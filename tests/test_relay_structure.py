"""The relay's import graph, read from its source: no circle anywhere, the node registry
knows nothing of jobs, and the job service knows no HTTP (issue 12)."""

import ast
from pathlib import Path

RELAY = Path(__file__).resolve().parent.parent / "relay"


def _imports(path: Path) -> set[str]:
    """The relay modules `path` imports, TYPE_CHECKING and function-level imports included."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from relay import api` imports relay.api; `from relay.x import y`, relay.x.
            names = [f"{node.module}.{alias.name}" for alias in node.names]
            names.append(node.module)
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "relay" and len(parts) > 1 and (RELAY / f"{parts[1]}.py").exists():
                found.add(parts[1])
    found.discard(path.stem)
    return found


def _imports_aiohttp(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import) and any(
            a.name.split(".")[0] == "aiohttp" for a in node.names
        ):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "aiohttp":
            return True
    return False


def _reach(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every relay module `start` imports, directly or through others."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        for child in graph.get(todo.pop(), ()):
            if child not in seen:
                seen.add(child)
                todo.append(child)
    return seen


def _graph() -> dict[str, set[str]]:
    return {path.stem: _imports(path) for path in sorted(RELAY.glob("*.py"))}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle in `graph` as a path of module names, or None."""
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str] | None:
        if module in path:
            return [*path[path.index(module) :], module]
        if module in done:
            return None
        for child in sorted(graph.get(module, ())):
            found = visit(child, [*path, module])
            if found:
                return found
        done.add(module)
        return None

    for module in graph:
        found = visit(module, [])
        if found:
            return found
    return None


def test_the_graph_is_read() -> None:
    graph = _graph()
    assert {"jobs", "hub", "reports", "api"} <= set(graph)
    assert "hub" in graph["jobs"] and "jobs" in graph["reports"]


def test_the_cycle_finder_finds_one() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_relay_has_no_import_circle() -> None:
    assert _cycle(_graph()) is None


def test_the_node_registry_does_not_import_the_job_service() -> None:
    assert "jobs" not in _graph()["hub"]


def test_the_job_service_knows_no_http() -> None:
    imported = _graph()["jobs"]
    assert not imported & {"uploads", "views", "api", "orders", "waiting"}


def test_the_job_service_does_not_reach_aiohttp() -> None:
    web = {m for m in _reach(_graph(), "jobs") if _imports_aiohttp(RELAY / f"{m}.py")}
    assert web == set()
    assert _imports_aiohttp(RELAY / "api.py")  # the check sees one where there is one
