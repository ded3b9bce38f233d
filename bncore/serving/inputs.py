"""Raw prediction inputs checked and turned into the tensor a served model takes."""

import functools
import math
from typing import Annotated, Any

import numpy as np
import torch
from pydantic import Field, Strict, TypeAdapter, ValidationError

from bncore.errors import InvalidField, PayloadTooLarge

FLOAT32_MAX = float(np.finfo(np.float32).max)


def parse_inputs(raw: Any, input_shape: tuple[int, ...], max_rows: int) -> torch.Tensor:
    """Rows shaped (N, *input_shape) of finite numbers as float32; InvalidField('inputs') otherwise."""
    if not isinstance(raw, list) or len(raw) == 0:
        raise InvalidField("inputs", f"expected a non-empty list of samples shaped {_shape(input_shape)}")
    if len(raw) > max_rows:
        raise PayloadTooLarge("inputs", f"{len(raw)} rows; at most {max_rows} per request")
    _refuse_non_numbers(raw, 1 + len(input_shape))
    return numbers_as_inputs(raw, input_shape)


def numbers_as_inputs(raw: list[Any], input_shape: tuple[int, ...], within_float32: bool = False) -> torch.Tensor:
    """`parse_inputs` of rows already known to be a non-empty list, not too long, of nothing but numbers
    (`within_float32`: finite numbers within float32's range, as `nested_numbers(depth, within_float32=True)` takes)."""
    try:
        array = np.asarray(raw, dtype=np.float64)
    except (ValueError, TypeError):
        raise InvalidField("inputs", f"expected numbers nested as {_shape(input_shape)}, got ragged rows") from None
    except OverflowError:
        raise InvalidField("inputs", "a number too large for a 64-bit float") from None
    if array.shape[1:] != input_shape:
        array = _flat_rows_reshaped(array, input_shape)
    if not within_float32 and not np.abs(array).max() <= FLOAT32_MAX:  # also true of NaN
        _refuse_out_of_range(array)
    return torch.from_numpy(array.astype(np.float32))


def nested_numbers(depth: int, within_float32: bool = False) -> Any:
    """The type of lists `depth` deep of JSON numbers: strict, so "1.5", true and null are refused rather than converted.

    `within_float32`: only finite numbers float32 can hold (NaN fails both bounds), checked as they are parsed.
    """
    kind: Any = Annotated[float, Strict()]
    if within_float32:
        kind = Annotated[kind, Field(ge=-FLOAT32_MAX, le=FLOAT32_MAX)]
    for _ in range(depth):
        kind = list[kind]
    return kind


@functools.cache
def _nested_numbers(depth: int) -> TypeAdapter[Any]:
    return TypeAdapter(nested_numbers(depth))


def _refuse_non_numbers(raw: list[Any], depth: int) -> None:
    """InvalidField naming the row and column of the first value that is not a number, as job specs are refused.

    A list where a number belongs, or the reverse, is a shape error, and an integer too large for a
    float a range error: the caller explains those.
    """
    try:
        _nested_numbers(depth).validate_python(raw)
    except ValidationError as error:
        for problem in error.errors(include_url=False):
            value = problem["input"]
            if problem["type"] == "float_type" and (value is None or isinstance(value, (bool, str, dict))):
                where = "".join(f"[{index}]" for index in problem["loc"])
                raise InvalidField(f"inputs{where}", f"expected a number, got {_json_kind(value)}") from None


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return "a string" if isinstance(value, str) else "an object"


def _shape(input_shape: tuple[int, ...]) -> str:
    shaped = f"[N, {', '.join(map(str, input_shape))}]"
    return shaped if len(input_shape) == 1 else f"{shaped} or flat [N, {math.prod(input_shape)}]"


def _flat_rows_reshaped(array: np.ndarray, input_shape: tuple[int, ...]) -> np.ndarray:
    """An image model also takes each sample as one flat row of its C·H·W values, in C, H, W order."""
    if array.ndim == 2 and array.shape[1] == math.prod(input_shape):
        return array.reshape(len(array), *input_shape)
    raise InvalidField("inputs", f"expected shape {_shape(input_shape)}, got {list(array.shape)}")


def _refuse_out_of_range(array: np.ndarray) -> None:
    if not np.isfinite(array).all():
        bad = np.argwhere(~np.isfinite(array))
        raise InvalidField(f"inputs[{bad[0][0]}]", "NaN or infinite values; every input must be a finite number")
    too_large = np.argwhere(np.abs(array) > FLOAT32_MAX)
    raise InvalidField(f"inputs[{too_large[0][0]}]", "values beyond the float32 range the model computes in")
