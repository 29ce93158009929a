"""One readable chart of a benchmark grid: a provider's speedup over torch.nn per size.

Reads the JSON that `python -m fastrnn bench --json PATH` writes and draws one panel per kind
(LSTM, GRU, RNN), one group of bars per size (T x B x I x H) and one bar per mode (inference,
training). Each bar runs from 1.0x (torch.nn's time) to the provider's speedup on a log scale,
so 2x faster and 2x slower are the same length, and carries its value ("1.57x"). The title names
the machine, the dtype and the date. Fonts are large enough to read at the README's width.

Run: python benchmarks/summary_chart.py --json benchmarks/results/cpu-2026-12-07-zen4.json \
         --out docs/speed-cpu-zen4.png [--provider fastrnn-auto] [--dtype float32]
         [--machine "AMD EPYC (Zen 4, 2 cores)"]

`python -m fastrnn bench --plot` draws every provider of a run for a quick look; this script
draws one provider for a reader.
"""

import argparse
import json
import sys

MODES = ("inference", "training")
COLOURS = {"inference": "#3b75af", "training": "#e08a2c"}
KIND_NAMES = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}


def load(path):
    with open(path) as f:
        data = json.load(f)
    if data.get("schema_version") != 1:
        raise SystemExit(f"{path}: expected schema_version 1 (fastrnn bench --json), "
                         f"found {data.get('schema_version')!r}")
    return data["machine"], data["rows"]


def size_label(row):
    return f"{row['T']}x{row['B']}x{row['I']}x{row['H']}"


def select(rows, provider, dtype):
    """{(kind, size, mode): speedup} for one provider and dtype, in the grid's order."""
    providers = sorted({r["provider"] for r in rows if r["provider"] != "torch"})
    if provider not in providers:
        raise SystemExit(f"no rows for provider {provider!r}; "
                         f"this grid has: {', '.join(providers)}")
    dtypes = list(dict.fromkeys(r["dtype"] for r in rows))
    if dtype not in dtypes:
        raise SystemExit(f"no rows for dtype {dtype!r}; this grid has: {', '.join(dtypes)}")
    values = {}
    for r in rows:
        if r["provider"] == provider and r["dtype"] == dtype:
            ok = r["status"] == "ok" and r.get("speedup")
            values[r["kind"], size_label(r), r["mode"]] = r["speedup"] if ok else None
    return values


def machine_label(meta):
    if meta.get("gpu"):
        return meta["gpu"]
    return f"{meta['cpu']} ({meta['cpu_cores']} cores, torch threads {meta['torch_threads']})"


def _format_speedup(value):
    return f"{value:.2f}x" if value >= 0.1 else f"{value:.2g}x"


def draw(values, title, out):
    import matplotlib
    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    kinds = list(dict.fromkeys(k for k, _, _ in values))
    sizes = {k: list(dict.fromkeys(s for kk, s, _ in values if kk == k)) for k in kinds}
    modes = [m for m in MODES if any(mm == m for _, _, mm in values)]
    known = [v for v in values.values() if v]
    if not known:
        raise SystemExit("no timed rows to draw")
    low = min(0.7, min(known) / 1.6)  # room for the labels left of a slowdown
    high = max(2.0, max(known) * 1.9)  # room for the labels right of the longest bar

    bar = 0.38
    heights = [len(sizes[k]) for k in kinds]
    fig, axes = plt.subplots(len(kinds), 1, figsize=(11, 0.62 * sum(heights) + 2.3),
                             sharex=True, squeeze=False,
                             gridspec_kw={"height_ratios": heights, "hspace": 0.22})
    for ax, kind in zip(axes[:, 0], kinds):
        for i, size in enumerate(sizes[kind]):
            for j, mode in enumerate(modes):
                y = i + (j - (len(modes) - 1) / 2) * bar
                value = values.get((kind, size, mode))
                if not value:
                    ax.text(1.0, y, "  not timed", va="center", fontsize=13, color="grey")
                    continue
                ax.barh(y, value - 1.0, left=1.0, height=bar * 0.92, color=COLOURS[mode])
                # The label sits outside the bar's far end: right of a speedup, left of a slowdown.
                x, ha = (value * 1.04, "left") if value >= 1 else (value / 1.04, "right")
                ax.text(x, y, _format_speedup(value), va="center", ha=ha, fontsize=13)
        ax.set_yticks(range(len(sizes[kind])))
        ax.set_yticklabels(sizes[kind], fontsize=13)
        ax.set_ylim(len(sizes[kind]) - 0.5, -0.5)  # the grid's first size on top
        ax.set_title(KIND_NAMES.get(kind, kind), fontsize=15, fontweight="bold", loc="left")
        ax.axvline(1.0, color="black", linewidth=1.2)
        ax.set_xscale("log")
        ax.set_xlim(low, high)
        ax.grid(axis="x", color="#dddddd", linewidth=0.8)
        ax.set_axisbelow(True)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    ticks = [t for t in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 4, 8, 16, 32, 64)
             if low <= t <= high]
    bottom = axes[-1, 0]
    bottom.xaxis.set_major_locator(FixedLocator(ticks))
    bottom.xaxis.set_minor_locator(NullLocator())
    bottom.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
    bottom.tick_params(axis="x", labelsize=13)
    bottom.set_xlabel("speedup over torch.nn (torch.nn's time / fastrnn's; log scale, "
                      "1x = torch.nn)", fontsize=13)
    fig.legend(handles=[Patch(color=COLOURS[m], label=m) for m in modes], loc="lower center",
               ncol=len(modes), fontsize=13, frameon=False, bbox_to_anchor=(0.575, 0.0))
    fig.suptitle(title, fontsize=14, x=0.02, ha="left", y=1 - 0.12 / fig.get_figheight())
    fig.subplots_adjust(left=0.18, right=0.97, top=1 - 0.75 / fig.get_figheight(),
                        bottom=1.15 / fig.get_figheight())
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", required=True, help="a grid from `python -m fastrnn bench --json`")
    p.add_argument("--out", required=True, help="the PNG to write")
    p.add_argument("--provider", default="fastrnn-auto",
                   help="whose speedup to draw (default: fastrnn-auto)")
    p.add_argument("--dtype", default=None,
                   help="which dtype's rows (default: float32 if the grid has it, else its first)")
    p.add_argument("--machine", default=None,
                   help="how the title names the machine (default: from the JSON)")
    args = p.parse_args(argv)
    meta, rows = load(args.json)
    dtypes = list(dict.fromkeys(r["dtype"] for r in rows))
    dtype = args.dtype or ("float32" if "float32" in dtypes else dtypes[0])
    values = select(rows, args.provider, dtype)
    title = (f"{args.provider} vs torch.nn, {dtype}, {meta['device']}: "
             f"{args.machine or machine_label(meta)}, {meta['date'][:10]}")
    draw(values, title, args.out)
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
