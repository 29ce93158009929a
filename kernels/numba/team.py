"""Run a compiled kernel on torch's own OpenMP threads, split over batch rows.

Why not Python threads or Numba's thread pool: either adds a second set of threads beside torch's
OpenMP team, whose idle threads spin for milliseconds after every parallel torch op (libgomp's
default wait policy) and so hold the other cores exactly when a layer's recurrence starts, right
after its input GEMM (measured: no gain at all inside a layer). Instead the work goes to torch's
team itself: GOMP_parallel, the entry point `#pragma omp parallel` compiles to (also exported by
LLVM's and Intel's OpenMP runtimes), runs a Numba cfunc on every thread of the team; the threads
take chunks of rows from an atomic counter until none is left, so a smaller team than asked for
(nested regions, OMP_DYNAMIC) or no team at all (no OpenMP runtime found: the caller's thread runs
every chunk) still does all the work. The thread count is torch.get_num_threads(): the cores torch
may use, never more, and torch's setting is left alone.

A cfunc receives one pointer, to an int64 array of words written by `pack`: the claim counter, the
number of chunks, the float size (4 or 8), the chunk bounds, then the kernel's arguments in order
(arrays as address and shape, flags and integers as themselves). The `*_word(s)` readers below
unpack them inside the cfuncs (kernels/numba/threaded.py).

Kernels that split the hidden units instead of the rows (small batches: every thread needs the
whole previous state each step) keep the threads in step with `barrier`. They must know how
many threads actually run (a smaller team than asked for must not leave a barrier waiting), so
the words also carry the addresses of the runtime's omp_get_num_threads and omp_get_thread_num.
"""

import ctypes
import functools
import os
import re

import numpy as np
import torch
from llvmlite import ir
from numba import carray, njit, types
from numba.core import cgutils
from numba.extending import intrinsic

# Words: claim counter, number of chunks, float size, the chunk bounds (address, length), whether
# the call runs on a team, the runtime's omp_get_num_threads and omp_get_thread_num, and the
# barrier's arrival counter and generation.
_CLAIM, _CHUNKS, _FLOAT_SIZE, _BOUNDS = 0, 1, 2, 3
_ON_TEAM, _NUM_THREADS_FN, _THREAD_NUM_FN, _ARRIVED, _GENERATION = 5, 6, 7, 8, 9
FIRST_ARG = 10
# Upper bound on the words one call packs (the readers view the array with this length).
MAX_WORDS = 128


@intrinsic
def _address(typingctx, addr):
    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], cgutils.voidptr_t)

    return types.voidptr(types.int64), codegen


@intrinsic
def _fetch_add(typingctx, ptr, value):
    def codegen(context, builder, signature, args):
        counter = builder.bitcast(args[0], ir.IntType(64).as_pointer())
        return builder.atomic_rmw("add", counter, args[1], "seq_cst")

    return types.int64(types.voidptr, types.int64), codegen


@intrinsic
def _word_address(typingctx, data, index):
    def codegen(context, builder, signature, args):
        words64 = builder.bitcast(args[0], ir.IntType(64).as_pointer())
        return builder.bitcast(builder.gep(words64, [args[1]]), cgutils.voidptr_t)

    return types.voidptr(types.voidptr, types.int64), codegen


@intrinsic
def _load_acquire(typingctx, ptr):
    def codegen(context, builder, signature, args):
        word = builder.bitcast(args[0], ir.IntType(64).as_pointer())
        return builder.load_atomic(word, "acquire", 8)

    return types.int64(types.voidptr), codegen


@intrinsic
def _call_int_function(typingctx, addr):
    """Calls the C function `int f(void)` at address addr."""
    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(ir.IntType(32), [])
        result = builder.call(builder.inttoptr(args[0], fnty.as_pointer()), [])
        return builder.sext(result, ir.IntType(64))

    return types.int64(types.int64), codegen


@njit(inline="always")
def words(data):
    return carray(data, MAX_WORDS, np.int64)


@njit(inline="always")
def claim(data):
    """The next chunk index for this thread (chunks run out at words(data)[1])."""
    return _fetch_add(data, 1)


@njit(inline="always")
def team_size(w):
    """How many threads run this call (1 when it runs in the caller's thread)."""
    if w[_ON_TEAM] == 0:
        return 1
    return _call_int_function(w[_NUM_THREADS_FN])


@njit(inline="always")
def thread_index(w):
    """This thread's index in the team, 0 .. team_size - 1."""
    if w[_ON_TEAM] == 0:
        return 0
    return _call_int_function(w[_THREAD_NUM_FN])


@njit(inline="always")
def barrier(data, size):
    """Returns once all `size` threads of the call have reached it (every thread must call it
    equally often). The last to arrive resets the count and opens the next generation; the
    atomics order each thread's earlier writes before the others' later reads."""
    if size <= 1:
        return
    generation = _load_acquire(_word_address(data, _GENERATION))
    if _fetch_add(_word_address(data, _ARRIVED), 1) == size - 1:
        _fetch_add(_word_address(data, _ARRIVED), -size)
        _fetch_add(_word_address(data, _GENERATION), 1)
    else:
        while _load_acquire(_word_address(data, _GENERATION)) == generation:
            pass


@njit(inline="always")
def chunk_count(w):
    return w[_CHUNKS]


@njit(inline="always")
def bounds_words(w):
    return carray(_address(w[_BOUNDS]), (w[_BOUNDS + 1],), np.int64)


@njit(inline="always")
def float64_words(w):
    return w[_FLOAT_SIZE] == 8


@njit(inline="always")
def int_word(w, i):
    return w[i], i + 1


@njit(inline="always")
def flag_word(w, i):
    return w[i] != 0, i + 1


