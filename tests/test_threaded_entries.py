"""The hand-written team entries of kernels/numba/threaded.py against the kernels they call.

The launcher (kernels/numba/launch.py, runners.py, weight_gradients.py) passes one list of
arguments either straight to a kernel (one thread) or through team.pack to the kernel's entry
(several threads), which unpacks the words by position and calls the kernel once per claimed
chunk. The only place argument order or kinds can drift unnoticed is between an entry's
unpacking and its kernel (issue 25). Checked here two ways:

* statically (ast), by `check_source`: each entry body unpacks from FIRST_ARG on, chaining the
  index; its kernel call passes exactly the unpacked names in unpack order, plus the team's own
  arguments (chunk bounds; or data, thread index, team size and the hidden-unit slices for the
  "columns" kernels) where the kernel's signature has them, under the kernel's parameter names;
  each `*_entry` wraps its own body; and `check_launch`: every entry launch.py names exists,
  every entry is launched, and launch.py pairs each kernel with the entry that calls it.
* by running tiny layers through every strategy, on 3 threads (the entries) and on one (the
  kernels called directly), by `kind_problems`: the kinds (array rank and dtype, flag, integer)
  of what launch.py packs for each entry, and of the directly called kernels' compiled
  signatures, equal the unpackers' kinds; every entry ran, every directly called kernel compiled.
  The "columns" kernels, linalg.pack_slice and linalg.matmul_packed_at are only ever called from
  their entries, and an entry loaded from Numba's cache compiles no signature of its kernel: for
  those the arguments launch.py packs are the only other side to compare with (their signatures
  are compared too when present, as when an entry was compiled afresh).

Deliberately broken copies of threaded.py's source (two unpack lines swapped, and other drifts)
must be reported.
"""

import ast
import inspect
import pathlib
import re
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

pytest.importorskip("numba")

from numba.core import types as nbtypes  # noqa: E402

import fastrnn  # noqa: E402
from fastrnn.kernels.numba import (  # noqa: E402
    launch,
    runners,
    stepper,
    team,
    threaded,
    weight_gradients,
)
from fastrnn.kernels.tuning import tuning  # noqa: E402

THREADED_SOURCE = pathlib.Path(threaded.__file__).read_text()
# The launcher's modules: the executors, the runners, the weight gradients and the step path's
# steps name the entries.
LAUNCH_SOURCE = "\n".join(pathlib.Path(m.__file__).read_text()
                          for m in (launch, runners, weight_gradients, stepper))

# What each unpacker of team.py reads: an array of that rank (its dtype is the entry's `dt`, the
# float type, or np.int64), a flag (a bool in Python, Boolean in numba) or an integer. A new
# unpacker (float words, ...) must be added here: an unknown one is reported.
UNPACKERS = {"array1_words": 1, "array2_words": 2, "array3_words": 3, "flag_word": "flag",
             "int_word": "int"}
# team.py helpers an entry calls besides the unpackers (anything else called is a kernel).
TEAM_HELPERS = {"words", "bounds_words", "claim", "chunk_count", "thread_index", "team_size",
                "float64_words", "range"}

# The arguments an entry passes that are not unpacked words, and the kernel parameter each one
# is: the chunk's rows lo .. hi - 1; the "columns" kernels' data (for the barrier), thread index,
# team size and the hidden-unit slices (the bounds words, `jb` in the kernels); a row of the
# chunk, for a kernel called once per row.
ROLE_PARAMS = {"<lo>": "lo", "<hi>": "hi", "<data>": "data", "<tid>": "tid", "<size>": "size",
               "<slices>": "jb"}
ROLE_KINDS = {"<lo>": ("int",), "<hi>": ("int",), "<tid>": ("int",), "<size>": ("int",),
              "<row>": ("int",), "<slices>": ("array", 1, "int64"), "<data>": None}

# Parameter names are meant to match: every LSTM/GRU/RNN kernel entry unpacks its words under the
# kernel's own parameter names. The two linalg helpers are generic routines with generic names;
# their (entry, argument) -> parameter pairs are listed here, so any other name pair that differs
# is reported (an unused pair too).
ALIASES = {
    # linalg.pack_slice(src, transposed, out, groups, bounds, k)
    ("_pack_slices", "slices"): "bounds",
    ("_pack_slices", "<row>"): "k",
    # linalg.matmul_packed_at(g, bp, out, m0, m1), once per weight
    ("_weight_grads", "b1"): "bp",
    ("_weight_grads", "out1"): "out",
    ("_weight_grads", "b2"): "bp",
    ("_weight_grads", "out2"): "out",
    ("_weight_grads", "<lo>"): "m0",
    ("_weight_grads", "<hi>"): "m1",
}


