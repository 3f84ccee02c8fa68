"""The architecture of docs/architecture.md, checked: which part may import which, and
that the runtime and the line service never load torch."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
from tiny_graphs import brightness_graph, write_tiny_bundle

PACKAGE = Path(__file__).resolve().parents[1] / "edge_sdk"

# Each part and the parts it may import (at module level or inside a function), lowest
# first. The same table is in docs/architecture.md; change both together.
# What every part may use: the shared vocabulary below all of them.
SHARED = {"errors", "records", "statistics", "images", "cli_options"}
_LINE = SHARED | {"runtime", "calibration", "sources", "sinks"}
MAY_IMPORT: dict[str, set[str]] = {
    "errors": set(),
    "statistics": set(),
    "cli_options": set(),  # exit codes and JSON output
    "images": {"errors"},
    "records": {"runtime"},  # Inspection.full_map/overlay draw, when called
    "runtime": SHARED,
    "calibration": SHARED | {"runtime"},
    "sources": SHARED,
    "sinks": SHARED | {"runtime", "sources"},
    "line": _LINE,
    "training": SHARED | {"runtime", "calibration"},
    "evaluation": SHARED | {"runtime", "calibration"},
    "tools": _LINE | {"line", "training"},
    "cli": _LINE | {"line", "training", "evaluation", "tools"},
    "__main__": {"cli"},
    "__init__": {"errors", "records", "runtime"},
}


def _part(module: str) -> str:
    """`edge_sdk.runtime.engine` -> `runtime`; `edge_sdk.errors` -> `errors`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports() -> dict[tuple[str, str], set[str]]:
    """(importing part, imported part) -> the modules where it happens."""
    found: dict[tuple[str, str], set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        module = ".".join(relative.parts)
        source = "__init__" if module == "edge_sdk.__init__" else _part(module)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module == "edge_sdk":
                    targets = [f"edge_sdk.{a.name}" for a in node.names]
                elif node.module.startswith("edge_sdk."):
                    targets = [node.module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("edge_sdk.")]
            for target in targets:
                part = _part(target)
                if part != source and part in MAY_IMPORT:
                    found.setdefault((source, part), set()).add(module)
    return found


def test_every_module_belongs_to_a_known_part() -> None:
    parts = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()}
    parts -= {"__pycache__"}
    assert parts <= set(MAY_IMPORT), f"parts missing from the table: {parts - set(MAY_IMPORT)}"


def test_parts_import_only_what_the_architecture_allows() -> None:
    wrong = {
        f"{source} -> {target} (in {', '.join(sorted(modules))})"
        for (source, target), modules in _imports().items()
        if target not in MAY_IMPORT[source]
    }
    assert not wrong, "imports against docs/architecture.md:\n" + "\n".join(sorted(wrong))


def test_the_allowed_imports_have_no_cycle() -> None:
    # Checked on the table, so that a change to it cannot let a cycle in either. The one
    # exception, records -> runtime, is only ever a call-time import.
    edges = {
        s: {t for t in ts if not (s == "records" and t == "runtime")}
        for s, ts in MAY_IMPORT.items()
    }
    done: set[str] = set()

    def visit(node: str, path: tuple[str, ...]) -> None:
        assert node not in path, f"import cycle: {' -> '.join((*path, node))}"
        if node in done:
            return
        for nxt in edges.get(node, ()):
            visit(nxt, (*path, node))
        done.add(node)

    for part in edges:
        visit(part, ())


def test_the_inspector_and_the_line_service_load_no_torch(tmp_path: Path) -> None:
    bundle = write_tiny_bundle(tmp_path / "t.bundle", brightness_graph())
    images = tmp_path / "in"
    images.mkdir()
    for i in range(3):
        cv2.imwrite(str(images / f"{i}.png"), np.full((64, 64), 40 * i, np.uint8))
    code = f"""
import json, sys
import numpy as np
from edge_sdk import Inspector
with Inspector.open({str(bundle)!r}, device="cpu") as inspector:
    inspector.inspect(np.zeros((64, 64), np.uint8))
after_inspector = "torch" in sys.modules
from edge_sdk.cli import main
code = main(["run", "--folder", {str(images)!r}, "--bundle", {str(bundle)!r},
             "--device", "cpu", "--json"])
print(json.dumps({{"inspector": after_inspector, "run": "torch" in sys.modules, "rc": code}}))
"""
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert loaded["rc"] in (0, 1), proc.stderr  # 1: NOK verdicts, as the exit codes say
    assert '"frames": 3,' in proc.stdout, proc.stdout  # the run's --json summary
    assert loaded == {"inspector": False, "run": False, "rc": loaded["rc"]}
