"""The kernels as cfuncs that run on torch's OpenMP team, each thread taking chunks of rows.

Every entry reads the words packed by team.pack (kernel arguments in the kernel's order, float32 or
float64 arrays) and calls the kernel once per claimed chunk. Entries are module-level functions
(Numba caches those, not closures) turned into cfuncs on first use (compiling all of them at
import would cost seconds on a cold cache). The claim loop is written out in each body: passed
through a shared helper as an argument, the kernel becomes a "dynamic global" and Numba then
refuses to cache the entry at all.
"""

import functools

import numpy as np
from numba import cfunc, njit, types

from .gru import (
    gru_backward_columns,
    gru_backward_recurrence,
    gru_backward_step,
    gru_forward_columns,
    gru_forward_fused,
    gru_forward_recurrence,
    gru_forward_step,
)
from .linalg import matmul_packed_at, pack_slice
from .lstm import (
    lstm_backward_columns,
    lstm_backward_recurrence,
    lstm_backward_step,
    lstm_forward_cells,
    lstm_forward_columns,
    lstm_forward_fused,
    lstm_forward_recurrence,
    lstm_forward_step,
)
from .rnn import (
    rnn_backward_columns,
    rnn_backward_recurrence,
    rnn_backward_step,
    rnn_forward_columns,
    rnn_forward_fused,
    rnn_forward_recurrence,
    rnn_forward_step,
)
from .team import (
    FIRST_ARG,
    array1_words,
    array2_words,
    array3_words,
    bounds_words,
    chunk_count,
    claim,
    flag_word,
    float64_words,
    int_word,
    team_size,
    thread_index,
    words,
)

_SIGNATURE = types.void(types.voidptr)
_CACHE = dict(cache=True)


@njit(**_CACHE)
def _by_dtype(data, body):
    if float64_words(words(data)):
        body(data, np.float64)
    else:
        body(data, np.float32)


# ----------------------------------------------------------------------------------- LSTM


@njit(**_CACHE)
def _lstm_forward_recurrence(data, dt):
    w = words(data)
    bounds = bounds_words(w)
    xg, i = array3_words(w, FIRST_ARG, dt)
    w_hh_tp, i = array1_words(w, i, dt)
    w_hr_tp, i = array1_words(w, i, dt)
    h, i = array2_words(w, i, dt)
    c, i = array2_words(w, i, dt)
    lengths, i = array1_words(w, i, np.int64)
    reverse, i = flag_word(w, i)
    proj, i = flag_word(w, i)
    need_grad, i = flag_word(w, i)
    out, i = array3_words(w, i, dt)
    gates, i = array3_words(w, i, dt)
    cs, i = array3_words(w, i, dt)
    hpre, i = array3_words(w, i, dt)
    hg, i = array2_words(w, i, dt)
    hproj, i = array2_words(w, i, dt)
    k = claim(data)
    while k < chunk_count(w):
        lstm_forward_recurrence(xg, w_hh_tp, w_hr_tp, h, c, lengths, reverse, proj, need_grad, out,
                                gates, cs, hpre, hg, hproj, bounds[k], bounds[k + 1])
        k = claim(data)


def lstm_forward_recurrence_entry(data):
    _by_dtype(data, _lstm_forward_recurrence)


@njit(**_CACHE)
def _lstm_forward_cells(data, dt):
    w = words(data)
    bounds = bounds_words(w)
    xg, i = array3_words(w, FIRST_ARG, dt)
    w_gp, i = array1_words(w, i, dt)
    h, i = array2_words(w, i, dt)
    c, i = array2_words(w, i, dt)
    lengths, i = array1_words(w, i, np.int64)
    reverse, i = flag_word(w, i)
    need_grad, i = flag_word(w, i)
    out, i = array3_words(w, i, dt)
    gates, i = array3_words(w, i, dt)
    cs, i = array3_words(w, i, dt)
    k = claim(data)
    while k < chunk_count(w):
        lstm_forward_cells(xg, w_gp, h, c, lengths, reverse, need_grad, out, gates, cs,
                           bounds[k], bounds[k + 1])
        k = claim(data)


def lstm_forward_cells_entry(data):
    _by_dtype(data, _lstm_forward_cells)