# ------------------------------------------------------------------------------ the checker


@dataclass
class Unpack:
    name: str
    unpacker: str
    kind: tuple      # ("array", ndim, "float" | "int64"), ("flag",) or ("int",)
    line: int


@dataclass
class KernelCall:
    kernel: str
    roles: list      # per positional argument: an unpacked name, or one of ROLE_KINDS
    form: str        # "rows" (lo, hi last), "row" (a row last) or "columns"
    line: int
    params: list = field(default_factory=list)   # the kernel's parameter names, when resolved


@dataclass
class Entry:
    body: str
    unpacks: list
    calls: list
    conditions: set = field(default_factory=set)    # names tested by an `if` in the body
    uses: list = field(default_factory=list)        # unpacked names as the body uses them
    wrapper: str = None

    def unpacked(self):
        return {u.name: u for u in self.unpacks}


def _call_name(node):
    return node.func.id if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) else None


def _is_njit(fn):
    return any(isinstance(d, ast.Call) and getattr(d.func, "id", None) == "njit"
               or getattr(d, "id", None) == "njit" for d in fn.decorator_list)


def _is_unpacker(name):
    return name is not None and name not in TEAM_HELPERS and re.search(r"_words?$", name)


class _BodyParser:
    """One entry body: its unpacks, in order, and its kernel calls with each argument's role."""

    def __init__(self, fn, problems):
        self.fn, self.problems = fn, problems
        self.where = f"{fn.name} (line {fn.lineno})"
        self.unpacks, self.calls, self.conditions, self.uses = [], [], set(), []
        self.w = self.bounds = self.claim = self.index = None

    def problem(self, text):
        self.problems.append(f"{self.where}: {text}")

    def parse(self):
        args = [a.arg for a in self.fn.args.args]
        if args != ["data", "dt"]:
            self.problem(f"parameters {args}, expected ['data', 'dt'] (as _by_dtype calls it)")
        for stmt in self.fn.body:
            self._header(stmt)
        for name, what in (("w", "w = words(data)"), ("bounds", "... = bounds_words(w)")):
            if getattr(self, name) is None:
                self.problem(f"no `{what}`")
        self._statements(self.fn.body, claim_loop=False, row=None)
        if not self.calls:
            self.problem("calls no kernel")
        return Entry(self.fn.name, self.unpacks, self.calls, self.conditions, self.uses)

    def _header(self, stmt):
        if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1):
            return
        target, value = stmt.targets[0], stmt.value
        name = _call_name(value)
        if isinstance(target, ast.Name) and name == "words":
            self.w = target.id
        elif isinstance(target, ast.Name) and name == "bounds_words":
            self.bounds = target.id
        elif isinstance(target, ast.Name) and name == "claim":
            self.claim = target.id
        elif _is_unpacker(name):
            self._unpack(stmt, target, value, name)

    def _unpack(self, stmt, target, call, unpacker):
        if unpacker not in UNPACKERS:
            self.problem(f"line {stmt.lineno}: unknown unpacker {unpacker} (add its kind to "
                         "UNPACKERS in this test)")
            return
        if not (isinstance(target, ast.Tuple) and len(target.elts) == 2
                and all(isinstance(e, ast.Name) for e in target.elts)):
            self.problem(f"line {stmt.lineno}: an unpack must assign `name, i = ...`")
            return
        name, index = (e.id for e in target.elts)
        args = call.args
        first = not self.unpacks
        if self.index is None:
            self.index = index
        elif index != self.index:
            self.problem(f"line {stmt.lineno}: index `{index}`, the others chain `{self.index}`")
        expect_at = "FIRST_ARG" if first else self.index
        if len(args) < 2 or not isinstance(args[1], ast.Name) or args[1].id != expect_at:
            got = ast.unparse(args[1]) if len(args) > 1 else "nothing"
            self.problem(f"line {stmt.lineno}: {name} read at {got}, expected {expect_at}")
        if not args or not isinstance(args[0], ast.Name) or args[0].id != self.w:
            self.problem(f"line {stmt.lineno}: {name} not read from the words `{self.w}`")
        rank = UNPACKERS[unpacker]
        if isinstance(rank, int):
            dtype = ast.unparse(args[2]) if len(args) == 3 else None
            if dtype not in ("dt", "np.int64"):
                self.problem(f"line {stmt.lineno}: {name} has dtype {dtype}, expected dt or "
                             "np.int64")
            kind = ("array", rank, "float" if dtype == "dt" else "int64")
        else:
            if len(args) != 2:
                self.problem(f"line {stmt.lineno}: {unpacker} takes (w, i)")
            kind = (rank,)
        if any(u.name == name for u in self.unpacks):
            self.problem(f"line {stmt.lineno}: {name} unpacked twice")
        self.unpacks.append(Unpack(name, unpacker, kind, stmt.lineno))

    def _is_claim_loop(self, node):
        test = node.test
        return (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name)
                and test.left.id == self.claim and len(test.ops) == 1
                and isinstance(test.ops[0], ast.Lt) and _call_name(test.comparators[0])
                == "chunk_count")

    def _is_chunk_rows(self, node):
        # range(bounds[k], bounds[k + 1])
        return (_call_name(node) == "range" and len(node.args) == 2
                and [self._role(a, None) for a in node.args] == ["<lo>", "<hi>"])

    def _statements(self, stmts, claim_loop, row):
        for stmt in stmts:
            if isinstance(stmt, ast.While):
                inside = self._is_claim_loop(stmt)
                if inside:
                    last = stmt.body[-1]
                    if not (isinstance(last, ast.Assign) and _call_name(last.value) == "claim"
                            and getattr(last.targets[0], "id", None) == self.claim):
                        self.problem(f"line {stmt.lineno}: the claim loop does not end with "
                                     f"`{self.claim} = claim(data)`")
                self._statements(stmt.body, claim_loop or inside, row)
            elif isinstance(stmt, ast.For):
                rows = self._is_chunk_rows(stmt.iter) and isinstance(stmt.target, ast.Name)
                self._statements(stmt.body, claim_loop, stmt.target.id if rows else row)
            elif isinstance(stmt, ast.If):
                tested = [n.id for n in ast.walk(stmt.test) if isinstance(n, ast.Name)]
                self.conditions |= set(tested)
                self.uses += [n for n in tested if n in {u.name for u in self.unpacks}]
                self._statements(stmt.body, claim_loop, row)
                self._statements(stmt.orelse, claim_loop, row)
            else:
                for node in ast.walk(stmt):
                    name = _call_name(node)
                    if name and name not in TEAM_HELPERS and name not in UNPACKERS \
                            and not _is_unpacker(name):
                        self._kernel_call(node, claim_loop, row)

    def _role(self, arg, row):
        unpacked = {u.name for u in self.unpacks}
        if isinstance(arg, ast.Name):
            if arg.id in unpacked:
                return arg.id
            if arg.id == self.bounds:
                return "<slices>"
            if arg.id == "data":
                return "<data>"
            if row is not None and arg.id == row:
                return "<row>"
        if _call_name(arg) in ("thread_index", "team_size") and \
                [ast.unparse(a) for a in arg.args] == [self.w]:
            return "<tid>" if arg.func.id == "thread_index" else "<size>"
        if isinstance(arg, ast.Subscript) and getattr(arg.value, "id", None) == self.bounds:
            k = ast.unparse(arg.slice)
            if k == self.claim:
                return "<lo>"
            if k == f"{self.claim} + 1":
                return "<hi>"
        return f"<? {ast.unparse(arg)}>"

    def _kernel_call(self, node, claim_loop, row):
        where = f"line {node.lineno}: {node.func.id}"
        if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
            self.problem(f"{where}: pass the kernel's arguments by position, no * or keywords")
        roles = [self._role(a, row) for a in node.args]
        names = [r for r in roles if not r.startswith("<")]
        special = [r for r in roles if r.startswith("<")]
        if roles[-2:] == ["<lo>", "<hi>"] and special == ["<lo>", "<hi>"]:
            form = "rows"
            if not claim_loop:
                self.problem(f"{where}: called with a chunk's rows outside the claim loop")
        elif roles[-1:] == ["<row>"] and special == ["<row>"]:
            form = "row"
            if not claim_loop:
                self.problem(f"{where}: called per row outside the claim loop")
        elif roles[:3] == ["<data>", "<tid>", "<size>"] and special == \
                ["<data>", "<tid>", "<size>", "<slices>"]:
            form = "columns"
            if claim_loop:
                self.problem(f"{where}: a columns kernel is called once per thread, not per chunk")
        else:
            form = "?"
            self.problem(f"{where}: arguments {roles} are neither (unpacked..., bounds[k], "
                         "bounds[k + 1]), (unpacked..., row) nor (data, thread_index(w), "
                         "team_size(w), unpacked and the slices...)")
        order = [u.name for u in self.unpacks]
        positions = [order.index(n) for n in names]
        if positions != sorted(positions) or len(set(positions)) != len(positions):
            self.problem(f"{where}: passes {names}, not in unpack order {order}")
        self.uses += names
        self.calls.append(KernelCall(node.func.id, roles, form, node.lineno))


