"""Weights between PyTorch modules and `OnlineRNN`, as numpy arrays.

Nothing here imports torch: arrays go out as float32 numpy arrays and come in
as anything array-like (numpy arrays, nested lists, or torch tensors, read
through their own ``v.detach().cpu().numpy()``).  A model is trained or
pre-trained in PyTorch and fine-tuned online on the board, or the other way
round::

    cell, readout = to_torch(net, "GRUCell")               # OnlineRNN -> state_dicts
    gru.load_state_dict({k: torch.from_numpy(v) for k, v in cell.items()})
    net = from_torch(gru.state_dict(), linear.state_dict(), lr=1e-3)   # -> OnlineRNN
    load_torch(net, gru.state_dict(), linear.state_dict())  # into an existing model

What maps to what (``n`` hidden units, ``m`` inputs, ``o`` outputs; the cell
state's keys carry the suffix ``_l0`` for the one-layer ``nn.GRU``/``nn.RNN``
and none for ``nn.GRUCell``/``nn.RNNCell``):

=================  =============================  ===============================
torch key          ``cell="gru"``                 ``cell="elman"``
=================  =============================  ===============================
weight_ih          W_ih (3n, m)                   W_in (n, m)
weight_hh          W_hh (3n, n)                   W_rec (n, n)
bias_ih            b_ih (3n,)                     b = bias_ih + bias_hh (n,);
bias_hh            b_hh (3n,)                     exported as bias_ih = b, bias_hh = 0
Linear weight      W_out (o, n)                   W_out (o, n)
Linear bias        b_out (o,)                     b_out (o,)
=================  =============================  ===============================

The GRU's gate blocks are in PyTorch's order r, z, n (DESIGN §3.10), so its
arrays are copied as they are; the Elman cell is ``nn.RNNCell`` with
``nonlinearity="tanh"``, whose two biases only ever appear as their sum.
Which module a state_dict comes from is read from its keys (suffix ``_l0`` or
none) and from the shape of ``weight_hh``: (3n, n) is a GRU's, (n, n) an RNN's.

Limits:

- **relu cannot be detected.**  ``nn.RNNCell(nonlinearity="relu")`` has the
  same keys and shapes as the tanh cell; its weights would load, and the
  model would compute tanh with them.  Only tanh is supported.
- One layer, one direction: keys of a second layer (``_l1``) or of the
  reverse direction (``_reverse``) are refused, and so are LSTM states.
- A module that holds the cell as an attribute (``self.gru``,
  ``self.head``) has prefixed keys; select and strip them first::

      sd = model.state_dict()
      cell = {k.removeprefix("gru."): v for k, v in sd.items() if k.startswith("gru.")}
      head = {k.removeprefix("head."): v for k, v in sd.items() if k.startswith("head.")}

- Outputs: the readout is ``nn.Linear`` on the hidden state.  With
  ``loss="softmax"`` `OnlineRNN.predict` returns ``softmax`` of it, the
  probabilities, where the module returns the logits.
- ``normalize=True``: such a model's weights act on inputs and targets
  normalised by its running statistics, which are not part of any state_dict.
  The weights move as they are; a module reproduces the model's predictions
  only on inputs normalised the same way (and its outputs are normalised).

Loading (`load_torch`, `from_torch`) checks everything before it writes
anything: unknown or missing keys, layers, direction, cell kind, every shape,
finiteness and float32 range.  A refused state raises ``ValueError`` naming
the key, the expected and the actual shape, and the model stays bit-identical.
Missing biases (a module built with ``bias=False``) are zero.  Values are
rounded to float32: a float32 module round-trips bit for bit (the RNN biases'
sum is the one rounding, exact when one of them is zero as in an export).

Loading into an existing model writes its parameters only: hidden state,
sensitivities, optimiser moments, normaliser statistics and counters are
left as they are.  Call ``net.reset_state()`` before a new sequence (the
state and sensitivities were computed with the old weights).  The divergence
guard's restore point becomes the loaded parameters, so a recovery goes back
to them, not to the weights they replaced.
"""
from __future__ import annotations

