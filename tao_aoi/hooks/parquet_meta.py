"""Read a parquet file's footer with the standard library only (hooks run on a bare python3).

A parquet file is ``PAR1 <data> <FileMetaData> <4-byte little-endian footer length> PAR1``.
``FileMetaData`` is a Thrift struct in the compact protocol; we decode the fields the hooks
need (``num_rows``, the schema, ``key_value_metadata``, ``created_by``) and skip every other
field by its wire type, so files written by newer writers still read. Every read is bounds
checked: a truncated or corrupt file raises :class:`ParquetMetaError`, never hangs.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field

MAGIC = b"PAR1"
_MAX_DEPTH = 64

# Compact protocol wire types.
_STOP, _TRUE, _FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE = 0, 1, 2, 3, 4, 5, 6, 7
_BINARY, _LIST, _SET, _MAP, _STRUCT, _UUID = 8, 9, 10, 11, 12, 13


class ParquetMetaError(ValueError):
    """The file is not a readable parquet file (missing magic, truncated, corrupt footer)."""


@dataclass
class ParquetMeta:
    num_rows: int
    columns: list[str]                       # top-level column names, in schema order
    key_value_metadata: dict[str, str] = field(default_factory=dict)
    created_by: str | None = None


class _Reader:
    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def _take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ParquetMetaError("footer is truncated or corrupt (read past its end)")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise ParquetMetaError("footer is truncated or corrupt (read past its end)")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def varint(self) -> int:
        result = shift = 0
        for _ in range(10):
            b = self.byte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7
        raise ParquetMetaError("footer is corrupt (varint longer than 10 bytes)")

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def binary(self) -> bytes:
        return self._take(self.varint())

    def string(self) -> str:
        return self.binary().decode("utf-8", errors="replace")

    def field_header(self, last_id: int) -> tuple[int, int]:
        """Return (field id, wire type); type ``_STOP`` ends the struct."""
        b = self.byte()
        ftype = b & 0x0F
        if ftype == _STOP:
            return 0, _STOP
        delta = b >> 4
        fid = last_id + delta if delta else self.zigzag()
        return fid, ftype

    def list_header(self) -> tuple[int, int]:
        b = self.byte()
        size = b >> 4
        if size == 15:
            size = self.varint()
        # Every element takes at least one byte: a larger count is corruption, not a loop.
        if size > len(self.data) - self.pos:
            raise ParquetMetaError("footer is corrupt (list longer than the footer)")
        return size, b & 0x0F

    def skip(self, ftype: int, depth: int = 0) -> None:
        if depth > _MAX_DEPTH:
            raise ParquetMetaError("footer is corrupt (nesting too deep)")
        if ftype in (_TRUE, _FALSE):
            return
        if ftype == _BYTE:
            self._take(1)
        elif ftype in (_I16, _I32, _I64):
            self.varint()
        elif ftype == _DOUBLE:
            self._take(8)
        elif ftype == _BINARY:
            self.binary()
        elif ftype == _UUID:
            self._take(16)
        elif ftype in (_LIST, _SET):
            size, etype = self.list_header()
            for _ in range(size):
                self._skip_element(etype, depth + 1)
        elif ftype == _MAP:
            size = self.varint()
            if size:
                if size > len(self.data) - self.pos:
                    raise ParquetMetaError("footer is corrupt (map longer than the footer)")
                kinds = self.byte()
                for _ in range(size):
                    self._skip_element(kinds >> 4, depth + 1)
                    self._skip_element(kinds & 0x0F, depth + 1)
        elif ftype == _STRUCT:
            self.skip_struct(depth + 1)
        else:
            raise ParquetMetaError(f"footer is corrupt (unknown thrift type {ftype})")

    def _skip_element(self, etype: int, depth: int) -> None:
        # Inside lists/sets/maps booleans take one byte each.
        if etype in (_TRUE, _FALSE):
            self._take(1)
        else:
            self.skip(etype, depth)

    def skip_struct(self, depth: int = 0) -> None:
        last = 0
        while True:
            fid, ftype = self.field_header(last)
            if ftype == _STOP:
                return
            self.skip(ftype, depth)
            last = fid

    def struct_fields(self, wanted: dict[int, int], depth: int = 0) -> dict[int, object]:
        """Decode a struct: fields listed in ``wanted`` (id -> expected type) are read with
        :meth:`_value`, the rest skipped. A field of an unexpected type is skipped too."""
        values: dict[int, object] = {}
        last = 0
        while True:
            fid, ftype = self.field_header(last)
            if ftype == _STOP:
                return values
            if wanted.get(fid) == ftype or (wanted.get(fid) == _TRUE and ftype in (_TRUE, _FALSE)):
                values[fid] = self._value(ftype)
            else:
                self.skip(ftype, depth)
            last = fid

    def _value(self, ftype: int) -> object:
        if ftype in (_I16, _I32, _I64):
            return self.zigzag()
        if ftype == _BINARY:
            return self.binary()
        if ftype in (_TRUE, _FALSE):
            return ftype == _TRUE
        raise ParquetMetaError(f"unsupported value type {ftype}")  # pragma: no cover


def _schema_element(r: _Reader) -> tuple[str, int]:
    # SchemaElement: 4 name (string), 5 num_children (i32)
    f = r.struct_fields({4: _BINARY, 5: _I32})
    name = f.get(4, b"")
    return (name.decode("utf-8", errors="replace") if isinstance(name, bytes) else ""), int(f.get(5, 0) or 0)


def _key_value(r: _Reader) -> tuple[str, str | None]:
    f = r.struct_fields({1: _BINARY, 2: _BINARY})
    key = f.get(1, b"")
    value = f.get(2)
    return (key.decode("utf-8", errors="replace"),
            value.decode("utf-8", errors="replace") if isinstance(value, bytes) else None)


def _top_level_columns(elements: list[tuple[str, int]]) -> list[str]:
    """Schema elements are a depth-first flattening; the root's direct children are the columns."""
    if not elements:
        raise ParquetMetaError("footer has an empty schema")
    names: list[str] = []
    pos = 1
    for _ in range(elements[0][1]):
        if pos >= len(elements):
            raise ParquetMetaError("footer schema is inconsistent (fewer elements than children)")
        names.append(elements[pos][0])
        # Skip this column's subtree.
        pending = 1
        while pending:
            if pos >= len(elements):
                raise ParquetMetaError("footer schema is inconsistent (fewer elements than children)")
            pending += elements[pos][1] - 1
            pos += 1
    return names


