"""Ground-truth accuracies for NB201 cells, loaded from a file the user supplies.

Two formats are read (the format is detected from the content, not the file name):

* CSV with a header holding ``arch_str`` and one or more numeric metric columns, as in the
  NAS-Bench-201 table ``nb201.csv`` (``index, arch_str, cifar10_test_acc, cifar100_test_acc,
  imagenet16_120_test_acc, cifar10_valid_acc, cifar10_valid_split_test_acc, isomorphism_key``).
* NASLib's zero-cost JSON (NAS-Bench-Suite-Zero, ``zc_nasbench201.json``): ``{dataset: {"(e12,
  e13, e14, e23, e24, e34)": {"val_accuracy": ..., proxy: {"score": ...}, ...}}}`` with NASLib's op
  indices. Its validation accuracies become metrics ``<dataset>_val_acc`` (e.g.
  ``cifar10_val_acc``); its proxy scores are available through :meth:`GroundTruth.reference_scores`.

The benchmark data itself is never bundled: pass a path or set ``RZNAS_TRUTH``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path

from tools.spaces import ArchitectureError
from tools.spaces.nb201 import parse, to_string

ENV_VAR = "RZNAS_TRUTH"
#: Columns of the NB201 CSV this project documents; any numeric column besides these also loads.
CSV_COLUMNS = (
    "index",
    "arch_str",
    "cifar10_test_acc",
    "cifar100_test_acc",
    "imagenet16_120_test_acc",
    "cifar10_valid_acc",
    "cifar10_valid_split_test_acc",
    "isomorphism_key",
)
_TEXT_COLUMNS = {"index", "arch_str", "isomorphism_key"}
#: NASLib's op index order for NB201 (not ours): 0 skip, 1 none, 2 conv3x3, 3 conv1x1, 4 pool.
NASLIB_OPS = ("skip_connect", "none", "nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3")
_NASLIB_KEY = re.compile(r"^\(\s*([0-4])\s*(?:,\s*([0-4])\s*){5}\)$")
_EXPECTED = (
    "expected a CSV with a header row containing 'arch_str' and numeric metric columns "
    f"(the NB201 table: {', '.join(CSV_COLUMNS)}), or NASLib's zc_nasbench201.json "
    "({dataset: {'(e12, e13, e14, e23, e24, e34)': {'val_accuracy': ..., proxy: {'score': ...}}}})"
)


class TruthError(ValueError):
    """A ground-truth file that is missing or unreadable, or a query it cannot answer."""


def naslib_key_to_arch(key: str) -> str:
    """Convert a NASLib op-index tuple string such as ``"(0, 2, 3, 2, 3, 1)"`` to NB201 notation."""
    if not _NASLIB_KEY.match(key.strip()):
        raise ValueError(
            f"not a NASLib NB201 key: {key!r}; expected six op indices 0-4, '(a, b, c, d, e, f)'"
        )
    e12, e13, e14, e23, e24, e34 = (NASLIB_OPS[int(c)] for c in re.findall(r"[0-4]", key))
    # NASLib orders edges by source node; the NB201 string orders them by target node.
    return to_string((e12, e13, e23, e14, e24, e34))


def arch_to_naslib_key(arch: str) -> str:
    """Convert any NB201 spelling to NASLib's op-index tuple string."""
    e12, e13, e23, e14, e24, e34 = parse(arch)
    return "(" + ", ".join(str(NASLIB_OPS.index(op)) for op in (e12, e13, e14, e23, e24, e34)) + ")"