def parse_entries(source):
    """(entries by body name, problems) of a threaded.py source."""
    problems = []
    tree = ast.parse(source)
    bodies, wrappers = {}, {}
    for fn in tree.body:
        if not isinstance(fn, ast.FunctionDef):
            continue
        if _is_njit(fn) and fn.name != "_by_dtype":
            bodies[fn.name] = _BodyParser(fn, problems).parse()
        elif fn.name.endswith("_entry") and not fn.decorator_list:
            wrappers[fn.name] = fn
    for name, fn in wrappers.items():
        own = "_" + name[:-len("_entry")]
        params = [a.arg for a in fn.args.args]
        stmt = fn.body[0] if len(fn.body) == 1 else None
        call = stmt.value if isinstance(stmt, ast.Expr) else None
        args = [ast.unparse(a) for a in call.args] if _call_name(call) == "_by_dtype" else None
        if own not in bodies:
            problems.append(f"{name} (line {fn.lineno}): no entry body {own}")
        elif len(params) != 1 or args != [params[0], own] or call.keywords:
            got = ast.unparse(fn.body[0]) if fn.body else "nothing"
            problems.append(f"{name} (line {fn.lineno}): body `{got}`, expected exactly "
                            f"`_by_dtype({params[0] if params else 'data'}, {own})`")
        else:
            bodies[own].wrapper = name
    for name, entry in bodies.items():
        if entry.wrapper is None:
            problems.append(f"{name}: no `{name[1:]}_entry` wrapper calling _by_dtype with it")
    return bodies, problems


