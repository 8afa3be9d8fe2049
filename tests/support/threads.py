"""A fixed torch thread count for comparisons of decoded pixels.

The synthesis transform's float results, and with them a few rounded pixels,
depend on how many threads run its convolutions on a CPU. Decodes that are
compared byte for byte therefore use the same count as the side they are
compared with: one, as the service's processes run (OMP_NUM_THREADS=1).
"""

from contextlib import contextmanager

DECODE_THREADS = 1


@contextmanager
def torch_threads(n: int = DECODE_THREADS):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