class GroundTruth:
    """Per-cell metrics (and NASLib's reference proxy scores) keyed by standard NB201 string."""

    def __init__(
        self,
        path: Path,
        rows: dict[str, dict[str, float]],
        metrics: list[str],
        *,
        isomorphism_keys: dict[str, str] | None = None,
        scores: dict[str, dict[str, dict[str, float]]] | None = None,
        source: str = "csv",
    ) -> None:
        """Hold loaded data; use :func:`load_truth` rather than calling this directly."""
        self.path = path
        self.source = source
        self._rows = rows
        self._metrics = metrics
        self._iso = isomorphism_keys or {}
        self._scores = scores or {}

    @property
    def metrics(self) -> list[str]:
        """Return the metric names :meth:`query` accepts, in file order."""
        return list(self._metrics)

    @property
    def default_metric(self) -> str:
        """Return the metric :meth:`query` uses by default (CIFAR-10 validation if present)."""
        for name in ("cifar10_valid_acc", "cifar10_val_acc"):
            if name in self._metrics:
                return name
        return self._metrics[0]

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, arch: object) -> bool:
        try:
            return to_string(parse(arch)) in self._rows  # type: ignore[arg-type]
        except ArchitectureError:
            return False

    def archs(self) -> list[str]:
        """Return every cell with a row, in standard spelling and file order."""
        return list(self._rows)

    def query(self, arch: str, metric: str | None = None) -> float | None:
        """Return ``metric`` for ``arch`` (any NB201 spelling); None when the file lacks the cell.

        Raises:
            ArchitectureError: ``arch`` is not an NB201 cell.
            TruthError: ``metric`` is not one of :attr:`metrics`.

        """
        metric = metric or self.default_metric
        if metric not in self._metrics:
            raise TruthError(
                f"{self.path}: no metric {metric!r}; this file has: {', '.join(self._metrics)}"
            )
        row = self._rows.get(to_string(parse(arch)))
        return None if row is None else row.get(metric)

    def items(self, metric: str | None = None) -> Iterator[tuple[str, float]]:
        """Yield ``(arch, value)`` for every cell that has ``metric``."""
        metric = metric or self.default_metric
        if metric not in self._metrics:
            raise TruthError(
                f"{self.path}: no metric {metric!r}; this file has: {', '.join(self._metrics)}"
            )
        for arch, row in self._rows.items():
            if metric in row:
                yield arch, row[metric]

    def isomorphism_key(self, arch: str) -> str | None:
        """Return the file's ``isomorphism_key`` for ``arch``, or None when the file has none."""
        return self._iso.get(to_string(parse(arch)))

    def reference_datasets(self) -> list[str]:
        """Return the datasets with reference proxy scores (NASLib files only; else empty)."""
        return list(self._scores)

    def reference_scores(self, dataset: str) -> dict[str, dict[str, float]]:
        """Return NASLib's proxy scores for ``dataset`` as ``{arch: {proxy: score}}``.

        Raises:
            TruthError: the file has no scores for ``dataset`` (CSV files have none at all).

        """
        for name, table in self._scores.items():
            if name.lower() == dataset.lower():
                return {arch: dict(scores) for arch, scores in table.items()}
        have = ", ".join(self._scores) or "none (only NASLib zero-cost JSON files carry them)"
        raise TruthError(
            f"{self.path}: no reference proxy scores for {dataset!r}; available: {have}"
        )


def load_truth(path: str | Path | None = None) -> GroundTruth:
    """Load ground truth from ``path``, or from ``$RZNAS_TRUTH`` when ``path`` is None.

    Raises:
        TruthError: no path was given, or the file is missing, empty, not UTF-8, or not one of
            the two supported formats. The message names the file and the expected format.

    """
    if path is None or str(path).strip() == "":
        env = os.environ.get(ENV_VAR, "").strip()
        if not env:
            raise TruthError(
                f"no ground-truth file: pass a path (e.g. --truth nb201.csv) or set {ENV_VAR}; "
                f"{_EXPECTED}"
            )
        path = env
    if "\x00" in str(path):  # the OS refuses such a name with a ValueError, not "not found"
        raise TruthError(f"{str(path)!r}: a file name cannot contain NUL bytes; {_EXPECTED}")
    file = Path(path).expanduser()
    if not file.exists():
        raise TruthError(f"{file}: ground-truth file not found; {_EXPECTED}")
    if not file.is_file():
        raise TruthError(f"{file}: is not a regular file; {_EXPECTED}")
    try:
        text = file.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TruthError(
            f"{file}: not UTF-8 text (bad byte at offset {exc.start}); {_EXPECTED}"
        ) from None
    except OSError as exc:
        raise TruthError(f"{file}: cannot read ({exc.strerror}); {_EXPECTED}") from None
    if "\x00" in text:
        raise TruthError(f"{file}: contains NUL bytes, so it is binary, not text; {_EXPECTED}")
    stripped = text.lstrip()
    if not stripped:
        raise TruthError(f"{file}: file is empty; {_EXPECTED}")
    if stripped.startswith("{"):
        return _load_naslib_json(file, text)
    return _load_csv(file, text)