def _signature_problems(entry, call, namespace):
    kernel = namespace.get(call.kernel)
    where = f"{entry.body} line {call.line}: {call.kernel}"
    py_func = getattr(kernel, "py_func", None)
    if py_func is None:
        return [f"{where} is not a compiled (njit) function of threaded's module globals"]
    params = list(inspect.signature(py_func).parameters.values())
    call.params = [p.name for p in params]
    problems = []
    if any(p.kind != p.POSITIONAL_OR_KEYWORD or p.default is not p.empty for p in params):
        problems.append(f"{where}: parameters with defaults, * or keywords: {call.params}")
    if len(params) != len(call.roles):
        problems.append(f"{where} takes {len(params)} arguments {call.params}, the entry passes "
                        f"{len(call.roles)} {call.roles}")
    pairs = [(k, role, param) for k, (role, param) in enumerate(zip(call.roles, call.params))
             if ALIASES.get((entry.body, role), ROLE_PARAMS.get(role, role)) != param]
    if pairs:
        shown = ", ".join(f"#{k} {role} -> {param}" for k, role, param in pairs)
        problems.append(f"{where}: argument -> parameter names differ: {shown}")
    return problems


def check_source(source, namespace=None):
    """Every drift found in a threaded.py source between its entries and its kernels (kernels
    resolved in namespace: threaded's module globals), as a list of lines (empty: none)."""
    namespace = vars(threaded) if namespace is None else namespace
    entries, problems = parse_entries(source)
    used_aliases = set()
    for entry in entries.values():
        unpacked = [u.name for u in entry.unpacks]
        passed = [r for call in entry.calls for r in call.roles]
        used_aliases |= {(entry.body, r) for r in passed}
        if len(entry.calls) == 1:
            names = [r for r in passed if not r.startswith("<")]
            if names != unpacked:
                problems.append(f"{entry.body}: passes {names} to {entry.calls[0].kernel}, "
                                f"unpacks {unpacked}")
        else:
            # Several calls (the weight gradients: one product per weight, the second behind
            # a flag): no kernel signature fixes where every word sits, so the body must use
            # the words in the order it unpacks them (first uses, flags tested included), each.
            first = list(dict.fromkeys(entry.uses))
            if first != unpacked:
                problems.append(f"{entry.body}: uses {first}, in this order, unpacks {unpacked}")
        for call in entry.calls:
            problems += _signature_problems(entry, call, namespace)
    stale = sorted(set(ALIASES) - used_aliases)
    if stale:
        problems.append(f"ALIASES in this test no longer used: {stale}")
    return problems