import re
from typing import Dict, Mapping, Tuple

import numpy as np

from .model import OnlineRNN

__all__ = ["MODULES", "to_torch", "load_torch", "from_torch"]

#: PyTorch modules a cell state can come from or go to, and the cell of each
MODULES = {"GRUCell": "gru", "GRU": "gru", "RNNCell": "elman", "RNN": "elman"}

_CELL_KEYS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
_READOUT_KEYS = ("weight", "bias")
_GATES = {"gru": 3, "elman": 1}                  # blocks of n rows in weight_hh
_CELL_OF_GATES = {3: "gru", 1: "elman"}
_F32_MAX = float(np.finfo(np.float32).max)
# a key of any recurrent module's state_dict: layer and direction are refused by name
_TORCH_KEY = re.compile(r"(weight|bias)_(ih|hh)(?:_l(\d+))?(_reverse)?")
_PREFIX_RECIPE = ('{k.removeprefix("gru."): v for k, v in sd.items() '
                  'if k.startswith("gru.")}')

Arrays = Dict[str, np.ndarray]


# -- out -------------------------------------------------------------------------------

def to_torch(net: OnlineRNN, module: str = "GRUCell") -> Tuple[Arrays, Arrays]:
    """The state_dicts of a PyTorch cell and readout holding ``net``'s weights.

    Parameters
    ----------
    net : OnlineRNN
        With ``cell="gru"`` for ``module`` "GRUCell" or "GRU", ``cell="elman"``
        for "RNNCell" or "RNN" (``nonlinearity="tanh"``).
    module : {"GRUCell", "GRU", "RNNCell", "RNN"}
        The module the cell state is for: ``nn.GRUCell(m, n)``,
        ``nn.GRU(m, n)`` (one layer, either ``batch_first``),
        ``nn.RNNCell(m, n)``, ``nn.RNN(m, n)``.

    Returns
    -------
    (cell_state, readout_state) : two dicts of C-contiguous float32 arrays
        (copies).  ``cell_state``: ``weight_ih``, ``weight_hh``, ``bias_ih``,
        ``bias_hh`` (suffix ``_l0`` for "GRU" and "RNN"); for the RNN modules
        ``bias_ih`` is ``b`` and ``bias_hh`` zero.  ``readout_state``:
        ``weight`` (o, n) and ``bias`` (o,) of ``nn.Linear(n, o)``.  Load them
        with ``mod.load_state_dict({k: torch.from_numpy(v) for k, v in
        cell_state.items()})``.

    Raises ValueError for an unknown ``module`` or one of the other cell.
    """
    if not isinstance(module, str) or module not in MODULES:
        raise ValueError(f"module must be one of {', '.join(MODULES)}; got {module!r}")
    cell = _torch_cell(net)
    if MODULES[module] != cell:
        other = [name for name, c in MODULES.items() if c == cell]
        raise ValueError(f"module={module!r} needs an OnlineRNN with "
                         f"cell={MODULES[module]!r}; this one has cell={cell!r} "
                         f"(use module {' or '.join(map(repr, other))})")
    p = net.params
    if cell == "gru":
        values = [p["W_ih"], p["W_hh"], p["b_ih"], p["b_hh"]]
    else:
        values = [p["W_in"], p["W_rec"], p["b"], np.zeros(net.n_hidden, np.float32)]
    suffix = "_l0" if module in ("GRU", "RNN") else ""
    cell_state = {key + suffix: _copy(v) for key, v in zip(_CELL_KEYS, values)}
    readout_state = {"weight": _copy(p["W_out"]), "bias": _copy(p["b_out"])}
    return cell_state, readout_state


def _copy(view) -> np.ndarray:
    return np.array(view, dtype=np.float32, order="C", copy=True)


# -- in --------------------------------------------------------------------------------

