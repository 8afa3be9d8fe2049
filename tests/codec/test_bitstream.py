"""Tests for codec/bitstream.py: layout, round trips, each rejection, and a fuzz.

Containers for the rejection tests are built by ``_raw``, a second writer
that follows the module docstring's layout table field by field, independent
of ``pack``. It computes a valid CRC by default, so value checks (which run
after the checksum) are really reached.
"""

from __future__ import annotations

import random
import struct
import time
import tracemalloc
import zlib

import pytest

from codec.bitstream import (
    MAGIC,
    MAX_STRINGS,
    VERSION,
    VERSIONS,
    ImageMode,
    Payload,
    describe,
    header_size,
    num_patches,
    pack,
    unpack,
)
from codec.constants import MAX_DIMENSION, NUM_DECODER_BLOCKS
from codec.errors import BitstreamError

HASH = bytes.fromhex("0123456789abcdef")


def _payload(**overrides) -> Payload:
    fields = dict(
        model_id="metalic-vr",
        weights_hash=HASH,
        width=600,
        height=500,
        mode=ImageMode.RGB,
        rate_index=1234,
        lambda_k=(100, 200, 300, 400),
        bias_indices=bytes(range(6)),  # ceil(500/256) * ceil(600/256) = 2 * 3
        strings=(b"y-string-bytes", b"z-bytes"),
        latent_shape=(3, 4),
    )
    fields.update(overrides)
    return Payload(**fields)


def _with_crc(body: bytes) -> bytes:
    return body + struct.pack(">I", zlib.crc32(body))


def _raw(
    *,
    magic: bytes = MAGIC,
    version: int = VERSION,
    flags: int | None = None,
    model_id: bytes = b"metalic-vr",
    n: int | None = None,
    weights_hash: bytes = HASH,
    width: int = 600,
    height: int = 500,
    mode: int = 0,
    rate_index: int = 7,
    lambda_k: list[int] | None = None,
    k: int | None = None,
    bias: bytes | None = None,
    p: int | None = None,
    latent: tuple[int, int] = (3, 4),
    strings: tuple[bytes, ...] = (b"yy", b"z"),
    s: int | None = None,
    lengths: list[int] | None = None,
    crc: bool = True,
) -> bytes:
    """Write a container by the documented layout; any count may be overridden to lie."""
    if flags is None:
        flags = (1 if lambda_k is not None else 0) | (2 if bias is not None else 0)
    out = magic + bytes([version, flags, len(model_id) if n is None else n]) + model_id
    out += weights_hash + struct.pack(">HHBH", width, height, mode, rate_index)
    if lambda_k is not None:
        out += bytes([len(lambda_k) if k is None else k])
        out += struct.pack(f">{len(lambda_k)}H", *lambda_k)
    if bias is not None:
        out += struct.pack(">I", len(bias) if p is None else p) + bias
    out += struct.pack(">HHB", *latent, len(strings) if s is None else s)
    for i, string in enumerate(strings):
        out += struct.pack(">I", len(string) if lengths is None else lengths[i]) + string
    return _with_crc(out) if crc else out + b"\0\0\0\0"


def _reject(data) -> str:
    """Unpack ``data``, expect exactly BitstreamError, return its one-line message."""
    with pytest.raises(BitstreamError) as info:
        unpack(data)
    assert type(info.value) is BitstreamError
    message = str(info.value)
    assert message and "\n" not in message
    return message


def _random_payload(rng: random.Random) -> Payload:
    # Log-uniform sizes so both tiny and huge images (and their bias counts) show up.
    width = min(MAX_DIMENSION, max(1, int(2 ** rng.uniform(0, 14.01))))
    height = min(MAX_DIMENSION, max(1, int(2 ** rng.uniform(0, 14.01))))
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789-._"
    return Payload(
        model_id="".join(rng.choice(alphabet) for _ in range(rng.randint(1, 64))),
        weights_hash=rng.randbytes(8),
        width=width,
        height=height,
        mode=rng.choice(list(ImageMode)),
        rate_index=rng.randint(0, 0xFFFF),
        lambda_k=tuple(rng.randint(0, 0xFFFF) for _ in range(NUM_DECODER_BLOCKS))
        if rng.random() < 0.5
        else (),
        bias_indices=rng.randbytes(num_patches(width, height)) if rng.random() < 0.5 else b"",
        strings=tuple(
            rng.randbytes(rng.choice([0, 1, rng.randint(0, 300)]))
            for _ in range(rng.randint(1, MAX_STRINGS))
        ),
        latent_shape=(rng.randint(1, MAX_DIMENSION), rng.randint(1, MAX_DIMENSION)),
    )