def check_launch(launch_source, threaded_source):
    """Drift between launch.py and the entries: entries it names that do not exist, entries it
    never launches, and kernels paired with another kernel's entry (`recurrence(kernel, entry,
    ...)`, `StepKernel(kernel, entry, ...)`: the kernel runs in one thread, the entry on the
    team, on the same arguments)."""
    entries, _ = parse_entries(threaded_source)
    by_wrapper = {e.wrapper: e for e in entries.values() if e.wrapper}
    defined = {n.name for n in ast.parse(threaded_source).body
               if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    problems, named = [], set()
    for top in ast.parse(launch_source).body:
        # Where a problem is: the launcher's function (its sources are joined, so no line).
        where = getattr(top, "name", f"line {top.lineno}")
        for node in ast.walk(top):
            if isinstance(node, ast.Attribute) and getattr(node.value, "id", None) == "threaded":
                named.add(node.attr)
                if node.attr not in defined and not hasattr(threaded, node.attr):
                    problems.append(f"launcher, {where}: threaded.{node.attr} does not exist")
            if isinstance(node, ast.Call) and len(node.args) >= 2 and isinstance(
                    node.args[0], ast.Name) and isinstance(node.args[1], ast.Attribute) and \
                    getattr(node.args[1].value, "id", None) == "threaded":
                kernel, wrapper = node.args[0].id, node.args[1].attr
                entry = by_wrapper.get(wrapper)
                called = [c.kernel for c in entry.calls] if entry else []
                if entry and kernel not in called:
                    problems.append(f"launcher, {where}: {kernel} paired with "
                                    f"threaded.{wrapper}, which calls {called}")
    for wrapper in sorted(set(by_wrapper) - named):
        problems.append(f"threaded.{wrapper} is never launched by the launcher")
    return problems


def direct_kernels(launch_source):
    """The kernels launch.py also calls straight, in one thread, on the arguments it packs for
    their entries (the first argument of `recurrence(kernel, threaded.x_entry, ...)` and
    `StepKernel(...)`), with that entry."""
    pairs = {}
    for node in ast.walk(ast.parse(launch_source)):
        if isinstance(node, ast.Call) and len(node.args) >= 2 and isinstance(node.args[0],
                ast.Name) and isinstance(node.args[1], ast.Attribute) and \
                getattr(node.args[1].value, "id", None) == "threaded":
            pairs[node.args[0].id] = node.args[1].attr
    return pairs


# ------------------------------------------------------------------------------- the kinds


def _value_kind(a):
    """The kind an unpacker must have for a value launch.py packs."""
    if isinstance(a, np.ndarray):
        return ("array", a.ndim, "float" if a.dtype.kind == "f" else a.dtype.name), a.dtype
    if isinstance(a, (bool, np.bool_)):
        return ("flag",), None
    if isinstance(a, (int, np.integer)):
        return ("int",), None
    return (type(a).__name__,), None


def _numba_kind(t):
    """The kind an unpacker must have for a numba argument type of a compiled kernel."""
    if isinstance(t, nbtypes.Array):
        floating = isinstance(t.dtype, nbtypes.Float)
        return ("array", t.ndim, "float" if floating else str(t.dtype)), t.dtype
    if isinstance(t, nbtypes.Boolean):
        return ("flag",), None
    if isinstance(t, nbtypes.Integer):
        return ("int",), None
    return (str(t),), None


def kind_problems(entries, packed, signatures, direct):
    """Kind drift (array rank and dtype, flag, integer) between each entry's unpackers and
    `packed` (body -> [(float_size, args launch.py packed)]), and between the kernels' calls and
    `signatures` (kernel -> its numba signatures); entries never run, directly called kernels
    (`direct`) never compiled."""
    problems = []
    for entry in entries.values():
        runs = packed.get(entry.body, [])
        if not runs:
            problems.append(f"{entry.body}: never ran in this test (reach it below)")
        for float_size, args in runs:
            got = [_value_kind(a) for a in args]
            if len(args) != len(entry.unpacks):
                problems.append(f"{entry.body}: launch.py packs {len(args)} arguments, it "
                                f"unpacks {len(entry.unpacks)}")
            for u, (kind, dtype) in zip(entry.unpacks, got):
                if kind != u.kind:
                    problems.append(f"{entry.body}: {u.name} unpacked by {u.unpacker} as {u.kind},"
                                    f" launch.py packs {kind}")
                elif u.kind[-1] == "float" and dtype.itemsize != float_size:
                    problems.append(f"{entry.body}: {u.name} is {dtype}, the float size packed "
                                    f"is {float_size}")
        unpacked = entry.unpacked()
        for call in entry.calls:
            for sig in signatures.get(call.kernel, []):
                floats = set()
                if len(sig) != len(call.roles):
                    problems.append(f"{call.kernel} compiled for {len(sig)} arguments, "
                                    f"{entry.body} passes {len(call.roles)}")
                for k, (role, t) in enumerate(zip(call.roles, sig)):
                    kind, dtype = _numba_kind(t)
                    want = unpacked[role].kind if role in unpacked else ROLE_KINDS.get(role)
                    if want is not None and kind != want:
                        problems.append(f"{call.kernel} argument #{k} ({role}) compiled as {t}, "
                                        f"{entry.body} passes {want}")
                    if want is not None and want[-1] == "float":
                        floats.add(dtype)
                if len(floats) > 1:
                    problems.append(f"{call.kernel} compiled with float arrays of types "
                                    f"{sorted(map(str, floats))}, {entry.body} passes one dt")
    for kernel in sorted(direct):
        if not signatures.get(kernel):
            problems.append(f"{kernel}: launch.py calls it straight, never compiled in this test")
    return problems


# The strategies, tiny: T, B, I, H, P (P: the projected LSTM's). H = 16 is a whole number of
# vectors on AVX2 and AVX-512 (the gate panels need it).
T, B, I, H, P = 3, 4, 5, 16, 8
_SPLIT = dict(split_min_macs=0, split_min_cells=0, split_min_cells_one_step=0,
              pack_split_min_bytes=0, own_weight_grads_max_rows=1 << 20,
              own_weight_grads_min_macs=0)
STRATEGIES = {
    "loop": dict(numba_strategy="loop", fuse_projection=False, gate_panels_max_rows=0),
    "fused": dict(numba_strategy="loop", fuse_projection=True, fuse_min_steps=1, fuse_min_rows=1,
                  fuse_max_weight_bytes=1 << 30, gate_panels_max_rows=0),
    "panels": dict(numba_strategy="loop", fuse_projection=False, gate_panels_max_rows=1 << 20),
    "columns": dict(numba_strategy="columns"),
    "step": dict(numba_strategy="step"),
}
LAYERS = {
    "lstm": lambda: fastrnn.LSTM(I, H, backend="numba"),
    "lstm_proj": lambda: fastrnn.LSTM(I, H, proj_size=P, backend="numba"),
    "gru": lambda: fastrnn.GRU(I, H, backend="numba"),
    "rnn": lambda: fastrnn.RNN(I, H, nonlinearity="relu", backend="numba"),
}


@pytest.fixture(scope="module")
def recorded():
    """Every layer through every strategy, forward and backward, on 3 threads then on one:
    (body -> [(float_size, args packed for it)], kernel -> numba signatures)."""
    bodies = {e.wrapper: e.body for e in parse_entries(THREADED_SOURCE)[0].values()}
    names, packed = {}, defaultdict(list)
    real_pack, real_run, real_compiled = team.pack, team.run, runners.compiled

    def pack(float_size, bounds, *args):
        words = real_pack(float_size, bounds, *args)
        words.recorded = (float_size, args)
        return words

    def compiled(entry):
        cf = real_compiled(entry)
        names[id(cf)] = entry.__name__
        return cf

    def run(cf, words):
        packed[bodies[names[id(cf)]]].append(words.recorded)
        return real_run(cf, words)

    torch.manual_seed(0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(team, "pack", pack)
        mp.setattr(team, "run", run)
        mp.setattr(runners, "compiled", compiled)
        for threads in (3, 1):
            mp.setattr(team, "threads", lambda n=threads: n)
            for rules in STRATEGIES.values():
                with tuning(**_SPLIT, **rules):
                    for make in LAYERS.values():
                        layer = make()
                        x = torch.randn(T, B, I, requires_grad=True)
                        out, state = layer(x)
                        h = state[0] if isinstance(state, tuple) else state
                        (out.square().sum() + h.sum()).backward()
            # The step path's one steps, their rows split (kernels/numba/stepper.py).
            with tuning(step_split_min_rows=2, step_split_min_macs=0), torch.no_grad():
                for make in LAYERS.values():
                    layer = make()
                    x = torch.randn(1, B, I)
                    layer(x)
                    layer(x)
    kernels = {c.kernel for e in parse_entries(THREADED_SOURCE)[0].values() for c in e.calls}
    signatures = {k: list(getattr(threaded, k).signatures) for k in kernels}
    return dict(packed), signatures


# -------------------------------------------------------------------------------- the tests


def test_entries_match_their_kernels():
    problems = check_source(THREADED_SOURCE)
    assert not problems, "\n".join(problems)
    entries, _ = parse_entries(THREADED_SOURCE)
    assert len(entries) >= 23
    assert {c.form for e in entries.values() for c in e.calls} == {"rows", "row", "columns"}


def test_launch_names_and_pairs_entries_with_their_kernels():
    problems = check_launch(LAUNCH_SOURCE, THREADED_SOURCE)
    assert not problems, "\n".join(problems)
    assert len(direct_kernels(LAUNCH_SOURCE)) >= 15


def test_kinds_match_what_launch_packs_and_the_kernels_compile(recorded):
    packed, signatures = recorded
    entries, _ = parse_entries(THREADED_SOURCE)
    problems = kind_problems(entries, packed, signatures, direct_kernels(LAUNCH_SOURCE))
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------- the checkers catch real drifts


def _entry_text(source, body):
    start = source.index(f"\ndef {body}(")
    end = source.index("\n\n\n", start)
    return start, end


def mutate(source, body, old, new, count=1):
    """source with `old` replaced by `new` inside entry `body` only (old must be there)."""
    start, end = _entry_text(source, body)
    part = source[start:end]
    assert part.count(old) == count, (body, old)
    return source[:start] + part.replace(old, new) + source[end:]


def swap_lines(source, body, first, second):
    """source with the lines holding `first` and `second` swapped inside entry `body`."""
    start, end = _entry_text(source, body)
    lines = source[start:end].split("\n")
    a = next(k for k, line in enumerate(lines) if first in line)
    b = next(k for k, line in enumerate(lines) if second in line)
    lines[a], lines[b] = lines[b], lines[a]
    return source[:start] + "\n".join(lines) + source[end:]


def edit_call(source, function, callee, edit):
    """source, through its ast, with the positional arguments of the first call to `callee`
    inside `function` replaced by edit(their source texts)."""
    tree = ast.parse(source)
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == function)
    call = next(n for n in ast.walk(fn) if _call_name(n) == callee)
    call.args = [ast.parse(a, mode="eval").body for a in edit([ast.unparse(a) for a in call.args])]
    return ast.unparse(tree)


def test_source_through_its_ast_still_passes():
    # What edit_call gives back, unedited, passes (so the edits below are what gets reported).
    assert check_source(edit_call(THREADED_SOURCE, "_gru_forward_step", "gru_forward_step",
                                  list)) == []
    assert check_launch(edit_call(LAUNCH_SOURCE, "_lstm_forward_loop", "recurrence", list),
                        THREADED_SOURCE) == []


def test_swapped_unpack_lines_are_reported():
    # w_hh_tp and w_hr_tp are both packed weights (array1_words): only the order tells them
    # apart, so the kernel would silently get one for the other.
    broken = swap_lines(THREADED_SOURCE, "_lstm_forward_recurrence", "w_hh_tp, i =",
                        "w_hr_tp, i =")
    assert broken != THREADED_SOURCE
    problems = check_source(broken)
    assert problems and all("_lstm_forward_recurrence" in p for p in problems), problems
    assert any("not in unpack order" in p for p in problems), problems


def test_every_swap_of_two_neighbouring_unpack_lines_is_reported():
    entries, _ = parse_entries(THREADED_SOURCE)
    swaps = 0
    for entry in entries.values():
        # The entry and its wrapper alone (the whole module 200 times takes seconds).
        start, end = _entry_text(THREADED_SOURCE, entry.body)
        alone = (f"@njit\n{THREADED_SOURCE[start + 1:end]}\n\n\n"
                 f"def {entry.wrapper}(data):\n    _by_dtype(data, {entry.body})\n")
        assert [p for p in check_source(alone) if not p.startswith("ALIASES")] == []
        for a, b in zip(entry.unpacks, entry.unpacks[1:]):
            broken = swap_lines(alone, entry.body, f" {a.name}, i =", f" {b.name}, i =")
            assert any(p.startswith(entry.body) for p in check_source(broken)), (entry.body, a, b)
            swaps += 1
    assert swaps >= 200


def test_swapped_unpack_lines_and_call_arguments_are_reported():
    # Swapped consistently inside the entry (gates and hn_lin, both (T, B, .) arrays): the
    # unpack order matches the call, the kernel's parameter names do not.
    broken = swap_lines(THREADED_SOURCE, "_gru_backward_recurrence", " gates, i =",
                        " hn_lin, i =")

    def swap(args):
        assert args[2:4] == ["gates", "hn_lin"]
        return args[:2] + ["hn_lin", "gates"] + args[4:]

    problems = check_source(edit_call(broken, "_gru_backward_recurrence",
                                      "gru_backward_recurrence", swap))
    assert any("#2 hn_lin -> gates, #3 gates -> hn_lin" in p for p in problems), problems


def test_first_unpack_not_at_first_arg_is_reported():
    broken = mutate(THREADED_SOURCE, "_rnn_forward_step", "t, i = int_word(w, FIRST_ARG)",
                    "t, i = int_word(w, FIRST_ARG + 1)")
    assert any("read at FIRST_ARG + 1" in p for p in check_source(broken))


def test_missing_word_is_reported():
    # A word dropped from both the unpacking and the call: the kernel has one parameter more.
    broken = mutate(THREADED_SOURCE, "_rnn_backward_step", "    relu, i = flag_word(w, i)\n", "")
    broken = edit_call(broken, "_rnn_backward_step", "rnn_backward_step",
                       lambda args: [a for a in args if a != "relu"])
    assert any("takes 9 arguments" in p for p in check_source(broken))


def test_columns_slices_out_of_place_are_reported():
    def swap(args):
        assert args[4:6] == ["w_parts", "slices"]
        return args[:4] + ["slices", "w_parts"] + args[6:]

    broken = edit_call(THREADED_SOURCE, "_rnn_forward_columns", "rnn_forward_columns", swap)
    assert any("#4 <slices> -> w_parts, #5 w_parts -> jb" in p for p in check_source(broken))


def test_wrapper_calling_another_body_is_reported():
    broken = mutate(THREADED_SOURCE, "lstm_forward_cells_entry",
                    "_by_dtype(data, _lstm_forward_cells)",
                    "_by_dtype(data, _lstm_forward_recurrence)")
    problems = check_source(broken)
    assert any(p.startswith("lstm_forward_cells_entry") for p in problems), problems
    assert any(p.startswith("_lstm_forward_cells: no") for p in problems), problems


def test_kernel_paired_with_another_entry_in_launch_is_reported():
    # The gate panels' executor given the plain loop's entry.
    tree = ast.parse(LAUNCH_SOURCE)
    fn = next(n for n in tree.body if getattr(n, "name", None) == "_lstm_forward_panels")
    call = next(n for n in ast.walk(fn) if _call_name(n) == "recurrence"
                and ast.unparse(n.args[0]) == "lstm_forward_cells")
    assert ast.unparse(call.args[1]) == "threaded.lstm_forward_cells_entry"
    call.args[1] = ast.parse("threaded.lstm_forward_recurrence_entry", mode="eval").body
    broken = ast.unparse(tree)
    problems = check_launch(broken, THREADED_SOURCE)
    assert any("lstm_forward_cells paired with threaded.lstm_forward_recurrence_entry" in p
               for p in problems), problems
    assert any("lstm_forward_cells_entry is never launched" in p for p in problems), problems


def test_wrong_array_rank_is_reported(recorded):
    # gates unpacked as a (B, G) array where launch packs, and the kernel takes, a (T, B, G) one.
    packed, signatures = recorded
    broken = mutate(THREADED_SOURCE, "_lstm_backward_recurrence",
                    "\n    gates, i = array3_words(w, i, dt)",
                    "\n    gates, i = array2_words(w, i, dt)")
    entries, _ = parse_entries(broken)
    problems = kind_problems(entries, packed, signatures, direct_kernels(LAUNCH_SOURCE))
    assert any("_lstm_backward_recurrence: gates unpacked by array2_words" in p
               for p in problems), problems
    assert any("lstm_backward_recurrence argument #3 (gates) compiled as array(float" in p
               for p in problems), problems


def test_flag_read_as_integer_is_reported(recorded):
    packed, signatures = recorded
    broken = mutate(THREADED_SOURCE, "_gru_forward_columns", "reverse, i = flag_word(w, i)",
                    "reverse, i = int_word(w, i)")
    entries, _ = parse_entries(broken)
    problems = kind_problems(entries, packed, signatures, direct_kernels(LAUNCH_SOURCE))
    assert any("_gru_forward_columns: reverse unpacked by int_word" in p for p in problems)


def test_unreached_entry_is_reported(recorded):
    packed, signatures = recorded
    entries, _ = parse_entries(THREADED_SOURCE)
    missing = {k: v for k, v in packed.items() if k != "_pack_slices"}
    problems = kind_problems(entries, missing, signatures, direct_kernels(LAUNCH_SOURCE))
    assert problems == ["_pack_slices: never ran in this test (reach it below)"]
