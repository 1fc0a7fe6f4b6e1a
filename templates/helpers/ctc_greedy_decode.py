import torch


def ctc_greedy_decode(scores: torch.Tensor, blank: int, merge_repeated: bool) -> torch.Tensor:
    """CTC best path decoding of (T, N, C, ...) scores: (N, T, 1, 1) class indices, each
    sequence's kept classes first, then -1. A step is kept unless its argmax (the first
    maximum) is the blank or, with merge_repeated, repeats the step before."""
    steps, batch = scores.shape[0], scores.shape[1]
    best = scores.reshape(steps, batch, -1).argmax(dim=2).transpose(0, 1)  # (N, T)
    keep = best != blank
    if merge_repeated:
        before = torch.cat([torch.full_like(best[:, :1], -1), best[:, :-1]], dim=1)
        keep = keep & (best != before)
    # Kept steps go to their rank among the kept ones; the others to a spare last column.
    rank = torch.cumsum(keep.to(torch.int64), dim=1) - 1
    column = torch.where(keep, rank, torch.full_like(rank, steps))
    out = torch.full((batch, steps + 1), -1.0, dtype=scores.dtype, device=scores.device)
    out = out.scatter(1, column, best.to(scores.dtype))
    return out[:, :steps].reshape(batch, steps, 1, 1)
