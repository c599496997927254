"""Did the whole file arrive? Checked on the staged file, before anything hands it on.

HTTP vouches for a body only when it announces a Content-Length; a body that ends when the
connection closes looks whole however much was lost. The formats can vouch for themselves:
a ZIP ends with its central directory, an OLE2 file's sectors are listed in its allocation
table, a PDF ends with %%EOF. Each check reads only that index, never the contents:
milliseconds on a 50 MB file. CSV has no end marker (only a Content-Length or a gzip trailer
can vouch for it).
"""

from __future__ import annotations

import os
import struct
import sys
import zipfile
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .content_check import PDF, XLS, XLSX, FileKind
from .errors import PermanentFetchError, TransientFetchError


def check_complete(path: Path, kind: FileKind) -> None:
    """Raise TransientFetchError when the file is cut short (another try may bring it whole),
    PermanentFetchError when it is whole but not a workbook (a .docx, a plain .zip, a .doc)."""
    with path.open("rb") as handle:
        if kind is XLSX:
            _check_xlsx(handle)
        elif kind is XLS:
            _check_xls(handle)
        elif kind is PDF:
            _check_pdf(handle)


def _incomplete(what: str, why: str) -> TransientFetchError:
    return TransientFetchError(f"the {what} is incomplete: {why}")


# --- XLSX: a ZIP package ---------------------------------------------------------------------

_XLSX_PARTS = ("[Content_Types].xml", "xl/workbook.xml")
_OTHER_PACKAGES = {  # the part that gives away what a ZIP is instead of a workbook
    "word/document.xml": "a Word document?",
    "ppt/presentation.xml": "a PowerPoint presentation?",
    "xl/workbook.bin": "a binary .xlsb workbook? save it as .xlsx",
}
_LOCAL_HEADER = 30  # bytes of a ZIP local file header before its name


def _check_xlsx(handle: BinaryIO) -> None:
    try:
        # Reads the end record and the central directory only; no member is inflated.
        with zipfile.ZipFile(handle) as archive:
            members, start_dir = archive.infolist(), archive.start_dir
    except (zipfile.BadZipFile, NotImplementedError, ValueError) as exc:
        # "not a zip file": zipfile's words for a missing end-of-central-directory record.
        # The rest (a bad signature, "zip file version 6.4", a name that is not the UTF-8 it
        # claims to be) is a damaged directory.
        if "not a zip file" in str(exc):
            raise _incomplete("XLSX", "its central directory is missing (cut short?)") from exc
        raise _incomplete("XLSX", f"its central directory is damaged ({exc})") from exc
    # A prefix may end with a whole ZIP stored inside the workbook (an embedded object), which
    # zipfile reads as a ZIP with data before it. The workbook's own directory lists a member
    # at byte 0, and every member's data lies before the directory.
    if members and (
        min(m.header_offset for m in members) != 0
        or any(m.header_offset + _LOCAL_HEADER + m.compress_size > start_dir for m in members)
    ):
        raise _incomplete("XLSX", "its central directory does not match its contents")
    names = {m.filename for m in members}
    if all(part in names for part in _XLSX_PARTS):
        return
    for part, guess in _OTHER_PACKAGES.items():
        if part in names:
            raise PermanentFetchError(f"received a ZIP that is not an Excel workbook ({guess})")
    missing = " or ".join(part for part in _XLSX_PARTS if part not in names)
    raise PermanentFetchError(
        f"received a ZIP archive, not an Excel workbook (it has no {missing})"
    )


# --- XLS: BIFF in an OLE2 compound file ------------------------------------------------------

