"""Bounded rANS decoding of untrusted strings, on top of CompressAI's coder.

CompressAI's ``RansDecoder`` (``cpp_exts/rans/rans_interface.cpp`` over ryg's
``rans64.h``) reads 32-bit words with no bounds check: two at init, at most one
per symbol in ``Rans64DecAdvance``, and on the escape ("bypass") path one per
``Rans64DecGetBits``, where a ``while (val == max_bypass_val)`` loop lets a few
crafted bytes ask for any number of nibbles. A crafted string therefore makes
it read past its buffer: a crash, or an image made of whatever memory holds.

:class:`BoundedRansCoder` decodes so that every read stays inside a buffer the
decoder owns, and accepts only a string that is *exactly* the canonical coding
of what it decoded:

1. **Shape.** A string for ``S`` symbols is a whole number of words, at least
   the 2 that ``Rans64EncFlush`` writes and at most the ``S`` that CompressAI's
   encoder has room for (``std::vector<uint32_t> output(symbols.size())``).
2. **Guarded pass.** The C++ decoder runs with every CDF length one larger than
   the table's. It then finds symbols exactly as before (the last CDF entry is
   ``1 << 16``, above every cumulative frequency, so the search never looks
   further) but never takes the escape branch, whose flag is ``s == length - 2``:
   the old escape symbol comes out as the plain value ``length - 2``. With no
   escape a symbol reads at most one word, so a copy padded with zero words to
   ``S + 2`` words bounds every read. Up to the first escape this pass *is*
   the real decoder; a string with no escape symbol is decoded exactly.
3. **Exact pass** (only for strings with an escape: none in the Kodak streams
   measured, see docs/BENCHMARKS.md). :class:`RansStream`, the same algorithm
   in Python, decodes each escape and a window after it, the state is carried
   in Python over the guarded pass's exact values before it, and the guarded
   pass resumes after it (:meth:`BoundedRansCoder.resumed_decode`), so a
   string with a few escapes costs little more than one without. Python
   reads every word through a bounds check and refuses what no
   CompressAI encoder writes: a nibble count above 7 or a raw value of 2**28
   or more (see :data:`MAX_ESCAPE_NIBBLES`), which also keeps step 4 from
   handing the encoder a value it would loop on forever.
4. **Canonical check.** The symbols are coded again with the same tables and
   the result must equal the string byte for byte. rANS decoding is the exact
   inverse of encoding, so an accepted string is the encoding of the decoded
   symbols: no silent wrong answer, and a decode that ran into the padding
   cannot pass. The re-encoding writes into CompressAI's one-word-per-symbol
   buffer, so its size is bounded first (:func:`max_words`).

Every refusal is a :class:`~codec.errors.BitstreamError`. :func:`harden` puts a
bounded coder on each entropy model of a network; the autoregressive zoo
models' context loop decodes through :class:`RansStream` the same way.

.. note::
    The guarded pass reads from a padded *copy*; its memory is 4 bytes per
    symbol (33 MB for the 8.4 M y symbols of a 4096x4096 image), transient.
"""

from __future__ import annotations

import bisect
from typing import Sequence

import numpy as np

from .errors import BitstreamError

__all__ = ["BoundedRansCoder", "EscapeSeen", "GuardedStream", "RansStream", "check_string", "harden",
           "max_words"]

WORD_BYTES = 4
"""Bytes. rANS64 reads and writes 32-bit words (little endian, as the C++ casts them)."""

FLUSH_WORDS = 2
"""Words. ``Rans64EncFlush`` writes the 64-bit final state: the shortest string."""

PRECISION = 16
"""Bits. CompressAI's CDF precision (``constexpr int precision``)."""

BYPASS_BITS = 4
"""Bits. One escape nibble (``bypass_precision``)."""

MAX_ESCAPE_NIBBLES = 7
"""Count. Value nibbles of the largest escape a CompressAI encoder writes.

Its nibble count loop, ``while ((raw_val >> (n_bypass * 4)) != 0)``, shifts an
int32 by 32 at the eighth nibble, which x86 reads as a shift by 0: a raw value
of 2**28 or more never ends the loop, so no stream holds one (and the
canonical check must never ask the encoder for one).
"""

ESCAPE_WINDOW = 1024
"""Symbols. After an escape, how many the exact pass decodes in Python before the C++ pass resumes
(escapes come in clusters: one resumption per cluster, not per escape)."""

