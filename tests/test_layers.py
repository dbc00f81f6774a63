"""Imports run one way: each module imports only from its own package, from lower layers, or along a
few named edges within a layer. Every import counts, including those inside functions and under
TYPE_CHECKING: a type-only import upward is still a dependency a reader must hold in mind."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "gearshift"

# Highest first. A part is a subpackage of gearshift or a top-level module.
LAYERS: list[set[str]] = [
    {"cli", "demo"},
    {"ui"},  # the dashboard reads the store through the gateway's, the lab's and the watch's readers
    {"sim"},  # the lifecycle simulation drives the gateway (and through it the lab) in-process
    {"gateway", "lab", "watch"},
    {"plan", "schema"},
    {"routers", "gates", "providers", "store", "outcomes", "learned"},
    {"config", "request", "route", "trace", "errors", "registry", "jsonfast", "services", "logs", "principal",
     "telemetry"},
]
# Edges within a layer, each for a reason.
SIDEWAYS = {
    ("gateway", "watch"),      # the server runs the watch loop and serves its metrics
    ("gateway", "lab"),        # scheduled recalibration runs the lab's calibration
    ("routers", "gates"),      # a cascade's tiers hold gates
    ("routers", "learned"),    # the classifier serves a trained artifact
    ("routers", "store"),      # router versions are read from the store
    ("gates", "learned"),      # the learned gate serves a trained artifact
    ("providers", "outcomes"),  # the replay provider answers from recorded outcomes
    ("outcomes", "store"),     # traces with shadow pairs become outcomes
    ("config", "errors"),
    ("config", "registry"),
    ("registry", "errors"),
    ("request", "errors"),
    ("request", "config"),
    ("route", "request"),
    ("route", "trace"),        # a step's gates return verdicts
    ("services", "trace"),
    ("principal", "config"),   # a config key becomes a principal
    ("telemetry", "errors"),   # tracing asked for but impossible is refused like a bad config
    ("telemetry", "trace"),    # spans are made from the trace record
}


def part_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def layer_of(part: str) -> int:
    for i, layer in enumerate(LAYERS):
        if part in layer:
            return i
    raise AssertionError(f"gearshift.{part} is in no layer: add it to LAYERS in tests/test_layers.py")


def module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, root: Path) -> set[str]:
    """Every gearshift module `path` imports, resolved to absolute names."""
    mod = module_name(path, root)
    package = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            # `from gearshift import plan` imports the module gearshift.plan, not the package.
            folder = root.parent / base.replace(".", "/")
            for a in node.names:
                sub = (folder / a.name).is_dir() or (folder / f"{a.name}.py").exists()
                found.add(f"{base}.{a.name}" if sub else base)
    return {f for f in found if f == "gearshift" or f.startswith("gearshift.")}


def violations(root: Path = SRC) -> list[str]:
    bad = []
    for path in sorted(root.rglob("*.py")):
        mod = module_name(path, root)
        src = part_of(mod)
        for target in sorted(imports(path, root)):
            dst = part_of(target)
            if target == "gearshift" or dst == src:
                continue
            if layer_of(dst) > layer_of(src) or (src, dst) in SIDEWAYS:
                continue
            how = "sideways" if layer_of(dst) == layer_of(src) else "upward"
            bad.append(f"{mod} imports {target} ({how}: {src} -> {dst})")
    return bad


def test_imports_run_down_the_layers() -> None:
    assert violations() == []


def test_the_layer_check_catches_upward_and_sideways_imports(tmp_path: Path) -> None:
    root = tmp_path / "gearshift"
    (root / "routers").mkdir(parents=True)
    (root / "store").mkdir()
    (root / "config.py").write_text("from gearshift.routers import base\n")
    (root / "routers" / "__init__.py").write_text("")
    (root / "routers" / "base.py").write_text("def f():\n    from ..gateway import app\n")
    (root / "store" / "sql.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import gearshift.providers\n")
    found = violations(root)
    assert "gearshift.config imports gearshift.routers.base (upward: config -> routers)" in found
    assert "gearshift.routers.base imports gearshift.gateway (upward: routers -> gateway)" in found
    assert "gearshift.store.sql imports gearshift.providers (sideways: store -> providers)" in found
    assert len(found) == 3
