"""The package layers (README "Layout"): core imports neither attacks, defenses nor the front
end; defenses import only the core; attacks import the core and defenses; only the front end
(hidebench.app) imports everything and nothing imports it, apart from the tests. No first-party
import cycle either, counting imports inside function bodies (they only hide a cycle)."""
import ast
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]
# source folder -> installed package name (pyproject's package-dir)
PACKAGES = {"hidebench": "hidebench", "attacks": "hidebench.attacks", "defenses": "hidebench.defenses",
            "challenge_data": "hidebench.challenge_data"}


def _imports(path: Path) -> set[str]:
    """Every module an import statement of the file names, function bodies included."""
    tree = ast.parse(path.read_text(), filename=str(path))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def _module(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = [PACKAGES[rel.parts[0]], *rel.parts[1:]]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> str | None:
    if module in ("hidebench.app", "hidebench.__main__") or module.startswith("hidebench.app."):
        return "app"
    for layer in ("attacks", "defenses"):
        if module == f"hidebench.{layer}" or module.startswith(f"hidebench.{layer}."):
            return layer
    if module.split(".")[0] == "hidebench":
        return "core"
    if module.split(".")[0] in ("attacks", "defenses"):
        return "top-level"            # the names the installed package must not use
    return None


ALLOWED = {"core": {"core"}, "defenses": {"core", "defenses"}, "attacks": {"core", "defenses", "attacks"},
           "app": {"core", "defenses", "attacks", "app"}}


def _modules():
    for folder in ("hidebench", "attacks", "defenses", "challenge_data", "benchmarks"):
        yield from sorted((ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("path", list(_modules()), ids=lambda p: str(p.relative_to(ROOT)))
def test_module_respects_the_layers(path):
    rel = path.relative_to(ROOT)
    if rel.parts[0] == "benchmarks":
        bad = sorted(m for m in _imports(path) if m.startswith("hidebench.app.cli") or _layer(m) == "top-level")
        assert not bad, f"{rel}: benchmarks call library functions, not CLI modules: {bad}"
        return
    own = _layer(_module(path))
    bad = sorted(m for m in _imports(path) if _layer(m) and _layer(m) not in ALLOWED[own])
    assert not bad, f"{rel} ({own}) imports {bad}"


def test_no_import_cycles_even_inside_functions():
    """The first-party import graph, with the imports inside function bodies, is acyclic
    (a module importing its own parent package, as a registry does, is not an edge)."""
    mods = {_module(p): p for p in _modules() if p.relative_to(ROOT).parts[0] != "benchmarks"}

    def resolve(name):
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name

    g = nx.DiGraph()
    for m, p in mods.items():
        g.add_node(m)
        for target in filter(None, map(resolve, _imports(p))):
            if target != m and not m.startswith(target + "."):
                g.add_edge(m, target)
    cycles = sorted(sorted(c) for c in nx.strongly_connected_components(g) if len(c) > 1)
    assert not cycles, f"import cycles: {cycles}"


def test_installed_names_are_namespaced(tmp_path):
    """`import hidebench.attacks` works, a top-level `attacks` or `defenses` does not exist."""
    code = ("import importlib.util, hidebench.attacks, hidebench.defenses\n"
            "assert importlib.util.find_spec('attacks') is None and importlib.util.find_spec('defenses') is None\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                       env={k: v for k, v in __import__("os").environ.items() if k != "PYTHONPATH"})
    assert r.returncode == 0, r.stderr[-2000:]


def test_notebooks_call_library_functions_only():
    for nb in (ROOT / "notebooks").glob("*.ipynb"):
        assert "hidebench.app.cli" not in nb.read_text(), f"{nb.name} imports a CLI module"


@pytest.mark.parametrize("argv", [["--help"], ["list"], ["attack", "--help"]])
def test_start_up_imports_no_torch(argv):
    code = ("import sys\nfrom hidebench.app.cli import main\n"
            f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]


def test_ruff_is_clean():
    """The lint configured in pyproject.toml (line length, import order, pyflakes, bugbear)."""
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], capture_output=True, text=True,
                       cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-1000:]


def test_every_package_folder_is_installed():
    """pyproject lists packages by name (the folders are remapped); a folder left out installs
    without it and every import of it fails outside the checkout."""
    import tomllib
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {_module(init) for top in PACKAGES for init in (ROOT / top).rglob("__init__.py")}
    assert folders == listed, f"in pyproject but not a folder: {sorted(listed - folders)}; " \
                              f"a folder missing from pyproject: {sorted(folders - listed)}"