def load_torch(net: OnlineRNN, cell_state: Mapping, readout_state: Mapping) -> None:
    """Write a PyTorch cell's and readout's state_dicts into ``net``, in place.

    ``cell_state`` is the state_dict of an ``nn.GRUCell`` or one-layer
    ``nn.GRU`` (for ``net.cell == "gru"``) or of an ``nn.RNNCell`` or
    one-layer ``nn.RNN`` with tanh (for ``"elman"``), told apart by its keys
    and by ``weight_hh``'s shape; ``readout_state`` that of ``nn.Linear(n,
    o)``.  Values are numpy arrays, nested lists or torch tensors (anything
    with ``.detach()`` is read as ``v.detach().cpu().numpy()``), rounded to
    float32.  Missing biases are zero.

    Only the parameters change: state, sensitivities, optimiser moments and
    normaliser are kept (call ``net.reset_state()`` to start a new sequence);
    the divergence guard's restore point becomes the loaded parameters.

    Raises ValueError, writing nothing (the model stays bit-identical), for
    unknown or missing keys, more than one layer (``_l1``), a bidirectional
    module (``_reverse``), a GRU state into an Elman model or the reverse,
    any shape that does not match the model (the message names the key, the
    expected and the actual shape), values that are not real numbers, not
    finite or beyond float32 range, and, for a model with a ``rec_mask``,
    non-zero recurrent weights where the mask is False (in any of the GRU's
    three blocks of ``weight_hh``).
    """
    cell = _torch_cell(net)
    arrays = _read_state(cell_state, readout_state)
    staged = _staged(arrays, net.n_in, net.n_hidden, net.n_out, cell, net.rec_mask)
    _write(net, staged)


def from_torch(cell_state: Mapping, readout_state: Mapping, **options) -> OnlineRNN:
    """A new `OnlineRNN` holding the weights of a PyTorch cell and readout.

    ``n_in``, ``n_hidden``, ``n_out`` and ``cell`` are read from the arrays
    (``weight_ih``'s columns, ``weight_hh``'s columns, the readout's rows,
    and 3n or n rows of ``weight_hh``).  ``options`` go to `OnlineRNN`
    (``learner``, ``optimizer``, ``lr``, ``loss``, ...); any of those four
    given there must agree with the arrays.  The arrays are checked as by
    `load_torch`, before the model is built.

    Raises ValueError as `load_torch` does, for an option that disagrees with
    the arrays, and for invalid options (`OnlineRNN`'s own errors).
    """
    arrays = _read_state(cell_state, readout_state)
    cell, _, hh_key = _cell_kind(arrays)
    ih_key, w_key = arrays["keys"]["weight_ih"], arrays["keys"]["weight"]
    for key, where in ((hh_key, "weight_hh"), (ih_key, "weight_ih"), (w_key, "weight")):
        a = arrays[where]
        if a.ndim != 2:
            raise ValueError(f"{key} has shape {_shape(a)}, expected a matrix (2 dimensions)")
    inferred = dict(n_in=arrays["weight_ih"].shape[1], n_hidden=arrays["weight_hh"].shape[1],
                    n_out=arrays["weight"].shape[0], cell=cell)
    for name, value in inferred.items():
        if name in options and options[name] != value:
            raise ValueError(f"{name}={options[name]!r} was given, but the arrays are those "
                             f"of {name}={value!r} ({_dims(arrays, hh_key, ih_key, w_key)})")
    # checked first (no model is built for arrays that would be refused), then
    # again against the model, whose mask (rec_density, rec_mask) is known only then
    _staged(arrays, inferred["n_in"], inferred["n_hidden"], inferred["n_out"], cell, None)
    net = OnlineRNN(**dict(options, **inferred))
    _write(net, _staged(arrays, net.n_in, net.n_hidden, net.n_out, cell, net.rec_mask))
    return net


# -- checking ----------------------------------------------------------------------------

def _torch_cell(net) -> str:
    cell = net.cell
    if cell not in _GATES:
        raise ValueError(f"cell={cell!r} has no PyTorch counterpart: only cell='gru' "
                         f"(GRUCell, GRU) and cell='elman' (RNNCell, RNN) do")
    return cell


def _shape(a) -> str:
    return str(tuple(int(d) for d in a.shape))