@njit(**_CACHE)
def _lstm_forward_fused(data, dt):
    w = words(data)
    bounds = bounds_words(w)
    x, i = array3_words(w, FIRST_ARG, dt)
    w_tp, i = array1_words(w, i, dt)
    bias_rows, i = array2_words(w, i, dt)
    h, i = array2_words(w, i, dt)
    c, i = array2_words(w, i, dt)
    lengths, i = array1_words(w, i, np.int64)
    reverse, i = flag_word(w, i)
    need_grad, i = flag_word(w, i)
    out, i = array3_words(w, i, dt)
    gates, i = array3_words(w, i, dt)
    cs, i = array3_words(w, i, dt)
    xh, i = array2_words(w, i, dt)
    pre, i = array3_words(w, i, dt)
    lens_t, i = array1_words(w, i, np.int64)
    k = claim(data)
    while k < chunk_count(w):
        lstm_forward_fused(x, w_tp, bias_rows, h, c, lengths, reverse, need_grad, out, gates, cs,
                           xh, pre, lens_t, bounds[k], bounds[k + 1])
        k = claim(data)


def lstm_forward_fused_entry(data):
    _by_dtype(data, _lstm_forward_fused)


@njit(**_CACHE)
def _lstm_forward_step(data, dt):
    w = words(data)
    bounds = bounds_words(w)
    t, i = int_word(w, FIRST_ARG)
    need_grad, i = flag_word(w, i)
    xg, i = array3_words(w, i, dt)
    hg, i = array2_words(w, i, dt)
    h, i = array2_words(w, i, dt)
    c, i = array2_words(w, i, dt)
    lengths, i = array1_words(w, i, np.int64)
    proj, i = flag_word(w, i)
    out, i = array3_words(w, i, dt)
    gates, i = array3_words(w, i, dt)
    cs, i = array3_words(w, i, dt)
    hpre, i = array3_words(w, i, dt)
    k = claim(data)
    while k < chunk_count(w):
        lstm_forward_step(t, need_grad, xg, hg, h, c, lengths, proj, out, gates, cs, hpre,
                          bounds[k], bounds[k + 1])
        k = claim(data)


def lstm_forward_step_entry(data):
    _by_dtype(data, _lstm_forward_step)


@njit(**_CACHE)
def _lstm_backward_recurrence(data, dt):
    w = words(data)
    bounds = bounds_words(w)
    grad_out, i = array3_words(w, FIRST_ARG, dt)
    dh, i = array2_words(w, i, dt)
    dc, i = array2_words(w, i, dt)
    gates, i = array3_words(w, i, dt)
    cs, i = array3_words(w, i, dt)
    c0, i = array2_words(w, i, dt)
    w_hh_p, i = array1_words(w, i, dt)
    w_hr_p, i = array1_words(w, i, dt)
    lengths, i = array1_words(w, i, np.int64)
    reverse, i = flag_word(w, i)
    proj, i = flag_word(w, i)
    dgates, i = array3_words(w, i, dt)
    dht_all, i = array3_words(w, i, dt)
    dhp, i = array2_words(w, i, dt)
    dh_new, i = array2_words(w, i, dt)
    k = claim(data)
    while k < chunk_count(w):
        lstm_backward_recurrence(grad_out, dh, dc, gates, cs, c0, w_hh_p, w_hr_p, lengths, reverse,
                                 proj, dgates, dht_all, dhp, dh_new, bounds[k], bounds[k + 1])
        k = claim(data)


def lstm_backward_recurrence_entry(data):
    _by_dtype(data, _lstm_backward_recurrence)


@njit(**_CACHE)
def _lstm_backward_step(data, dt):
    w = words(data)
    bounds = bounds_words(w)
    t, i = int_word(w, FIRST_ARG)
    reverse, i = flag_word(w, i)
    grad_out, i = array3_words(w, i, dt)
    dh, i = array2_words(w, i, dt)
    dc, i = array2_words(w, i, dt)
    dhp, i = array2_words(w, i, dt)
    gates, i = array3_words(w, i, dt)
    cs, i = array3_words(w, i, dt)
    c0, i = array2_words(w, i, dt)
    lengths, i = array1_words(w, i, np.int64)
    proj, i = flag_word(w, i)
    dgates, i = array3_words(w, i, dt)
    k = claim(data)
    while k < chunk_count(w):
        lstm_backward_step(t, reverse, grad_out, dh, dc, dhp, gates, cs, c0, lengths, proj, dgates,
                           bounds[k], bounds[k + 1])
        k = claim(data)