@njit(inline="always")
def array1_words(w, i, dtype):
    return carray(_address(w[i]), (w[i + 1],), dtype), i + 2


@njit(inline="always")
def array2_words(w, i, dtype):
    return carray(_address(w[i]), (w[i + 1], w[i + 2]), dtype), i + 3


@njit(inline="always")
def array3_words(w, i, dtype):
    return carray(_address(w[i]), (w[i + 1], w[i + 2], w[i + 3]), dtype), i + 4


def _data_address(a):
    """The address of a numpy array's first element (`a.ctypes.data` builds a ctypes helper
    object each time: 1.8 against 1.0 us, and a call packs a dozen arrays)."""
    return a.__array_interface__["data"][0]


class Packed:
    """The words of one kernel call, and the arrays they point into (kept alive with them)."""

    def __init__(self, float_size, bounds, args):
        self.words = [0, len(bounds) - 1, float_size, _data_address(bounds), len(bounds), 0,
                      *_omp_team_functions(), 0, 0]
        self.arrays = {-1: bounds}
        self.index = []
        for k, a in enumerate(args):
            self.index.append(len(self.words))
            if isinstance(a, np.ndarray):
                if not a.flags.c_contiguous:
                    raise ValueError("kernel arrays must be C-contiguous")
                self.words.append(_data_address(a))
                self.words.extend(a.shape)
                self.arrays[k] = a
            else:
                self.words.append(int(a))
        if len(self.words) > MAX_WORDS:
            raise ValueError(f"{len(self.words)} words exceed MAX_WORDS = {MAX_WORDS}")
        self.words = np.array(self.words, dtype=np.int64)

    def set(self, k, value):
        """Replace argument k by a value of the same kind (an array of the same shape)."""
        if isinstance(value, np.ndarray):
            if value.shape != self.arrays[k].shape or not value.flags.c_contiguous:
                raise ValueError("a replacement array must be C-contiguous, of the same shape")
            self.words[self.index[k]] = _data_address(value)
            self.arrays[k] = value
        else:
            self.words[self.index[k]] = int(value)


def pack(float_size, bounds, *args):
    """The words for one call: float_size 4 or 8 (the kernel's float arrays); bounds int64
    (chunks + 1,), chunk k being rows bounds[k] .. bounds[k+1]-1; args the kernel's arguments in
    its order (C-contiguous numpy arrays, bools, ints)."""
    return Packed(float_size, bounds, args)


def bounds(B, chunks, lengths=None):
    """Row bounds of `chunks` contiguous chunks with about equal work (live steps per row)."""
    if lengths is None:
        return (np.arange(chunks + 1, dtype=np.int64) * B) // chunks
    work = np.cumsum(lengths)
    targets = work[-1] * np.arange(1, chunks, dtype=np.float64) / chunks
    inner = np.searchsorted(work, targets, side="left") + 1
    return np.concatenate(([0], np.minimum(inner, B), [B])).astype(np.int64)


def threads():
    """How many threads a call may use: torch's setting (1 when there is no team to run on)."""
    return torch.get_num_threads() if _gomp_parallel() is not None else 1


def run(entry, packed):
    """Run the cfunc `entry` on torch's OpenMP team (or in this thread) with `packed` words."""
    w = packed.words
    w[_CLAIM] = 0
    w[_ARRIVED] = 0
    chunks = int(w[_CHUNKS])
    team = min(torch.get_num_threads(), chunks)
    parallel = _gomp_parallel() if team > 1 else None
    if parallel is None:
        w[_ON_TEAM] = 0
        entry.ctypes(_data_address(w))      # one thread claims every chunk
    else:
        w[_ON_TEAM] = 1
        parallel(entry.address, _data_address(w), team, 0)


def _runtime_candidates():
    """OpenMP runtimes already loaded in this process (Linux), then those shipped in torch/lib."""
    names = re.compile(r"lib(gomp|iomp5|omp)[^/]*\.(so|dylib)")
    seen = []
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split()[-1]
                if names.search(os.path.basename(path)) and path not in seen:
                    seen.append(path)
    except OSError:
        pass
    lib_dir = os.path.join(os.path.dirname(torch.__file__), "lib")
    if os.path.isdir(lib_dir):
        seen += [os.path.join(lib_dir, f) for f in sorted(os.listdir(lib_dir))
                 if names.search(f) and os.path.join(lib_dir, f) not in seen]
    return seen


@functools.cache
def _runtime():
    """The OpenMP runtime torch runs on (a ctypes library), or None (then every call is serial)."""
    if "parallel backend: OpenMP" not in torch.__config__.parallel_info():
        return None             # torch's own thread pool: an OpenMP team would be a second one
    for path in _runtime_candidates():
        try:
            lib = ctypes.CDLL(path)
            # Each lookup raises AttributeError where the library lacks the symbol.
            _ = lib.GOMP_parallel, lib.omp_get_num_threads, lib.omp_get_thread_num
        except (OSError, AttributeError):
            continue
        lib.GOMP_parallel.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint,
                                      ctypes.c_uint]
        lib.GOMP_parallel.restype = None
        return lib
    return None


def _gomp_parallel():
    lib = _runtime()
    return None if lib is None else lib.GOMP_parallel


@functools.cache
def _omp_team_functions():
    """Addresses of omp_get_num_threads and omp_get_thread_num (0, 0 without a runtime: calls
    then run in the caller's thread and never ask)."""
    lib = _runtime()
    if lib is None:
        return 0, 0
    return tuple(ctypes.cast(fn, ctypes.c_void_p).value
                 for fn in (lib.omp_get_num_threads, lib.omp_get_thread_num))
