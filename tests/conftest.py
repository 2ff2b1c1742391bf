"""Shared fixtures for the rtrl_edge test suite.

pytest runs with ``--import-mode=importlib`` (pyproject.toml), which does not
put this folder on sys.path; the float64 reference in ``reference.py`` is
imported by the test modules as a plain module, so the folder is added here.
"""

import os
import sys

import numpy as np
import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


@pytest.fixture
def rng():
    """A freshly seeded generator, so every test is reproducible on its own."""
    return np.random.default_rng(20240611)


@pytest.fixture(scope="session")
def firmware_build(tmp_path_factory):
    """The firmware and its simulator, built once per test run."""
    import support
    return support.build_firmware(tmp_path_factory.mktemp("firmware-build"))