class TestPayload:
    def test_normalizes_bytes_like_sequences_and_ints(self):
        p = _payload(
            weights_hash=bytearray(HASH),
            mode=2,
            lambda_k=[1, 2, 3, 4],
            bias_indices=memoryview(bytes(6)),
            strings=[bytearray(b"a"), b"b"],
            latent_shape=[5, 6],
        )
        assert type(p.weights_hash) is bytes
        assert p.mode is ImageMode.RGBA
        assert p.lambda_k == (1, 2, 3, 4)
        assert type(p.bias_indices) is bytes
        assert p.strings == (b"a", b"b") and all(type(s) is bytes for s in p.strings)
        assert p.latent_shape == (5, 6)
        assert hash(p) == hash(_payload(mode=ImageMode.RGBA, lambda_k=(1, 2, 3, 4),
                                        bias_indices=bytes(6), strings=(b"a", b"b"),
                                        latent_shape=(5, 6)))

    @pytest.mark.parametrize(
        ("field", "value", "reason"),
        [
            ("model_id", "", "model id '' is not a slug"),
            ("model_id", "Metalic-VR", "is not a slug"),
            ("model_id", "métalic", "is not a slug"),
            ("model_id", "a b", "is not a slug"),
            ("model_id", "a" * 65, "is not a slug"),
            ("model_id", 5, "model id must be str, got int"),
            ("weights_hash", bytes(7), "weights hash has 7 bytes, expected 8"),
            ("weights_hash", "0123456789abcdef", "weights hash must be bytes"),
            ("width", 0, "width 0 outside 1..16384"),
            ("width", MAX_DIMENSION + 1, "width 16385 outside 1..16384"),
            ("width", 2.0, "width must be an integer, got float"),
            ("width", True, "width must be an integer, got bool"),
            ("height", -1, "height -1 outside 1..16384"),
            ("mode", 5, "unknown image mode 5"),
            ("mode", "RGB", "image mode must be an integer, got str"),
            ("rate_index", 0x10000, "rate index 65536 outside 0..65535"),
            ("rate_index", -1, "rate index -1 outside 0..65535"),
            ("lambda_k", (1, 2, 3), "lambda_k count K=3, expected 0 or 4"),
            ("lambda_k", (0, 0, 0, 0x10000), "lambda_k[3] 65536 outside 0..65535"),
            ("lambda_k", 5, "lambda_k must be a sequence"),
            ("bias_indices", bytes(5), "bias count 5, expected 0 or 6"),
            ("bias_indices", [0] * 6, "bias indices must be bytes, got list"),
            ("strings", (), "number of strings 0 outside 1..8"),
            ("strings", (b"",) * 9, "number of strings 9 outside 1..8"),
            ("strings", b"abc", "got one bytes object"),
            ("strings", ("abc",), "string 0 must be bytes, got str"),
            ("latent_shape", (0, 1), "latent height 0 outside 1..16384"),
            ("latent_shape", (1, MAX_DIMENSION + 1), "latent width 16385 outside"),
            ("latent_shape", (1,), "latent shape has 1 dimensions, expected 2"),
            ("latent_shape", None, "latent shape must be a (height, width) pair"),
        ],
    )
    def test_invalid_field_raises_bitstream_error_naming_it(self, field, value, reason):
        with pytest.raises(BitstreamError) as info:
            _payload(**{field: value})
        assert type(info.value) is BitstreamError
        assert reason in str(info.value)


