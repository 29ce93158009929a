"""Memory fastrnn keeps between calls, and how to give it back."""


def empty_cache():
    """Release the free buffers the numba backend keeps for reuse between training steps
    (kernels/numba/pool.py; at most 1 GiB of them). Buffers still in use stay. Like
    torch.cuda.empty_cache(), this only returns memory to the allocator: call it when a
    training phase ends and the memory is wanted elsewhere."""
    try:
        from .kernels.numba import pool
    except ImportError:         # numba is not installed: nothing was kept
        return
    pool.release()
