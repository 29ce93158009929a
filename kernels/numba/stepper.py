"""One step of one layer and direction for the step path (fastrnn/step_path.py), on numpy arrays.

A `LayerStep` is built once per weight version and batch size: it packs the layer's weights for
the compiled product, sums the biases and allocates every scratch buffer, so that a step is one
compiled call (two for a projected LSTM) on arrays the caller converted. The kernels are the
"fused" loops of lstm.py, gru.py and rnn.py, run for T = 1: the input projection and the
recurrent product of the step in one pass over the packed [W_ih, W_hh]^T, then the cell update.
In this thread: one step of the sizes a step-wise caller runs (B <= 16, H <= 256) costs 2-200 us,
where handing it to torch's OpenMP team costs more than the second core gives back at the small
end (benchmarks/results/cpu-step-*.md).
"""

import numpy as np
from numba.core.errors import NumbaError

from . import buffers, runners, team, threaded
from .buffers import as_numpy
from .gru import gru_forward_fused
from .linalg import matmul_packed, pack_weight, pack_weight_concat_t
from .lstm import lstm_forward_fused, lstm_forward_recurrence
from .rnn import rnn_forward_fused

_NUMPY = buffers.NUMPY_DTYPES


class LayerStep:
    """One step of one layer and direction of B rows: ``step(x, h, c, out)`` with x (1, B, I)
    the input, h (B, P) holding h_{t-1} and becoming h_t, c (B, H) the same for an LSTM (None
    otherwise), out (1, B, P) receiving h_t. All C-contiguous numpy arrays of the weights'
    dtype (float32 or float64); nothing else is read or written.

    With ``chunks`` > 1 the rows are split over torch's OpenMP team: the kernel's words are
    packed once, on buffers of this object (packing a call costs ~30 us, more than the split
    gains), and a step copies its arrays in and its results out."""

    def __init__(self, kind, w_ih, w_hh, b_ih, b_hh, w_hr, B, nonlinearity="tanh", chunks=1):
        cdt = w_hh.dtype
        ndt = _NUMPY[cdt]
        G, I = w_ih.shape
        H = G // {"lstm": 4, "gru": 3, "rnn": 1}[kind]
        P = w_hh.shape[1]
        self.B = B
        self.lens = np.ones(B, np.int64)           # every row live at its one step
        self.lens_t = np.empty(B, np.int64)
        zero_bias = b_ih is None
        if kind == "gru":
            self.w_ih_tp = _packed_t(w_ih, cdt)
            self.w_hh_tp = _packed_t(w_hh, cdt)
            if zero_bias:
                self.xbias, self.b_hn = np.zeros(G, ndt), np.zeros(H, ndt)
            else:
                xbias = b_ih.detach().clone()
                xbias[:2 * H] += b_hh.detach()[:2 * H]
                self.xbias = as_numpy(xbias, cdt)
                self.b_hn = as_numpy(b_hh.detach()[2 * H:], cdt)
            self.xg = buffers.scratch((1, B, G), cdt)
            self.hg = buffers.scratch((B, G), cdt)
            self.gates = np.empty((1, B, G), ndt)
            self.hn_lin = np.empty((1, B, H), ndt)
            self.kernel, self.entry = gru_forward_fused, threaded.gru_forward_fused_entry
        else:
            bias = np.zeros(G, ndt) if zero_bias else as_numpy(b_ih.detach() + b_hh.detach(), cdt)
            if kind == "lstm" and w_hr is not None:
                # The fused loop has no projection: the input product first, then the loop's.
                self.w_ih_tp = _packed_t(w_ih, cdt)
                self.w_hh_tp = _packed_t(w_hh, cdt)
                self.w_hr_tp = _packed_t(w_hr, cdt)
                self.bias = bias
                self.xg = buffers.scratch((1, B, G), cdt)
                self.hg = buffers.scratch((B, G), cdt)
                self.hproj = buffers.scratch((B, P), cdt)
                self.hpre = buffers.scratch((1, B, H), cdt)
                self.gates = np.empty((1, B, G), ndt)
                self.cs = np.empty((1, B, H), ndt)
                self.kernel = lstm_forward_recurrence
                self.entry = threaded.lstm_forward_recurrence_entry
            else:
                self.w_tp = pack_weight_concat_t(as_numpy(w_ih, cdt), as_numpy(w_hh, cdt))
                self.bias_rows = buffers.scratch((B, G), cdt)
                self.bias_rows[...] = bias
                self.xh = buffers.scratch((B, I + P), cdt)
                self.pre = buffers.scratch((1, B, G), cdt)
                if kind == "lstm":
                    self.gates = np.empty((1, B, G), ndt)
                    self.cs = np.empty((1, B, H), ndt)
                    self.kernel, self.entry = lstm_forward_fused, threaded.lstm_forward_fused_entry
                else:
                    self.relu = nonlinearity == "relu"
                    self.kernel, self.entry = rnn_forward_fused, threaded.rnn_forward_fused_entry
        self.projected = kind == "lstm" and w_hr is not None
        self.saved_shapes = {"lstm": [(1, B, G), (1, B, H)], "gru": [(1, B, G), (1, B, H)],
                             "rnn": []}[kind] + ([(1, B, H)] if self.projected else [])
        self.args = getattr(self, "_" + ("lstm_projected" if self.projected else kind))
        self.step = self._serial
        if chunks > 1:
            self.staged = (np.empty((1, B, I), ndt), np.empty((B, P), ndt),
                           np.empty((B, H), ndt) if kind == "lstm" else None,
                           np.empty((1, B, P), ndt))
            self.packed = team.pack(ndt().itemsize, team.bounds(B, chunks),
                                    *self.args(*self.staged))
            self.compiled = runners.compiled(self.entry)
            self.step = self._split

    def _serial(self, x, h, c, out):
        if self.projected:
            self._project(x)
        self.kernel(*self.args(x, h, c, out), 0, self.B)

    def saving(self, x, h, c, out, saved):
        """step() that also writes what the backward recurrence reads into ``saved``: arrays
        of `saved_shapes` (an LSTM's gates and c_t, and its unprojected h_t when it projects;
        a GRU's gates and h W_hn^T + b_hn; nothing for an RNN), in this thread."""
        if self.projected:
            self._project(x)
        self.kernel(*self.args(x, h, c, out, saved), 0, self.B)

    def _split(self, x, h, c, out):
        sx, sh, sc, so = self.staged
        sx[...] = x
        sh[...] = h
        if c is not None:
            sc[...] = c
        if self.projected:
            self._project(sx)
        team.run(self.compiled, self.packed)
        h[...] = sh
        if c is not None:
            c[...] = sc
        out[...] = so

    def _project(self, x):
        """A projected LSTM's x_t W_ih^T + bias, into the loop's xg."""
        xg = self.xg
        matmul_packed(x[0], self.w_ih_tp, xg[0], 0, xg.shape[2], 0)
        xg += self.bias

    # Each kernel's arguments, rows lo..hi last (added by the caller); with `saved`, the
    # kernel saves for backward into those arrays instead of this object's scratch.
    def _lstm(self, x, h, c, out, saved=None):
        gates, cs = saved or (self.gates, self.cs)
        return (x, self.w_tp, self.bias_rows, h, c, self.lens, False, saved is not None, out,
                gates, cs, self.xh, self.pre, self.lens_t)

    def _lstm_projected(self, x, h, c, out, saved=None):
        gates, cs, hpre = saved or (self.gates, self.cs, self.hpre)
        return (self.xg, self.w_hh_tp, self.w_hr_tp, h, c, self.lens, False, True,
                saved is not None, out, gates, cs, hpre, self.hg, self.hproj)

    def _gru(self, x, h, c, out, saved=None):
        gates, hn_lin = saved or (self.gates, self.hn_lin)
        return (x, self.w_ih_tp, self.xbias, self.w_hh_tp, self.b_hn, h, self.lens, False,
                saved is not None, out, gates, hn_lin, self.xg, self.hg, self.lens_t)

    def _rnn(self, x, h, c, out, saved=None):
        return (x, self.w_tp, self.bias_rows, h, self.lens, False, self.relu, out, self.xh,
                self.pre, self.lens_t)


