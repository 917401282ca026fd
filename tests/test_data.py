"""Tests for labeljury.data: exact round trips, stable row numbers, one-line errors, atomic output."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from labeljury import data
from labeljury.data import (
    ChunkWriter,
    check_input,
    check_output,
    count_rows,
    detect_format,
    input_columns,
    is_text,
    iter_chunks,
    read_table,
)
from labeljury.errors import InputError, OutputError

TRICKY_TEXTS = ["", "NA", "007", "ünïcødé ✓ 😀", "line one\nline two", 'say "hi", twice', "  ", "null", "1.50", "None"]
SUFFIXES = [".csv", ".csv.gz", ".jsonl", ".jsonl.gz", ".ndjson", ".parquet"]


def _source() -> pd.DataFrame:
    return pd.DataFrame({"id": [f"r{i}" for i in range(len(TRICKY_TEXTS))], "text": TRICKY_TEXTS, "z_last": "x"})


def _write(path: Path, df: pd.DataFrame) -> Path:
    with ChunkWriter(path) as writer:
        writer.write(df)
    return path


def _raises(exc: type[Exception], fn, *args, **kwargs) -> str:
    """Call fn, expect exc with a one-line message, return the message."""
    with pytest.raises(exc) as info:
        result = fn(*args, **kwargs)
        if hasattr(result, "__next__"):
            list(result)
    message = str(info.value)
    assert message and "\n" not in message
    return message


# --- formats and round trips ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fmt"),
    [("a.csv", "csv"), ("a.CSV.gz", "csv"), ("a.jsonl", "jsonl"), ("a.ndjson.gz", "jsonl"), ("a.parquet", "parquet")],
)
def test_detect_format(name, fmt):
    assert detect_format(name) == fmt


def test_detect_format_unknown_lists_supported():
    message = _raises(InputError, detect_format, "data.xlsx")
    assert "data.xlsx" in message and ".csv" in message and ".jsonl" in message and ".parquet" in message


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_round_trip_keeps_columns_order_and_values(tmp_path, suffix):
    src = _write(tmp_path / f"in{suffix}", _source())
    out = tmp_path / f"out{suffix}"
    assert input_columns(src) == ["id", "text", "z_last"]
    with ChunkWriter(out) as writer:
        for chunk in iter_chunks(src, chunk_rows=3):
            chunk["annotation"] = ["pos" if is_text(t) else None for t in chunk["text"]]
            chunk["annotation_confidence"] = 0.5
            chunk["annotation_source"] = "vote"
            writer.write(chunk)
    back = read_table(out)
    assert list(back.columns) == ["id", "text", "z_last", "annotation", "annotation_confidence", "annotation_source"]
    assert back["text"].tolist() == TRICKY_TEXTS
    assert back["id"].tolist() == _source()["id"].tolist()
    assert back["annotation_confidence"].astype(float).tolist() == [0.5] * len(TRICKY_TEXTS)
    assert count_rows(out) == len(TRICKY_TEXTS)


def test_csv_round_trip_is_byte_identical(tmp_path):
    raw = 'id,text,n\n1,"a ""quoted"", text",007\n2,,NA\n3,"two\nlines",1e3\n4,ünï,\n'
    src = tmp_path / "in.csv"
    src.write_text(raw, encoding="utf-8")
    chunks = list(iter_chunks(src, chunk_rows=3))
    assert chunks[0]["text"].tolist() == ['a "quoted", text', "", "two\nlines"]
    assert chunks[0]["n"].tolist() == ["007", "NA", "1e3"]
    assert chunks[1]["n"].tolist() == [""]
    out = tmp_path / "out.csv"
    with ChunkWriter(out) as writer:
        for chunk in chunks:
            writer.write(chunk)
    assert out.read_text(encoding="utf-8") == raw


def test_csv_single_column_keeps_empty_rows(tmp_path):
    src = _write(tmp_path / "in.csv", pd.DataFrame({"text": ["a", "", "b"]}))
    assert read_table(src)["text"].tolist() == ["a", "", "b"]


def test_jsonl_keeps_json_types(tmp_path):
    src = tmp_path / "in.jsonl"
    lines = [
        {"id": 1, "text": "007", "created_at": "2020-01-01", "meta": {"k": [1]}, "flag": True},
        {"id": None, "text": 7, "created_at": "2020-01-02", "meta": None, "flag": None},
        {"id": 3, "text": "ünï", "created_at": "", "meta": {}, "flag": False},
    ]
    src.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in lines) + "\n\n", encoding="utf-8")
    df = read_table(src)
    assert df["id"].tolist()[0] == 1 and df["id"].dtype == "Int64"  # not float 1.0
    assert df["text"].tolist() == ["007", 7, "ünï"]  # a non-string text is left for the caller
    assert df["created_at"].tolist() == ["2020-01-01", "2020-01-02", ""]  # no date parsing
    assert df["meta"].tolist()[0] == {"k": [1]}
    out = _write(tmp_path / "out.jsonl", df)
    assert [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()] == lines


def test_jsonl_missing_keys_are_null_and_columns_come_from_first_records(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "a"}\n{"text": "b", "label": "x"}\n', encoding="utf-8")
    assert input_columns(src) == ["text", "label"]
    assert read_table(src)["label"].isna().tolist() == [True, False]


def test_parquet_keeps_integer_type_with_nulls(tmp_path):
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"text": ["a", None, "c"], "gold": pa.array([1, None, 3], pa.int64())}), src)
    out = _write(tmp_path / "out.parquet", read_table(src))
    assert pq.read_schema(out).field("gold").type == pa.int64()
    assert pq.read_table(out).column("gold").to_pylist() == [1, None, 3]


# --- chunking ------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_chunks_continue_the_row_numbers(tmp_path, suffix):
    src = _write(tmp_path / f"in{suffix}", pd.DataFrame({"text": [f"t{i}" for i in range(10)], "n": range(10)}))
    chunks = list(iter_chunks(src, chunk_rows=3))
    assert [len(c) for c in chunks] == [3, 3, 3, 1]
    for start, chunk in zip([0, 3, 6, 9], chunks, strict=True):
        assert isinstance(chunk.index, pd.RangeIndex)
        assert chunk.index.start == start
    assert pd.concat(chunks)["text"].tolist() == [f"t{i}" for i in range(10)]
    assert count_rows(src) == 10


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_columns_selects_and_orders(tmp_path, suffix):
    src = _write(tmp_path / f"in{suffix}", pd.DataFrame({"a": ["1"], "b": ["2"], "c": ["3"]}))
    assert list(next(iter_chunks(src, columns=["c", "a"])).columns) == ["c", "a"]
    assert "'nope'" in _raises(InputError, iter_chunks, src, columns=["nope"])


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_header_only_yields_one_empty_chunk(tmp_path, suffix):
    src = _write(tmp_path / f"in{suffix}", pd.DataFrame({"text": pd.Series([], dtype=str), "label": pd.Series([], dtype=str)}))
    chunks = list(iter_chunks(src))
    assert len(chunks) == 1 and chunks[0].empty and list(chunks[0].columns) == ["text", "label"]
    assert count_rows(src) == 0
    assert "no data rows" in _raises(InputError, check_input, src, "text")


def test_large_csv_streams_in_requested_chunk_sizes(tmp_path):
    src = tmp_path / "big.csv"
    with src.open("w", encoding="utf-8") as fh:
        fh.write("id,text\n")
        fh.writelines(f"{i},some text {i}\n" for i in range(200_000))
    sizes = [len(chunk) for chunk in iter_chunks(src, chunk_rows=30_000, columns=["text"])]
    assert sizes == [30_000] * 6 + [20_000]
    assert count_rows(src) == 200_000


# --- input errors --------------------------------------------------------------------------------


def test_is_text():
    assert is_text("a") and is_text(" ü ")
    assert not any(is_text(v) for v in ["", "   \n", None, 7, float("nan"), pd.NA])


def test_check_input_returns_columns(tmp_path):
    src = _write(tmp_path / "in.csv", _source())
    assert check_input(src, "text", ["id"]) == ["id", "text", "z_last"]


def test_missing_file(tmp_path):
    message = _raises(InputError, check_input, tmp_path / "x.csv", "text")
    assert "does not exist" in message and "x.csv" in message


def test_directory(tmp_path):
    (tmp_path / "d.csv").mkdir()
    assert "folder" in _raises(InputError, check_input, tmp_path / "d.csv", "text")


def test_unsupported_extension(tmp_path):
    (tmp_path / "x.txt").write_text("text\na\n")
    assert ".jsonl" in _raises(InputError, check_input, tmp_path / "x.txt", "text")


def test_unreadable(tmp_path, monkeypatch):
    src = _write(tmp_path / "in.csv", _source())
    src.chmod(0)
    if os.access(src, os.R_OK):  # running as root: permissions are not enforced, simulate the denial

        def deny(*args, **kwargs):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(data, "open", deny, raising=False)
    try:
        assert "not readable" in _raises(InputError, check_input, src, "text")
    finally:
        src.chmod(0o644)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_empty_file(tmp_path, suffix):
    src = tmp_path / f"in{suffix}"
    src.write_bytes(b"")
    assert "empty" in _raises(InputError, check_input, src, "text")


@pytest.mark.parametrize(("suffix", "content"), [(".csv.gz", "\n\n"), (".jsonl.gz", "\n  \n")])
def test_compressed_blank_file_is_empty(tmp_path, suffix, content):
    src = tmp_path / f"in{suffix}"
    src.write_bytes(gzip.compress(content.encode()))
    _raises(InputError, check_input, src, "text")


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("bad.csv", b'text,label\n"unterminated,x\nb,y\n', "malformed"),
        ("bad.csv", b"text,label\na,b,EXTRA\nc,d\n", "malformed"),
        ("bad.csv", b"text,text\na,b\n", "duplicate"),
        ("bad.csv", b"text\n\xff\xfe bytes\n", "UTF-8"),
        ("bad.csv.gz", b"not gzip at all", "gzip"),
        ("bad.jsonl", b"{not json}\n", "line 1"),
        ("bad.jsonl", b'["a", "list"]\n', "not an object"),
        ("bad.parquet", b"PAR1 garbage, not parquet", "Parquet"),
    ],
)
def test_malformed_start(tmp_path, name, content, expected):
    src = tmp_path / name
    src.write_bytes(content)
    assert expected in _raises(InputError, check_input, src, "text")


def test_unknown_column_names_columns_and_fix(tmp_path):
    src = _write(tmp_path / "x.csv", pd.DataFrame({"text": ["a"], "label": ["b"]}))
    message = _raises(InputError, check_input, src, "txt")
    assert message == "column 'txt' is not in x.csv (columns: text, label); set text_column in the task file"
    assert "'gold'" in _raises(InputError, check_input, src, "text", ["gold"])


def test_csv_malformed_row_mid_file_names_the_row(tmp_path):
    src = tmp_path / "in.csv"
    rows = [f"{i},ok" for i in range(25)] + ["25,bad,extra"] + [f"{i},ok" for i in range(26, 30)]
    src.write_text("id,text\n" + "\n".join(rows) + "\n")
    chunks = iter_chunks(src, chunk_rows=10)
    assert len(next(chunks)) == 10 and len(next(chunks)) == 10
    message = _raises(InputError, next, chunks)
    assert "row 21" in message and "line 27" in message


def test_jsonl_malformed_line_mid_file_names_the_line(tmp_path):
    src = tmp_path / "in.jsonl"
    lines = [json.dumps({"text": f"t{i}"}) for i in range(10)]
    lines[7] = '{"text": "broken'
    src.write_text("\n".join(lines) + "\n")
    assert "line 8" in _raises(InputError, iter_chunks, src, chunk_rows=3)


def test_jsonl_key_missing_from_first_records(tmp_path):
    src = tmp_path / "in.jsonl"
    n = data._JSONL_SCHEMA_RECORDS
    records = [{"text": "a"}] * n + [{"text": "b", "late": 1}]
    src.write_text("\n".join(map(json.dumps, records)) + "\n")
    message = _raises(InputError, iter_chunks, src)
    assert f"line {n + 1}" in message and "'late'" in message


# --- writing -------------------------------------------------------------------------------------


class Boom(Exception):
    pass


@pytest.mark.parametrize("suffix", [".csv", ".jsonl.gz", ".parquet"])
def test_failed_write_leaves_no_target_and_no_temp(tmp_path, suffix):
    target = tmp_path / f"out{suffix}"
    with pytest.raises(Boom), ChunkWriter(target) as writer:
        writer.write(_source())
        assert not target.exists()
        raise Boom
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_failed_write_keeps_existing_target(tmp_path, suffix):
    target = _write(tmp_path / f"out{suffix}", _source())
    before = target.read_bytes()
    with pytest.raises(Boom), ChunkWriter(target) as writer:
        writer.write(_source().iloc[:2])
        raise Boom
    assert target.read_bytes() == before
    assert list(tmp_path.iterdir()) == [target]
    _write(target, _source().iloc[:2])  # a successful run does replace it
    assert count_rows(target) == 2


def test_close_without_chunks_is_an_error_and_cleans_up(tmp_path):
    with pytest.raises(ValueError), ChunkWriter(tmp_path / "out.csv"):
        pass
    assert list(tmp_path.iterdir()) == []


def test_chunks_must_keep_the_columns(tmp_path):
    target = tmp_path / "out.csv"
    with ChunkWriter(target) as writer:
        writer.write(pd.DataFrame({"a": ["1"], "b": ["2"]}))
        writer.write(pd.DataFrame({"b": ["4"], "a": ["3"]}))  # same columns, other order: reordered
        with pytest.raises(ValueError):
            writer.write(pd.DataFrame({"a": ["5"]}))
    assert target.read_text() == "a,b\n1,2\n3,4\n"


def test_parquet_later_chunks_are_cast_to_the_first_schema(tmp_path):
    target = tmp_path / "out.parquet"
    with ChunkWriter(target) as writer:
        writer.write(pd.DataFrame({"text": ["a"], "annotation": [None], "conf": [0.5]}))  # all-null column
        writer.write(pd.DataFrame({"text": ["b"], "annotation": ["pos"], "conf": [None]}))
        writer.write(pd.DataFrame({"text": [None], "annotation": [0.25], "conf": [1]}))  # float into string
    table = pq.read_table(target)
    assert table.schema.field("annotation").type == pa.large_string()
    assert table.column("annotation").to_pylist() == [None, "pos", "0.25"]
    assert table.column("conf").to_pylist() == [0.5, None, 1.0]
    assert table.column("text").to_pylist() == ["a", "b", None]


def test_parquet_incompatible_type_is_an_output_error(tmp_path):
    with pytest.raises(OutputError), ChunkWriter(tmp_path / "out.parquet") as writer:
        writer.write(pd.DataFrame({"n": [1]}))
        writer.write(pd.DataFrame({"n": ["not a number"]}))
    assert list(tmp_path.iterdir()) == []


def test_writer_rejects_bad_extension_and_missing_folder(tmp_path):
    assert ".parquet" in _raises(OutputError, ChunkWriter, tmp_path / "out.xlsx")
    _raises(OutputError, ChunkWriter, tmp_path / "no" / "out.csv")


# --- check_output --------------------------------------------------------------------------------


def test_check_output_accepts_a_new_file(tmp_path):
    src = _write(tmp_path / "in.csv", _source())
    check_output(tmp_path / "out.parquet", src)


def test_check_output_refuses_the_input(tmp_path, monkeypatch):
    src = _write(tmp_path / "in.csv", _source())
    (tmp_path / "sub").mkdir()
    link = tmp_path / "link.csv"
    link.symlink_to(src)
    hard = tmp_path / "hard.csv"
    os.link(src, hard)
    monkeypatch.chdir(tmp_path / "sub")
    for output in [src, "../in.csv", "../sub/../in.csv", link, hard]:
        assert "input" in _raises(OutputError, check_output, output, src)
    assert src.read_bytes()  # untouched


def test_check_output_refuses_missing_folder_and_bad_extension(tmp_path):
    src = _write(tmp_path / "in.csv", _source())
    assert "does not exist" in _raises(OutputError, check_output, tmp_path / "nope" / "out.csv", src)
    assert ".csv" in _raises(OutputError, check_output, tmp_path / "out.txt", src)
    (tmp_path / "dir.csv").mkdir()
    assert "folder" in _raises(OutputError, check_output, tmp_path / "dir.csv", src)


def test_bad_utf8_deep_in_a_file_is_reported_at_its_line_and_file_offset(tmp_path: Path) -> None:
    """pandas decodes in blocks: the decoder's own position ("at byte 3") named nothing in the file."""
    rows = ["text,label"] + [f"row number {i} é,positive" for i in range(3000)]
    raw = ("\n".join(rows) + "\n").encode()
    at = raw.index(b"row number 1499 ")
    path = tmp_path / "bad.csv"
    path.write_bytes(raw[:at] + b"\xff" + raw[at:])
    with pytest.raises(InputError, match=f"at line 1501, byte {at} of the file"):
        for _ in iter_chunks(path, columns=["text"]):
            pass


def test_a_tab_separated_file_named_csv_is_called_tab_separated(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("text\tlabel\nhello, world\tpositive\nfine\tnegative\n")
    with pytest.raises(InputError, match="looks tab-separated"):
        check_input(path, "text")
