"""Per-unit cell math, forward and backward, shared by the step and persistent kernels.

Each helper takes loaded float32 tiles (any shape, elementwise) and returns a tuple of tiles;
the kernels keep the matmuls, loads and stores, whose tiling differs between strategies.
``live`` is the (BLOCK_B, 1) mask of rows whose sequence is still running at this step: the
gradients of the other rows are exactly zero and their carried state passes through unchanged.
"""

import triton
import triton.language as tl

from .activations import relu, sigmoid, tanh


@triton.jit
def lstm_update(pre_i, pre_f, pre_g, pre_o, c_prev):
    # Gate pre-activations (h W_hh^T + x W_ih^T + b) -> gates, new cell state, new h
    # (before any projection).
    i = sigmoid(pre_i)
    f = sigmoid(pre_f)
    g = tanh(pre_g)
    o = sigmoid(pre_o)
    c_new = f * c_prev + i * g
    h_new = o * tanh(c_new)
    return i, f, g, o, c_new, h_new


@triton.jit
def lstm_backward(i, f, g, o, c, c_prev, dh, dc, live):
    # From the saved gates, c_t and c_{t-1}, the gradient reaching h_t (before any projection)
    # and the carried dc: the gate gradients and the dc carried to step t-1.
    tc = tanh(c)
    dc_t = dc + dh * o * (1.0 - tc * tc)
    d_i = tl.where(live, dc_t * g * i * (1.0 - i), 0.0)
    d_f = tl.where(live, dc_t * c_prev * f * (1.0 - f), 0.0)
    d_g = tl.where(live, dc_t * i * (1.0 - g * g), 0.0)
    d_o = tl.where(live, dh * tc * o * (1.0 - o), 0.0)
    return d_i, d_f, d_g, d_o, tl.where(live, dc_t * f, dc)


@triton.jit
def gru_update(pre_r, pre_z, x_n, hn, h_prev):
    # x_n: the input part of the candidate; hn: h W_hn^T + b_hn, which r scales.
    r = sigmoid(pre_r)
    z = sigmoid(pre_z)
    n = tanh(x_n + r * hn)
    h_new = (1.0 - z) * n + z * h_prev
    return r, z, n, h_new


@triton.jit
def gru_backward(r, z, n, hn, h_prev, dh, live):
    # Returns d_r, d_z, d_n (input-side gate gradients), d_n * r (the candidate's hidden-side
    # gradient) and dh * z, the part of dh_{t-1} that bypasses the matmul with W_hh.
    d_n = tl.where(live, dh * (1.0 - z) * (1.0 - n * n), 0.0)
    d_z = tl.where(live, dh * (h_prev - n) * z * (1.0 - z), 0.0)
    d_r = tl.where(live, d_n * hn * r * (1.0 - r), 0.0)
    return d_r, d_z, d_n, d_n * r, dh * z


@triton.jit
def rnn_update(pre, RELU: tl.constexpr):
    if RELU:
        h_new = relu(pre)
    else:
        h_new = tanh(pre)
    return h_new


@triton.jit
def rnn_backward(h, dh, live, RELU: tl.constexpr):
    # The activation's slope from its output h.
    if RELU:
        slope = tl.where(h > 0, 1.0, 0.0)
    else:
        slope = 1.0 - h * h
    return tl.where(live, dh * slope, 0.0)
