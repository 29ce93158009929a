"""Compilation settings shared by every Numba kernel (defined once)."""

# fastmath without 'nnan'/'ninf': NaN/inf checks must survive so NaN propagates as in torch.
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
JIT = dict(cache=True, fastmath=FASTMATH, error_model="numpy", nogil=True)

# The activations additionally drop 'reassoc': it would merge the two-part ln2 of exp's range
# reduction (x - n*hi - n*lo -> x - n*(hi+lo)) and cost ~10 ulp for large |x|.
ACT_FASTMATH = {"nsz", "arcp", "contract", "afn"}