_END_OF_CHAIN, _NO_ENTRY = 0xFFFFFFFE, 0xFFFFFFFF
_MAX_SECTOR_ID = 0xFFFFFFFA  # ids above it are markers
_DIR_ENTRY = 128
_HEADER_FAT_IDS = 109  # FAT sector ids held in the header itself
_STREAM, _ROOT = 2, 5
_OTHER_COMPOUND_FILES = {  # lower-cased stream names that give away what it is instead
    "worddocument": "received an OLE2 file that is not an Excel workbook (a Word document?)",
    "powerpoint document": (
        "received an OLE2 file that is not an Excel workbook (a PowerPoint presentation?)"
    ),
    "encryptedpackage": (
        "received a password-protected Office file, which cannot be read without its "
        "password (save the workbook without one)"
    ),
}


@dataclass(frozen=True)
class _DirEntry:
    name: str
    kind: int
    left: int
    right: int
    child: int
    start: int
    size: int


class _Compound:
    """What a completeness check needs of an OLE2 file: its FAT and its directory."""

    shift: int
    mini_cutoff: int
    fat: array[int]
    used: int

    def __init__(self, handle: BinaryIO):
        self._handle = handle
        self.file_size = os.fstat(handle.fileno()).st_size
        header = handle.read(512)
        if len(header) < 512:
            raise _incomplete("XLS", "its header is cut short")
        (self.shift,) = struct.unpack_from("<H", header, 30)
        if self.shift not in (9, 12):  # 512- or 4096-byte sectors: the only two there are
            raise _incomplete("XLS", f"its header is damaged (sector shift {self.shift})")
        self.sector = 1 << self.shift
        n_fat, first_dir = struct.unpack_from("<II", header, 44)
        (self.mini_cutoff,) = struct.unpack_from("<I", header, 56)
        first_difat, n_difat = struct.unpack_from("<II", header, 68)
        if (n_fat + n_difat) * self.sector > self.file_size:  # also bounds the loops below
            raise _incomplete("XLS", "the file is shorter than its header says (cut short?)")
        fat_ids = list(struct.unpack_from(f"<{_HEADER_FAT_IDS}I", header, 76))
        difat, per_difat = first_difat, self.sector // 4 - 1
        for _ in range(n_difat):  # FAT sector ids past the first 109, in a chain of their own
            ids = struct.unpack(f"<{per_difat + 1}I", self._read(difat, "sector table"))
            fat_ids += ids[:per_difat]
            difat = ids[per_difat]
        fat = b"".join(self._read(sid, "sector table") for sid in fat_ids[:n_fat])
        self.fat = array("I", fat)  # 4 bytes an entry, as in the file: 1M sectors, 4 MB
        if sys.byteorder == "big":
            self.fat.byteswap()
        # Sectors up to the last one in use (a free entry is all 0xff bytes, any other is not).
        self.used = -(-len(fat.rstrip(b"\xff")) // 4)
        directory = b"".join(self._read(sid, "directory") for sid in self.chain(first_dir))
        self.entries = [
            self._entry(directory[at : at + _DIR_ENTRY])
            for at in range(0, len(directory), _DIR_ENTRY)
        ]

    def _read(self, sector_id: int, what: str) -> bytes:
        if sector_id > _MAX_SECTOR_ID:
            raise _incomplete("XLS", f"its {what} is damaged (sector id {sector_id:#x})")
        self._handle.seek((sector_id + 1) << self.shift)
        data = self._handle.read(self.sector)
        if len(data) < self.sector:
            raise _incomplete("XLS", f"its {what} is missing (cut short?)")
        return data

    def chain(self, start: int) -> list[int]:
        """The sector ids of a stream, in order, from the FAT."""
        ids: list[int] = []
        sector_id, table = start, len(self.fat)
        for _ in range(table + 1):  # a chain longer than the table is a loop
            if sector_id == _END_OF_CHAIN:
                return ids
            if sector_id >= table:
                break
            ids.append(sector_id)
            sector_id = self.fat[sector_id]
        raise _incomplete("XLS", "its sector chains are broken (cut short?)")

    def _entry(self, raw: bytes) -> _DirEntry:
        (name_bytes,) = struct.unpack_from("<H", raw, 64)
        left, right, child = struct.unpack_from("<III", raw, 68)
        start, size = struct.unpack_from("<IQ", raw, 116)
        if self.shift == 9:  # version 3 files: the size's high half may hold garbage
            size &= 0xFFFFFFFF
        name = raw[: max(min(name_bytes, 64) - 2, 0)].decode("utf-16-le", "replace")
        return _DirEntry(name, raw[66], left, right, child, start, size)

    def top_streams(self) -> dict[str, _DirEntry]:
        """The streams directly in the root, by lower-cased name (a sub-storage holds an
        embedded object: a Word file with an Excel chart has a Workbook stream down there)."""
        found: dict[str, _DirEntry] = {}
        todo, seen = [self.entries[0].child], set()
        while todo:  # the root's children form a tree through their left and right links
            at = todo.pop()
            if at == _NO_ENTRY or at >= len(self.entries) or at in seen:
                continue
            seen.add(at)
            entry = self.entries[at]
            if entry.kind == _STREAM:
                found[entry.name.lower()] = entry
            todo += (entry.left, entry.right)
        return found

    def _consecutive(self, start: int, needed: int) -> bool:
        if start + needed > len(self.fat):
            return False
        run = array("I", range(start + 1, start + needed))
        run.append(_END_OF_CHAIN)
        return self.fat[start : start + needed] == run

    def holds(self, start: int, size: int) -> bool:
        """Are all `size` bytes of the stream starting at sector `start` in the file?"""
        needed = -(-size // self.sector)
        if needed == 0:
            return True
        if needed > len(self.fat):  # more sectors than the table has: a damaged size
            return False
        # Writers lay a stream out in consecutive sectors: one comparison (in C) then stands
        # for walking the chain (100,000 sectors in a 50 MB file: 20 ms in Python).
        if self._consecutive(start, needed):
            highest_whole, last = start + needed - 2, start + needed - 1
        else:
            ids = self.chain(start)[:needed]
            if len(ids) < needed:
                return False
            highest_whole, last = max(ids[:-1], default=-1), ids[-1]
        # Every sector whole but the last, which holds only what is left of the stream.
        whole_end = (highest_whole + 2) * self.sector
        last_end = (last + 1) * self.sector + size - (needed - 1) * self.sector
        return max(whole_end, last_end) <= self.file_size


def _check_xls(handle: BinaryIO) -> None:
    compound = _Compound(handle)
    if not compound.entries or compound.entries[0].kind != _ROOT:
        raise _incomplete("XLS", "its directory is damaged (no root entry)")
    # The file must reach into its last used sector; that one may be short (some writers
    # leave it so, and readers accept it).
    if compound.file_size <= compound.used * compound.sector:
        raise _incomplete("XLS", "the file ends before its last sector (cut short?)")
    streams = compound.top_streams()
    workbook = streams.get("workbook") or streams.get("book")  # BIFF8, or BIFF5 and older
    if workbook is None:
        for name, words in _OTHER_COMPOUND_FILES.items():
            if name in streams:
                raise PermanentFetchError(words)
        raise PermanentFetchError(
            "received an OLE2 file that is not an Excel workbook (no Workbook stream)"
        )
    # A stream under the cutoff lives in the mini stream, which the root entry holds.
    root = compound.entries[0]
    small = workbook.size < compound.mini_cutoff
    start, size = (root.start, root.size) if small else (workbook.start, workbook.size)
    if not compound.holds(start, size):
        raise _incomplete("XLS", "its workbook stream runs past the end of the file (cut short?)")


# --- PDF -------------------------------------------------------------------------------------

_PDF_TAIL = 1024


def _check_pdf(handle: BinaryIO) -> None:
    # Readers look for %%EOF anywhere in the last 1024 bytes: writers leave whitespace, even
    # junk, after it. A PDF cut short has none there.
    size = os.fstat(handle.fileno()).st_size
    handle.seek(max(size - _PDF_TAIL, 0))
    if b"%%EOF" not in handle.read(_PDF_TAIL):
        raise _incomplete("PDF", "it does not end with %%EOF (cut short?)")
