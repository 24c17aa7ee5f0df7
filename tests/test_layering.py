"""The package layers (README "Layout"): core imports neither attacks, defenses nor the front
end; defenses import only the core; attacks import the core and defenses; only the front end
(hidebench.app) imports everything and nothing imports it, apart from the tests."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def _layer(module: str) -> str | None:
    top = module.split(".")[0]
    if module in ("hidebench.app", "hidebench.__main__") or module.startswith("hidebench.app."):
        return "app"
    if top == "hidebench":
        return "core"
    if top in ("attacks", "defenses"):
        return top
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
        bad = sorted(m for m in _imports(path) if m.startswith("hidebench.app.cli"))
        assert not bad, f"{rel}: benchmarks call library functions, not CLI modules: {bad}"
        return
    mod = ".".join(rel.with_suffix("").parts).replace("challenge_data", "hidebench.challenge_data")
    own = _layer(mod)
    bad = sorted(m for m in _imports(path) if _layer(m) and _layer(m) not in ALLOWED[own])
    assert not bad, f"{rel} ({own}) imports {bad}"


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
