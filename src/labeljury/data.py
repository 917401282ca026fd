"""Reading and writing datasets: CSV, JSONL (.ndjson) and Parquet, optionally gzip-compressed
CSV/JSONL.

Inputs can be larger than memory, so they are read as a stream of chunks whose index is the global
row number (a run store can refer to rows by it). Texts must round-trip exactly: CSV cells are read
as strings with no NA detection ("" stays "", "NA" stays "NA", "007" stays "007"), JSON values keep
their JSON types. Outputs are written to a temporary file and moved into place only when complete,
so a failed run never leaves a half-written file or damages an older one.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import os
import secrets
import warnings
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pandas.api.extensions import ExtensionArray

from .errors import InputError, LabeljuryError, OutputError

Format = Literal["csv", "jsonl", "parquet"]
PathLike = str | os.PathLike[str]

_SUFFIXES: dict[str, Format] = {
    ".csv": "csv",
    ".csv.gz": "csv",
    ".jsonl": "jsonl",
    ".jsonl.gz": "jsonl",
    ".ndjson": "jsonl",
    ".ndjson.gz": "jsonl",
    ".parquet": "parquet",
}
_SUPPORTED = ", ".join(_SUFFIXES)

# JSONL has no header: the columns are the keys of the first records, in order of appearance. A fixed
# window (not the chunk size) keeps the columns the same whatever chunk size a caller uses.
_JSONL_SCHEMA_RECORDS = 1000
# Rows parsed by `check_input` so that a malformed file fails before a long run, not during it.
_CHECK_ROWS = 1000

# Arrow integers/booleans with nulls would become float64/object in pandas; nullable dtypes keep
# them integers/booleans when written back.
_NULLABLE = {
    pa.int8(): pd.Int8Dtype(),
    pa.int16(): pd.Int16Dtype(),
    pa.int32(): pd.Int32Dtype(),
    pa.int64(): pd.Int64Dtype(),
    pa.uint8(): pd.UInt8Dtype(),
    pa.uint16(): pd.UInt16Dtype(),
    pa.uint32(): pd.UInt32Dtype(),
    pa.uint64(): pd.UInt64Dtype(),
    pa.bool_(): pd.BooleanDtype(),
}

_GZIP_ERRORS = (gzip.BadGzipFile, EOFError, zlib.error)


def _one_line(err: BaseException) -> str:
    """Library messages can span lines; ours must not."""
    return " ".join(str(err).split())


def _is_gzip(path: Path) -> bool:
    return path.name.lower().endswith(".gz")


def _detect(path: Path, error: type[LabeljuryError], role: str) -> Format:
    name = path.name.lower()
    for suffix, fmt in _SUFFIXES.items():
        if name.endswith(suffix):
            return fmt
    raise error(f"{role} file '{path}' has an unsupported extension; use one of {_SUPPORTED}")


def detect_format(path: PathLike) -> Format:
    """The format of an input file, from its extension (content sniffing would guess wrong)."""
    return _detect(Path(path), InputError, "input")


def _check_file(path: PathLike) -> tuple[Path, Format]:
    """Fail early, with a fix, on the problems every format shares."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"input file '{p}' does not exist; check the path")
    if p.is_dir():
        raise InputError(
            f"input path '{p}' is a folder, not a file; give the path of a data file ({_SUPPORTED})"
        )
    fmt = detect_format(p)
    try:
        with open(p, "rb") as fh:
            first = fh.read(1)
    except PermissionError:
        raise InputError(
            f"input file '{p}' is not readable (permission denied); fix its permissions"
        ) from None
    except OSError as err:
        raise InputError(f"input file '{p}' cannot be read ({err.strerror}); check the file") from None
    if not first:
        raise InputError(f"input file '{p}' is empty; give a file with a header (or records) and data rows")
    return p, fmt


