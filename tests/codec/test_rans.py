"""codec.rans: bounded rANS decoding that returns CompressAI's symbols or refuses the string."""

import numpy as np
import pytest
import torch
from compressai import ans
from hypothesis import given, settings, strategies as st

from codec.errors import BitstreamError
from codec.rans import (BoundedRansCoder, EscapeSeen, GuardedStream, RansStream, check_string, coded_words,
                        escape_flags, max_words)
from tests.support.crafted import compressai_decompress
from tests.support.models import small_net


@pytest.fixture(scope="module")
def tables():
    """The Gaussian conditional's tables of a small seeded default-architecture model."""
    net = small_net()
    net.update(force=True)
    gc = net.gaussian_conditional
    return gc.quantized_cdf.tolist(), gc.cdf_length.tolist(), gc.offset.tolist()


def symbols_for(tables, seed: int, count: int, spread: float, outliers: float = 0.0):
    cdfs, sizes, offsets = tables
    rng = np.random.default_rng(seed)
    indexes = rng.integers(0, len(sizes), count)
    half = (np.asarray(sizes)[indexes] - 3) / 2
    values = np.clip(np.rint(rng.normal(0, 1, count) * half * spread), -half, half)
    hit = rng.random(count) < outliers
    values[hit] = np.rint(rng.normal(0, 1, hit.sum()) * 4e4)
    return values.astype(np.int64).tolist(), indexes.tolist()


def any_escape(tables, values, indexes) -> bool:
    """Whether a value lies outside its row's range (CompressAI codes it through the escape path)."""
    _, sizes, offsets = tables
    v = np.asarray(values) - np.asarray(offsets)[indexes]
    return bool(np.any((v < 0) | (v >= np.asarray(sizes)[indexes] - 2)))


def encode(tables, values, indexes) -> bytes:
    return ans.RansEncoder().encode_with_indexes(values, indexes, *tables)


