"""Which time steps are live, and what state each step started from.

Every backend follows one rule for variable lengths: sequence ``b`` is active at time ``t``
when ``t < lengths[b]``, in both directions. A forward pass walks t = 0..T-1, a reverse pass
walks t = T-1..0; an inactive step keeps the state and writes zeros to the output.
"""

import torch


def active_mask(lengths, T, device):
    """(T, B, 1) bool mask of live steps, or None when every sequence has length T."""
    if lengths is None:
        return None
    steps = torch.arange(T, device=device).unsqueeze(1)
    return (steps < lengths.to(device).unsqueeze(0)).unsqueeze(2)


def previous_states(seq, init, lengths, reverse):
    """The state each live step started from, for a whole sequence at once.

    ``seq`` (T, B, X) holds the state after each step (at live positions), ``init`` (B, X)
    the initial state. Dead steps get arbitrary (finite) values: their gradients are zero.
    """
    T = seq.shape[0]
    if T == 0:
        return seq
    init = init.unsqueeze(0)
    if not reverse:
        return torch.cat([init, seq[:-1]], 0)
    shifted = torch.cat([seq[1:], init], 0)
    if lengths is None:
        return shifted
    # In reverse, step t follows step t + 1 only if t + 1 was live; otherwise it is the first.
    next_live = active_mask(lengths, T + 1, seq.device)[1:]
    return torch.where(next_live, shifted, init)
