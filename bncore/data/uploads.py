"""Uploaded dataset files (CSV or NPZ) read into samples and labels, or refused with the reason.

Every refusal is an InvalidField naming the form field at fault (`file` or `label_column`), so a
user learns which row, column or array to fix. NPZ files are read with `allow_pickle=False`.
"""

import csv
import io
import math
import zipfile
from dataclasses import dataclass
from pathlib import PurePath
from typing import Literal

import numpy as np

from bncore.errors import InvalidField, PayloadTooLarge

Format = Literal["csv", "npz"]
MIN_SAMPLES = 10
MAX_CLASSES = 10_000  # ModelSpec.num_classes allows no more
MAX_DIMENSION = 4096  # ModelSpec.input_shape allows no longer side
# An NPZ is a zip archive: a small file may inflate to far more; this many times the upload limit at most.
MAX_INFLATION = 4


@dataclass(frozen=True)
class ParsedDataset:
    format: Format
    samples: np.ndarray  # (N, *input_shape) float32, all finite
    labels: np.ndarray  # (N,) int64 in [0, num_classes), every class present
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.samples.shape[1:])


@dataclass(frozen=True)
class UploadLimits:
    """Named as the settings they come from: `from_settings(UploadLimits, settings)`."""

    max_upload_bytes: int
    max_dataset_features: int


def detect_format(filename: str | None) -> Format:
    suffix = PurePath(filename or "").suffix.lower()
    if suffix not in {".csv", ".npz"}:
        raise InvalidField("file", f"expected a .csv or .npz file, got '{filename or 'no file name'}'")
    return "csv" if suffix == ".csv" else "npz"


def parse_upload(content: bytes, filename: str | None, label_column: str | None, limits: UploadLimits) -> ParsedDataset:
    """The dataset in `content`, validated; the format follows the file name's extension."""
    file_format = detect_format(filename)
    if len(content) > limits.max_upload_bytes:
        raise PayloadTooLarge("file", f"the file is larger than this service's limit of {limits.max_upload_bytes:,} bytes")
    if not content:
        raise InvalidField("file", "the file is empty")
    if file_format == "csv":
        samples, labels = _read_csv(content, label_column, limits)
    else:
        if label_column is not None:
            raise InvalidField("label_column", "only for CSV files: an NPZ has its labels in array `y`")
        samples, labels = _read_npz(content, limits)
    return _dataset(file_format, samples, labels)


def _number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def _read_csv(content: bytes, label_column: str | None, limits: UploadLimits) -> tuple[np.ndarray, np.ndarray]:
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise InvalidField("file", f"not UTF-8 text (byte {error.start}): is it really a CSV file?") from None
    try:
        rows = [
            (number, [cell.strip() for cell in row]) for number, row in enumerate(csv.reader(io.StringIO(text), strict=True), 1)
        ]
    except csv.Error as error:
        raise InvalidField("file", f"not a readable CSV file: {error}") from None
    rows = [(number, row) for number, row in rows if any(row)]
    if not rows:
        raise InvalidField("file", "the CSV file has no rows")
    # A first row with any cell that is not a number is a header.
    header = rows[0][1] if any(_number(cell) is None for cell in rows[0][1]) else None
    data = rows[1:] if header is not None else rows
    width = len(rows[0][1])
    if width < 2:
        raise InvalidField("file", "a CSV needs at least two columns: one or more features, then the label")
    if width - 1 > min(limits.max_dataset_features, MAX_DIMENSION):
        raise InvalidField("file", f"{width - 1:,} feature columns; at most {min(limits.max_dataset_features, MAX_DIMENSION):,}")
    for number, row in data:
        if len(row) != width:
            raise InvalidField("file", f"line {number} has {len(row)} columns, the first row has {width}")
    label_index = _label_index(label_column, header, width)
    cells = [row for _, row in data]
    try:
        table = np.array(cells, dtype=np.float64).reshape(len(cells), width)
    except ValueError:
        raise InvalidField("file", _first_non_number(data, header)) from None
    _enough(len(table))
    with np.errstate(over="ignore"):
        finite = np.isfinite(table.astype(np.float32))
    if not finite.all():
        number, column = _first(~finite, data)
        raise InvalidField("file", f"line {number}, column {_column_name(column, header)}: not a finite float32 number")
    features = np.delete(table, label_index, axis=1)
    return features, _labels(table[:, label_index], f"label column {_column_name(label_index, header)}", data)


def _label_index(label_column: str | None, header: list[str] | None, width: int) -> int:
    if label_column is None:
        return width - 1
    if header is not None and label_column in header:
        return header.index(label_column)
    if label_column.isdigit() and int(label_column) < width:
        return int(label_column)
    named = f"a column name of the header {header} or " if header is not None else ""
    raise InvalidField("label_column", f"'{label_column}' is not {named}a 0-based column index below {width}")


def _column_name(index: int, header: list[str] | None) -> str:
    return f"{index} ('{header[index]}')" if header is not None else str(index)


