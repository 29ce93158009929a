"""Turning rows into what people read: a console table, a markdown file, JSON and a PNG plot."""

import json
import math

SCHEMA_VERSION = 1
HEADERS = ("kind", "mode", "dtype", "T", "B", "I", "H", "provider", "status", "median ms",
           "q1-q3 ms", "vs torch", "GFLOP/s", "% GEMM", "strategy")


def _num(value, digits=3):
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.{digits}g}"


def _speedup(value):
    if not value:
        return "-"
    return f"{value:.2f}x" if value >= 0.1 else f"{value:.2g}x"  # 0.003x, not 0.00x


def table_rows(rows, strategy_width=None):
    out = []
    for r in rows:
        ok = r["status"] == "ok"
        strategy = r.get("strategy") or ""
        if strategy_width and len(strategy) > strategy_width:
            strategy = strategy[:strategy_width - 1] + "…"
        out.append([
            r["kind"], r["mode"], r["dtype"], str(r["T"]), str(r["B"]), str(r["I"]), str(r["H"]),
            r["provider"], r["status"],
            _num(r.get("median_ms")) if ok else "-",
            f"{_num(r.get('q1_ms'))}-{_num(r.get('q3_ms'))}" if ok else "-",
            _speedup(r.get("speedup")) if ok else "-",
            _num(r.get("gflops")) if ok else "-",
            f"{r['pct_gemm']:.1f}" if ok and r.get("pct_gemm") is not None else "-",
            strategy,
        ])
    return out


def problems(rows):
    """One line per row that is not "ok", saying why."""
    return [f"{r['kind']} {r['mode']} {r['dtype']} {r['T']}x{r['B']}x{r['I']}x{r['H']} "
            f"{r['provider']}: {r['status']}: {r['error']}" for r in rows if r["status"] != "ok"]


def format_text(rows, strategy_width=48):
    body = table_rows(rows, strategy_width)
    widths = [max(len(h), *(len(line[i]) for line in body)) if body else len(h)
              for i, h in enumerate(HEADERS)]
    numeric = set(range(3, 7)) | set(range(9, 14))

    def line(cells):
        return "  ".join(c.rjust(w) if i in numeric else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    lines = [line(HEADERS), line(["-" * w for w in widths])]
    previous = None
    for cells in body:
        case = tuple(cells[:7])
        if previous is not None and case != previous:
            lines.append("")  # a blank line between cases keeps the providers of one case together
        previous = case
        lines.append(line(cells))
    return "\n".join(lines)


def describe_machine(meta):
    versions = ", ".join(f"{k} {v}" for k, v in meta["versions"].items() if v)
    hw = meta.get("gpu") or (f"{meta['cpu']} ({meta['cpu_cores']} cores, "
                             f"torch threads {meta['torch_threads']})")
    gemm = ", ".join(f"{dtype} {rate:.1f} GFLOP/s"
                     for dtype, rate in meta.get("gemm_gflops", {}).items())
    lines = [f"machine: {hw}", f"device: {meta['device']}", f"versions: {versions}",
             f"date: {meta['date']}",
             "measured GEMM rate (best large product, see fastrnn/bench/machine.py): "
             f"{gemm or 'not measured'}"]
    if meta.get("load_average"):
        load = f"load average (1/5/15 min) at start: {meta['load_average']}"
        if meta.get("load_average_end"):
            load += f", at end: {meta['load_average_end']}"
        lines.append(load)
    return lines


def format_markdown(meta, rows, title="fastrnn benchmark"):
    lines = [f"# {title}", ""]
    lines += [f"- {item}" for item in describe_machine(meta)]
    settings = meta.get("settings", {})
    if settings:
        lines.append("- settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()))
    lines += ["", "Median of interleaved repeats after warm-up; `vs torch` is torch.nn's median "
              "divided by the provider's (higher is faster); `% GEMM` is GFLOP/s over the "
              "measured GEMM rate (best large product: torch.mm, and on CPU also oneDNN). "
              "FLOPs: 2*B*(I+H)*G*H per step, training counted as 3x "
              "forward.", ""]
    lines.append("| " + " | ".join(HEADERS) + " |")
    lines.append("|" + "|".join("---" for _ in HEADERS) + "|")
    for cells in table_rows(rows):
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    bad = problems(rows)
    if bad:
        lines += ["", "Not timed:", ""] + [f"- {p}" for p in bad]
    return "\n".join(lines) + "\n"


def _clean(value):
    # JSON has no inf/NaN; null says "not measured" just as well.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def to_json(meta, rows):
    return {"schema_version": SCHEMA_VERSION, "machine": meta,
            "rows": [{k: _clean(v) for k, v in row.items()} for row in rows]}


def write_json(path, meta, rows):
    with open(path, "w") as f:
        json.dump(to_json(meta, rows), f, indent=1)
        f.write("\n")


def write_markdown(path, meta, rows, title="fastrnn benchmark"):
    with open(path, "w") as f:
        f.write(format_markdown(meta, rows, title))


def write_plot(path, rows, title=None):
    """Speedup over torch.nn per size and provider; one panel per kind and mode."""
    import matplotlib
    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    panels = list(dict.fromkeys((r["kind"], r["mode"]) for r in rows))  # in run order
    dtypes = sorted({r["dtype"] for r in rows})
    series = []  # (provider, dtype) pairs other than the baseline itself
    for r in rows:
        key = (r["provider"], r["dtype"])
        if r["provider"] != "torch" and key not in series:
            series.append(key)
    cols = len({m for _, m in panels}) or 1
    nrows = max(1, math.ceil(len(panels) / cols))
    fig, axes = plt.subplots(nrows, cols, figsize=(6.5 * cols, 3.6 * nrows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (kind, mode) in zip(axes.flat, panels):
        sub = [r for r in rows if r["kind"] == kind and r["mode"] == mode]
        sizes = []
        for r in sub:
            label = f"{r['T']}x{r['B']}x{r['I']}x{r['H']}"
            if label not in sizes:
                sizes.append(label)
        width = 0.8 / max(1, len(series))
        for k, (provider, dtype) in enumerate(series):
            values = []
            for label in sizes:
                match = [r for r in sub if r["provider"] == provider and r["dtype"] == dtype
                         and f"{r['T']}x{r['B']}x{r['I']}x{r['H']}" == label]
                values.append(match[0]["speedup"] if match and match[0].get("speedup")
                              else float("nan"))
            name = provider if len(dtypes) == 1 else f"{provider} ({dtype})"
            ax.bar([i + (k - (len(series) - 1) / 2) * width for i in range(len(sizes))], values,
                   width, label=name)
        ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")  # torch.nn = 1
        ax.set_yscale("log")  # 2x faster and 2x slower look equally far from 1
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
        ax.set_xticks(range(len(sizes)))
        ax.set_xticklabels(sizes, rotation=20, fontsize=8)
        ax.set_title(f"{kind} {mode}")
        ax.set_ylabel("speedup vs torch.nn")
        ax.set_xlabel("T x B x I x H")
        if series:
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