RESUME_CHUNK = 4096
"""Symbols. The first C++ chunk after an escape; each further chunk without one is twice as long."""

_L = 1 << 31  # RANS64_L, the lower end of the normalized state interval
_MASK = (1 << PRECISION) - 1
_NIBBLE = (1 << BYPASS_BITS) - 1
_RAW_LIMIT = 1 << (BYPASS_BITS * MAX_ESCAPE_NIBBLES)


def check_string(string: bytes, symbols: int, what: str = "entropy-coded string") -> None:
    """Refuses a string that cannot be CompressAI's coding of ``symbols`` symbols.

    Args:
        string: bytes. The string as stored.
        symbols: int. How many symbols the decoder will take from it.
        what: str. Names the string in the error.

    Raises:
        BitstreamError: the length is not a multiple of 4, below 8 bytes, or
            above 4 bytes per symbol (more than CompressAI's encoder can write).
    """
    n = len(string)
    if n % WORD_BYTES:
        raise BitstreamError(f"{what} has {n} bytes, not a whole number of {WORD_BYTES}-byte rANS words")
    if n < FLUSH_WORDS * WORD_BYTES:
        raise BitstreamError(f"{what} has {n} bytes; a rANS string holds at least its "
                             f"{FLUSH_WORDS * WORD_BYTES}-byte final state")
    if n > WORD_BYTES * max(symbols, FLUSH_WORDS):
        raise BitstreamError(f"{what} has {n} bytes, more than an encoder writes for {symbols} symbols "
                             f"({WORD_BYTES * symbols} bytes at most)")


def max_words(symbols: int, escape_nibbles: int = 0) -> int:
    """Upper bound on the words rANS64 writes for ``symbols`` symbols.

    The state stays in [2**31, 2**63) and every word written takes 32 bits out
    of it, so the words written are at most the bits put in over 32, plus the
    2 words of the flush. A symbol puts in at most 16 bits (a frequency of at
    least 1 in 2**16), an escape nibble 4. The ``+ 1`` covers the rounding
    covers the fractional bits (a symbol or nibble puts in under 2**-14 bits
    more than its ideal cost, since the state is at least 2**15 times the frequency).

    Args:
        symbols: int. Symbols coded, escape or not.
        escape_nibbles: int. Nibbles of every escape (count and value nibbles) together.

    Returns:
        int. Words, including the flush.
    """
    bits = PRECISION * symbols + BYPASS_BITS * escape_nibbles + (symbols + escape_nibbles) // 2**14 + 1
    return bits // 32 + 1 + FLUSH_WORDS


class RansStream:
    """CompressAI's rANS decoder in Python, every read bounds-checked.

    The same arithmetic as ``rANSDecoderInterface::decode_stream`` on 64-bit
    Python integers (no wraparound happens for a state below 2**64, which the
    C++ shares), so on every string it accepts it returns what the C++ returns.

    Args:
        string: bytes. A whole number of words, at least 2 (see :func:`check_string`).
        cdfs: list of list of int. The quantized CDF table, one row per index.
        sizes: list of int. The valid length of each row.
        offsets: list of int. The value of symbol 0 of each row.

    Typical workflow:
        1. ``stream = RansStream(string, cdfs, sizes, offsets)``.
        2. ``values = stream.decode(indexes)``, as often as a context model needs.
        3. ``stream.escape_nibbles`` feeds :func:`max_words` before re-encoding.
    """

    def __init__(self, string: bytes, cdfs: Sequence[Sequence[int]], sizes: Sequence[int],
                 offsets: Sequence[int]):
        self._words = np.frombuffer(string, dtype="<u4").tolist()
        if len(self._words) < FLUSH_WORDS:
            raise BitstreamError(f"entropy-coded string has {len(string)} bytes, shorter than a rANS state")
        self._cdfs, self._sizes, self._offsets = cdfs, sizes, offsets
        self._x = self._words[0] | (self._words[1] << 32)
        self._pos = FLUSH_WORDS
        self.escape_nibbles = 0

    def _read(self, x: int) -> int:
        if self._pos >= len(self._words):
            raise BitstreamError(f"entropy-coded string ends after {len(self._words)} words, "
                                 "before its last symbol")
        x = (x << 32) | self._words[self._pos]
        self._pos += 1
        return x

    def _nibble(self) -> int:
        x = self._x
        val = x & _NIBBLE
        x >>= BYPASS_BITS
        self._x = self._read(x) if x < _L else x
        self.escape_nibbles += 1
        return val

    def decode(self, indexes: Sequence[int]) -> list[int]:
        """Decodes one symbol per CDF index, continuing where the last call stopped.

        Raises:
            BitstreamError: the string runs out, or an escape no encoder writes.
        """
        cdfs, sizes, offsets, right = self._cdfs, self._sizes, self._offsets, bisect.bisect_right
        out = []
        x = self._x
        for idx in indexes:
            cdf, size = cdfs[idx], sizes[idx]
            cum = x & _MASK
            s = right(cdf, cum, 0, size) - 1
            start = cdf[s]
            x = (cdf[s + 1] - start) * (x >> PRECISION) + cum - start
            if x < _L:
                x = self._read(x)
            if s == size - 2:
                self._x = x
                s = self._escape(size - 2)
                x = self._x
            out.append(s + offsets[idx])
        self._x = x
        return out

    def _escape(self, max_value: int) -> int:
        count = self._nibble()
        if count > MAX_ESCAPE_NIBBLES:
            raise BitstreamError(f"escape with {count} value nibbles; an encoder writes at most "
                                 f"{MAX_ESCAPE_NIBBLES}")
        raw = 0
        for j in range(count):
            raw |= self._nibble() << (BYPASS_BITS * j)
        if raw >= _RAW_LIMIT:
            raise BitstreamError(f"escape raw value {raw} of 2**28 or more: no encoder writes it")
        value = raw >> 1
        return -value - 1 if raw & 1 else value + max_value


