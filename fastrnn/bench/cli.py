"""`python -m fastrnn bench` / `fastrnn-bench`: fastrnn side by side with what users run today.

Parses options, measures the machine's GEMM rate, runs the grid case by case (progress on
stderr), then prints the table and writes the optional JSON, markdown and PNG files.
"""

import argparse
import os
import sys
import time

import torch

from . import grid, machine, providers, report, runner

DESCRIPTION = """\
Benchmark fastrnn's LSTM/GRU/RNN against torch.nn on this machine.

Every case (cell kind x size x dtype x mode) runs each provider on the same weights and input:
  torch            torch.nn (native CPU / oneDNN, or cuDNN): the baseline of the speedup column
  torch-cell-loop  a Python loop over torch.nn.LSTMCell/GRUCell/RNNCell (what people write by hand)
  fastrnn-<name>   fastrnn with backend=<name>, for each backend fastrnn.dispatch.available()
                   reports (reference, and triton on CPU, only when named with --providers)
Each provider's output (and, in training, input gradient) is first checked against torch.nn;
one that disagrees is reported "wrong" and not timed, one that raises is reported "error".
Times are medians of interleaved repeats after warm-up (compile time excluded)."""

EPILOG = """\
examples:
  python -m fastrnn bench --quick
  python -m fastrnn bench --kinds lstm --sizes 100x16x128x128,50x8x1024x1024 --modes training
  python -m fastrnn bench --json results.json --plot speedup.png
  python -m fastrnn bench --suite step --markdown step.md"""


def _list_of(parse, what):
    """An argparse type for comma-separated values, each checked by ``parse``."""
    def convert(text):
        items = [t.strip() for t in text.split(",") if t.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {what}, "
                                             f"got {text!r}")
        try:
            return [parse(t) for t in items]
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return convert


def _choice(choices, what):
    def parse(text):
        name = text.lower()
        if name not in choices:
            raise ValueError(f"unknown {what} {text!r}; choose from {', '.join(choices)}")
        return name
    return parse


def _provider(text):
    providers.get(text)  # raises ValueError listing the known names
    return text


def _device(text):
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"invalid device {text!r}; "
                                         "use cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"device {text!r}: only cpu and cuda are supported")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"device {text!r}: no CUDA device is available here")
    return device


def _count(minimum):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value
    return parse


