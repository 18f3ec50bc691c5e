"""Checks for JSON a user hands the app (a saved trace, a benchmark report): each value's type and range, so a
malformed file is refused with a message naming the field, and nothing computed from an accepted one can fail."""
from __future__ import annotations

import json
import math
from typing import Any, Callable


def is_int(v: Any) -> bool:
    """An int a browser can hold exactly (|v| <= 2**53), not a bool."""
    return isinstance(v, int) and not isinstance(v, bool) and abs(v) <= 2**53


def is_number(v: Any) -> bool:
    return is_int(v) or (isinstance(v, float) and math.isfinite(v))


def list_of(test: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, list) and all(test(x) for x in v)


def or_null(test: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or test(v)


Check = tuple[str, Callable[[Any], bool]]  # (what a value must be, as messages say it; the test)
COUNT: Check = ("an integer >= 0", lambda v: is_int(v) and v >= 0)
AMOUNT: Check = ("a number >= 0", lambda v: is_number(v) and v >= 0)
AMOUNT_OR_NULL: Check = ("a number >= 0 or null", or_null(AMOUNT[1]))
TEXT: Check = ("a string", lambda v: isinstance(v, str))
TEXT_OR_NULL: Check = ("a string or null", or_null(lambda v: isinstance(v, str)))
FLAG: Check = ("true or false", lambda v: isinstance(v, bool))
INTS: Check = ("a list of integers", list_of(is_int))
NUMBERS: Check = ("a list of numbers", list_of(is_number))
OBJECT: Check = ("an object", lambda v: isinstance(v, dict))
OBJECTS: Check = ("a list of objects", list_of(lambda v: isinstance(v, dict)))
OBJECT_OR_NULL: Check = ("an object or null", or_null(lambda v: isinstance(v, dict)))

Fields = dict[str, tuple[Check, bool]]  # field -> (check, required); optional fields may be absent, never mistyped


def check_fields(record: dict[str, Any], fields: Fields, where: str, error: type[ValueError]) -> None:
    """Raises ``error`` naming ``where`` and the field when a required field is missing or any is mistyped."""
    for name, ((what, test), required) in fields.items():
        if name not in record:
            if required:
                raise error(f"{where} lacks {name}")
            continue
        if not test(record[name]):
            raise error(f"{where}: {name} must be {what}, got {shown(record[name])}")


def shown(value: Any) -> str:
    """A value as a message quotes it: its JSON, cut to 40 characters."""
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def refuse_constant(name: str) -> Any:
    """``json.loads``' parse_constant: NaN and Infinity are not numbers a file of ours holds."""
    raise ValueError(f"{name} is not a number this file may hold")
