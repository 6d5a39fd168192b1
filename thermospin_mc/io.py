"""Tables to parquet/CSV with metadata, and back. No physics here.

Parquet files carry the metadata as JSON under the schema key
``thermospin_mc``; CSV files start with ``# thermospin_mc: {json}`` so that
``pandas.read_csv(path, comment="#")`` reads the table unchanged.
Files are written to a temporary name and renamed, so an interrupted write
never leaves a truncated table behind.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

__all__ = ["write_table", "read_table"]

_KEY = "thermospin_mc"


def _dumps(meta: dict) -> str:
    from .results import _json_default

    return json.dumps(meta, sort_keys=True, default=_json_default)


def write_table(df: pd.DataFrame, path: str | Path, metadata: dict) -> Path:
    """Write ``df`` to ``path`` (``.parquet`` or ``.csv``) atomically with metadata."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    plain = df.copy()
    plain.attrs = {}
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(plain, preserve_index=False)
        meta = dict(table.schema.metadata or {})
        meta[_KEY.encode()] = _dumps(metadata).encode()
        pq.write_table(table.replace_schema_metadata(meta), tmp)
    elif path.suffix == ".csv":
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(f"# {_KEY}: {_dumps(metadata)}\n")
            plain.to_csv(fh, index=False)
    else:
        raise ValueError(f"table path must end in .parquet or .csv, got {str(path)!r}")
    os.replace(tmp, path)
    return path


def read_table(path: str | Path) -> tuple[pd.DataFrame, dict]:
    """Read a table written by :func:`write_table`; returns ``(df, metadata)``."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"table file does not exist: {str(path)!r}")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        raw = (table.schema.metadata or {}).get(_KEY.encode())
        meta = json.loads(raw) if raw else {}
        df = table.to_pandas()
    elif path.suffix == ".csv":
        meta = {}
        with open(path, encoding="utf-8") as fh:
            first = fh.readline()
        if first.startswith(f"# {_KEY}: "):
            meta = json.loads(first[len(f"# {_KEY}: "):])
        df = pd.read_csv(path, comment="#")
    else:
        raise ValueError(f"table path must end in .parquet or .csv, got {str(path)!r}")
    df.attrs = {_KEY: meta}
    return df, meta