def _packed_t(w, cdt):
    """w^T packed for the compiled product (linalg.pack_weight)."""
    return pack_weight(buffers.strided_numpy(w.t(), cdt))


class StackStep:
    """One step of a whole stack (layers x directions): ``step(x, h, c, out)`` with x (1, B, I),
    h (L * D, B, P) holding h_0 and becoming h_n, c (L * D, B, H) the same for an LSTM (None
    otherwise), out (1, B, D * P) receiving the last layer's h_t. The layers' outputs between
    them go to buffers of this object, reused from call to call (never handed out)."""

    def __init__(self, layer_steps, num_layers, directions, B, P, cdt):
        self.layers = layer_steps      # index layer * directions + direction
        self.num_layers, self.directions = num_layers, directions
        ndt = _NUMPY[cdt]
        self.between = [np.empty((1, B, directions * P), ndt) for _ in range(num_layers - 1)]
        self.halves = ([np.empty((1, B, P), ndt) for _ in range(2)] if directions == 2 else None)
        self.P = P

    def __call__(self, x, h, c, out):
        D, P = self.directions, self.P
        try:
            for layer in range(self.num_layers):
                dst = out if layer == self.num_layers - 1 else self.between[layer]
                for d in range(D):
                    i = layer * D + d
                    if D == 1:
                        self.layers[i].step(x, h[i], None if c is None else c[i], dst)
                    else:
                        half = self.halves[d]
                        self.layers[i].step(x, h[i], None if c is None else c[i], half)
                        dst[0, :, d * P:(d + 1) * P] = half[0]
                x = dst
        except NumbaError as exc:
            raise RuntimeError("fastrnn numba backend: compiling a step kernel failed. Use "
                               "backend='reference' to run without Numba, and report this "
                               "error.") from exc
