"""A restricted reader for LiPCoT's ``lipcot_model.joblib`` (a joblib pickle of scikit-learn objects).

``joblib.load`` would import scikit-learn and execute whatever the pickle stream asks for. This reader runs the
pure-Python unpickler with an allow-list instead:

- ``numpy.core.multiarray.scalar`` / ``numpy._core.multiarray.scalar`` -> rebuilt from its raw bytes;
- ``numpy.dtype`` (plain dtypes only);
- ``joblib.numpy_pickle.NumpyArrayWrapper`` -> a placeholder; when the stream BUILDs it, the array's raw bytes
  (which joblib writes outside the pickle frames, after an optional alignment pad) are read from the file;
- ``numpy.ndarray`` only as the wrapper's ``subclass`` tag (never called);
- ``sklearn.cluster._kmeans.KMeans`` and ``sklearn.preprocessing._data.StandardScaler`` -> inert
  :class:`EstimatorState` holders of their ``__dict__`` (scikit-learn is never imported).

Any other global in the stream, object arrays, and array subclasses are refused with the class name.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any, Dict

import numpy as np

__all__ = ["EstimatorState", "UnsafePickleError", "load_joblib"]

ESTIMATORS = {
    ("sklearn.cluster._kmeans", "KMeans"),
    ("sklearn.preprocessing._data", "StandardScaler"),
}
_SCALAR = {("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar")}


class UnsafePickleError(pickle.UnpicklingError, ValueError):
    """The stream names a type outside the allow-list (the message names it)."""


class EstimatorState:
    """What a scikit-learn estimator pickles: its class path and attribute dict (no behaviour)."""

    def __init__(self, class_path: str):
        self.class_path = class_path
        self.state: Dict[str, Any] = {}

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise UnsafePickleError(f"{self.class_path}: expected a dict state, got {type(state).__name__}")
        self.state = dict(state)

    def __getitem__(self, key):
        return self.state[key]

    def get(self, key, default=None):
        return self.state.get(key, default)

    def __repr__(self) -> str:
        return f"EstimatorState({self.class_path}, {sorted(self.state)})"


def _estimator_factory(class_path: str):
    class _Holder(EstimatorState):
        def __new__(cls, *args, **kwargs):  # NEWOBJ calls cls.__new__(cls)
            obj = object.__new__(EstimatorState)
            EstimatorState.__init__(obj, class_path)
            return obj

    _Holder.__name__ = class_path.rsplit(".", 1)[-1]
    return _Holder


class _ArrayWrapper:
    """Placeholder for ``joblib.numpy_pickle.NumpyArrayWrapper`` (its state says how to read the array)."""

    def __init__(self, *args, **kwargs):
        self.meta: Dict[str, Any] = {}

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise UnsafePickleError("NumpyArrayWrapper state must be a dict")
        self.meta = dict(state)


class _NDArrayTag:
    """Stands for ``numpy.ndarray`` as the wrapper's ``subclass`` field; not callable."""


def _scalar(dtype, data=None):
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise UnsafePickleError(f"numpy scalar of unsupported dtype {dtype!r}")
    if not isinstance(data, (bytes, bytearray)):
        raise UnsafePickleError("numpy scalar without raw bytes")
    return np.frombuffer(bytes(data), dtype=dtype)[0]


def _dtype(obj, align=False, copy=False):
    dt = np.dtype(obj, align, copy)
    if dt.hasobject:
        raise UnsafePickleError(f"object dtype {dt!r} is not allowed")
    return dt


class _RestrictedUnpickler(pickle._Unpickler):  # the pure-Python unpickler, so BUILD can be extended
    def __init__(self, file):
        super().__init__(file)
        self._raw = file

    def find_class(self, module, name):
        if (module, name) in _SCALAR:
            return _scalar
        if (module, name) == ("numpy", "dtype"):
            return _dtype
        if (module, name) == ("numpy", "ndarray"):
            return _NDArrayTag
        if (module, name) == ("joblib.numpy_pickle", "NumpyArrayWrapper"):
            return _ArrayWrapper
        if (module, name) in ESTIMATORS:
            return _estimator_factory(f"{module}.{name}")
        raise UnsafePickleError(f"refusing to load {module}.{name}: not one of the numpy/scikit-learn types a "
                                "LiPCoT model file may contain (this file is not a LiPCoT model or was tampered "
                                "with)")

    def _read_exact(self, n: int) -> bytes:
        data = self._raw.read(n)
        if len(data) != n:
            raise UnsafePickleError(f"file truncated: wanted {n} bytes of array data, got {len(data)}")
        return data

    def _read_array(self, wrapper: _ArrayWrapper) -> np.ndarray:
        meta = wrapper.meta
        for key in ("shape", "order", "dtype"):
            if key not in meta:
                raise UnsafePickleError(f"NumpyArrayWrapper without {key!r}")
        if meta.get("subclass", _NDArrayTag) is not _NDArrayTag:
            raise UnsafePickleError("only plain numpy.ndarray arrays are allowed")
        dtype = meta["dtype"]
        if not isinstance(dtype, np.dtype) or dtype.hasobject:
            raise UnsafePickleError(f"array of unsupported dtype {dtype!r} (object arrays are refused)")
        shape = tuple(int(s) for s in meta["shape"])
        if meta.get("numpy_array_alignment_bytes") is not None:
            pad = self._read_exact(1)[0]
            if pad:
                self._read_exact(pad)
        count = int(np.prod(shape)) if shape else 1
        arr = np.frombuffer(self._read_exact(count * dtype.itemsize), dtype=dtype).copy()
        if meta["order"] == "F":
            return arr.reshape(shape[::-1]).transpose()
        return arr.reshape(shape)

    def load_build(self):
        super().load_build()
        top = self.stack[-1]
        if isinstance(top, _ArrayWrapper):
            self.stack[-1] = self._read_array(top)

    dispatch = dict(pickle._Unpickler.dispatch)
    dispatch[pickle.BUILD[0]] = load_build


def load_joblib(path) -> Any:
    """Read a LiPCoT ``.joblib`` model file without importing scikit-learn or running pickled code."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such LiPCoT model file: {path}")
    data = path.read_bytes()
    if data[:2] in (b"\x1f\x8b", b"BZ", b"\xfd7") or data[:4] == b"\x28\xb5\x2f\xfd":
        raise ValueError(f"{path}: compressed joblib files are not supported (the LiPCoT release is uncompressed)")
    try:
        return _RestrictedUnpickler(io.BytesIO(data)).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, IndexError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"{path} is not a readable LiPCoT joblib file (truncated or corrupt): "
                         f"{type(exc).__name__}: {exc}") from exc