class TestPack:
    def test_layout_matches_documented_bytes(self):
        # 300x200 has ceil(200/256) * ceil(300/256) = 2 patches.
        p = _payload(width=300, height=200, mode=ImageMode.RGBA, rate_index=0x1234,
                     lambda_k=(1, 2, 3, 0xFFFF), bias_indices=b"\x00\x07",
                     strings=(b"abc", b""), latent_shape=(4, 5))
        expected = (
            b"MLIC" b"\x03" b"\x03" b"\x0a" b"metalic-vr"  # magic, version, flags, n, id
            + HASH
            + b"\x01\x2c" b"\x00\xc8" b"\x02" b"\x12\x34"  # width, height, mode, rate
            + b"\x04" b"\x00\x01\x00\x02\x00\x03\xff\xff"  # K, lambda_k
            + b"\x00\x00\x00\x02" b"\x00\x07"  # P, bias indices
            + b"\x00\x04\x00\x05" b"\x02"  # latent shape, S
            + b"\x00\x00\x00\x03abc" b"\x00\x00\x00\x00"  # strings
        )
        assert pack(p) == _with_crc(expected)

    def test_optional_sections_absent_when_empty(self):
        p = _payload(lambda_k=(), bias_indices=b"")
        assert pack(p) == _raw(strings=p.strings, rate_index=p.rate_index)

    @pytest.mark.parametrize("lambda_k", [(), (1, 2, 3, 4)])
    @pytest.mark.parametrize("bias", [False, True])
    def test_header_size_matches_packed_length(self, lambda_k, bias):
        p = _payload(lambda_k=lambda_k, bias_indices=bytes(6) if bias else b"")
        assert len(pack(p)) == header_size(p) + sum(map(len, p.strings))

    def test_overhead_is_small(self):
        p = _payload(lambda_k=(), bias_indices=b"")
        assert header_size(p) < 40 + len(p.model_id)
        assert header_size(_payload()) == 39 + len(p.model_id) + 9 + 4 + 6

    def test_rejects_non_payload(self):
        with pytest.raises(BitstreamError, match="pack expects a Payload, got dict"):
            pack({"model_id": "x"})


class TestRoundTrip:
    @pytest.mark.parametrize(
        "overrides",
        [
            dict(width=1, height=1, bias_indices=b"\x05", latent_shape=(1, 1)),
            dict(width=1, height=1, lambda_k=(), bias_indices=b"", strings=(b"",)),
            dict(width=MAX_DIMENSION, height=MAX_DIMENSION, bias_indices=bytes(range(256)) * 16,
                 lambda_k=(0, 0xFFFF, 0, 0xFFFF), rate_index=0xFFFF,
                 latent_shape=(MAX_DIMENSION, MAX_DIMENSION)),
            dict(lambda_k=(), bias_indices=bytes(6)),
            dict(lambda_k=(9, 8, 7, 6), bias_indices=b""),
            dict(strings=(b"",) * MAX_STRINGS, rate_index=0),
            dict(strings=(bytes(range(256)) * 40,)),
            dict(model_id="a"),
            dict(model_id="bmshj2018-hyperprior.q3_" + "x" * 40),  # 64 bytes, the longest
            *[dict(mode=m) for m in ImageMode],
        ],
    )
    def test_unpack_inverts_pack(self, overrides):
        p = _payload(**overrides)
        data = pack(p)
        q = unpack(data)
        assert q == p and type(q) is Payload
        assert q.mode is p.mode
        assert pack(q) == data

    def test_unpack_inverts_pack_on_random_payloads(self):
        rng = random.Random(20240501)
        for _ in range(400):
            p = _random_payload(rng)
            data = pack(p)
            assert unpack(data) == p
            assert unpack(bytearray(data)) == p
            assert unpack(memoryview(data)) == p

    def test_string_of_several_megabytes_round_trips_without_extra_copies(self):
        p = _payload(strings=(bytes(3_000_000), b"z"))
        data = pack(p)
        tracemalloc.start()
        try:
            base, _ = tracemalloc.get_traced_memory()
            q = unpack(data)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert q == p
        # One copy of the strings is the payload itself; nothing beyond it.
        assert peak - base < len(data) + 256 * 1024