class BoundedRansCoder:
    """Drop-in for CompressAI's ``_EntropyCoder`` ("ans") whose decoding is bounded and checked.

    ``encode_with_indexes`` is CompressAI's own. ``decode_with_indexes`` runs
    the four steps of the module docstring and returns the same list as
    CompressAI's for every string a CompressAI encoder can write.
    """

    name = "ans"

    def __init__(self):
        from compressai import ans

        self._encoder = ans.RansEncoder()
        self._decoder = ans.RansDecoder()

    def encode_with_indexes(self, symbols, indexes, cdfs, sizes, offsets) -> bytes:
        return self._encoder.encode_with_indexes(symbols, indexes, cdfs, sizes, offsets)

    def decode_with_indexes(self, string: bytes, indexes, cdfs, sizes, offsets) -> np.ndarray:
        """The symbols of ``string``, as an int64 array (what CompressAI's list holds; ``torch.tensor`` takes both).

        ``indexes`` may be a list or an integer array: an array is cheaper for a large string, since
        the checks below work on it directly and only the C++ calls get a list (a Kodak y string has
        295k symbols, and each conversion of a Python list of that length costs more than decoding it).
        """
        string = bytes(string)
        idx = np.asarray(indexes, dtype=np.int64)
        index_list = idx.tolist()
        count = len(index_list)
        check_string(string, count)
        # rows cut to their own length: the C++ reads no entry past it (the last, 1 << 16, stops every
        # search) and converts every entry it is given on each call, most of them padding otherwise
        cdfs = [row[:n] for row, n in zip(cdfs, sizes)]
        guarded = [n + 1 for n in sizes]
        values = self._guarded(string, index_list, cdfs, guarded, offsets)
        flags = escape_flags(idx, sizes, offsets)
        escape_nibbles = 0
        found = np.fromiter(values, dtype=np.int64, count=count)
        if np.any(found == flags):
            values, escape_nibbles = self.resumed_decode(string, index_list, cdfs, sizes, offsets, found, flags,
                                                         guarded)
            found = np.asarray(values, dtype=np.int64)
        self.check_canonical(string, values, index_list, cdfs, sizes, offsets, escape_nibbles)
        return found

    def _guarded(self, string: bytes, indexes, cdfs, guarded_sizes, offsets) -> list[int]:
        need = WORD_BYTES * (len(indexes) + FLUSH_WORDS)
        padded = string + bytes(need - len(string)) if len(string) < need else string
        return self._decoder.decode_with_indexes(padded, indexes, cdfs, guarded_sizes, offsets)

    def guarded_decode(self, string: bytes, indexes, cdfs, sizes, offsets) -> list[int] | None:
        """The C++ decoder with its escape branch shut: exact, or None where a symbol escapes."""
        values = self._guarded(string, indexes, cdfs, [n + 1 for n in sizes], offsets)
        return None if escapes(values, indexes, sizes, offsets) else values

    def resumed_decode(self, string: bytes, indexes, cdfs, sizes, offsets, values, flags, guarded_sizes,
                       window: int = ESCAPE_WINDOW, first_chunk: int = RESUME_CHUNK) -> tuple[list[int], int]:
        """The exact pass of a string with escapes, at C++ speed between them.

        A guarded pass is the real decoder up to its first escape, so its
        values there are kept and only the state is carried over them in
        Python (no CDF search; :func:`advance`). The escape itself and the
        ``window`` symbols after it are decoded by :class:`RansStream`; then
        the guarded C++ pass resumes from that state, on a fresh buffer that
        starts with the state as its two flush words, for ``first_chunk``
        symbols, then twice as many, and so on until the next escape. Every value is what
        :class:`RansStream` alone returns, and every read is bounds-checked
        or inside a padded copy.

        Returns:
            (values, escape nibbles read).
        """
        words = np.frombuffer(string, dtype="<u4")
        word_list = words.tolist()
        table = np.zeros((len(cdfs), max(map(len, cdfs))), dtype=np.int64)
        for i, row in enumerate(cdfs):
            table[i, :len(row)] = row
        idx = np.asarray(indexes, dtype=np.int64)
        offs = np.asarray(offsets, dtype=np.int64)
        stream = RansStream(string, cdfs, sizes, offsets)
        out = np.array(values, dtype=np.int64)
        count, start, chunk = len(idx), 0, first_chunk
        x, pos = stream._x, stream._pos
        seg = out

        def carry(x, pos, begin, values):  # the state over values the C++ pass decoded exactly
            rows = idx[begin:begin + len(values)]
            sym = values - offs[rows]
            low = table[rows, sym]
            return advance(x, pos, (table[rows, sym + 1] - low).tolist(), low.tolist(), word_list)

        while start < count:
            end = start + len(seg)
            hit = np.flatnonzero(seg == flags[start:end])
            if not len(hit):
                out[start:end] = seg
                if end == count:
                    break
                x, pos = carry(x, pos, start, seg)
                start = end
            else:
                esc = start + int(hit[0])
                out[start:esc] = seg[:hit[0]]
                stream._x, stream._pos = carry(x, pos, start, seg[:hit[0]])
                stop = min(count, esc + 1 + window)
                out[esc:stop] = stream.decode(indexes[esc:stop])
                x, pos, start, chunk = stream._x, stream._pos, stop, first_chunk
            if start < count:
                # chunks double while no escape comes: C++ work stays within a few times the symbols
                # decoded, however many escapes a string holds
                n, chunk = min(count - start, chunk), 2 * chunk
                head = np.array([x & 0xFFFFFFFF, x >> 32], dtype="<u4").tobytes()
                seg = np.asarray(self._guarded(head + words[pos:].tobytes(), indexes[start:start + n], cdfs,
                                               guarded_sizes, offsets), dtype=np.int64)
        return out.tolist(), stream.escape_nibbles

    def check_canonical(self, string: bytes, values, indexes, cdfs, sizes, offsets, escape_nibbles: int = 0) -> None:
        """Raises unless ``string`` is exactly CompressAI's coding of ``values``."""
        room = max(len(values), FLUSH_WORDS)
        if max_words(len(values), escape_nibbles) > room and \
                coded_words(values, indexes, cdfs, sizes, offsets, escape_nibbles) > room:
            # CompressAI's encoder has one word per symbol: a stream needing more
            # was never written by it, and re-encoding would overrun its buffer.
            raise BitstreamError(f"entropy-coded string decodes to {len(values)} symbols whose coding would "
                                 "not fit an encoder's buffer")
        if self._encoder.encode_with_indexes(values, indexes, cdfs, sizes, offsets) != string:
            raise BitstreamError(f"entropy-coded string of {len(string)} bytes is not the coding of the "
                                 f"{len(values)} symbols it decodes to (corrupted or crafted)")


