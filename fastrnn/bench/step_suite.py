"""`python -m fastrnn bench --suite step`: one-step calls, fastrnn against torch.nn.

What a sampling loop, an RL rollout or a streaming model calls once per time step: a module at
seq_len 1 (`model(x_t, hx)`) and a cell, at batch 1-16, for LSTM, GRU and RNN (tanh), input
size = hidden size, float32 on CPU. Each case runs torch.nn and fastrnn (backend auto) on the
same weights and input, checks that their results agree, then times both interleaved (medians
of rounds, each round enough back-to-back calls to last ~5 ms). Modes: ``no_grad`` (inside
torch.no_grad, the module in eval) and ``grad`` (the call recorded by autograd, the input
requiring a gradient; the backward is not timed).

Also measured, for the floor a step cannot go below: the Python call of an nn.Module whose
forward returns its input, and the compiled step alone (fastrnn's kernel on arrays prepared
beforehand, no tensors converted).
"""

import math
import statistics
import time

import torch

import fastrnn

from . import machine, timing

KINDS = ("lstm", "gru", "rnn")
SIZES = ((1, 64), (1, 128), (4, 256), (16, 256))       # (batch, hidden): the geomeans' grid
EXTRA_SIZES = ((1, 512), (16, 512))                     # up to tuning's step_max_hidden
QUICK_SIZES = ((1, 64), (4, 128))
MODES = ("no_grad", "grad")
_CLASS = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}


class _Identity(torch.nn.Module):
    def forward(self, x, hx=None):
        return x


def _pair(kind, cell, H):
    name = _CLASS[kind] + ("Cell" if cell else "")
    ref = getattr(torch.nn, name)(H, H)
    ours = getattr(fastrnn, name)(H, H)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def _inputs(kind, cell, B, H, grad):
    g = torch.Generator().manual_seed(B * 1000 + H)
    shape = (B, H) if cell else (1, B, H)
    x = torch.randn(shape, generator=g)
    h = torch.randn(shape if cell else (1, B, H), generator=g)
    hx = (h, torch.randn(h.shape, generator=g)) if kind == "lstm" else h
    if grad:
        x.requires_grad_()
    return x, hx


def _flat(result):
    if isinstance(result, torch.Tensor):
        return [result]
    return [t for r in result for t in _flat(r)]


def _agree(a, b):
    return all(x.shape == y.shape and torch.allclose(x, y, rtol=1e-4, atol=1e-5)
               for x, y in zip(_flat(a), _flat(b)))


def _call(model, x, hx, grad):
    if grad:
        return lambda: model(x, hx)

    def fn():
        with torch.no_grad():
            return model(x, hx)
    return fn


def run_case(kind, cell, B, H, mode, repeats):
    grad = mode == "grad"
    ref, ours = _pair(kind, cell, H)
    if not grad:
        ref.eval()
        ours.eval()
    x, hx = _inputs(kind, cell, B, H, grad)
    fns = {"torch": _call(ref, x, hx, grad), "fastrnn": _call(ours, x, hx, grad)}
    row = {"kind": kind, "call": "cell" if cell else "module", "B": B, "H": H, "mode": mode}
    first = fns["fastrnn"]()
    if not _agree(fns["torch"](), first) or not _agree(fns["torch"](), fns["fastrnn"]()):
        row["status"] = "wrong"
        return row
    samples, errors = timing.interleaved(fns, repeats, 2, "cpu")
    if errors:
        row["status"] = "error: " + "; ".join(f"{k}: {v}" for k, v in errors.items())
        return row
    row["status"] = "ok"
    row["torch_us"] = statistics.median(samples["torch"]) * 1e6
    row["fastrnn_us"] = statistics.median(samples["fastrnn"]) * 1e6
    row["speedup"] = row["torch_us"] / row["fastrnn_us"]
    if grad:
        row["runs"] = fastrnn.explain(ours, x, hx).backend
    else:
        with torch.no_grad():
            row["runs"] = fastrnn.explain(ours, x, hx).backend
    return row


def call_floor_us(repeats=15):
    """The Python call of an nn.Module that returns its input, in microseconds."""
    m, x = _Identity(), torch.zeros(1)
    samples, _ = timing.interleaved({"floor": lambda: m(x)}, repeats, 2, "cpu")
    return statistics.median(samples["floor"]) * 1e6


