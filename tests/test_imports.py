"""The import graph of gen3d/, video/ and launch.py, from every import statement (function-local ones
included, read with `ast`): no cycles, and the 3D framework never imports the video package."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[1]


def module_files() -> dict[str, Path]:
    """'gen3d.diffusion.prior' -> its file, for every module of gen3d/, video/ and launch.py."""
    files = {"launch": ROOT / "launch.py"}
    for package in ("gen3d", "video"):
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules that `name` (at `path`) imports anywhere in its body."""
    is_package = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package, one level up per extra dot
                package = name.split(".") if is_package else name.split(".")[:-1]
                package = package[: len(package) - node.level + 1]
                base = ".".join(package + ([base] if base else []))
            # `from pkg import sub` imports the submodule pkg.sub; `from mod import name` imports mod
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import gen3d.x.y` of a name inside a module
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def import_graph() -> nx.DiGraph:
    files = module_files()
    graph = nx.DiGraph()
    graph.add_nodes_from(files)
    for name, path in files.items():
        graph.add_edges_from((name, target) for target in imported_modules(name, path, set(files)))
    return graph


def test_the_graph_sees_function_local_and_relative_imports():
    graph = import_graph()
    assert graph.has_edge("video.run", "gen3d.utils.device")  # module level
    assert graph.has_edge("video.metrics", "gen3d.prior.evaluate")  # inside a method
    assert graph.has_edge("gen3d.prior.train", "gen3d.prior.modules")  # relative
    assert graph.has_edge("gen3d.diffusion.prior", "gen3d.diffusion.noise")  # `from pkg import submodule`
    assert graph.number_of_nodes() > 60


def test_no_import_cycles():
    cycles = [sorted(c) for c in nx.strongly_connected_components(import_graph()) if len(c) > 1]
    assert not cycles, "import cycles (each list imports itself round a loop): " + "; ".join(map(str, cycles))


def test_gen3d_never_imports_video():
    bad = [(a, b) for a, b in import_graph().edges if a.startswith("gen3d") and b.split(".")[0] == "video"]
    assert not bad, f"gen3d -> video imports: {bad}"