def lstm_backward_step_entry(data):
    _by_dtype(data, _lstm_backward_step)


@njit(**_CACHE)
def _lstm_forward_columns(data, dt):
    w = words(data)
    slices = bounds_words(w)
    xg, i = array3_words(w, FIRST_ARG, dt)
    w_parts, i = array1_words(w, i, dt)
    c, i = array2_words(w, i, dt)
    lengths, i = array1_words(w, i, np.int64)
    reverse, i = flag_word(w, i)
    need_grad, i = flag_word(w, i)
    out, i = array3_words(w, i, dt)
    gates, i = array3_words(w, i, dt)
    cs, i = array3_words(w, i, dt)
    hbuf, i = array3_words(w, i, dt)
    hg, i = array2_words(w, i, dt)
    lstm_forward_columns(data, thread_index(w), team_size(w), xg, w_parts, slices, c, lengths,
                         reverse, need_grad, out, gates, cs, hbuf, hg)


def lstm_forward_columns_entry(data):
    _by_dtype(data, _lstm_forward_columns)


@njit(**_CACHE)
def _lstm_backward_columns(data, dt):
    w = words(data)
    slices = bounds_words(w)
    grad_out, i = array3_words(w, FIRST_ARG, dt)
    dh, i = array2_words(w, i, dt)
    dc, i = array2_words(w, i, dt)
    gates, i = array3_words(w, i, dt)
    cs, i = array3_words(w, i, dt)
    c0, i = array2_words(w, i, dt)
    w_parts, i = array1_words(w, i, dt)
    lengths, i = array1_words(w, i, np.int64)
    reverse, i = flag_word(w, i)
    dgates, i = array3_words(w, i, dt)
    dh_new, i = array2_words(w, i, dt)
    lstm_backward_columns(data, thread_index(w), team_size(w), grad_out, dh, dc, gates, cs, c0,
                          w_parts, slices, lengths, reverse, dgates, dh_new)


def lstm_backward_columns_entry(data):
    _by_dtype(data, _lstm_backward_columns)


# ------------------------------------------------------------------------------------ GRU


@njit(**_CACHE)
def _gru_forward_recurrence(data, dt):
    w = words(data)
    bounds = bounds_words(w)
    xg, i = array3_words(w, FIRST_ARG, dt)
    w_hh_tp, i = array1_words(w, i, dt)
    b_hn, i = array1_words(w, i, dt)
    h, i = array2_words(w, i, dt)
    lengths, i = array1_words(w, i, np.int64)
    reverse, i = flag_word(w, i)
    need_grad, i = flag_word(w, i)
    out, i = array3_words(w, i, dt)
    gates, i = array3_words(w, i, dt)
    hn_lin, i = array3_words(w, i, dt)
    hg, i = array2_words(w, i, dt)
    k = claim(data)
    while k < chunk_count(w):
        gru_forward_recurrence(xg, w_hh_tp, b_hn, h, lengths, reverse, need_grad, out, gates,
                               hn_lin, hg, bounds[k], bounds[k + 1])
        k = claim(data)


def gru_forward_recurrence_entry(data):
    _by_dtype(data, _gru_forward_recurrence)


@njit(**_CACHE)
def _gru_forward_step(data, dt):
    w = words(data)
    bounds = bounds_words(w)
    t, i = int_word(w, FIRST_ARG)
    ts, i = int_word(w, i)
    xg, i = array3_words(w, i, dt)
    hg, i = array2_words(w, i, dt)
    b_hn, i = array1_words(w, i, dt)
    h, i = array2_words(w, i, dt)
    lengths, i = array1_words(w, i, np.int64)
    out, i = array3_words(w, i, dt)
    gates, i = array3_words(w, i, dt)
    hn_lin, i = array3_words(w, i, dt)
    k = claim(data)
    while k < chunk_count(w):
        gru_forward_step(t, ts, xg, hg, b_hn, h, lengths, out, gates, hn_lin, bounds[k],
                         bounds[k + 1])
        k = claim(data)


def gru_forward_step_entry(data):
    _by_dtype(data, _gru_forward_step)


