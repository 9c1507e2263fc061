"""formats.packing: sub-byte codes in a little-endian bitstream.

Oracles: the definition itself with Python integers (code ``i`` shifted to bit ``i * bits`` of
one big integer, written out little-endian), and ``np.packbits(bitorder="little")`` applied to the
bit planes of the codes.
"""
from __future__ import annotations

import numpy as np
import pytest

from formats import packing

ALL_BITS = range(1, 9)
SIZES = [0, 1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 63, 64, 65, 1001, 4096, 100_003]


def _reference(codes, bits: int) -> bytes:
    """The stream from the definition: sum(c_i << (i * bits)), little-endian, zero-padded."""
    flat = [int(c) for c in np.asarray(codes).ravel()]
    stream = sum(c << (i * bits) for i, c in enumerate(flat))
    return stream.to_bytes((len(flat) * bits + 7) // 8, "little")


def _random_codes(rng: np.random.Generator, bits: int, n: int) -> np.ndarray:
    return rng.integers(0, 1 << bits, size=n, dtype=np.uint8)


# ---- layout ----------------------------------------------------------------------------------

@pytest.mark.parametrize("bits,codes,expected", [
    (4, [0x1, 0x2, 0x3], [0x21, 0x03]),                 # first code in the low nibble
    (4, [0xF, 0x0], [0x0F]),
    (4, [0x0, 0xF], [0xF0]),
    (1, [1, 0, 0, 0, 0, 0, 0, 1, 1], [0x81, 0x01]),
    (2, [3, 0, 1, 2, 1], [0b10010011, 0b01]),
    (8, [0, 255, 7], [0, 255, 7]),
    (3, [7, 0, 5], [0x47, 0x01]),                       # 7 | 5 << 6 = 0x147, 9 bits
    (6, [0x3F, 0x01], [0x7F, 0x00]),                    # 0x3F | 0x01 << 6
])
def test_hand_checked_bytes(bits, codes, expected):
    got = packing.pack_codes(np.array(codes, dtype=np.uint8), bits)
    assert got.dtype == np.uint8 and got.ndim == 1
    assert got.tobytes() == bytes(expected) == _reference(codes, bits)


@pytest.mark.parametrize("bits", ALL_BITS)
@pytest.mark.parametrize("n", [1, 2, 3, 5, 7, 8, 9, 13, 24, 25, 257])
def test_matches_definition(bits, n):
    rng = np.random.default_rng(1000 * bits + n)
    codes = _random_codes(rng, bits, n)
    assert packing.pack_codes(codes, bits).tobytes() == _reference(codes, bits)


@pytest.mark.parametrize("bits", ALL_BITS)
def test_all_ones_and_padding(bits):
    # 11 codes of all ones: every stream bit set up to 11 * bits, padding bits zero
    n = 11
    got = packing.pack_codes(np.full(n, (1 << bits) - 1), bits)
    assert got.tobytes() == ((1 << (n * bits)) - 1).to_bytes((n * bits + 7) // 8, "little")


@pytest.mark.parametrize("bits", ALL_BITS)
@pytest.mark.parametrize("n", [0, 1, 9, 4099])
def test_matches_packbits_of_bit_planes(bits, n):
    rng = np.random.default_rng(17 * bits + n)
    codes = _random_codes(rng, bits, n)
    planes = (codes[:, None] >> np.arange(bits)) & 1        # (n, bits): code bit 0 first
    expected = np.packbits(planes.reshape(-1).astype(np.uint8), bitorder="little")
    np.testing.assert_array_equal(packing.pack_codes(codes, bits), expected)


# ---- round trips -----------------------------------------------------------------------------

@pytest.mark.parametrize("bits", ALL_BITS)
@pytest.mark.parametrize("n", SIZES)
def test_round_trip(bits, n):
    rng = np.random.default_rng(7919 * bits + n)
    codes = _random_codes(rng, bits, n)
    data = packing.pack_codes(codes, bits)
    assert data.size == (n * bits + 7) // 8 == packing.packed_size(n, bits)
    back = packing.unpack_codes(data, bits, n)
    assert back.dtype == np.uint8 and back.shape == (n,)
    np.testing.assert_array_equal(back, codes)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.uint16, np.int32, np.int64,
                                   np.uint64, ">i4"])
