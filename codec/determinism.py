"""Bit-exact entropy parameters across processes.

oneDNN may split a convolution's reductions across threads differently from one
process to the next, so the hyper-synthesis can differ in the last bit between
the encoder and a decoder; a scale that lands on the other side of a table
boundary then decodes garbage. The hyper-synthesis is small (1/64 of the image
side), so it runs single-threaded, which is deterministic.

The synthesis has the same property: with two threads a CPU decode can differ
from a one-thread decode of the same stream by one level in a few pixels, so
the encoder's measured reconstruction, the API's decode and a user's decode
could disagree. On a CPU each of its ops runs single-threaded too
(:func:`exact_on`); the cores are won back by :mod:`codec.tiling`, fixed
strips of the latent (a function of its size, never of the core count) that
run side by side, each on one thread.
"""

import contextlib
import threading

import torch

_LOCK = threading.Lock()


@contextlib.contextmanager
def single_thread():
    """Runs the block with one intra-op thread (serialized across Python threads)."""
    with _LOCK:
        n = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(n)


def exact_on(device) -> contextlib.AbstractContextManager:
    """:func:`single_thread` on a CPU device; nothing elsewhere."""
    return single_thread() if torch.device(device).type == "cpu" else contextlib.nullcontext()