class _HashingReader(io.RawIOBase):
    """A binary file that feeds every byte read through it to `digest`: the content of a file is
    hashed as it streams through a parser, so what was hashed is exactly what was read."""

    def __init__(self, raw: IO[bytes], digest: Any):
        self._raw, self._digest = raw, digest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self._raw.readinto(buffer)  # type: ignore[attr-defined]
        if n:
            self._digest.update(memoryview(buffer)[:n])
        return n or 0

    def drain(self) -> None:
        """Read (and hash) what the parser left unread: the digest covers the whole file."""
        while self.read(1 << 20):
            pass

    def close(self) -> None:
        self._raw.close()
        super().close()


def file_digest(path: PathLike) -> str:
    """The sha256 of a file's whole content, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _open_raw(path: Path, digest: Any = None) -> IO[bytes]:
    raw: IO[bytes] = open(path, "rb")
    return _HashingReader(raw, digest) if digest is not None else raw  # type: ignore[return-value]


def _open_text(path: Path, digest: Any = None) -> IO[str]:
    # newline="" is what the csv module needs; utf-8-sig drops a BOM that would stick to the first name.
    raw = _open_raw(path, digest)
    binary: IO[bytes] = gzip.GzipFile(fileobj=raw, mode="rb") if _is_gzip(path) else raw  # type: ignore[assignment]
    return io.TextIOWrapper(binary, encoding="utf-8-sig", newline="")  # type: ignore[arg-type]


def _not_utf8(path: Path, err: UnicodeDecodeError) -> InputError:
    # the decoder's position is within the block it was given, not the file: find the byte in the file
    where = _first_bad_utf8(path)
    at = f"line {where[0]}, byte {where[1]} of the file" if where else f"byte {err.start}"
    return InputError(f"input file '{path}' is not UTF-8 text ({err.reason} at {at}); re-save it as UTF-8")


def _first_bad_utf8(path: Path) -> tuple[int, int] | None:
    """(line, byte offset) of the first byte that is not UTF-8 in `path` (decompressed, for .gz), read a
    block at a time; None when every byte decodes (or the file cannot be read again)."""
    offset, line, carry = 0, 1, b""
    try:
        with _open_raw(path) as raw:
            binary: IO[bytes] = gzip.GzipFile(fileobj=raw, mode="rb") if _is_gzip(path) else raw  # type: ignore[assignment]
            while True:
                block = binary.read(1 << 20)
                data = carry + block
                if not data:
                    return None
                try:
                    data.decode("utf-8")
                    good, carry = len(data), b""
                except UnicodeDecodeError as e:
                    if block and e.end == len(data) and e.reason == "unexpected end of data":
                        good, carry = e.start, data[e.start:]  # a character cut by the block's end
                    else:
                        return line + data[: e.start].count(b"\n"), offset + e.start
                line += data[:good].count(b"\n")
                offset += good
                if not block:
                    return None
    except (OSError, *_GZIP_ERRORS):
        return None


def _not_gzip(path: Path, err: BaseException) -> InputError:
    return InputError(
        f"input file '{path}' is not a valid gzip file ({_one_line(err)}); re-compress it or drop the .gz"
    )


def _malformed(path: Path, rows_before: int, err: BaseException) -> InputError:
    return InputError(
        f"input file '{path}' is malformed at or after data row {rows_before + 1} ({_one_line(err)}); "
        "fix or remove that row"
    )


# --- CSV ---------------------------------------------------------------------------------------


def _csv_header(path: Path) -> list[str]:
    """The header, read with the csv module: pandas would silently rename duplicates ("a" -> "a.1")."""
    try:
        with _open_text(path) as fh:
            header = next((row for row in csv.reader(fh) if row), None)
    except UnicodeDecodeError as err:
        raise _not_utf8(path, err) from None
    except _GZIP_ERRORS as err:
        raise _not_gzip(path, err) from None
    except csv.Error as err:
        raise InputError(
            f"input file '{path}' has a malformed header ({_one_line(err)}); fix the first line"
        ) from None
    if header is None:
        raise InputError(f"input file '{path}' is empty; give a CSV file with a header row and data rows")
    if len(header) == 1 and "\t" in header[0]:
        raise InputError(
            f"input file '{path}' looks tab-separated (its first line has tabs and no commas), but a .csv file is "
            "read as comma-separated; save it with commas (e.g. pandas: pd.read_csv(path, sep='\\t')"
            ".to_csv(new_path, index=False)), or as JSONL or Parquet"
        )
    duplicates = sorted(name for name, n in Counter(header).items() if n > 1)
    if duplicates:
        raise InputError(
            f"input file '{path}' has duplicate column names ({', '.join(map(repr, duplicates))}); "
            "rename them so every column name is unique"
        )
    return header


@contextmanager
def _csv_errors(path: Path, rows_before: int) -> Iterator[None]:
    """Turn pandas' parse errors into one-line `InputError`s. Entered around each parsing call, not
    around a `yield`, because the warnings filter is global and the caller runs in between."""
    try:
        with warnings.catch_warnings():
            # A first data row longer than the header only warns (and loses data): make it an error.
            warnings.simplefilter("error", pd.errors.ParserWarning)
            yield
    except UnicodeDecodeError as err:
        raise _not_utf8(path, err) from None
    except _GZIP_ERRORS as err:
        raise _not_gzip(path, err) from None
    except (pd.errors.ParserError, pd.errors.ParserWarning) as err:
        raise _malformed(path, rows_before, err) from None


def _csv_frames(path: Path, chunk_rows: int, columns: list[str] | None, digest: Any = None) -> Iterator[pd.DataFrame]:
    header = _csv_header(path)
    source: Any = path
    if digest is not None:
        source = _open_raw(path, digest)
    with _csv_errors(path, 0):  # pandas already parses the first block here
        reader = pd.read_csv(
            source,
            compression="gzip" if _is_gzip(path) else None,
            names=header,  # our checked header, instead of pandas' de-duplicated one
            header=0,
            index_col=False,  # never turn the first column into the index when a row has an extra field
            usecols=columns,
            dtype=str,
            na_filter=False,  # "" stays "", "NA" stays "NA"
            encoding="utf-8",
            chunksize=chunk_rows,
        )
    rows = 0
    try:
        with reader:
            while True:
                with _csv_errors(path, rows):
                    chunk = next(reader, None)
                if chunk is None:
                    break
                rows += len(chunk)
                yield chunk
        if isinstance(source, _HashingReader):
            source.drain()
    finally:
        if isinstance(source, _HashingReader):
            source.close()


# --- JSONL -------------------------------------------------------------------------------------


def _jsonl_records(path: Path, digest: Any = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) for each non-blank line; parsed line by line so errors name the line."""
    try:
        with _open_text(path, digest) as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise InputError(
                        f"input file '{path}' line {lineno} is not valid JSON ({err.msg}); fix or remove that line"
                    ) from None
                if not isinstance(record, dict):
                    raise InputError(
                        f"input file '{path}' line {lineno} is a JSON {type(record).__name__}, not an object; "
                        "write one JSON object per line"
                    )
                yield lineno, record
    except UnicodeDecodeError as err:
        raise _not_utf8(path, err) from None
    except _GZIP_ERRORS as err:
        raise _not_gzip(path, err) from None


