"""The README's Python snippet and the notebooks run as written, so they cannot rot."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_readme_python_snippet_runs_verbatim(tmp_path):
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "the README has no Python snippet"
    r = subprocess.run([sys.executable, "-c", blocks[0]], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                       env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("notebook", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.name)
def test_notebook_executes(notebook, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(notebook, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors


def test_results_and_readme_figures_are_rendered_from_the_committed_records():
    """docs/results.md and the README's table of attacks are what benchmarks/render_results.py
    renders from benchmarks/records/: a figure and its record cannot disagree."""
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "render_results.py"), "--check"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


def test_readme_is_a_front_door():
    """At most ~300 lines, the two commands first, and every measured figure links to the
    rendered results."""
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 300
    assert text.index("pip install . && hidebench demo") < text.index('pip install ".[test]" && pytest') < 2000
    table = text[text.index("<!-- results:attacks -->"): text.index("<!-- /results:attacks -->")]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert rows and all("](docs/results.md#" in line for line in rows)