class EscapeSeen(Exception):
    """A guarded pass met an escape symbol: decode again with :class:`RansStream`."""


class GuardedStream:
    """CompressAI's stateful ``RansDecoder`` (``set_stream``/``decode_stream``) with the escape branch shut.

    For context models that decode a few symbols at a time. It reads a copy
    padded to ``symbols + 2`` words, and refuses to decode more than
    ``symbols`` symbols, so no read leaves the copy.

    Args:
        string: bytes. Checked with :func:`check_string` against ``symbols``.
        symbols: int. Every symbol the string holds, over all calls.
        cdfs, sizes, offsets: the tables, as for :class:`RansStream`.

    Raises (from :meth:`decode`):
        EscapeSeen: a symbol escapes; the values so far are right but the
            C++ state is past what the escape needed.
    """

    escape_nibbles = 0

    def __init__(self, string: bytes, symbols: int, cdfs, sizes, offsets):
        from compressai import ans

        need = WORD_BYTES * (symbols + FLUSH_WORDS)
        self._cdfs, self._sizes, self._offsets = cdfs, sizes, offsets
        self._guarded = [n + 1 for n in sizes]
        self._left = symbols
        self._decoder = ans.RansDecoder()
        self._decoder.set_stream(string + bytes(max(0, need - len(string))))

    def decode(self, indexes: Sequence[int]) -> list[int]:
        if len(indexes) > self._left:
            raise BitstreamError("the context model asks for more symbols than the string was checked for")
        self._left -= len(indexes)
        values = self._decoder.decode_stream(indexes, self._cdfs, self._guarded, self._offsets)
        if escapes(values, indexes, self._sizes, self._offsets):
            raise EscapeSeen
        return values


