"""How time is measured: warm-up, interleaved repeats, device-correct clocks, robust statistics.

- Warm-up calls run first and are not timed: they absorb Numba/Triton compilation, allocator
  growth and cuDNN plan selection.
- Providers are interleaved round-robin within every repeat (with a rotating start), so slow
  drifts of the machine (turbo, thermal, a noisy neighbour) hit all of them alike instead of
  whichever happened to run last.
- On CUDA, kernels are asynchronous: time with CUDA events after a synchronize, never with
  the host clock alone.
- Report the median and the spread (quartiles, min, max), never the mean of a few samples.
- Sub-millisecond calls are timed in batches (one sample = enough back-to-back calls to last
  ~5 ms, reported per call), and the garbage collector is paused inside a sample, as timeit
  does: otherwise timer resolution and a collection triggered by another provider's garbage
  land on whichever call happens to be running.
"""

import gc
import time

import numpy as np
import torch

SAMPLE_S = 0.005


def clock(device):
    """A function ``timed(fn, calls=1) -> seconds per call`` over ``calls`` back-to-back calls."""
    if torch.device(device).type == "cuda":
        def measure(fn, calls):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            for _ in range(calls):
                fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3
    else:
        def measure(fn, calls):
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            return time.perf_counter() - start

    def timed(fn, calls=1):
        enabled = gc.isenabled()
        gc.disable()
        try:
            return measure(fn, calls) / calls
        finally:
            if enabled:
                gc.enable()
    return timed


def calls_per_sample(seconds_per_call):
    """How many back-to-back calls make one sample last about SAMPLE_S."""
    return max(1, min(1000, int(SAMPLE_S / max(seconds_per_call, 1e-7))))


MIN_REPEATS = 3


def interleaved(steps, repeats, warmup, device, budget_s=None):
    """Time every callable in ``steps`` (name -> fn) ``repeats`` times, round-robin.

    ``budget_s`` caps the timed rounds of a slow case: after the first round, only as many
    rounds as fit in the budget run (never fewer than MIN_REPEATS, never more than repeats),
    so a large grid finishes in reasonable time without cutting the repeats of small cases.

    Returns (samples, errors): name -> list of seconds, and name -> exception for a step that
    raised (it is dropped from later rounds; the others continue).
    """
    timed = clock(device)
    names = list(steps)
    samples = {name: [] for name in names}
    errors = {}
    calls = {name: 1 for name in names}
    for w in range(warmup):
        for name in names:
            if name not in errors:
                try:
                    seconds = timed(steps[name])
                except Exception as exc:  # reported, not fatal: the run continues
                    errors[name] = exc
                else:
                    if w == warmup - 1:
                        calls[name] = calls_per_sample(seconds)
    r = 0
    while r < repeats:
        round_start = time.perf_counter()
        order = names[r % len(names):] + names[:r % len(names)] if names else []
        for name in order:
            if name in errors:
                continue
            try:
                samples[name].append(timed(steps[name], calls[name]))
            except Exception as exc:
                errors[name] = exc
        if r == 0 and budget_s is not None:
            round_s = time.perf_counter() - round_start
            repeats = min(repeats, max(MIN_REPEATS, int(budget_s / max(round_s, 1e-9))))
        r += 1
    for name in errors:
        samples.pop(name, None)
    return samples, errors


def summarize(seconds):
    """Median, quartiles, min and max in milliseconds."""
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    q1, median, q3 = np.percentile(ms, [25, 50, 75])
    return {"median_ms": float(median), "q1_ms": float(q1), "q3_ms": float(q3),
            "min_ms": float(ms.min()), "max_ms": float(ms.max()), "repeats": int(ms.size)}


def medians(fns, repeats, device="cpu", warmup=2):
    """Milliseconds per call of each fn in a list: medians of interleaved rounds (for the
    crossover scripts under benchmarks/). The first error raised by any fn is re-raised."""
    samples, errors = interleaved(dict(enumerate(fns)), repeats, warmup, device)
    if errors:
        raise next(iter(errors.values()))
    return [summarize(samples[i])["median_ms"] for i in range(len(fns))]