@njit(**_CACHE)
def _gru_backward_recurrence(data, dt):
    w = words(data)
    bounds = bounds_words(w)
    grad_out, i = array3_words(w, FIRST_ARG, dt)
    dh, i = array2_words(w, i, dt)
    gates, i = array3_words(w, i, dt)
    hn_lin, i = array3_words(w, i, dt)
    h0, i = array2_words(w, i, dt)
    hs, i = array3_words(w, i, dt)
    w_hh_p, i = array1_words(w, i, dt)
    lengths, i = array1_words(w, i, np.int64)
    reverse, i = flag_word(w, i)
    dxgates, i = array3_words(w, i, dt)
    dhgates, i = array3_words(w, i, dt)
    dh_new, i = array2_words(w, i, dt)
    k = claim(data)
    while k < chunk_count(w):
        gru_backward_recurrence(grad_out, dh, gates, hn_lin, h0, hs, w_hh_p, lengths, reverse,
                                dxgates, dhgates, dh_new, bounds[k], bounds[k + 1])
        k = claim(data)


def gru_backward_recurrence_entry(data):
    _by_dtype(data, _gru_backward_recurrence)


@njit(**_CACHE)
def _gru_backward_step(data, dt):
    w = words(data)
    bounds = bounds_words(w)
    t, i = int_word(w, FIRST_ARG)
    reverse, i = flag_word(w, i)
    grad_out, i = array3_words(w, i, dt)
    dh, i = array2_words(w, i, dt)
    gates, i = array3_words(w, i, dt)
    hn_lin, i = array3_words(w, i, dt)
    h0, i = array2_words(w, i, dt)
    hs, i = array3_words(w, i, dt)
    lengths, i = array1_words(w, i, np.int64)
    dxgates, i = array3_words(w, i, dt)
    dhgates, i = array3_words(w, i, dt)
    k = claim(data)
    while k < chunk_count(w):
        gru_backward_step(t, reverse, grad_out, dh, gates, hn_lin, h0, hs, lengths, dxgates,
                          dhgates, bounds[k], bounds[k + 1])
        k = claim(data)


def gru_backward_step_entry(data):
    _by_dtype(data, _gru_backward_step)


@njit(**_CACHE)
def _gru_forward_columns(data, dt):
    w = words(data)
    slices = bounds_words(w)
    xg, i = array3_words(w, FIRST_ARG, dt)
    w_parts, i = array1_words(w, i, dt)
    b_hn, i = array1_words(w, i, dt)
    lengths, i = array1_words(w, i, np.int64)
    reverse, i = flag_word(w, i)
    need_grad, i = flag_word(w, i)
    out, i = array3_words(w, i, dt)
    gates, i = array3_words(w, i, dt)
    hn_lin, i = array3_words(w, i, dt)
    hbuf, i = array3_words(w, i, dt)
    hg, i = array2_words(w, i, dt)
    gru_forward_columns(data, thread_index(w), team_size(w), xg, w_parts, slices, b_hn, lengths,
                        reverse, need_grad, out, gates, hn_lin, hbuf, hg)


def gru_forward_columns_entry(data):
    _by_dtype(data, _gru_forward_columns)


@njit(**_CACHE)
def _gru_backward_columns(data, dt):
    w = words(data)
    slices = bounds_words(w)
    grad_out, i = array3_words(w, FIRST_ARG, dt)
    dh, i = array2_words(w, i, dt)
    gates, i = array3_words(w, i, dt)
    hn_lin, i = array3_words(w, i, dt)
    h0, i = array2_words(w, i, dt)
    hs, i = array3_words(w, i, dt)
    w_parts, i = array1_words(w, i, dt)
    lengths, i = array1_words(w, i, np.int64)
    reverse, i = flag_word(w, i)
    dxgates, i = array3_words(w, i, dt)
    dhgates, i = array3_words(w, i, dt)
    dh_new, i = array2_words(w, i, dt)
    gru_backward_columns(data, thread_index(w), team_size(w), grad_out, dh, gates, hn_lin, h0, hs,
                         w_parts, slices, lengths, reverse, dxgates, dhgates, dh_new)


def gru_backward_columns_entry(data):
    _by_dtype(data, _gru_backward_columns)


# ------------------------------------------------------------------------------------ RNN