def _seconds(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def build_parser(prog="fastrnn bench"):
    p = argparse.ArgumentParser(prog=prog, description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", type=_choice(("grid", "step"), "suite"), default="grid",
                   help="grid: whole sequences over the size grid (the default); step: "
                        "one-step calls (a module at seq_len 1, a cell) at batch 1-16 on CPU, "
                        "as sampling loops and RL rollouts make them (honours --kinds, "
                        "--repeats, --quick, --markdown, --json)")
    p.add_argument("--device", type=_device, default=None,
                   help="cpu, cuda or cuda:N (default: cuda if available, else cpu)")
    p.add_argument("--kinds", type=_list_of(_choice(grid.KINDS, "kind"), "kinds"), default=None,
                   help="cell kinds, comma-separated, from lstm,gru,rnn (rnn = tanh Elman RNN) "
                        "(default: all)")
    p.add_argument("--sizes", type=_list_of(grid.parse_size, "sizes"), default=None,
                   help="problem sizes TxBxIxH (sequence length x batch x input size x hidden "
                        "size), comma-separated, e.g. 100x16x128x128,50x8x1024x1024 "
                        "(default: a grid for the device, from small/overhead-bound to "
                        "large/GEMM-bound)")
    p.add_argument("--dtypes", type=_list_of(grid.parse_dtype, "dtypes"), default=None,
                   help=f"dtypes, comma-separated, from {','.join(grid.DTYPES)} (default: float32)")
    p.add_argument("--modes", type=_list_of(_choice(grid.MODES, "mode"), "modes"), default=None,
                   help="inference (eval + no_grad forward) and/or training (forward + backward "
                        "of output.sum()) (default: both)")
    p.add_argument("--providers", type=_list_of(_provider, "providers"), default=None,
                   help="what to compare, comma-separated: torch, torch-cell-loop, "
                        "fastrnn-<backend> (numba, triton, reference, auto); torch is always "
                        "added as the baseline (default: torch, torch-cell-loop and every "
                        "available fastrnn backend except reference, and triton on CPU)")
    p.add_argument("--repeats", type=_count(1), default=None,
                   help="timed calls per provider and case, interleaved across providers "
                        "(default: 10 on CPU, 30 on CUDA, 5 with --quick)")
    p.add_argument("--warmup", type=_count(0), default=None,
                   help="untimed calls per provider before timing, after the first (compiling, "
                        "checked) call (default: 1, 3 on CUDA)")
    p.add_argument("--max-seconds", type=_seconds, default=None,
                   help="time budget per case for the timed rounds: a slow case runs only as "
                        "many rounds as fit (at least 3, at most --repeats) "
                        "(default: 20 on CPU, 10 on CUDA, 3 with --quick)")
    p.add_argument("--json", metavar="PATH", default=None,
                   help="write machine info and every row (times, status, errors) as JSON")
    p.add_argument("--markdown", metavar="PATH", default=None,
                   help="write the table with machine, versions and date as markdown")
    p.add_argument("--plot", metavar="PATH", default=None,
                   help="write a PNG of the speedup vs torch.nn per size and provider, one "
                        "panel per kind and mode")
    p.add_argument("--quick", action="store_true",
                   help="a tiny grid and few repeats: under a minute on a 2-core CPU")
    return p


def resolve_settings(args):
    """Fill the defaults that depend on the device and --quick."""
    device = args.device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.type == "cuda"
    return {
        "device": device,
        "kinds": args.kinds or list(grid.KINDS),
        "sizes": args.sizes or list(grid.default_sizes(device, args.quick)),
        "dtypes": args.dtypes or ["float32"],
        "modes": args.modes or list(grid.MODES),
        "providers": args.providers,
        "repeats": args.repeats or (5 if args.quick else 30 if cuda else 10),
        "warmup": args.warmup if args.warmup is not None else (3 if cuda else 1),
        "max_seconds": args.max_seconds or (3.0 if args.quick else 10.0 if cuda else 20.0),
    }


def provider_names(settings, dtype_name):
    dtype = grid.DTYPES[dtype_name]
    if settings["providers"] is None:
        return providers.default_names(settings["device"], dtype)
    names = list(dict.fromkeys(settings["providers"]))
    return names if "torch" in names else ["torch"] + names  # the speedup needs its baseline


def _progress(index, total, case, rows, seconds):
    parts = []
    for r in rows:
        if r["status"] != "ok":
            parts.append(f"{r['provider']} {r['status'].upper()}")
        elif r.get("speedup") and r["provider"] != "torch":
            parts.append(f"{r['provider']} {report._num(r['median_ms'])} ms "
                         f"({report._speedup(r['speedup'])})")
        else:
            parts.append(f"{r['provider']} {report._num(r['median_ms'])} ms")
    print(f"[{index + 1}/{total}] {case}: " + " | ".join(parts) + f"  [{seconds:.1f} s]",
          file=sys.stderr, flush=True)


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    if args.suite == "step":
        if args.device is not None and args.device.type != "cpu":
            parser.error("--suite step runs on CPU only (the step path is a CPU path)")
        from . import step_suite
        return step_suite.main(args, log)
    settings = resolve_settings(args)
    device = settings["device"]
    if device.type == "cpu" and "fastrnn-triton" in (settings["providers"] or []):
        # Triton on CPU is its interpreter, chosen when triton is first imported: set it now.
        os.environ.setdefault("TRITON_INTERPRET", "1")

    meta = machine.machine_info(device)
    load = meta.get("load_average")
    if load and load[0] > 0.5 * (os.cpu_count() or 1):
        log(f"warning: the machine is busy (load average {load[0]} on {os.cpu_count()} cores); "
            f"other work skews timings, and threaded libraries suffer most")
    log("measuring the GEMM rate ...")
    gemm_start = {d: machine.gemm_rate(device, grid.DTYPES[d]) for d in settings["dtypes"]}
    for d, rate in gemm_start.items():
        log(f"  {d}: {rate:.1f} GFLOP/s")
    names_by_dtype = {d: provider_names(settings, d) for d in settings["dtypes"]}
    for d, names in names_by_dtype.items():
        log(f"providers ({d}): {', '.join(names)}")
    meta["settings"] = {"kinds": ",".join(settings["kinds"]),
                        "sizes": ",".join(str(s) for s in settings["sizes"]),
                        "dtypes": ",".join(settings["dtypes"]),
                        "modes": ",".join(settings["modes"]),
                        "repeats": settings["repeats"], "warmup": settings["warmup"],
                        "max_seconds": settings["max_seconds"],
                        "quick": bool(args.quick)}

    cases = grid.make_grid(settings["kinds"], settings["sizes"], settings["dtypes"],
                           settings["modes"])
    rows = []
    started = time.perf_counter()
    for index, case in enumerate(cases):
        t0 = time.perf_counter()
        case_rows = runner.run_case(case, names_by_dtype[case.dtype], device,
                                    settings["repeats"], settings["warmup"],
                                    settings["max_seconds"])
        _progress(index, len(cases), case, case_rows, time.perf_counter() - t0)
        rows.extend(case_rows)
    meta["elapsed_s"] = round(time.perf_counter() - started, 1)
    # Measured again at the end and the best kept: other work on the machine only ever lowers
    # it, and an understated roofline would overstate every "% GEMM".
    gemm_end = {d: machine.gemm_rate(device, grid.DTYPES[d]) for d in settings["dtypes"]}
    meta["gemm_gflops"] = {d: max(gemm_start[d], gemm_end[d]) for d in gemm_start}
    meta["gemm_gflops_start"], meta["gemm_gflops_end"] = gemm_start, gemm_end
    runner.add_roofline(rows, meta["gemm_gflops"])
    meta["load_average_end"] = machine.load_average()

    print("\n".join(report.describe_machine(meta)))
    print()
    print(report.format_text(rows))
    bad = report.problems(rows)
    if bad:
        print("\nnot timed:")
        print("\n".join("  " + line for line in bad))
    if args.json:
        report.write_json(args.json, meta, rows)
        log(f"wrote {args.json}")
    if args.markdown:
        report.write_markdown(args.markdown, meta, rows)
        log(f"wrote {args.markdown}")
    if args.plot:
        report.write_plot(args.plot, rows, title=report.describe_machine(meta)[0])
        log(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