def test_any_integer_dtype_and_shape(dtype):
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 32, size=(3, 4, 5)).astype(dtype)
    data = packing.pack_codes(codes, 5)
    assert data.tobytes() == _reference(codes, 5)
    back = packing.unpack_codes(data, 5, codes.size, shape=codes.shape)
    assert back.shape == (3, 4, 5)
    np.testing.assert_array_equal(back, codes)


def test_c_order_of_non_contiguous_input():
    codes = np.arange(24, dtype=np.uint8).reshape(4, 6) % 16
    view = codes.T[::2]                                     # neither C- nor F-contiguous
    np.testing.assert_array_equal(packing.pack_codes(view, 4),
                                  packing.pack_codes(np.ascontiguousarray(view), 4))
    assert packing.pack_codes(view, 4).tobytes() == _reference(view, 4)


def test_unpack_bytes_and_longer_buffers():
    codes = np.array([5, 1, 7, 2, 0, 3], dtype=np.uint8)
    data = packing.pack_codes(codes, 3)
    np.testing.assert_array_equal(packing.unpack_codes(data.tobytes(), 3, 6), codes)
    padded = np.concatenate([data, np.full(4, 0xFF, np.uint8)])   # trailing bytes are ignored
    np.testing.assert_array_equal(packing.unpack_codes(padded, 3, 6), codes)
    np.testing.assert_array_equal(packing.unpack_codes(padded, 3, 4), codes[:4])
    assert packing.unpack_codes(b"", 3, 0, shape=(0, 5)).shape == (0, 5)


def test_unpack_shape_int_and_tuple():
    data = packing.pack_codes(np.arange(6) % 4, 2)
    assert packing.unpack_codes(data, 2, 6, shape=6).shape == (6,)
    assert packing.unpack_codes(data, 2, 6, shape=(2, 3)).shape == (2, 3)


# ---- errors ----------------------------------------------------------------------------------

@pytest.mark.parametrize("bits", [0, 9, -1, 16])
def test_bits_out_of_range(bits):
    with pytest.raises(ValueError, match="bits"):
        packing.pack_codes(np.zeros(3, np.uint8), bits)
    with pytest.raises(ValueError, match="bits"):
        packing.unpack_codes(np.zeros(3, np.uint8), bits, 1)


@pytest.mark.parametrize("bits", [4.0, "4", None, True])
def test_bits_not_an_integer(bits):
    with pytest.raises(TypeError, match="bits"):
        packing.pack_codes(np.zeros(3, np.uint8), bits)
    with pytest.raises(TypeError, match="bits"):
        packing.unpack_codes(np.zeros(3, np.uint8), bits, 1)


@pytest.mark.parametrize("bits,bad", [(1, 2), (4, 16), (6, 64), (7, 200), (4, -1), (8, 256)])
def test_codes_out_of_range(bits, bad):
    codes = np.array([0, 1, bad], dtype=np.int64)
    with pytest.raises(ValueError, match=rf"code {bad} .*bits={bits}"):
        packing.pack_codes(codes, bits)


@pytest.mark.parametrize("codes", [np.array([1.0, 2.0]), np.array([True, False]),
                                   np.array([], dtype=np.float64), ["1"]])
def test_codes_not_integers(codes):
    with pytest.raises(TypeError, match="codes must be an integer array"):
        packing.pack_codes(codes, 4)


def test_unpack_data_too_short():
    data = packing.pack_codes(np.ones(9, np.uint8), 7)              # 63 bits -> 8 bytes
    with pytest.raises(ValueError, match="data holds 7 bytes but 9 codes of 7 bits need 8"):
        packing.unpack_codes(data[:7], 7, 9)
    with pytest.raises(ValueError, match="need 1"):
        packing.unpack_codes(b"", 1, 1)


def test_unpack_data_not_uint8():
    with pytest.raises(TypeError, match="data must be a uint8 array"):
        packing.unpack_codes(np.zeros(4, np.int8), 4, 2)


@pytest.mark.parametrize("count", [-1, 2.0, None])
def test_unpack_bad_count(count):
    with pytest.raises((ValueError, TypeError), match="count"):
        packing.unpack_codes(np.zeros(4, np.uint8), 4, count)


@pytest.mark.parametrize("shape", [(2, 3), 5, (-1, -4), (2, 2.0)])
def test_unpack_shape_mismatch(shape):
    with pytest.raises(ValueError, match="shape .* count=4"):
        packing.unpack_codes(np.zeros(4, np.uint8), 4, 4, shape=shape)