def _float(value: str) -> float | None:
    value = value.strip()
    if not value or value.lower() in {"nan", "none", "null"}:
        return None
    number = float(value)
    return None if math.isnan(number) else number


def _load_csv(file: Path, text: str) -> GroundTruth:
    reader = csv.reader(io.StringIO(text))
    try:
        header = [h.strip() for h in next(reader)]
    except csv.Error as exc:
        raise TruthError(f"{file}: not a readable CSV ({exc}); {_EXPECTED}") from None
    if "arch_str" not in header:
        raise TruthError(
            f"{file}: header has no 'arch_str' column (found {', '.join(header)[:200]!r}); "
            f"{_EXPECTED}"
        )
    metrics = [h for h in header if h and h not in _TEXT_COLUMNS]
    if not metrics:
        raise TruthError(
            f"{file}: no metric columns besides {', '.join(sorted(_TEXT_COLUMNS))}; {_EXPECTED}"
        )
    arch_col = header.index("arch_str")
    iso_col = header.index("isomorphism_key") if "isomorphism_key" in header else None
    metric_cols = [(name, header.index(name)) for name in metrics]
    rows: dict[str, dict[str, float]] = {}
    iso: dict[str, str] = {}
    try:
        for record in reader:
            if not record or all(not cell.strip() for cell in record):
                continue
            line = reader.line_num
            if len(record) != len(header):
                raise TruthError(
                    f"{file}, line {line}: {len(record)} fields, header has {len(header)}"
                )
            try:
                arch = to_string(parse(record[arch_col]))
            except ArchitectureError as exc:
                raise TruthError(f"{file}, line {line}: bad arch_str: {exc}") from None
            if arch in rows:
                raise TruthError(f"{file}, line {line}: duplicate row for {arch}")
            values: dict[str, float] = {}
            for name, col in metric_cols:
                try:
                    number = _float(record[col])
                except ValueError:
                    raise TruthError(
                        f"{file}, line {line}: column {name!r} holds {record[col][:40]!r}, "
                        "not a number"
                    ) from None
                if number is not None:
                    values[name] = number
            rows[arch] = values
            if iso_col is not None:
                iso[arch] = record[iso_col]
    except csv.Error as exc:
        raise TruthError(f"{file}: not a readable CSV ({exc}); {_EXPECTED}") from None
    if not rows:
        raise TruthError(f"{file}: header but no data rows; {_EXPECTED}")
    return GroundTruth(file, rows, metrics, isomorphism_keys=iso, source="csv")


def _metric_name(dataset: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", dataset.lower()).strip("_") + "_val_acc"


def _load_naslib_json(file: Path, text: str) -> GroundTruth:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TruthError(
            f"{file}: invalid JSON at line {exc.lineno}: {exc.msg}; {_EXPECTED}"
        ) from None
    if (
        not isinstance(data, dict)
        or not data
        or not all(isinstance(v, dict) for v in data.values())
    ):
        raise TruthError(
            f"{file}: JSON is not a {{dataset: {{cell: record}}}} mapping; {_EXPECTED}"
        )
    rows: dict[str, dict[str, float]] = {}
    scores: dict[str, dict[str, dict[str, float]]] = {}
    metrics: list[str] = []
    for dataset, cells in data.items():
        metric = _metric_name(dataset)
        metrics.append(metric)
        table = scores.setdefault(dataset, {})
        for key, record in cells.items():
            try:
                arch = naslib_key_to_arch(key)
            except ValueError as exc:
                raise TruthError(f"{file}: dataset {dataset!r}: {exc}") from None
            if not isinstance(record, dict):
                raise TruthError(
                    f"{file}: dataset {dataset!r}, cell {key}: record is not an object"
                )
            accuracy = record.get("val_accuracy")
            if isinstance(accuracy, (int, float)) and not isinstance(accuracy, bool):
                rows.setdefault(arch, {})[metric] = float(accuracy)
            table[arch] = {
                name: float(value["score"])
                for name, value in record.items()
                if isinstance(value, dict) and isinstance(value.get("score"), (int, float))
            }
    if not rows:
        raise TruthError(f"{file}: no cell has a numeric 'val_accuracy'; {_EXPECTED}")
    return GroundTruth(file, rows, metrics, scores=scores, source="naslib-json")