@njit(**_CACHE)
def _rnn_forward_recurrence(data, dt):
    w = words(data)
    bounds = bounds_words(w)
    xg, i = array3_words(w, FIRST_ARG, dt)
    w_hh_tp, i = array1_words(w, i, dt)
    h, i = array2_words(w, i, dt)
    lengths, i = array1_words(w, i, np.int64)
    reverse, i = flag_word(w, i)
    relu, i = flag_word(w, i)
    out, i = array3_words(w, i, dt)
    hg, i = array2_words(w, i, dt)
    k = claim(data)
    while k < chunk_count(w):
        rnn_forward_recurrence(xg, w_hh_tp, h, lengths, reverse, relu, out, hg, bounds[k],
                               bounds[k + 1])
        k = claim(data)


def rnn_forward_recurrence_entry(data):
    _by_dtype(data, _rnn_forward_recurrence)


@njit(**_CACHE)
def _gru_forward_fused(data, dt):
    w = words(data)
    bounds = bounds_words(w)
    x, i = array3_words(w, FIRST_ARG, dt)
    w_ih_tp, i = array1_words(w, i, dt)
    xbias, i = array1_words(w, i, dt)
    w_hh_tp, i = array1_words(w, i, dt)
    b_hn, i = array1_words(w, i, dt)
    h, i = array2_words(w, i, dt)
    lengths, i = array1_words(w, i, np.int64)
    reverse, i = flag_word(w, i)
    need_grad, i = flag_word(w, i)
    out, i = array3_words(w, i, dt)
    gates, i = array3_words(w, i, dt)
    hn_lin, i = array3_words(w, i, dt)
    xg, i = array3_words(w, i, dt)
    hg, i = array2_words(w, i, dt)
    lens_t, i = array1_words(w, i, np.int64)
    k = claim(data)
    while k < chunk_count(w):
        gru_forward_fused(x, w_ih_tp, xbias, w_hh_tp, b_hn, h, lengths, reverse, need_grad, out,
                          gates, hn_lin, xg, hg, lens_t, bounds[k], bounds[k + 1])
        k = claim(data)


def gru_forward_fused_entry(data):
    _by_dtype(data, _gru_forward_fused)


@njit(**_CACHE)
def _rnn_forward_fused(data, dt):
    w = words(data)
    bounds = bounds_words(w)
    x, i = array3_words(w, FIRST_ARG, dt)
    w_tp, i = array1_words(w, i, dt)
    bias_rows, i = array2_words(w, i, dt)
    h, i = array2_words(w, i, dt)
    lengths, i = array1_words(w, i, np.int64)
    reverse, i = flag_word(w, i)
    relu, i = flag_word(w, i)
    out, i = array3_words(w, i, dt)
    xh, i = array2_words(w, i, dt)
    pre, i = array3_words(w, i, dt)
    lens_t, i = array1_words(w, i, np.int64)
    k = claim(data)
    while k < chunk_count(w):
        rnn_forward_fused(x, w_tp, bias_rows, h, lengths, reverse, relu, out, xh, pre, lens_t,
                          bounds[k], bounds[k + 1])
        k = claim(data)


def rnn_forward_fused_entry(data):
    _by_dtype(data, _rnn_forward_fused)


@njit(**_CACHE)
def _rnn_forward_step(data, dt):
    w = words(data)
    bounds = bounds_words(w)
    t, i = int_word(w, FIRST_ARG)
    xg, i = array3_words(w, i, dt)
    hg, i = array2_words(w, i, dt)
    h, i = array2_words(w, i, dt)
    lengths, i = array1_words(w, i, np.int64)
    relu, i = flag_word(w, i)
    out, i = array3_words(w, i, dt)
    k = claim(data)
    while k < chunk_count(w):
        rnn_forward_step(t, xg, hg, h, lengths, relu, out, bounds[k], bounds[k + 1])
        k = claim(data)


def rnn_forward_step_entry(data):
    _by_dtype(data, _rnn_forward_step)


@njit(**_CACHE)
def _rnn_backward_recurrence(data, dt):
    w = words(data)
    bounds = bounds_words(w)
    grad_out, i = array3_words(w, FIRST_ARG, dt)
    dh, i = array2_words(w, i, dt)
    hs, i = array3_words(w, i, dt)
    w_hh_p, i = array1_words(w, i, dt)
    lengths, i = array1_words(w, i, np.int64)
    reverse, i = flag_word(w, i)
    relu, i = flag_word(w, i)
    dgates, i = array3_words(w, i, dt)
    dh_new, i = array2_words(w, i, dt)
    k = claim(data)
    while k < chunk_count(w):
        rnn_backward_recurrence(grad_out, dh, hs, w_hh_p, lengths, reverse, relu, dgates, dh_new,
                                bounds[k], bounds[k + 1])
        k = claim(data)


