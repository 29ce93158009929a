"""Runs the grid: for every case, build each provider on the same weights and input, check it
against torch.nn, time the ones that agree (interleaved), and return one row per provider.

A provider that raises is reported with status "error" and its message; one whose result
disagrees with torch.nn is reported "wrong" and not timed. Neither stops the run.
"""

import torch
from torch import nn

from . import check, providers, timing

_TORCH_MODULES = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
SEED = 0
TIMING_KEYS = ("median_ms", "q1_ms", "q3_ms", "min_ms", "max_ms")


def make_reference(case, device):
    """The torch.nn module (the oracle and the `torch` provider) and the input, seeded."""
    s, dtype = case.size, case.torch_dtype
    generator = torch.Generator().manual_seed(SEED)
    # Initialise in float32 on the CPU so every device and dtype sees the same numbers.
    torch.manual_seed(SEED)
    module = _TORCH_MODULES[case.kind](s.I, s.H)  # rnn -> nonlinearity="tanh"
    module = module.to(device=device, dtype=dtype)
    x = torch.randn(s.T, s.B, s.I, generator=generator).to(device=device, dtype=dtype)
    return module, x


def make_step(runnable, x, mode):
    """A no-argument callable running one measured unit of work; returns (output, input grad)."""
    module = runnable.module
    if mode == "inference":
        module.eval()

        def step():
            with torch.no_grad():
                return runnable.forward(x), None
        return step

    module.train()
    x = x.detach().clone().requires_grad_(True)
    params = [p for p in module.parameters() if p.requires_grad]

    def step():
        out = runnable.forward(x)
        # autograd.grad instead of backward(): no .grad accumulation between repeats, and the
        # weight gradients are still computed (as an optimizer step would need them).
        grads = torch.autograd.grad(out.sum(), [x] + params)
        return out, grads[0]
    return step


def make_expected(case, device):
    """(torch.nn module, input, torch's (output, input gradient)): what providers must match."""
    reference, x = make_reference(case, device)
    expected = make_step(providers.get("torch").build(case.kind, reference), x, case.mode)()
    return reference, x, expected


def checked_step(case, provider, reference, x, expected, device):
    """Build ``provider`` on the oracle's weights, run it once and compare with ``expected``.

    Returns (step, max relative error, tolerance, message); message is None when it agrees.
    The first call also compiles (Numba/Triton), so it doubles as a warm-up call.
    """
    device = torch.device(device)
    if not provider.supports(device, case.torch_dtype):
        raise RuntimeError(f"{provider.name} is not available for {case.dtype} on {device.type}")
    step = make_step(provider.build(case.kind, reference), x, case.mode)
    err, tol, message = check.compare(step(), expected, case.torch_dtype, device)
    return step, err, tol, message


def _error_message(exc):
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".strip()


def run_case(case, provider_names, device, repeats, warmup, budget_s=None):
    """Rows (dicts) for one case, one per provider, in the order given.

    ``budget_s``: seconds of timed rounds a slow case may take (see timing.interleaved)."""
    device = torch.device(device)
    dtype = case.torch_dtype
    base = {"kind": case.kind, "mode": case.mode, "dtype": case.dtype, "T": case.size.T,
            "B": case.size.B, "I": case.size.I, "H": case.size.H, "flops": case.flops}
    rows = {name: dict(base, provider=name, status="ok", error=None, strategy=None,
                       max_rel_error=None, tolerance=None) for name in provider_names}

    try:
        reference, x, expected = make_expected(case, device)
    except Exception as exc:
        for row in rows.values():
            row.update(status="error", error="torch.nn reference failed, nothing to check "
                                             "against: " + _error_message(exc))
        return list(rows.values())

    steps = {}
    for name in provider_names:
        row = rows[name]
        try:
            provider = providers.get(name)
            try:
                row["strategy"] = provider.strategy(case.kind, case.size, dtype, device)
            except Exception:
                row["strategy"] = None  # a description is optional; never fail a row over it
            step, err, tol, message = checked_step(case, provider, reference, x, expected, device)
            row.update(max_rel_error=err, tolerance=tol)
            if message is not None:
                row.update(status="wrong", error=message)
                continue
            steps[name] = step
        except Exception as exc:
            row.update(status="error", error=_error_message(exc))

    samples, errors = timing.interleaved(steps, repeats, warmup, device, budget_s)
    for name, exc in errors.items():
        rows[name].update(status="error", error=_error_message(exc))
    for name, seconds in samples.items():
        rows[name].update(timing.summarize(seconds))

    base_ms = rows["torch"].get("median_ms") if "torch" in rows else None
    for row in rows.values():
        ms = row.get("median_ms")
        if row["status"] != "ok" or ms is None:
            # Same keys on every row, so the JSON has one schema.
            row.update({key: None for key in TIMING_KEYS}, repeats=0, speedup=None, gflops=None)
            continue
        row["gflops"] = case.flops / (ms * 1e-3) / 1e9
        row["speedup"] = base_ms / ms if base_ms else None
    return list(rows.values())


def add_roofline(rows, gemm_gflops):
    """Fill gemm_gflops and pct_gemm (GFLOP/s as % of the measured GEMM rate) per dtype."""
    for row in rows:
        rate = (gemm_gflops or {}).get(row["dtype"])
        row["gemm_gflops"] = rate
        row["pct_gemm"] = 100.0 * row["gflops"] / rate if rate and row.get("gflops") else None
    return rows
