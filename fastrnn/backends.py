"""Which kernels run: the backend registry.

A backend is a module that implements the interface described in fastrnn.reference.
"auto" picks the fastest registered backend that supports the tensor's device and dtype;
the FASTRNN_BACKEND environment variable overrides "auto".
"""

import importlib
import os

# Name -> module path, in the order "auto" prefers them.
_MODULES = {
    "triton": "fastrnn.kernels.triton",
    "numba": "fastrnn.kernels.numba",
    "reference": "fastrnn.reference",
}
NAMES = ("auto",) + tuple(_MODULES)
ENV_VAR = "FASTRNN_BACKEND"


def check_name(name):
    """Raise ValueError for a backend name fastrnn does not know."""
    if not isinstance(name, str) or name not in NAMES:
        raise ValueError(f"unknown fastrnn backend {name!r}; valid backends are: {', '.join(NAMES)}")
    return name


def get(name):
    """The backend module for a concrete name (imported on first use)."""
    check_name(name)
    if name == "auto":
        raise ValueError("'auto' is not a concrete backend; use resolve() to pick one")
    return importlib.import_module(_MODULES[name])


def _usable(name, device, dtype):
    try:
        return bool(get(name).supports(device, dtype))
    except ImportError:
        return False


def available(device, dtype):
    """Names of the concrete backends that can run tensors of this device and dtype."""
    return [name for name in _MODULES if _usable(name, device, dtype)]


def _auto(device, dtype):
    # Triton on CPU is the interpreter: correct but slow, so auto never picks it there.
    for name in _MODULES:
        if name == "triton" and device.type == "cpu":
            continue
        if _usable(name, device, dtype):
            return name
    raise RuntimeError(f"fastrnn has no backend for {dtype} tensors on {device}")


_RESOLVED = {}


def resolve(name, device, dtype):
    """The backend module to run for ``name`` ("auto" or concrete) on this device and dtype."""
    # Memoised per call signature (the environment variable included): resolving runs on
    # every forward, and supports() answers cannot change within a process.
    check_name(name)
    key = (name, os.environ.get(ENV_VAR), device, dtype)
    module = _RESOLVED.get(key)
    if module is None:
        module = _RESOLVED[key] = _resolve(name, device, dtype)
    return module


def _resolve(name, device, dtype):
    if name == "auto":
        name = check_name(os.environ.get(ENV_VAR, "auto") or "auto")
        if name == "auto":
            name = _auto(device, dtype)
    module = get(name)
    if not module.supports(device, dtype):
        hint = getattr(module, "unsupported_reason", None)
        detail = hint(device, dtype) if hint is not None else ""
        raise RuntimeError(
            f"fastrnn backend {name!r} cannot run {dtype} tensors on {device}. {detail}".strip()
            + f" Backends that can: {', '.join(available(device, dtype)) or 'none'}."
        )
    return module
