"""What the A/B benchmark scripts share (run them from the repository root:
`python benchmarks/<script>.py`, which puts this folder on the import path)."""

import torch

import fastrnn
from fastrnn.kernels.tuning import tuning


class Switch:
    """switch(**overrides): what follows runs under tuning(**overrides) until the next call or
    the end of the `with switch:` block. A tuning() block costs ~40 us to enter, too much for
    every timed call: one is entered only when a call asks for other values, so of the
    interleaved calls only a sample's first pays it."""

    def __init__(self):
        self._now, self._block = None, None

    def __call__(self, **overrides):
        if overrides != self._now:
            self.__exit__()
            self._block = tuning(**overrides)
            self._block.__enter__()
            self._now = overrides

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._block is not None:
            block, self._block, self._now = self._block, None, None
            block.__exit__(None, None, None)


def lstm_calls(switch, rule, T, B, H):
    """make(mode, value): a call to time, "inference" (no_grad) or "training" (backward of the
    output's sum): torch.nn.LSTM(H, H) when value is None, else fastrnn's numba LSTM with the
    same weights under switch(rule=value). Input (T, B, H), float32."""
    reference = torch.nn.LSTM(H, H)
    model = fastrnn.LSTM(H, H, backend="numba")
    model.load_state_dict(reference.state_dict())
    x = torch.randn(T, B, H)
    xr = x.clone().requires_grad_()

    def make(mode, value):
        def fn():
            lstm = reference
            if value is not None:
                switch(**{rule: value})
                lstm = model
            if mode == "inference":
                with torch.no_grad():
                    lstm(x)
            else:
                lstm(xr)[0].sum().backward()
        return fn
    return make
