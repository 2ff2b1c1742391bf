"""Every Python snippet in the README runs as written (each in a fresh
namespace, in an empty working folder).  A snippet that imports torch is
skipped, with a reason, where PyTorch is not installed (it is an optional
peer, not a dependency)."""
import importlib.util
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")


def snippets():
    if not os.path.exists(README):       # an installed copy of the tests without the repo
        return []
    with open(README, encoding="utf-8") as f:
        text = f.read()
    return re.findall(r"^```python\n(.*?)^```", text, re.M | re.S)


def test_the_readme_has_python_snippets():
    if not os.path.exists(README):
        pytest.skip("README.md not beside the tests")
    assert len(snippets()) >= 3


@pytest.mark.parametrize("index", range(len(snippets())))
def test_readme_snippet_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = snippets()[index]
    if re.search(r"^import torch$", code, re.M) and importlib.util.find_spec("torch") is None:
        pytest.skip("this README snippet uses PyTorch, which is not installed")
    # raises (and fails the test) if the snippet does not run as written
    exec(compile(code, f"README.md python snippet {index + 1}", "exec"), {"__name__": "__readme__"})
