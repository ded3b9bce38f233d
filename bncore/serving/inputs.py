"""Raw prediction inputs checked and turned into the tensor a served model takes."""

from typing import Any

import numpy as np
import torch

from bncore.errors import InvalidField, PayloadTooLarge

FLOAT32_MAX = float(np.finfo(np.float32).max)


def parse_inputs(raw: Any, input_shape: tuple[int, ...], max_rows: int) -> torch.Tensor:
    """Rows shaped (N, *input_shape) of finite numbers as float32; InvalidField('inputs') otherwise."""
    if not isinstance(raw, list) or len(raw) == 0:
        raise InvalidField("inputs", f"expected a non-empty list of samples shaped {_shape(input_shape)}")
    if len(raw) > max_rows:
        raise PayloadTooLarge("inputs", f"{len(raw)} rows; at most {max_rows} per request")
    try:
        array = np.asarray(raw, dtype=np.float64)
    except (ValueError, TypeError):
        raise InvalidField(
            "inputs", f"expected numbers nested as {_shape(input_shape)}, got ragged or non-numeric rows"
        ) from None
    except OverflowError:
        raise InvalidField("inputs", "a number too large for a 64-bit float") from None
    if array.shape[1:] != input_shape:
        raise InvalidField("inputs", f"expected shape {_shape(input_shape)}, got {list(array.shape)}")
    if not np.abs(array).max() <= FLOAT32_MAX:  # also true of NaN
        _refuse_out_of_range(array)
    return torch.from_numpy(array.astype(np.float32))


def _shape(input_shape: tuple[int, ...]) -> str:
    return f"[N, {', '.join(map(str, input_shape))}]"


def _refuse_out_of_range(array: np.ndarray) -> None:
    if not np.isfinite(array).all():
        bad = np.argwhere(~np.isfinite(array))
        raise InvalidField(f"inputs[{bad[0][0]}]", "NaN or infinite values; every input must be a finite number")
    too_large = np.argwhere(np.abs(array) > FLOAT32_MAX)
    raise InvalidField(f"inputs[{too_large[0][0]}]", "values beyond the float32 range the model computes in")
