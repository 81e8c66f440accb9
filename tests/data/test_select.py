"""``where`` conditions: the syntax, what each operator means, and strictness about keys and values."""

from __future__ import annotations

import numpy as np
import pytest

from symscale.data.select import Selection, parse_condition
from symscale.errors import ConfigError, DataError

WATER = np.array([8, 1, 1])
ROW = {"charge": 0, "spin": np.int64(1), "data_id": "elytes", "source": "a/b/17", "flag": True, "tag": "0"}


def keep(*conditions: str, numbers=WATER, row=ROW) -> bool:
    return Selection(conditions).matches(numbers, (row,), "src.aselmdb", 4)


def test_parse_canonical_forms_and_spaces():
    c = parse_condition("  charge == 0 ")
    assert (c.key, c.op, c.value, c.number, c.text) == ("charge", "==", "0", 0, "charge==0")
    assert parse_condition("n_atoms<=10").op == "<=" and parse_condition("n_atoms<10").op == "<"
    assert parse_condition("data_id~^(elytes|biomolecules)$").pattern.pattern == "^(elytes|biomolecules)$"
    assert Selection(["charge==0", "spin == 1"]).texts == ["charge==0", "spin==1"]


@pytest.mark.parametrize("text, message", [
    ("charge=0", "use == for equality"),
    ("charge", "is not a condition KEY OP VALUE"),
    ("==0", "is not a condition"),
    ("charge==", "has no value after =="),
    ("spin<one", "< compares numbers, and 'one' is not one"),
    ("data_id~(", "invalid regular expression"),
    ("elements<=C,Xx", "unknown element 'Xx'"),
])
def test_parse_errors_are_one_line_config_errors(text, message):
    with pytest.raises(ConfigError, match="^--where: ") as info:
        parse_condition(text)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_numbers_compare_numerically_and_text_as_text():
    assert keep("charge==0") and keep("charge==0.0") and not keep("charge!=0")
    assert keep("spin==1") and keep("spin>=1") and not keep("spin>1") and keep("spin<2")
    assert keep("data_id==elytes") and not keep("data_id==elyte") and keep("data_id!=biomolecules")
    assert keep("flag==1") and keep("tag==0")  # a stored text "0" equals the text 0
    assert keep("tag<1")  # an ordering reads a stored number written as text


def test_regular_expressions_search_the_value_as_text():
    assert keep("data_id~^(elytes|biomolecules)$") and not keep("data_id~^bio")
    assert keep("source~/17$") and keep("charge~^0$")


def test_builtin_keys_n_atoms_and_elements():
    assert keep("n_atoms==3") and keep("n_atoms<=3") and not keep("n_atoms>3")
    assert keep("elements<=C,H,N,O") and keep("elements==H,O") and keep("elements>=O")
    assert not keep("elements<=C,H") and keep("elements<H,N,O") and not keep("elements<H,O")
    assert keep("elements>H") and not keep("elements>H,O") and keep("elements!=H")
    assert keep("elements~^H,O$")  # symbols in atomic-number order, joined by commas
    assert keep("elements<=1,8")  # atomic numbers are accepted too


def test_all_conditions_must_hold():
    assert keep("charge==0", "spin==1", "data_id~elytes")
    assert not keep("charge==0", "spin==3")
    assert Selection([]).matches(WATER, (), "s", 0) and not Selection([])


def test_a_missing_key_is_an_error_naming_source_row_and_keys():
    with pytest.raises(DataError) as info:
        keep("chrage==0")
    msg = str(info.value)
    assert msg.startswith("src.aselmdb: structure 4: where 'chrage==0': no key 'chrage' in this row (keys: ")
    assert "charge" in msg and "n_atoms" in msg and "elements" in msg


def test_an_ordering_on_text_is_an_error_naming_the_row():
    with pytest.raises(DataError, match=r"src.aselmdb: structure 4: where 'data_id>1': data_id is 'elytes', "
                                        r"not a number"):
        keep("data_id>1")


def test_keys_are_searched_in_order():
    sel = Selection(["charge==1"])
    assert sel.matches(WATER, ({"charge": 1}, {"charge": 0}), "s", 0)
    assert not sel.matches(WATER, ({"charge": None}, {"charge": 0}), "s", 0)  # None counts as absent
