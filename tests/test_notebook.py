"""docs/tutorial.ipynb runs from top to bottom in a fresh kernel (nbclient, offline), and says what it should: the
article's RMSE lines, its figures, the least-squares answer."""

import shutil
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).parent.parent / "docs" / "tutorial.ipynb"


def test_the_tutorial_notebook_runs_and_retells_the_article(tmp_path, golden):
    shutil.copy(NOTEBOOK, tmp_path / "tutorial.ipynb")
    nb = nbformat.read(tmp_path / "tutorial.ipynb", as_version=4)
    for cell in nb.cells:  # run from a clean slate: the stored outputs play no part
        if cell.cell_type == "code":
            cell.outputs = []
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    rmse = [float(line.split()[1]) for line in text.splitlines() if line.startswith("RMSE:")]
    assert rmse == golden["rmse"][:10]  # the article's loop by hand prints the article's numbers
    assert "plain gd, standardized" in text and "converged" in text
    assert "gap to optimum" in text  # LM at the least-squares answer
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(figures) >= 3  # the learning rates, the peaks, the histogram
    stored = nbformat.read(NOTEBOOK, as_version=4)
    assert len(nbformat.writes(stored)) < 400_000  # outputs kept small (figures, no embedded reports)
