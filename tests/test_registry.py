"""The registry: names, grammar, equality of formats and the property table."""
import pandas as pd
import pytest

import formats


def test_every_name_builds_and_keeps_its_name():
    for name in formats.names():
        assert formats.get(name).name == name


@pytest.mark.parametrize("a,b", [("fp8_e4m3", "e4m3fn"), ("bf16", "e8m7"), ("fp16", "e5m10"),
                                 ("fp8_e4m3b11fnuz", "e4m3fnuz_b11"), ("int8", "fix8_0"),
                                 ("fp4_e2m1", "e2m1finite")])
def test_same_format_under_two_names_is_equal(a, b):
    assert formats.get(a) == formats.get(b)
    assert hash(formats.get(a)) == hash(formats.get(b))


@pytest.mark.parametrize("a,b", [("fp8_e4m3", "e4m3"), ("fp8_e4m3", "e4m3fnuz"),
                                 ("fp16", "fp16_ftz"), ("int8", "uint8"), ("int8", "fix8_1")])
def test_different_formats_are_not_equal(a, b):
    assert formats.get(a) != formats.get(b)


@pytest.mark.parametrize("name,ebits,mbits,bias,max_", [
    ("e5m7", 5, 7, 15, (2 - 2 ** -7) * 2 ** 15),          # IEEE-style: top exponent reserved
    ("e3m2fn", 3, 2, 3, (2 - 2 * 2 ** -2) * 2 ** 4),      # fn: only the all-ones code is NaN
    ("e4m3fnuz", 4, 3, 8, (2 - 2 ** -3) * 2 ** 7),        # fnuz: default bias 2**(e-1)
    ("e2m3finite", 2, 3, 1, (2 - 2 ** -3) * 2 ** 2),      # OCP fp6_e2m3, max 7.5
    ("e5m2_b-3", 5, 2, -3, (2 - 2 ** -2) * 2 ** 33),
])
def test_grammar_builds_the_shape_it_names(name, ebits, mbits, bias, max_):
    f = formats.get(name)
    assert (f.ebits, f.mbits, f.bias, f.max) == (ebits, mbits, bias, max_)


def test_table_takes_one_name_and_refuses_scaled_formats():
    assert list(formats.table("fp16")["name"]) == ["fp16"]
    assert list(formats.table(["posit8_0", "int4"])["name"]) == ["posit8_0", "int4"]
    with pytest.raises(TypeError, match="mxfp4 is a scaled format"):
        formats.table(["fp16", "mxfp4"])


def test_table_has_one_row_per_named_format_with_integer_columns():
    table = formats.table()
    assert list(table["name"]) == formats.names()
    for column in ("ebits", "mbits", "bias", "frac_bits"):
        assert table[column].dtype == pd.Int64Dtype()
    row = table.set_index("name").loc["fp8_e4m3"]
    assert (row["max"], row["min_normal"], row["n_finite"]) == (448.0, 2.0 ** -6, 253)