def _first_non_number(data: list[tuple[int, list[str]]], header: list[str] | None) -> str:
    for number, row in data:
        for index, cell in enumerate(row):
            if _number(cell) is None:
                return f"line {number}, column {_column_name(index, header)}: '{cell[:40]}' is not a number"
    return "not a table of numbers"


def _first(mask: np.ndarray, data: list[tuple[int, list[str]]]) -> tuple[int, int]:
    """The line number and column of the first True cell of a (rows, columns) mask."""
    row, column = np.argwhere(mask)[0]
    return data[row][0], int(column)


def _labels(values: np.ndarray, what: str, data: list[tuple[int, list[str]]] | None = None) -> np.ndarray:
    """Whole numbers 0..K-1 with every class present, as int64."""

    def where(index: int) -> str:
        return f"line {data[index][0]}" if data is not None else f"y[{index}]"

    fractional = np.flatnonzero(values != np.round(values))
    if len(fractional):
        raise InvalidField("file", f"{what}: {where(fractional[0])} has {values[fractional[0]]:g}; labels are whole numbers")
    if values.min() < 0:
        index = int(np.argmin(values))
        raise InvalidField("file", f"{what}: {where(index)} has {values[index]:g}; labels are 0..K-1")
    if values.max() >= MAX_CLASSES:
        raise InvalidField("file", f"{what}: labels go up to {values.max():g}; at most {MAX_CLASSES} classes")
    labels = values.astype(np.int64)
    present = np.unique(labels)
    if len(present) < 2:
        raise InvalidField("file", f"{what}: every sample has label {present[0]}; at least 2 classes are needed")
    missing = sorted(set(range(int(present[-1]) + 1)) - set(present.tolist()))
    if missing:
        raise InvalidField(
            "file",
            f"{what}: labels are 0..K-1 with every class present, but {missing[:10]} never occur"
            + (" (labels counted from 1? subtract 1)" if missing == [0] else ""),
        )
    return labels


def _read_npz(content: bytes, limits: UploadLimits) -> tuple[np.ndarray, np.ndarray]:
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            inflated = sum(member.file_size for member in archive.infolist())
    except (zipfile.BadZipFile, ValueError, OSError):
        raise InvalidField("file", "not a valid .npz file (an NPZ is a zip archive of .npy arrays)") from None
    if inflated > MAX_INFLATION * limits.max_upload_bytes:
        raise PayloadTooLarge(
            "file", f"the archive inflates to {inflated:,} bytes; at most {MAX_INFLATION * limits.max_upload_bytes:,}"
        )
    try:
        with np.load(io.BytesIO(content), allow_pickle=False) as arrays:
            missing = [key for key in ("x", "y") if key not in arrays.files]
            if missing:
                raise InvalidField("file", f"an NPZ needs arrays `x` and `y`; it has {arrays.files} and lacks {missing}")
            x, y = arrays["x"], arrays["y"]
    except InvalidField:
        raise
    except ValueError as error:
        if "allow_pickle" in str(error):
            raise InvalidField("file", "the arrays hold pickled Python objects; only numeric arrays are read") from None
        raise InvalidField("file", f"not a valid .npz file: {error}") from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as error:
        raise InvalidField("file", f"not a valid .npz file: {error}") from None
    for key, array in (("x", x), ("y", y)):
        if array.dtype.kind not in "biuf":
            raise InvalidField("file", f"array `{key}` has dtype {array.dtype}; numbers (bool, int or float) only")
    if x.ndim == 3:
        x = x[:, None]  # (N, H, W): one channel of images
    if x.ndim not in (2, 4):
        raise InvalidField("file", f"`x` is shaped {x.shape}; expected (N, features), (N, H, W) or (N, C, H, W)")
    if y.shape != (len(x),):
        raise InvalidField("file", f"`y` is shaped {y.shape}; expected ({len(x)},), one label per sample of `x`")
    if max(x.shape[1:]) > MAX_DIMENSION or math.prod(x.shape[1:]) > limits.max_dataset_features:
        raise InvalidField(
            "file",
            f"samples shaped {list(x.shape[1:])}; "
            f"at most {limits.max_dataset_features:,} values and {MAX_DIMENSION} along each side",
        )
    _enough(len(x))
    with np.errstate(over="ignore"):
        samples = x.astype(np.float32)
    if not np.isfinite(samples).all():
        index = int(np.argwhere(~np.isfinite(samples.reshape(len(samples), -1)))[0][0])
        raise InvalidField("file", f"x[{index}] holds NaN or infinity (or a value too large for float32)")
    return samples, _labels(y.astype(np.float64), "`y`")


def _enough(count: int) -> None:
    if count < MIN_SAMPLES:
        raise InvalidField("file", f"{count} samples; at least {MIN_SAMPLES} are needed to train and validate")


def _dataset(file_format: Format, samples: np.ndarray, labels: np.ndarray) -> ParsedDataset:
    return ParsedDataset(
        format=file_format,
        samples=np.ascontiguousarray(samples, dtype=np.float32),
        labels=np.ascontiguousarray(labels, dtype=np.int64),
        num_classes=int(labels.max()) + 1,
    )