def _jsonl_columns(path: Path) -> list[str]:
    columns: dict[str, None] = {}
    records = _jsonl_records(path)
    try:
        for _, record in islice(records, _JSONL_SCHEMA_RECORDS):
            columns.update(dict.fromkeys(record))
    finally:
        records.close()
    if not columns:
        raise InputError(
            f"input file '{path}' has no JSON records with keys; give one JSON object per line"
        )
    return list(columns)


def _json_column(values: list[Any]) -> ExtensionArray:
    """Keep JSON types: integers/booleans with nulls stay integers/booleans instead of becoming floats."""
    if None in values and pd.api.types.infer_dtype(values, skipna=True) in ("integer", "boolean"):
        return pd.array(values)
    return pd.Series(values).array


def _jsonl_frame(records: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame({c: _json_column([r.get(c) for r in records]) for c in columns}, columns=columns)


def _jsonl_frames(path: Path, chunk_rows: int, columns: list[str] | None, digest: Any = None) -> Iterator[pd.DataFrame]:
    schema = _jsonl_columns(path)
    known = set(schema)
    batch: list[dict[str, Any]] = []
    for lineno, record in _jsonl_records(path, digest):
        if not record.keys() <= known:
            new = sorted(record.keys() - known)
            raise InputError(
                f"input file '{path}' line {lineno} has key(s) {', '.join(map(repr, new))} that the first "
                f"{_JSONL_SCHEMA_RECORDS} records lack; add them (null is fine) to the first record"
            )
        batch.append(record)
        if len(batch) == chunk_rows:
            yield _jsonl_frame(batch, columns or schema)
            batch = []
    if batch:
        yield _jsonl_frame(batch, columns or schema)


# --- Parquet -----------------------------------------------------------------------------------


def _parquet_file(path: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as err:
        raise InputError(
            f"input file '{path}' is not a valid Parquet file ({_one_line(err)}); re-export it as Parquet"
        ) from None


def _parquet_frames(path: Path, chunk_rows: int, columns: list[str] | None, digest: Any = None) -> Iterator[pd.DataFrame]:
    if digest is not None:  # Parquet is read by offsets, not as a stream: hash it first, in one pass
        with _open_raw(path, digest) as raw:
            raw.drain()  # type: ignore[attr-defined]
    pf = _parquet_file(path)
    rows = 0
    try:
        for batch in pf.iter_batches(batch_size=chunk_rows, columns=columns):
            rows += batch.num_rows
            yield batch.to_pandas(types_mapper=_NULLABLE.get)
    except (pa.ArrowException, OSError) as err:
        raise _malformed(path, rows, err) from None
    finally:
        pf.close()
    if rows == 0:  # still one (empty) chunk, so a writer learns the columns
        yield pf.schema_arrow.empty_table().to_pandas(types_mapper=_NULLABLE.get)


# --- public reading API ------------------------------------------------------------------------


def input_columns(path: PathLike) -> list[str]:
    """The column names, from the header, the Parquet schema or the first JSONL records (no full read)."""
    p, fmt = _check_file(path)
    if fmt == "csv":
        return _csv_header(p)
    if fmt == "jsonl":
        return _jsonl_columns(p)
    pf = _parquet_file(p)
    try:
        return list(pf.schema_arrow.names)
    finally:
        pf.close()


def _require_columns(path: PathLike, available: Sequence[str], wanted: Iterable[str], fix: str) -> None:
    for name in wanted:
        if name not in available:
            shown = ", ".join(available[:20]) + (", ..." if len(available) > 20 else "")
            raise InputError(f"column '{name}' is not in {Path(path).name} (columns: {shown}); {fix}")


def check_input(path: PathLike, text_column: str, extra_columns: Sequence[str] = ()) -> list[str]:
    """Validate an input before a long run starts: file, format, first rows and needed columns.
    A header without rows is refused too: there would be nothing to label.

    Returns the input's columns.
    """
    columns = input_columns(path)
    if next(iter_chunks(path, chunk_rows=_CHECK_ROWS)).empty:
        raise InputError(f"input file '{path}' has a header but no data rows; give a file with rows to label")
    _require_columns(path, columns, [text_column], "set text_column in the task file")
    _require_columns(path, columns, extra_columns, "check the column names in the task file")
    return columns


def iter_chunks(
    path: PathLike, chunk_rows: int = 50_000, columns: Sequence[str] | None = None, digest: Any = None
) -> Iterator[pd.DataFrame]:
    """Stream the rows in chunks of `chunk_rows`, so memory stays bounded whatever the file size.

    Each chunk's index continues the previous one (a RangeIndex of global row numbers). `columns`
    selects and orders columns. With `digest` (a hashlib object), every byte of the file is fed to it
    as it is read: once the chunks are exhausted it holds the hash of the whole file (`file_digest`). A file with a header/schema but no rows yields one empty chunk, so
    the columns are still known. Errors are `InputError`s naming the row or line where possible.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    p, fmt = _check_file(path)
    wanted = list(columns) if columns is not None else None
    if wanted is not None:
        _require_columns(p, input_columns(p), wanted, "check the column names in the task file")
    read = {"csv": _csv_frames, "jsonl": _jsonl_frames, "parquet": _parquet_frames}[fmt]
    frames = read(p, chunk_rows, wanted, digest)
    start = 0
    for frame in frames:
        if wanted is not None:
            frame = frame[wanted]
        frame.index = pd.RangeIndex(start, start + len(frame))
        start += len(frame)
        yield frame


def count_rows(path: PathLike) -> int:
    """The number of data rows: Parquet from its metadata, CSV/JSONL by streaming (no full load)."""
    p, fmt = _check_file(path)
    if fmt == "parquet":
        pf = _parquet_file(p)
        try:
            return pf.metadata.num_rows
        finally:
            pf.close()
    if fmt == "jsonl":
        opener = gzip.open if _is_gzip(p) else open
        try:
            with opener(p, "rb") as fh:
                return sum(1 for line in fh if line.strip())
        except _GZIP_ERRORS as err:
            raise _not_gzip(p, err) from None
    first = _csv_header(p)[:1]  # parse one column only: quoted newlines make line counts wrong
    return sum(len(chunk) for chunk in iter_chunks(p, columns=first))


def read_table(path: PathLike) -> pd.DataFrame:
    """The whole file as one DataFrame, with the same parsing as `iter_chunks`: for small files only."""
    return pd.concat(list(iter_chunks(path)))


def is_text(value: object) -> bool:
    """Whether a cell holds something to label; empty or non-string cells are skipped, never dropped."""
    return isinstance(value, str) and bool(value.strip())


# --- writing -----------------------------------------------------------------------------------


def check_output(output: PathLike, input: PathLike) -> None:  # noqa: A002 - the documented argument name
    """Refuse an output that would overwrite the input or cannot be written, before any work is done."""
    out, src = Path(output), Path(input)
    if out.resolve() == src.resolve() or (out.exists() and src.exists() and os.path.samefile(out, src)):
        raise OutputError(
            f"output '{out}' is the input file '{src}'; writing it would destroy the input, choose another output path"
        )
    _detect(out, OutputError, "output")
    if out.is_dir():
        raise OutputError(f"output path '{out}' is a folder; give a file path such as '{out / 'labeled.csv'}'")
    folder = out.parent
    if not folder.is_dir():
        raise OutputError(f"output folder '{folder}' does not exist; create it or choose another output path")
    if not os.access(folder, os.W_OK):
        raise OutputError(
            f"output folder '{folder}' is not writable; fix its permissions or choose another folder"
        )


def _arrow_table(df: pd.DataFrame, schema: pa.Schema, path: Path) -> pa.Table:
    """Convert a later chunk to the first chunk's schema, which a Parquet file cannot change."""
    try:
        return pa.Table.from_pandas(df, schema=schema, preserve_index=False)
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        pass
    arrays = []
    for field in schema:  # per column: e.g. floats into a column that started all-null (now string)
        try:
            arrays.append(pa.array(df[field.name], from_pandas=True).cast(field.type))
        except (pa.ArrowTypeError, pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
            raise OutputError(
                f"column '{field.name}' of output '{path}' changed type mid-run ({_one_line(err)}); "
                "write it as CSV or JSONL instead"
            ) from None
    return pa.Table.from_arrays(arrays, schema=schema)


class ChunkWriter:
    """Write an output chunk by chunk, atomically.

    Data goes to a hidden temporary file next to `path`; `close()` moves it into place with
    `os.replace`. Leaving the `with` block by an exception (or calling `abort()`) deletes the
    temporary file and leaves any existing `path` untouched. Every chunk must have the first
    chunk's columns (any order); Parquet columns keep the first chunk's types (an all-null first
    column is stored as string), later chunks are cast to them.
    """

    def __init__(self, path: PathLike, fmt: Format | None = None) -> None:
        self.path = Path(path)
        self.fmt: Format = fmt or _detect(self.path, OutputError, "output")
        self._tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.tmp")
        try:
            self._raw: IO[bytes] = open(self._tmp, "xb")
        except OSError as err:
            raise OutputError(
                f"cannot create output '{self.path}' ({err.strerror}); check that its folder exists and is writable"
            ) from None
        self._sink: IO[bytes] = gzip.GzipFile(fileobj=self._raw, mode="wb") if _is_gzip(self.path) else self._raw
        self._columns: list[str] | None = None
        self._parquet: pq.ParquetWriter | None = None
        self._closed = False

    @staticmethod
    def format_of(path: PathLike) -> Format:
        """The format an output at `path` is written in (from its extension)."""
        return _detect(Path(path), OutputError, "output")

    def __enter__(self) -> ChunkWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def write(self, df: pd.DataFrame) -> None:
        """Append a chunk (its index is not written)."""
        if self._closed:
            raise ValueError("ChunkWriter is closed")
        first = self._columns is None
        if first:
            self._columns = list(df.columns)
        elif list(df.columns) != self._columns:
            if set(df.columns) != set(self._columns):
                raise ValueError(f"chunk columns {list(df.columns)} differ from the first chunk's {self._columns}")
            df = df[self._columns]
        try:
            if self.fmt == "csv":
                self._sink.write(df.to_csv(index=False, header=first, lineterminator="\n").encode("utf-8"))
            elif self.fmt == "jsonl":
                if len(df):  # pandas writes "\n" for an empty frame: a blank line
                    text = df.to_json(
                        orient="records", lines=True, force_ascii=False, date_format="iso", double_precision=15
                    )
                    self._sink.write(text.encode("utf-8"))
            else:
                self._write_parquet(df)
        except OSError as err:
            raise self._write_error(err) from None

    def _write_error(self, err: OSError) -> OutputError:
        return OutputError(f"cannot write output '{self.path}' ({err.strerror}); check free space and permissions")

    def _write_parquet(self, df: pd.DataFrame) -> None:
        if self._parquet is None:
            table = pa.Table.from_pandas(df, preserve_index=False)
            schema = pa.schema(
                [f.with_type(pa.large_string()) if pa.types.is_null(f.type) else f for f in table.schema],
                metadata=table.schema.metadata,
            )
            self._parquet = pq.ParquetWriter(self._sink, schema)
            self._parquet.write_table(table.cast(schema))
        else:
            self._parquet.write_table(_arrow_table(df, self._parquet.schema, self.path))

    def close(self) -> None:
        """Finish the file and move it into place; nothing appears at `path` before this."""
        if self._closed:
            return
        if self._columns is None:
            self.abort()
            raise ValueError("ChunkWriter closed before any chunk was written; write at least an empty chunk")
        try:
            if self._parquet is not None:
                self._parquet.close()
            if self._sink is not self._raw:
                self._sink.close()  # ends the gzip stream; the file itself stays open
            self._raw.flush()
            os.fsync(self._raw.fileno())  # the data is on disk before the rename makes it visible
            self._raw.close()
            os.replace(self._tmp, self.path)
        except BaseException as err:
            self.abort()
            if isinstance(err, OSError):
                raise self._write_error(err) from None
            raise
        self._closed = True

    def abort(self) -> None:
        """Discard everything written so far; an existing file at `path` stays as it was."""
        self._closed = True
        for closing in (self._parquet, self._sink, self._raw):
            try:
                if closing is not None:
                    closing.close()
            except Exception:  # noqa: BLE001 - best effort: the file is deleted next anyway
                pass
        self._tmp.unlink(missing_ok=True)