class TestUnpackRejects:
    def test_sanity_raw_writer_agrees_with_pack(self):
        assert _raw() == pack(_payload(lambda_k=(), bias_indices=b"", rate_index=7,
                                       strings=(b"yy", b"z")))
        assert unpack(_raw(lambda_k=[1, 2, 3, 4], bias=bytes(6))).lambda_k == (1, 2, 3, 4)

    @pytest.mark.parametrize("data", ["MLIC", None, 12, [77, 76]])
    def test_non_bytes_input(self, data):
        assert _reject(data).startswith("expected bytes, got ")

    def test_empty_input(self):
        assert _reject(b"") == "not a metalic bitstream (empty input)"

    @pytest.mark.parametrize(
        "data", [b"\x89PNG\r\n\x1a\n" + bytes(40), b"\xff\xd8\xff", b"mlic\x01", b"X"]
    )
    def test_wrong_magic(self, data):
        assert _reject(data) == "not a metalic bitstream (bad magic)"

    def test_foreign_magic_with_valid_crc(self):
        assert _reject(_raw(magic=b"MLIK")) == "not a metalic bitstream (bad magic)"

    def test_input_shorter_than_magic(self):
        assert _reject(b"MLI") == "truncated: 3 bytes, the magic alone is 4"

    def test_magic_without_version(self):
        assert _reject(MAGIC) == "truncated: no version byte after the magic"

    @pytest.mark.parametrize("version", [0, 4, 7, 255])
    def test_unsupported_version(self, version):
        assert _reject(_raw(version=version)) == (
            f"unsupported container version {version} (this reader knows 1, 2, 3)"
        )

    @pytest.mark.parametrize("version", [1, 2])
    def test_an_older_version_is_read_and_repacked_as_itself(self, version):
        data = _raw(version=version)
        p = unpack(data)
        assert p.version == version and pack(p) == data and describe(p)["version"] == version

    def test_a_new_payload_is_the_current_version(self):
        assert VERSION == 3 and _payload().version == 3 and pack(_payload())[4] == 3

    @pytest.mark.parametrize("version", [0, 4, True, 3.0, "3"])
    def test_a_payload_of_another_version_is_refused(self, version):
        with pytest.raises(BitstreamError, match="container version"):
            _payload(version=version)

    def test_bit_flip_is_a_checksum_mismatch(self):
        data = bytearray(pack(_payload()))
        data[-8] ^= 0x10  # inside the last string
        assert _reject(bytes(data)).startswith("checksum mismatch (stored 0x")

    def test_bit_flip_in_a_value_field_is_reported_as_corruption(self):
        # The checksum runs before values are trusted: a flipped mode byte is
        # corruption, not "unknown image mode".
        data = bytearray(_raw(mode=0))
        data[len(MAGIC) + 3 + 10 + 8 + 4] ^= 0x08  # the mode byte: 0 -> 8
        assert "checksum mismatch" in _reject(bytes(data))
        assert _reject(_with_crc(bytes(data[:-4]))) == "unknown image mode 8"

    def test_corrupted_checksum(self):
        data = bytearray(pack(_payload()))
        data[-1] ^= 0x01
        assert "checksum mismatch" in _reject(bytes(data))

    @pytest.mark.parametrize("extra", [b"\x00", b"MLIC\x01", bytes(1000)])
    def test_trailing_bytes_after_checksum(self, extra):
        message = _reject(pack(_payload()) + extra)
        assert message == f"trailing bytes: {len(extra)} after the checksum"

    def test_truncated_checksum(self):
        assert _reject(pack(_payload())[:-2]) == "truncated: checksum needs 4 bytes, 2 left"

    def test_string_length_larger_than_remaining(self):
        data = _raw(strings=(b"yy", b"z"), lengths=[2, 5000])
        # 1 string byte and the 4 checksum bytes are left after the length field.
        assert _reject(data) == "truncated: string 1 declares 5000 bytes, 5 left"

    @pytest.mark.parametrize("length", [2**31, 2**32 - 1])
    def test_huge_declared_string_length_allocates_nothing(self, length):
        data = _raw(lengths=[length, 1])
        tracemalloc.start()
        try:
            message = _reject(data)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert message.startswith(f"truncated: string 0 declares {length} bytes")
        assert peak < 64 * 1024

    def test_huge_declared_bias_count(self):
        data = _raw(bias=bytes(6), p=2**32 - 1)
        assert _reject(data).startswith("truncated: bias indices declare 4294967295 bytes")

    def test_model_id_length_larger_than_remaining(self):
        data = _raw(n=200)
        assert _reject(data).startswith("truncated: model id needs 200 bytes")

    def test_bias_count_not_matching_image_size(self):
        assert _reject(_raw(bias=bytes(5))) == (
            "bias count 5, expected 0 or 6 (one per 256x256 patch of a 600x500 image)"
        )
        assert _reject(_raw(width=256, height=257, bias=bytes(1))).startswith(
            "bias count 1, expected 0 or 2"
        )

    def test_bias_flag_with_zero_count(self):
        assert _reject(_raw(bias=b"")) == "flags announce bias indices but the bias count is 0"

    @pytest.mark.parametrize(("field", "name"), [("width", "width"), ("height", "height")])
    def test_zero_dimension(self, field, name):
        assert _reject(_raw(**{field: 0})) == f"{name} 0 outside 1..16384"

    def test_dimension_above_max(self):
        assert _reject(_raw(width=MAX_DIMENSION + 1)) == "width 16385 outside 1..16384"

    @pytest.mark.parametrize("lambda_k", [[], [1, 2, 3], [1] * 5, [7] * 255])
    def test_lambda_k_count_other_than_four(self, lambda_k):
        # K=0 is spelled by clearing flag bit 0, so with the flag set only K=4 is valid.
        assert _reject(_raw(lambda_k=lambda_k)) == f"lambda_k count K={len(lambda_k)}, expected 4"

    def test_lambda_k_count_larger_than_remaining(self):
        data = _raw(lambda_k=[1, 2, 3, 4], k=200)
        assert _reject(data).startswith("truncated: 200 lambda_k values needs 400 bytes")

    @pytest.mark.parametrize("flags", [0x04, 0x80, 0xFC])
    def test_unknown_flag_bits(self, flags):
        assert _reject(_raw(flags=flags)) == f"unknown flag bits {flags:#04x}"

    @pytest.mark.parametrize("mode", [5, 9, 255])
    def test_unknown_mode(self, mode):
        assert _reject(_raw(mode=mode)) == f"unknown image mode {mode}"

    @pytest.mark.parametrize("model_id", [b"", b"Metalic", b"a b", b"\xff\xfe", b"a" * 65])
    def test_invalid_model_id(self, model_id):
        assert "is not a slug of 1..64 characters" in _reject(_raw(model_id=model_id))

    @pytest.mark.parametrize("count", [0, MAX_STRINGS + 1])
    def test_number_of_strings_out_of_range(self, count):
        data = _raw(strings=(b"",) * count)
        assert _reject(data) == f"number of strings {count} outside 1..8"

    def test_zero_latent_shape(self):
        assert _reject(_raw(latent=(0, 4))) == "latent height 0 outside 1..16384"

    def test_every_truncation_is_rejected(self):
        data = pack(_payload())
        for end in range(len(data)):
            message = _reject(data[:end])
            assert message.startswith(("truncated", "not a metalic bitstream")), message


