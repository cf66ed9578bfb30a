"""What a tracked kernel says about itself: tags without blanks, one experiment per notebook."""

from __future__ import annotations

from pathlib import Path

import pytest

from hubforge.server_extension.kernel.context import (
    KernelContext,
    experiment_name,
    is_untitled,
    run_tags,
    source_tags,
)


def context(**env: str) -> KernelContext:
    base = {"MLFLOW_TRACKING_URI": "http://mlflow", "JUPYTERHUB_USER": "alice", "HUBFORGE_NOTEBOOK_ROOT": "/home/a"}
    return KernelContext.from_env({**base, **env}, kernel_id="3f2a9c1e-0000-4000-8000-000000000000")


def test_the_unnamed_server_is_called_default_and_blank_tags_are_left_out() -> None:
    tags = source_tags(context(JPY_SESSION_NAME="a.ipynb"), "a.ipynb")
    assert tags["hubforge.server"] == "default"
    assert "hubforge.tier" not in tags, "no tier outside a tiered spawn: no blank tag"
    assert all(tags.values())
    named = source_tags(context(HUBFORGE_SERVER_NAME="gpu-box", HUBFORGE_TIER="training"), "a.ipynb")
    assert (named["hubforge.server"], named["hubforge.tier"]) == ("gpu-box", "training")


def test_tags_name_the_notebook_passed_not_the_one_at_start() -> None:
    ctx = context(JPY_SESSION_NAME="Untitled.ipynb")
    tags = run_tags(ctx, "work/churn.ipynb")
    assert tags["mlflow.source.name"] == tags["hubforge.notebook"] == "work/churn.ipynb"
    assert tags["mlflow.source.type"] == "NOTEBOOK" and tags["mlflow.user"] == "alice"


@pytest.mark.parametrize(
    ("path", "untitled"),
    [
        ("Untitled.ipynb", True),
        ("Untitled12.ipynb", True),
        ("work/Untitled3.ipynb", True),
        ("Untitled Folder/a.ipynb", False),
        ("untitled.ipynb", False),
        ("Untitled-analysis.ipynb", False),
        ("churn.ipynb", False),
    ],
)
def test_untitled_names(path: str, untitled: bool) -> None:
    assert is_untitled(path) is untitled


def test_untitled_notebooks_of_two_kernels_get_experiments_of_their_own() -> None:
    one = KernelContext.from_env({"JUPYTERHUB_USER": "alice"}, kernel_id="aaaaaaaa-1")
    two = KernelContext.from_env({"JUPYTERHUB_USER": "alice"}, kernel_id="bbbbbbbb-2")
    assert experiment_name(one, "Untitled.ipynb") == "/Users/alice/Untitled.ipynb (kernel aaaaaaaa)"
    assert experiment_name(one, "Untitled.ipynb") != experiment_name(two, "Untitled.ipynb")
    assert experiment_name(one, "churn.ipynb") == experiment_name(two, "churn.ipynb") == "/Users/alice/churn.ipynb"


def test_notebook_files_are_under_the_server_root() -> None:
    ctx = context()
    assert ctx.notebook_file("work/a.ipynb") == Path("/home/a/work/a.ipynb")
    assert ctx.notebook_file("kernel-1234") is None, "a kernel without a session has no file"


def test_the_cells_as_they_ran_are_numbered_as_the_notebook_numbered_them(tmp_path: Path) -> None:
    from hubforge.server_extension.kernel.artifacts import EXECUTED, executed_cells, session_files

    history = ["", "x = 1\n", "%hubforge_tracking status", "print(x)"]
    text = executed_cells(history)
    assert text.splitlines()[1:] == [
        "",
        "# In[1]",
        "x = 1",
        "",
        "# In[2]",
        "%hubforge_tracking status",
        "",
        "# In[3]",
        "print(x)",
    ]
    files = session_files(tmp_path, None, requirements="numpy==2\n", history=history)
    assert [(p.name, where) for p, where in files] == [("requirements.txt", "environment"), (EXECUTED, "notebook")]
    assert session_files(tmp_path, tmp_path / "gone.ipynb", requirements="", history=[""])[1:] == []
