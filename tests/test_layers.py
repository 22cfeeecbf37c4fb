"""The layer rules of chatproto, enforced: what each package may import, and no import cycle.

The import graph is read statically from the source (every ``import`` and ``from ... import``
anywhere in a module, ``if TYPE_CHECKING:`` blocks and function bodies included), so a cycle
hidden behind TYPE_CHECKING or a late import counts too.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "chatproto"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The chatproto modules ``name`` imports (a package import counts as its __init__; an
    imported name that is a submodule counts as that submodule)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_import_graph_has_no_cycle() -> None:
    """No chatproto module imports itself through others, TYPE_CHECKING imports included."""
    assert find_cycle(import_graph()) is None


def test_the_cycle_finder_finds_a_cycle_behind_type_checking(tmp_path: Path) -> None:
    """The graph reader sees imports under ``if TYPE_CHECKING:`` and inside functions, and the
    cycle finder reports them (so the test above cannot pass vacuously)."""
    a = tmp_path / "a.py"
    a.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import b\n")
    b = tmp_path / "b.py"
    b.write_text("def f():\n    import pkg.a\n")
    known = {"pkg.a", "pkg.b"}
    graph = {"pkg.a": imports_of("pkg.a", a, known), "pkg.b": imports_of("pkg.b", b, known)}
    assert graph == {"pkg.a": {"pkg.b"}, "pkg.b": {"pkg.a"}}
    assert find_cycle(graph) in (["pkg.a", "pkg.b", "pkg.a"], ["pkg.b", "pkg.a", "pkg.b"])


@pytest.mark.parametrize("package, forbidden", [
    ("chatproto.wire", ("chatproto.server", "chatproto.storage", "chatproto.client")),
    ("chatproto.storage", ("chatproto.server", "chatproto.client")),
    ("chatproto.client", ("chatproto.server", "chatproto.storage")),
])
def test_layers_import_only_what_is_below_them(package: str, forbidden: tuple[str, ...]) -> None:
    """wire imports no other chatproto layer; storage nothing from server or client; the
    client library nothing from server or storage (statically, every import)."""
    bad = sorted(
        f"{name} -> {target}"
        for name, targets in import_graph().items()
        if name == package or name.startswith(package + ".")
        for target in targets
        if target.startswith(forbidden)
    )
    assert bad == []


def loaded_after_import(module: str) -> list[str]:
    """Modules present in a fresh interpreter after ``import module``."""
    code = f"import json, sys; import {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    return list(json.loads(out))


def test_importing_the_wire_loads_no_twisted() -> None:
    """chatproto.wire and all its modules load without Twisted (the sans-IO core)."""
    wire = [name for name in modules() if name.startswith("chatproto.wire.")]
    loaded = loaded_after_import(", ".join(["chatproto.wire", *wire]))
    assert "chatproto.wire.frame" in loaded
    assert [name for name in loaded if name == "twisted" or name.startswith("twisted.")] == []


def test_importing_storage_loads_no_server_module() -> None:
    """At run time too: chatproto.storage loads nothing from chatproto.server."""
    storage = [name for name in modules() if name.startswith("chatproto.storage.")]
    loaded = loaded_after_import(", ".join(storage))
    assert [name for name in loaded if name.startswith("chatproto.server")] == []


def test_no_server_module_is_over_700_lines() -> None:
    """Server modules stay small enough to read (at most 700 lines each)."""
    long = {name: n for name, path in modules().items()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > 700
            and name.startswith("chatproto.server")}
    assert long == {}


def test_the_transport_adapter_knows_no_chat_login_or_storage() -> None:
    """server/protocol.py (the TCP adapter) imports the wire and the connection interface,
    nothing of chat, login or storage: a WebSocket adapter can stand in for it."""
    imported = import_graph()["chatproto.server.protocol"]
    assert not {name for name in imported
                if name.startswith(("chatproto.storage", "chatproto.client"))
                or name in ("chatproto.server.chat", "chatproto.server.login",
                            "chatproto.server.service", "chatproto.server.router")}
    assert "chatproto.server.connection" in imported