def _dims(arrays, hh_key, ih_key, w_key) -> str:
    return (f"{hh_key} {_shape(arrays['weight_hh'])}, {ih_key} "
            f"{_shape(arrays['weight_ih'])}, {w_key} {_shape(arrays['weight'])}")


def _as_array(where: str, value) -> np.ndarray:
    """``value`` as a float64 numpy array (a new one, or a view of a float64
    input that is never written), refusing what is not real numbers."""
    if hasattr(value, "detach"):                   # a torch tensor, without importing torch
        t = value.detach().cpu()
        try:
            value = t.numpy()
        except TypeError:                          # bfloat16 has no numpy dtype
            value = t.float().numpy()
    try:
        a = np.asarray(value)
    except Exception as exc:
        raise ValueError(f"{where} must be an array of real numbers, got "
                         f"{type(value).__name__}: {exc}") from None
    if a.dtype.kind not in "iuf":
        raise ValueError(f"{where} must hold real numbers, got dtype {a.dtype} "
                         f"of shape {_shape(a)}")
    return a.astype(np.float64, copy=False)


def _read_state(cell_state, readout_state) -> dict:
    """The arrays of both state_dicts under their plain names (weight_ih, ...,
    weight, bias; missing biases as None), and ``keys``: how each was spelled
    in the input, for messages.  Checks the keys, not the shapes."""
    for name, state in (("cell_state", cell_state), ("readout_state", readout_state)):
        if not isinstance(state, Mapping):
            raise TypeError(f"{name} must be a state_dict (a mapping of names to arrays), "
                            f"got {type(state).__name__}")
    keys = [str(k) for k in cell_state]
    unknown = [k for k in keys if not _TORCH_KEY.fullmatch(k)]
    if unknown:
        raise ValueError(f"cell_state has unexpected key {unknown[0]!r}: the state_dict of an "
                         f"nn.GRUCell or nn.RNNCell has {', '.join(_CELL_KEYS)} (one-layer "
                         f"nn.GRU and nn.RNN: with the suffix _l0).  From a module holding "
                         f"the cell as an attribute, select its keys, e.g. {_PREFIX_RECIPE}")
    for k in keys:
        if k.endswith("_reverse"):
            raise ValueError(f"cell_state[{k!r}]: a bidirectional module cannot be loaded "
                             f"(OnlineRNN runs forward in time, in one direction)")
        if _TORCH_KEY.fullmatch(k).group(3) not in (None, "0"):
            raise ValueError(f"cell_state[{k!r}]: a module of more than one layer cannot be "
                             f"loaded (OnlineRNN has one recurrent layer)")
    suffixed = [k for k in keys if k.endswith("_l0")]
    suffix = "_l0" if suffixed else ""
    if suffixed and len(suffixed) != len(keys):
        plain = [k for k in keys if not k.endswith("_l0")]
        raise ValueError(f"cell_state mixes keys with and without the suffix _l0 "
                         f"({plain[0]!r} and {suffixed[0]!r}): give the state_dict of one "
                         f"module")
    unknown = [str(k) for k in readout_state if k not in _READOUT_KEYS]
    if unknown:
        raise ValueError(f"readout_state has unexpected key {unknown[0]!r}: the state_dict "
                         f"of an nn.Linear has weight and bias")
    arrays: dict = {"keys": {}}
    for state, name, spelled, required in (
            [(cell_state, k, k + suffix, k.startswith("weight")) for k in _CELL_KEYS]
            + [(readout_state, k, k, k == "weight") for k in _READOUT_KEYS]):
        where = (f"cell_state[{spelled!r}]" if state is cell_state
                 else f"readout_state[{spelled!r}]")
        arrays["keys"][name] = where
        if spelled not in state:
            if required:
                raise ValueError(f"{where} is missing (a cell state has weight_ih and "
                                 f"weight_hh, a readout state weight; biases may be left "
                                 f"out for a module built with bias=False)")
            arrays[name] = None
            continue
        arrays[name] = _as_array(where, state[spelled])
    return arrays


