"""The package's shape: one-way imports between its parts, no cycles, no path tricks (read from the source, not run)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "kdtalker"
FOUNDATION = "foundation"  # kdtalker/*.py: errors, file I/O, safe loading, strict loading, typed config, CLI, device
# Which parts each part may import (besides itself and the foundation). Stages know nothing of each other or of
# what composes them; pipeline, data, eval and training compose them.
ALLOWED = {
    FOUNDATION: set(),
    "audio": set(),
    "renderer": set(),
    "diffusion": set(),
    "facevid2vid": {"renderer"},  # Table 5's renderer, a stage built on LivePortrait's layers (SPADE, dense motion)
    "data": {"audio", "renderer", "facevid2vid", "diffusion"},  # shards hold either renderer's motion (layouts.py)
    "pipeline": {"audio", "renderer", "diffusion"},
    "eval": {"audio", "renderer", "diffusion", "pipeline"},
    "generators": {"diffusion"},
    "demo": {
        "audio",
        "pipeline",
    },  # the web page around the pipeline  # Table 4's VAE / GAN objectives on the denoiser network
    "training": {"audio", "renderer", "diffusion", "data", "generators"},
}


def part_of(module: str) -> str:
    """'kdtalker.renderer.spade' -> 'renderer'; 'kdtalker.fileio' -> 'foundation'."""
    parts = module.split(".")
    if len(parts) > 1 and (PACKAGE / parts[1]).is_dir():
        return parts[1]
    return FOUNDATION


def imports() -> dict[str, set[str]]:
    """Every kdtalker module -> the kdtalker modules it imports (at the top or inside functions)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
                names.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
        found[name] = {n for n in names if n == "kdtalker" or n.startswith("kdtalker.")}
    return found


def test_parts_import_only_earlier_parts():
    wrong = []
    for module, targets in imports().items():
        source = part_of(module)
        for target in targets:
            part = part_of(target)
            if part not in (source, FOUNDATION) and part not in ALLOWED[source]:
                wrong.append(f"{module} imports {target}")
            if source == FOUNDATION and part != FOUNDATION:
                wrong.append(f"{module} (foundation) imports {target}")
    assert wrong == []


def test_no_import_cycles_between_parts():
    graph: dict[str, set[str]] = {}
    for module, targets in imports().items():
        graph.setdefault(part_of(module), set()).update(part_of(t) for t in targets)
    for part in graph:
        graph[part].discard(part)

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in graph.get(start, ()))

    assert [p for p in graph if reaches(p, p, set())] == []


def test_the_package_does_not_locate_repository_files():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        if "sys.path" in text or "__file__" in text:  # the package finds nothing relative to its own files
            offenders.append(str(path.relative_to(PACKAGE)))
    assert offenders == []


def test_code_passes_the_linter():
    import subprocess
    import sys

    repo = PACKAGE.parent
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", str(repo)], capture_output=True, text=True, cwd=repo
    )
    assert result.returncode == 0, result.stdout[-3000:]