class TestDescribe:
    def test_reports_header_fields_and_sizes(self):
        p = _payload()
        info = describe(p)
        assert info == {
            "version": 3,
            "model_id": "metalic-vr",
            "weights_hash": "0123456789abcdef",
            "width": 600,
            "height": 500,
            "mode": "RGB",
            "rate_index": 1234,
            "lambda_k": [100, 200, 300, 400],
            "bias_patches": 6,
            "latent_shape": [3, 4],
            "string_lengths": [14, 7],
            "header_bytes": header_size(p),
            "total_bytes": len(pack(p)),
            "bpp": len(pack(p)) * 8 / (600 * 500),
        }

    def test_is_json_serializable(self):
        import json

        rng = random.Random(3)
        for _ in range(20):
            json.dumps(describe(_random_payload(rng)))


class TestFuzz:
    """Mutated containers: each must raise BitstreamError or, if valid by chance,
    return a Payload that re-packs to the same bytes; fast, and never allocating
    much beyond the input."""

    SEED = 0x4D4C4943

    @staticmethod
    def _cases(rng: random.Random) -> list[tuple[str, bytes]]:
        bases = [
            pack(_payload()),
            pack(_payload(lambda_k=(), bias_indices=b"", strings=(b"",))),
            pack(_payload(width=1, height=1, bias_indices=b"\x01", strings=(rng.randbytes(200),
                                                                              rng.randbytes(50)))),
        ]
        cases: list[tuple[str, bytes]] = []

        def flip(data: bytes, count: int, limit: int | None = None) -> bytearray:
            out = bytearray(data)
            for _ in range(count):
                bit = rng.randrange(8 * (limit or len(out)))
                out[bit // 8] ^= 1 << (bit % 8)
            return out

        def recrc(data: bytes | bytearray) -> bytes:
            return _with_crc(bytes(data[:-4]))

        for base in bases:  # truncation at every length
            cases += [("truncate", base[:end]) for end in range(len(base))]
        for _ in range(400):  # bit flips, checksum left stale
            cases.append(("flip", bytes(flip(rng.choice(bases), rng.randint(1, 3)))))
        for _ in range(700):  # bit flips in the header, checksum recomputed
            base = rng.choice(bases)
            body_end = len(base) - 4
            limit = min(body_end, 64) if rng.random() < 0.8 else body_end  # mostly the header
            cases.append(("flip+crc", recrc(flip(base, rng.randint(1, 2), limit))))
        for _ in range(300):  # one byte set to a random value, checksum recomputed
            data = bytearray(rng.choice(bases))
            data[rng.randrange(min(len(data) - 4, 64))] = rng.randrange(256)
            cases.append(("byte+crc", recrc(data)))
        for _ in range(300):  # insertions and deletions, half with checksum recomputed
            data = bytearray(rng.choice(bases))
            at = rng.randrange(len(data))
            if rng.random() < 0.5:
                data[at:at] = rng.randbytes(rng.randint(1, 8))
            else:
                del data[at : at + rng.randint(1, 8)]
            cases.append(("indel", recrc(data) if rng.random() < 0.5 else bytes(data)))
        huge = [2**32 - 1, 2**31, 2**24, 65536, 1000, 300]
        for _ in range(60):  # huge declared lengths with a valid checksum
            h = rng.choice(huge)
            cases.append(("huge-len", _raw(lengths=[h, 1])))
            cases.append(("huge-len", _raw(lengths=[2, h])))
            cases.append(("huge-bias", _raw(bias=bytes(6), p=h)))
            cases.append(("huge-k", _raw(lambda_k=[1, 2, 3, 4], k=rng.randint(5, 255))))
            cases.append(("huge-n", _raw(n=rng.randint(11, 255))))
            cases.append(("huge-s", _raw(s=rng.randint(3, 255))))
        for _ in range(300):  # one value field set at random, checksum valid: value checks
            field = rng.choice(["flags", "width", "height", "mode", "latent", "k", "p", "s"])
            value = rng.choice([0, 1, 2, 4, 255, rng.randrange(256), rng.randrange(65536)])
            if field == "latent":
                value = (value, rng.randrange(65536))
            elif field in ("flags", "mode", "k", "s"):
                value %= 256
            if field == "k":
                cases.append(("value+crc", _raw(lambda_k=[1, 2, 3, 4][: value % 6], k=value)))
            elif field == "p":
                cases.append(("value+crc", _raw(bias=bytes(value % 8), p=value % 8)))
            elif field == "s":
                cases.append(("value+crc", _raw(strings=(b"a",) * (value % 12))))
            else:
                cases.append(("value+crc", _raw(**{field: value})))
        for _ in range(100):  # wrong magic or version
            data = bytearray(rng.choice(bases))
            if rng.random() < 0.5:
                data[rng.randrange(4)] ^= 1 << rng.randrange(8)
            else:
                data[4] = rng.choice([v for v in range(256) if v not in VERSIONS])
            cases.append(("magic/version", recrc(data)))
        for _ in range(200):  # garbage, bare and behind a valid prefix with a valid checksum
            garbage = rng.randbytes(rng.randint(0, 300))
            cases.append(("garbage", garbage))
            cases.append(("prefixed-garbage", _with_crc(MAGIC + bytes([VERSION]) + garbage)))
        return cases

    def test_mutated_containers_fail_cleanly_fast_and_small(self):
        cases = self._cases(random.Random(self.SEED))
        assert len(cases) >= 2000
        outcomes: dict[str, int] = {}
        worst_time = 0.0
        tracemalloc.start()
        try:
            for kind, data in cases:
                tracemalloc.reset_peak()
                base, _ = tracemalloc.get_traced_memory()
                start = time.perf_counter()
                try:
                    result = unpack(data)
                except BitstreamError as exc:
                    result = exc
                except Exception as exc:  # noqa: BLE001 - the property under test
                    pytest.fail(f"{kind}: {type(exc).__name__}: {exc} for input {data.hex()}")
                elapsed = time.perf_counter() - start
                _, peak = tracemalloc.get_traced_memory()
                worst_time = max(worst_time, elapsed)
                assert peak - base < len(data) + 1024 * 1024, (kind, data.hex())
                if isinstance(result, BitstreamError):
                    assert type(result) is BitstreamError
                    message = str(result)
                    assert message and "\n" not in message
                    stage = message.split(" ")[0].split(":")[0]
                else:
                    assert type(result) is Payload
                    assert pack(result) == data  # accepted implies canonical
                    stage = "accepted"
                outcomes[stage] = outcomes.get(stage, 0) + 1
        finally:
            tracemalloc.stop()
        assert worst_time < 1.0
        # The fuzz must reach every stage, not only the checksum.
        past_checksum = sum(
            v for k, v in outcomes.items()
            if k not in ("truncated", "trailing", "checksum", "not", "unsupported", "accepted")
        )
        assert outcomes.get("checksum", 0) > 100, outcomes
        assert outcomes.get("truncated", 0) > 100, outcomes
        assert outcomes.get("trailing", 0) > 10, outcomes
        assert past_checksum > 200, outcomes
        assert outcomes.get("accepted", 0) > 10, outcomes