def _cell_kind(arrays) -> Tuple[str, int, str]:
    """(cell, gate blocks, how weight_hh is spelled), from weight_hh's shape."""
    hh_key, w = arrays["keys"]["weight_hh"], arrays["weight_hh"]
    if w.ndim != 2 or w.shape[1] < 1 or w.shape[0] % w.shape[1] \
            or w.shape[0] // w.shape[1] not in _CELL_OF_GATES:
        lstm = w.ndim == 2 and w.shape[1] >= 1 and w.shape[0] == 4 * w.shape[1]
        raise ValueError(f"{hh_key} has shape {_shape(w)}, expected a GRU's (3n, n) or an "
                         f"RNN's (n, n)" + ("; an LSTM's (4n, n) cannot be loaded" if lstm
                                           else ""))
    gates = w.shape[0] // w.shape[1]
    return _CELL_OF_GATES[gates], gates, hh_key


def _staged(arrays, m: int, n: int, o: int, cell: str, mask) -> Arrays:
    """The model's parameters (float32, by their names in ``net.params``) from
    checked arrays; raises ValueError before anything is written."""
    found, gates, hh_key = _cell_kind(arrays)
    if found != cell:
        module = "a GRU's" if found == "gru" else "an RNN's"
        raise ValueError(f"cell_state is {module} ({hh_key} has shape "
                         f"{_shape(arrays['weight_hh'])}: {gates} gate block"
                         f"{'s' if gates > 1 else ''} of n rows) but the OnlineRNN has "
                         f"cell={cell!r}; build one with cell={found!r} (from_torch does)")
    g = _GATES[cell] * n
    dims = f"n_in={m}, n_hidden={n}, n_out={o}, cell={cell!r}"
    expected = {"weight_ih": (g, m), "weight_hh": (g, n), "bias_ih": (g,), "bias_hh": (g,),
                "weight": (o, n), "bias": (o,)}
    values = {}
    for name, shape in expected.items():
        a, where = arrays[name], arrays["keys"][name]
        if a is None:
            values[name] = np.zeros(shape)
            continue
        if a.shape != shape:
            raise ValueError(f"{where} has shape {_shape(a)}, expected {shape} ({dims})")
        _check_values(where, a)
        values[name] = a
    w_hh = values["weight_hh"]
    if mask is not None:
        # the mask is W_rec's, or each of the GRU's three (n, n) blocks of W_hh
        outside = int(np.count_nonzero(w_hh.reshape(-1, n, n)[:, ~mask]))
        if outside:
            raise ValueError(f"{hh_key} has {outside} non-zero weights where the OnlineRNN's "
                             f"rec_mask is False; masked recurrent weights are zero (shape "
                             f"{_shape(w_hh)}, mask {_shape(mask)}"
                             f"{' for each gate block' if cell == 'gru' else ''})")
    if cell == "gru":
        staged = {"W_ih": values["weight_ih"], "W_hh": w_hh,
                  "b_ih": values["bias_ih"], "b_hh": values["bias_hh"]}
    else:
        bias = values["bias_ih"] + values["bias_hh"]
        _check_values(f"{arrays['keys']['bias_ih']} + {arrays['keys']['bias_hh']}", bias)
        staged = {"W_in": values["weight_ih"], "W_rec": w_hh, "b": bias}
    staged.update(W_out=values["weight"], b_out=values["bias"])
    return {name: a.astype(np.float32) for name, a in staged.items()}


def _check_values(where: str, a: np.ndarray) -> None:
    if not np.isfinite(a).all():
        raise ValueError(f"{where} holds non-finite values (NaN or inf); shape {_shape(a)}")
    if a.size and np.abs(a).max() > _F32_MAX:
        raise ValueError(f"{where} holds values beyond float32 range (largest magnitude "
                         f"{np.abs(a).max():.6g} > {_F32_MAX:.6g}); shape {_shape(a)}")


def _write(net, staged: Arrays) -> None:
    """Copy checked float32 arrays into the live parameters, and make them the
    divergence guard's restore point."""
    params = net.params
    for name, a in staged.items():
        params[name][...] = a
    buffers = net._core.buffers
    buffers["good"][...] = buffers["theta"]