class TestBoundedRansCoder:
    @settings(max_examples=60, deadline=None)
    @given(seed=st.integers(0, 2**32 - 1), count=st.integers(8, 3000), spread=st.sampled_from([0.1, 0.5, 1.0, 1.6]),
           outliers=st.sampled_from([0.0, 0.0, 0.002, 0.05]))
    def test_decodes_every_string_compressai_writes_to_its_symbols(self, tables, seed, count, spread, outliers):
        # spread 1.0 and more reaches the tails of every row (values clipped to them), outliers escape
        values, indexes = symbols_for(tables, seed, count, spread, outliers)
        string = encode(tables, values, indexes)
        if len(string) > 4 * count - 16:
            return  # past CompressAI's own one-word-per-symbol buffer: never a stream it wrote intact
        assert ans.RansDecoder().decode_with_indexes(string, indexes, *tables) == values
        assert BoundedRansCoder().decode_with_indexes(string, indexes, *tables).tolist() == values

    def test_a_string_with_escapes_takes_the_exact_pass(self, tables):
        values, indexes = symbols_for(tables, 3, 2000, 1.0, outliers=0.01)
        assert any_escape(tables, values, indexes)
        string = encode(tables, values, indexes)
        coder = BoundedRansCoder()
        assert coder.guarded_decode(string, indexes, *tables) is None
        assert RansStream(string, *tables).decode(indexes) == values
        assert coder.decode_with_indexes(string, indexes, *tables).tolist() == values

    def test_a_string_without_escapes_is_decoded_by_the_guarded_pass_alone(self, tables):
        values, indexes = symbols_for(tables, 4, 2000, 0.5)
        assert not any_escape(tables, values, indexes)
        assert BoundedRansCoder().guarded_decode(encode(tables, values, indexes), indexes, *tables) == values

    @settings(max_examples=60, deadline=None)
    @given(seed=st.integers(0, 2**32 - 1), count=st.integers(8, 3000), outliers=st.sampled_from([0.001, 0.01, 0.2]),
           window=st.sampled_from([0, 1, 7, 1024]), chunk=st.sampled_from([1, 5, 64, 4096]),
           damage=st.integers(-1, 40))
    def test_the_resumed_exact_pass_is_the_python_decoder(self, tables, seed, count, outliers, window, chunk, damage):
        # every resumption point (window 0 resumes right after each escape) and damaged strings:
        # same values, same escape nibbles, or the same refusal
        values, indexes = symbols_for(tables, seed, count, 1.0, outliers)
        string = bytearray(encode(tables, values, indexes))
        if damage >= 0:
            string[(damage * 97) % len(string)] ^= 1 << (damage % 8)
        string = bytes(string)
        coder = BoundedRansCoder()
        cdfs, sizes, offsets = tables
        guarded = coder._guarded(string, indexes, cdfs, [n + 1 for n in sizes], offsets)
        flags = escape_flags(indexes, sizes, offsets)
        stream = RansStream(string, *tables)
        try:
            want = (stream.decode(indexes), stream.escape_nibbles)
        except BitstreamError:
            with pytest.raises(BitstreamError):
                coder.resumed_decode(string, indexes, *tables, np.asarray(guarded), flags, [n + 1 for n in sizes],
                                     window, chunk)
            return
        got = coder.resumed_decode(string, indexes, *tables, np.asarray(guarded), flags, [n + 1 for n in sizes],
                                   window, chunk)
        assert got == want

    @pytest.mark.parametrize("damage", ["flip", "append-word", "drop-word", "zero-tail", "swap-words"])
    def test_a_damaged_string_is_refused(self, tables, damage):
        values, indexes = symbols_for(tables, 5, 3000, 1.0, outliers=0.001)
        s = bytearray(encode(tables, values, indexes))
        if damage == "flip":
            s[len(s) // 3] ^= 0x10
        elif damage == "append-word":
            s += b"\x01\x02\x03\x04"
        elif damage == "drop-word":
            del s[-4:]
        elif damage == "zero-tail":
            s[len(s) // 2:] = bytes(len(s) - len(s) // 2)
        else:
            s[8:12], s[12:16] = s[12:16], s[8:12]
        with pytest.raises(BitstreamError):
            BoundedRansCoder().decode_with_indexes(bytes(s), indexes, *tables)

    @pytest.mark.parametrize("pattern", [b"\xff", b"\x00", b"\x0f\xf0", b"\xff\xff\xff\x7f"])
    def test_crafted_patterns_are_refused_inside_the_buffer(self, tables, pattern):
        # all-0xFF strings keep the escape count loop running in the unchecked decoder
        indexes = [len(tables[1]) - 1] * 50_000
        string = (pattern * 4000)[:16000]
        with pytest.raises(BitstreamError):
            BoundedRansCoder().decode_with_indexes(string, indexes, *tables)

    def test_the_escape_count_loop_of_a_crafted_string_is_stopped(self, tables):
        with pytest.raises(BitstreamError, match="escape with 15 value nibbles"):
            RansStream(b"\xff" * 4000, *tables).decode([0] * 100)

    def test_a_string_too_short_for_its_symbols_ends_in_a_typed_error(self, tables):
        values, indexes = symbols_for(tables, 6, 500, 1.0, outliers=0.2)
        string = encode(tables, values, indexes)
        with pytest.raises(BitstreamError, match="ends after"):
            RansStream(string[:8], *tables).decode(indexes)

    def test_guarded_reads_stay_inside_the_padded_copy(self, tables):
        # more padding than the bound changes nothing: no read reaches past S + 2 words
        rng = np.random.default_rng(7)
        indexes = rng.integers(0, len(tables[1]), 20_000).tolist()
        cdfs, sizes, offsets = tables
        wide = [n + 1 for n in sizes]
        for _ in range(5):
            string = rng.bytes(4 * int(rng.integers(2, 64)))
            need = 4 * (len(indexes) + 2)
            tight = ans.RansDecoder().decode_with_indexes(string + bytes(need - len(string)), indexes, cdfs, wide,
                                                          offsets)
            loose = ans.RansDecoder().decode_with_indexes(string + bytes(need - len(string)) + b"\xff" * 4096, indexes,
                                                          cdfs, wide, offsets)
            assert tight == loose


class TestCheckString:
    @pytest.mark.parametrize("length,reason", [(0, "at least"), (4, "at least"), (7, "whole number"),
                                               (9, "whole number"), (4 * 100 + 4, "more than an encoder writes")])
    def test_refuses_lengths_no_encoder_writes(self, length, reason):
        with pytest.raises(BitstreamError, match=reason):
            check_string(bytes(length), 100)

    @pytest.mark.parametrize("length", [8, 12, 400])
    def test_accepts_word_lengths_from_the_state_to_one_word_per_symbol(self, length):
        check_string(bytes(length), 100)


class TestWordBounds:
    @settings(max_examples=40, deadline=None)
    @given(seed=st.integers(0, 2**32 - 1), count=st.integers(8, 2000), spread=st.sampled_from([0.2, 1.0, 1.6]),
           outliers=st.sampled_from([0.0, 0.01, 0.3]))
    def test_bounds_are_never_below_the_words_written(self, tables, seed, count, spread, outliers):
        values, indexes = symbols_for(tables, seed, count, spread, outliers)
        string = encode(tables, values, indexes)
        stream = RansStream(string, *tables)
        if 4 * count < len(string):
            return  # CompressAI's encoder overran its buffer: nothing to bound
        assert stream.decode(indexes) == values
        words = len(string) // 4
        assert coded_words(values, indexes, *tables, stream.escape_nibbles) >= words
        if not any_escape(tables, values, indexes):
            assert max_words(count) >= words


class TestGuardedStream:
    def test_decodes_in_pieces_like_one_call(self, tables):
        values, indexes = symbols_for(tables, 8, 900, 0.7)
        stream = GuardedStream(encode(tables, values, indexes), 900, *tables)
        assert sum((stream.decode(indexes[k:k + 90]) for k in range(0, 900, 90)), []) == values

    def test_stops_at_an_escape_and_at_the_declared_count(self, tables):
        values, indexes = symbols_for(tables, 9, 900, 1.0, outliers=0.05)
        string = encode(tables, values, indexes)
        with pytest.raises(EscapeSeen):
            GuardedStream(string, 900, *tables).decode(indexes)
        with pytest.raises(BitstreamError, match="more symbols"):
            GuardedStream(string, 10, *tables).decode(indexes[:11])


class TestHarden:
    def test_every_backend_decodes_through_bounded_coders(self):
        from tests.codec.test_backends import BACKENDS

        for name, make in BACKENDS.items():
            backend = make()
            nets = backend.nets.values() if hasattr(backend, "nets") else [backend.net]
            for net in nets:
                coders = [m.entropy_coder for m in net.modules() if hasattr(m, "entropy_coder")]
                assert coders and all(type(c) is BoundedRansCoder for c in coders), name
                if hasattr(net, "_decompress_ar"):  # mbt2018 and mbt2018-vbr: their own context loops
                    assert net._decompress_ar.__func__.__module__ == "codec.models.zoo_ar", name

    def test_the_autoregressive_y_string_is_checked(self):
        from tests.codec.test_backends import zoo

        backend = zoo("autoregressive")
        torch.manual_seed(2)
        coded = backend.compress_latents((torch.rand(1, 3, 64, 64),), 2)
        y, z = coded["strings"][0][0], coded["strings"][1][0]
        assert backend.decompress([[y], [z]], coded["shape"], 2).shape == (1, 3, 64, 64)
        flipped = bytearray(y)
        flipped[len(flipped) // 2] ^= 0x40
        for bad in (bytes(flipped), b"\xff" * len(y), y + bytes(4)):
            with pytest.raises(BitstreamError):
                backend.decompress([[bad], [z]], coded["shape"], 2)


def ar_backend(kind: str, latent_gain: float):
    """A small random mbt2018 or mbt2018-vbr whose analysis is scaled so that y has escapes (or not)."""
    from tests.codec.test_backends import vbr, zoo

    backend = vbr("mbt2018-vbr") if kind == "vbr" else zoo("autoregressive")
    net = backend.net if kind == "vbr" else backend.nets[2]
    with torch.no_grad():
        net.g_a[-1].weight *= latent_gain
    return backend, net


class TestAutoregressiveLoops:
    """The bounded copies of CompressAI's context loops decode exactly as the originals, or refuse."""

    @pytest.mark.parametrize("kind,flags", [("ar", {}), ("vbr", {}), ("vbr", {"no_quantoffset": True}),
                                            ("vbr", {"ste_recursive": False})])
    def test_canonical_strings_with_and_without_escapes_decode_as_compressai_does(self, monkeypatch, kind, flags):
        import codec.models.zoo_ar as zoo_ar

        exact_passes = []

        class CountedStream(RansStream):
            def __init__(self, *args):
                exact_passes.append(1)
                super().__init__(*args)

        monkeypatch.setattr(zoo_ar, "RansStream", CountedStream)
        gains = {"ar": (5.0, 40.0), "vbr": (40.0, 300.0)}[kind]  # no escape at the first, some at the second
        for gain, escapes_expected in zip(gains, (False, True)):
            backend, net = ar_backend(kind, gain)
            for name, value in flags.items():
                setattr(net, name, value)
            torch.manual_seed(1)
            coded = backend.compress_latents((torch.rand(1, 3, 64, 64),), 2)
            before = len(exact_passes)
            out = backend.decompress(coded["strings"], coded["shape"], 2)
            assert (len(exact_passes) > before) == escapes_expected
            assert len(coded["strings"][0][0]) > 8  # a y string with symbols in it, not just the final state
            assert torch.equal(out, compressai_decompress(backend, coded["strings"], coded["shape"], 2))

    @pytest.mark.parametrize("kind", ["ar", "vbr"])
    def test_crafted_y_strings_are_refused(self, kind):
        backend, _ = ar_backend(kind, 100.0)
        torch.manual_seed(2)
        coded = backend.compress_latents((torch.rand(1, 3, 64, 64),), 2)
        y, z = coded["strings"][0][0], coded["strings"][1][0]
        flipped = bytearray(y)
        flipped[len(flipped) // 2] ^= 0x40
        # the shortest string that passes the length check asks the C++ loop to read a word per symbol
        for bad in (bytes(flipped), b"\xff" * len(y), y + bytes(4), bytes(8), b"\xff" * 8, y[:-4]):
            with pytest.raises(BitstreamError):
                backend.decompress([[bad], [z]], coded["shape"], 2)