def kernel_us(kind, B, H, repeats=15):
    """fastrnn's compiled step alone (numba backend, arrays prepared beforehand), in us."""
    import numpy as np

    from ..kernels.numba import LayerStep
    G = {"lstm": 4, "gru": 3, "rnn": 1}[kind] * H
    w = (torch.randn(G, H) * 0.1, torch.randn(G, H) * 0.1, torch.zeros(G), torch.zeros(G), None)
    step = LayerStep(kind, *w, B)
    x = np.zeros((1, B, H), np.float32)
    h = np.zeros((B, H), np.float32)
    c = np.zeros((B, H), np.float32) if kind == "lstm" else None
    out = np.empty((1, B, H), np.float32)
    samples, _ = timing.interleaved({"k": lambda: step.step(x, h, c, out)}, repeats, 2, "cpu")
    return statistics.median(samples["k"]) * 1e6


def geomean(values):
    values = list(values)
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def summary(rows):
    """Geomean speedups by (call, mode), the worst row with grad, and the best row."""
    ok = [r for r in rows if r["status"] == "ok" and r.get("grid", True)]
    out = {}
    for call in ("module", "cell"):
        for mode in MODES:
            chosen = [r["speedup"] for r in ok if r["call"] == call and r["mode"] == mode]
            if chosen:
                out[f"{call} {mode}"] = geomean(chosen)
    grad = [r for r in ok if r["mode"] == "grad"]
    if grad:
        worst = min(grad, key=lambda r: r["speedup"])
        out["worst with grad"] = (worst["speedup"], _label(worst))
    return out


def _label(r):
    return f"{r['kind']} {r['call']} B={r['B']} H={r['H']} {r['mode']}"


def format_rows(rows):
    lines = ["| kind | call | B | H | mode | torch.nn us | fastrnn us | speedup | runs |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['kind']} | {r['call']} | {r['B']} | {r['H']} | {r['mode']} | "
                         f"- | - | {r['status']} | |")
            continue
        lines.append(f"| {r['kind']} | {r['call']} | {r['B']} | {r['H']} | {r['mode']} | "
                     f"{r['torch_us']:.1f} | {r['fastrnn_us']:.1f} | {r['speedup']:.2f}x | "
                     f"{r['runs']} |")
    return lines


def main(args, log):
    sizes = QUICK_SIZES if args.quick else SIZES + EXTRA_SIZES
    repeats = args.repeats or (5 if args.quick else 31)
    kinds = args.kinds or list(KINDS)
    meta = machine.machine_info(torch.device("cpu"))
    rows = []
    started = time.perf_counter()
    for kind in kinds:
        for cell in (False, True):
            for B, H in sizes:
                for mode in MODES:
                    row = run_case(kind, cell, B, H, mode, repeats)
                    row["grid"] = args.quick or (B, H) in SIZES
                    rows.append(row)
                    log(f"{_label(row)}: " + (f"torch {row['torch_us']:.1f} us, fastrnn "
                                              f"{row['fastrnn_us']:.1f} us "
                                              f"({row['speedup']:.2f}x)" if row["status"] == "ok"
                                              else row["status"]))
    floor = call_floor_us(repeats)
    best = max((r for r in rows if r["status"] == "ok" and r["grid"]),
               key=lambda r: r["speedup"], default=None)
    lines = [f"# fastrnn step benchmark: {meta.get('cpu', 'CPU')}", "",
             f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
             f"{time.strftime('%Y-%m-%d')}; {repeats} interleaved rounds per case, medians; "
             f"float32, input size = hidden size; elapsed {time.perf_counter() - started:.0f} s.",
             ""]
    lines += format_rows(rows)
    lines += ["", "Geomean speedup over torch.nn (same process, same weights), over the sizes "
              f"{', '.join(f'B={b} H={h}' for b, h in (QUICK_SIZES if args.quick else SIZES))}:"]
    for name, value in summary(rows).items():
        if name == "worst with grad":
            lines.append(f"- worst case with grad: {value[0]:.2f}x ({value[1]})")
        else:
            lines.append(f"- {name}: {value:.2f}x")
    lines.append(f"- Python call floor (nn.Module call, identity forward): {floor:.1f} us")
    if best is not None:
        arithmetic = kernel_us(best["kind"], best["B"], best["H"], repeats)
        lines.append(f"- best case {_label(best)}: fastrnn {best['fastrnn_us']:.1f} us = "
                     f"{best['fastrnn_us'] / (arithmetic + floor):.2f}x its compiled step alone "
                     f"({arithmetic:.1f} us) plus the call floor")
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")
        log(f"wrote {args.markdown}")
    if args.json:
        import json
        with open(args.json, "w") as f:
            json.dump({"machine": meta, "rows": rows, "call_floor_us": floor}, f, indent=1)
        log(f"wrote {args.json}")
    return 0
