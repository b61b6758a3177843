"""CSV files as a source (:class:`CsvSource`): numeric features, one row per item, an optional
header and a label column to drop; parsed once into a temporary float32 file.
"""
from __future__ import annotations

import csv
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Optional, Tuple

import numpy as np

from .arrays import read_rows
from .sources import F32_MAX, SKIP_HINT, Block, Source, UserDataError, _safe_name

# ---- CSV -------------------------------------------------------------------------------------

def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _cell_ok(text: str) -> bool:
    """A number that float32 holds: not NaN, not infinite, not beyond float32's range."""
    try:
        return abs(float(text)) <= F32_MAX  # False for NaN
    except ValueError:
        return False


class CsvSource(Source):
    """A CSV file of numeric features, one row per item (see the module doc).

    ``header``: ``None`` detects it (the first row is a header when none of its cells is a number);
    ``label_column``: a column name (needs a header) or a 0-based index (negative counts from the
    end), dropped before scoring, its cells not checked. Delimiter: sniffed among ``, ; tab |``.
    Rows are reported as the file's line numbers (1-based, the header is line 1).
    """

    kind = "CSV file"
    per_channel = False

    def __init__(self, path, label_column=None, header: Optional[bool] = None):
        p = Path(path)
        self.path, self.name, self.fname = str(p), _safe_name(p.stem), p.name
        try:
            with open(p, newline="", encoding="utf-8-sig") as f:
                sample = f.read(1 << 16)
        except (OSError, UnicodeDecodeError) as e:
            raise UserDataError(f"{p.name}: cannot be read as text ({e})") from None
        try:
            self.dialect = csv.Sniffer().sniff(sample, delimiters=",;\t|")
        except csv.Error:
            self.dialect = csv.excel
        with open(p, newline="", encoding="utf-8-sig") as f:
            first = next((r for r in self._rows(csv.reader(f, self.dialect)) if any(c.strip() for c in r)), None)
        if first is None:
            raise UserDataError(f"{p.name} has no rows")
        self.n_cols = len(first)
        auto = header is None
        if auto:
            header = not any(_is_number(c) for c in first) or (isinstance(label_column, str) and label_column in first)
        self.header = bool(header)
        self.columns = [c.strip() for c in first] if self.header else [str(j) for j in range(self.n_cols)]
        self.header_how = ("detected (no number in the first row)" if auto and self.header
                           else "none detected (the first row has numbers)" if auto else "yes" if self.header else "no")
        drop = None
        if label_column is not None:
            lc = str(label_column).strip()
            if self.header and lc in self.columns:
                drop = self.columns.index(lc)
            elif re.fullmatch(r"-?\d+", lc):
                j = int(lc)
                if not -self.n_cols <= j < self.n_cols:
                    raise UserDataError(f"{p.name}: label column {j} is out of range; the file has {self.n_cols} columns")
                drop = j % self.n_cols
            else:
                have = f"columns: {', '.join(self.columns[:12])}" if self.header else "the file has no header"
                raise UserDataError(f"{p.name}: no column {lc!r} to use as the label column ({have}); "
                                    "give a column name or a 0-based index")
        self.label_column = None if drop is None else self.columns[drop]
        self.keep = [j for j in range(self.n_cols) if j != drop]
        if not self.keep:
            raise UserDataError(f"{p.name}: no feature columns left after dropping the label column")
        self.item_shape = (len(self.keep),)
        self._tmpdir = tempfile.mkdtemp(prefix="sbn-csv-")
        self._cache = Path(self._tmpdir) / "rows.f32"
        self.n_items = None
        with open(p, "rb") as f:  # for the progress bar: a cheap count of lines
            self.n_lines = sum(buf.count(b"\n") for buf in iter(lambda: f.read(1 << 22), b""))

    def info(self) -> dict:
        d = super().info()
        d.update(n_items=self.n_items, n_columns=self.n_cols, header=self.header_how,
                 label_column=self.label_column, feature_columns=len(self.keep),
                 delimiter=repr(self.dialect.delimiter))
        return d

    def _cell_error(self, line: int, row_no: int, j: int, cell: str) -> Tuple[str, str]:
        col = f"column {j + 1} ({self.columns[j]!r})" if self.header else f"column {j + 1}"
        where = f"{self.fname} line {line} (data row {row_no}), {col}"
        if not cell.strip():
            return "empty cell", f"{where}: empty cell (missing value); fill or drop missing values, or {SKIP_HINT}"
        v = float(cell) if _is_number(cell) else None
        if v is None:
            return "non-numeric cell", (f"{where}: {cell!r} is not a number; drop the column (--label-column for one "
                                        f"label column) or {SKIP_HINT}")
        what = "NaN" if np.isnan(v) else "infinite value" if np.isinf(v) else "value beyond float32's range"
        return what, f"{where}: {what} ({cell.strip()[:40]!r}); remove, fill or rescale such values, or {SKIP_HINT}"

    def _rows(self, reader):
        """The reader's rows; a file that is not UTF-8 text or not CSV is one clear error."""
        try:
            yield from reader
        except UnicodeDecodeError as e:
            raise UserDataError(f"{self.fname} line {reader.line_num + 1}: not UTF-8 text ({e.reason}); "
                                "save the file as UTF-8") from None
        except csv.Error as e:
            raise UserDataError(f"{self.fname} line {reader.line_num}: not readable as CSV ({e})") from None

    def blocks(self, block_items: int) -> Iterator[Block]:
        rows, bad, n_good, row_no = [], [], 0, 0
        keep, n_cols = self.keep, self.n_cols
        with open(self.path, newline="", encoding="utf-8-sig") as f, open(self._cache, "wb") as cache:
            reader = csv.reader(f, self.dialect)
            skip_header = self.header
            for row in self._rows(reader):
                if not any(c.strip() for c in row):
                    continue  # blank line
                if skip_header:
                    skip_header = False
                    continue
                row_no += 1
                line = reader.line_num
                if len(row) != n_cols:
                    bad.append((f"line {line}", "wrong number of cells",
                                f"{self.fname} line {line} (data row {row_no}): {len(row)} cells, expected {n_cols} "
                                f"as in the first row; fix the row or {SKIP_HINT}"))
                    continue
                try:
                    vals = [float(row[j]) for j in keep]
                    ok = all(abs(v) <= F32_MAX for v in vals)  # False for NaN, +-inf and beyond float32
                except ValueError:
                    ok = False
                if not ok:
                    j = next(j for j in keep if not _cell_ok(row[j]))
                    reason, msg = self._cell_error(line, row_no, j, row[j])
                    bad.append((f"line {line}", reason, msg))
                    continue
                rows.append(vals)
                if len(rows) == block_items:
                    x = np.array(rows, dtype=np.float32)
                    cache.write(x.tobytes())
                    yield np.arange(n_good, n_good + len(rows), dtype=np.int64), x, bad
                    n_good, rows, bad = n_good + len(rows), [], []
            x = np.array(rows, dtype=np.float32).reshape(len(rows), len(keep))
            cache.write(x.tobytes())
            n_good += len(rows)
        self.n_items = n_good
        yield np.arange(n_good - len(rows), n_good, dtype=np.int64), x, bad

    def read(self, ids: np.ndarray) -> np.ndarray:
        if not self.n_items:
            raise UserDataError(f"{self.fname}: no usable rows")
        return read_rows(self._cache, 0, (len(self.keep),), np.dtype(np.float32), np.asarray(ids, dtype=np.int64))

    def close(self) -> None:
        shutil.rmtree(self._tmpdir, ignore_errors=True)