def coded_words(values, indexes, cdfs, sizes, offsets, escape_nibbles: int) -> int:
    """Upper bound on the words rANS64 writes for these values, from their own frequencies.

    :func:`max_words` with each symbol's ideal cost ``16 - log2(freq)`` in
    place of 16 bits: tight enough for strings with many escapes.
    """
    idx = np.asarray(indexes, dtype=np.int64)
    table = np.asarray(cdfs, dtype=np.int64)
    top = np.asarray(sizes, dtype=np.int64)[idx] - 2
    v = np.asarray(values, dtype=np.int64) - np.asarray(offsets, dtype=np.int64)[idx]
    s = np.where((v < 0) | (v >= top), top, v)
    freq = table[idx, s + 1] - table[idx, s]
    if np.any(freq <= 0):
        return 1 << 62  # a zero-frequency symbol has no coding at all
    ideal = float(np.sum(PRECISION - np.log2(freq.astype(np.float64))))
    count = len(idx) + escape_nibbles
    bits = ideal * (1 + 1e-9) + BYPASS_BITS * escape_nibbles + count / 2**14 + 1
    return int(bits) // 32 + 1 + FLUSH_WORDS


def advance(x: int, pos: int, freqs: Sequence[int], starts: Sequence[int], words: Sequence[int]) -> tuple[int, int]:
    """The decoder's state (and word position) after symbols of known frequency and start.

    ``Rans64DecAdvance`` with the renormalizing read bounds-checked: what
    :meth:`RansStream.decode` does once the symbol is known.

    Raises:
        BitstreamError: the string runs out before the last symbol.
    """
    n, shift, mask, low = len(words), PRECISION, _MASK, _L  # locals: this loop runs once per symbol
    for f, c in zip(freqs, starts):
        x = f * (x >> shift) + (x & mask) - c
        if x < low:
            if pos >= n:
                raise BitstreamError(f"entropy-coded string ends after {n} words, before its last symbol")
            x = (x << 32) | words[pos]
            pos += 1
    return x, pos


def escape_flags(indexes, sizes, offsets) -> np.ndarray:
    """Each symbol's escape flag value (``length - 2`` above its row's offset)."""
    idx = np.asarray(indexes, dtype=np.int64)
    return np.asarray(sizes, dtype=np.int64)[idx] - 2 + np.asarray(offsets, dtype=np.int64)[idx]


def escapes(values, indexes, sizes, offsets) -> bool:
    """Whether any decoded value is its row's escape flag (``length - 2`` above the offset)."""
    return bool(np.any(np.asarray(values, dtype=np.int64) == escape_flags(indexes, sizes, offsets)))


def harden(net) -> None:
    """Gives every entropy model of ``net`` a :class:`BoundedRansCoder` (in place, this instance only).

    CompressAI's ``EntropyModel`` and ``EntropyModelVbr`` decode through their
    ``entropy_coder`` attribute, so this covers the default model, the
    factorized and hyperprior zoo models and every z string; the autoregressive
    context loops call ``RansDecoder`` directly and are bounded in
    :mod:`codec.models.zoo_ar`.
    """
    from compressai.entropy_models.entropy_models import _EntropyCoder

    for module in net.modules():
        coder = getattr(module, "entropy_coder", None)
        if type(coder) is _EntropyCoder and coder.name == "ans":
            module.entropy_coder = BoundedRansCoder()