def rnn_backward_recurrence_entry(data):
    _by_dtype(data, _rnn_backward_recurrence)


@njit(**_CACHE)
def _rnn_backward_step(data, dt):
    w = words(data)
    bounds = bounds_words(w)
    t, i = int_word(w, FIRST_ARG)
    grad_out, i = array3_words(w, i, dt)
    dh, i = array2_words(w, i, dt)
    hs, i = array3_words(w, i, dt)
    lengths, i = array1_words(w, i, np.int64)
    relu, i = flag_word(w, i)
    dgates, i = array3_words(w, i, dt)
    k = claim(data)
    while k < chunk_count(w):
        rnn_backward_step(t, grad_out, dh, hs, lengths, relu, dgates, bounds[k], bounds[k + 1])
        k = claim(data)


def rnn_backward_step_entry(data):
    _by_dtype(data, _rnn_backward_step)


@njit(**_CACHE)
def _rnn_forward_columns(data, dt):
    w = words(data)
    slices = bounds_words(w)
    xg, i = array3_words(w, FIRST_ARG, dt)
    w_parts, i = array1_words(w, i, dt)
    lengths, i = array1_words(w, i, np.int64)
    reverse, i = flag_word(w, i)
    relu, i = flag_word(w, i)
    out, i = array3_words(w, i, dt)
    hbuf, i = array3_words(w, i, dt)
    hg, i = array2_words(w, i, dt)
    rnn_forward_columns(data, thread_index(w), team_size(w), xg, w_parts, slices, lengths, reverse,
                        relu, out, hbuf, hg)


def rnn_forward_columns_entry(data):
    _by_dtype(data, _rnn_forward_columns)


@njit(**_CACHE)
def _rnn_backward_columns(data, dt):
    w = words(data)
    slices = bounds_words(w)
    grad_out, i = array3_words(w, FIRST_ARG, dt)
    dh, i = array2_words(w, i, dt)
    hs, i = array3_words(w, i, dt)
    w_parts, i = array1_words(w, i, dt)
    lengths, i = array1_words(w, i, np.int64)
    reverse, i = flag_word(w, i)
    relu, i = flag_word(w, i)
    dgates, i = array3_words(w, i, dt)
    dh_new, i = array2_words(w, i, dt)
    rnn_backward_columns(data, thread_index(w), team_size(w), grad_out, dh, hs, w_parts, slices,
                         lengths, reverse, relu, dgates, dh_new)


def rnn_backward_columns_entry(data):
    _by_dtype(data, _rnn_backward_columns)


# ------------------------------------------------------------------------- weight packing


@njit(**_CACHE)
def _pack_slices(data, dt):
    w = words(data)
    bounds = bounds_words(w)
    src, i = array2_words(w, FIRST_ARG, dt)
    transposed, i = flag_word(w, i)
    out, i = array1_words(w, i, dt)
    groups, i = int_word(w, i)
    slices, i = array1_words(w, i, np.int64)
    k = claim(data)
    while k < chunk_count(w):
        for s in range(bounds[k], bounds[k + 1]):
            pack_slice(src, transposed, out, groups, slices, s)
        k = claim(data)


def pack_slices_entry(data):
    _by_dtype(data, _pack_slices)


# ----------------------------------------------------------------------- weight gradients


@njit(**_CACHE)
def _weight_grads(data, dt):
    w = words(data)
    bounds = bounds_words(w)
    g, i = array2_words(w, FIRST_ARG, dt)
    b1, i = array1_words(w, i, dt)
    out1, i = array2_words(w, i, dt)
    two, i = flag_word(w, i)
    b2, i = array1_words(w, i, dt)
    out2, i = array2_words(w, i, dt)
    k = claim(data)
    while k < chunk_count(w):
        matmul_packed_at(g, b1, out1, bounds[k], bounds[k + 1])
        if two:
            matmul_packed_at(g, b2, out2, bounds[k], bounds[k + 1])
        k = claim(data)


def weight_grads_entry(data):
    _by_dtype(data, _weight_grads)


@functools.cache
def compiled(entry):
    """The cfunc of a module-level entry above (compiled, or loaded from Numba's cache, once)."""
    return cfunc(_SIGNATURE, **_CACHE)(entry)
