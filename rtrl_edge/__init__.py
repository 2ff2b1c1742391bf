"""rtrl_edge: online training of recurrent networks with Real-Time Recurrent
Learning, in float32 compiled kernels with memory fixed at construction.

    >>> import rtrl_edge
    >>> net = rtrl_edge.OnlineRNN(n_in=3, n_hidden=16, n_out=3, optimizer="adam")
    >>> yhat = net.step(x, y)          # predict from x, then learn from y
"""
try:
    from . import _kernels  # noqa: F401
except ImportError as exc:  # pragma: no cover - only hit in an unbuilt source tree
    raise ImportError(
        "rtrl_edge's compiled kernels are not built. Install the package "
        "(pip install .) or build in place (python setup.py build_ext --inplace)."
    ) from exc

from .model import CELLS, INITS, LEARNERS, LOSSES, OPTIMIZERS, CheckpointError, OnlineRNN
from .forecast import Forecaster
from .auto import AutoForecaster
from .compensator import DelayCompensator
from .interop import from_torch, load_torch, to_torch
from .planning import plan

__version__ = "0.1.0"
__all__ = ["OnlineRNN", "Forecaster", "AutoForecaster", "DelayCompensator", "CheckpointError", "plan",
           "from_torch", "load_torch", "to_torch", "CELLS", "LEARNERS", "LOSSES", "OPTIMIZERS",
           "INITS", "__version__"]