def parse_footer(footer: bytes) -> ParquetMeta:
    """Decode a serialized ``FileMetaData``."""
    r = _Reader(footer)
    num_rows = None
    elements: list[tuple[str, int]] = []
    kv: dict[str, str] = {}
    created_by = None
    last = 0
    while True:
        fid, ftype = r.field_header(last)
        if ftype == _STOP:
            break
        if fid == 2 and ftype == _LIST:          # schema: list<SchemaElement>
            size, etype = r.list_header()
            if etype != _STRUCT:
                raise ParquetMetaError("footer schema is not a list of structs")
            elements = [_schema_element(r) for _ in range(size)]
        elif fid == 3 and ftype == _I64:         # num_rows
            num_rows = r.zigzag()
        elif fid == 5 and ftype == _LIST:        # key_value_metadata: list<KeyValue>
            size, etype = r.list_header()
            if etype != _STRUCT:
                raise ParquetMetaError("footer key_value_metadata is not a list of structs")
            for _ in range(size):
                key, value = _key_value(r)
                kv[key] = value if value is not None else ""
        elif fid == 6 and ftype == _BINARY:      # created_by
            created_by = r.string()
        else:
            r.skip(ftype)
        last = fid
    if num_rows is None:
        raise ParquetMetaError("footer has no num_rows")
    return ParquetMeta(num_rows=num_rows, columns=_top_level_columns(elements),
                       key_value_metadata=kv, created_by=created_by)


def read_meta(path: str | os.PathLike) -> ParquetMeta:
    """Read ``path``'s footer. Raises :class:`ParquetMetaError` (or ``OSError``) on failure."""
    with open(path, "rb") as fh:
        size = fh.seek(0, os.SEEK_END)
        if size < 12:
            raise ParquetMetaError(f"{os.fspath(path)}: too short to be parquet ({size} bytes)")
        fh.seek(0)
        head = fh.read(4)
        fh.seek(size - 8)
        tail = fh.read(8)
        if tail[4:] == b"PARE":
            raise ParquetMetaError(f"{os.fspath(path)}: encrypted parquet footer is not supported")
        if head != MAGIC or tail[4:] != MAGIC:
            raise ParquetMetaError(f"{os.fspath(path)}: not a parquet file (missing PAR1 magic; "
                                   "truncated or still being written?)")
        (footer_len,) = struct.unpack("<I", tail[:4])
        if footer_len <= 0 or footer_len > size - 12:
            raise ParquetMetaError(f"{os.fspath(path)}: corrupt footer length {footer_len}")
        fh.seek(size - 8 - footer_len)
        footer = fh.read(footer_len)
    try:
        return parse_footer(footer)
    except ParquetMetaError as exc:
        raise ParquetMetaError(f"{os.fspath(path)}: {exc}") from None
