"""The card's file tree: MF, application DFs found by AID, transparent EFs by FID.

Only what the profile needs: no records, no paths, no file creation. Contents are
immutable once the card is built (certificates do not change on a card in the field).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

MF_FID = 0x3F00


class Access(enum.Enum):
    """Who may read a file."""

    ALWAYS = enum.auto()
    PIN = enum.auto()  # after a successful VERIFY in this card session
    NEVER = enum.auto()  # e.g. key files: the card uses them, nobody reads them


@dataclass(frozen=True, slots=True)
class ElementaryFile:
    """A transparent EF."""

    fid: int
    data: bytes
    read: Access = Access.ALWAYS

    def __post_init__(self) -> None:
        if not 0 <= self.fid <= 0xFFFF or self.fid == MF_FID:
            raise ValueError(f"invalid EF identifier {self.fid:#06x}")
        if len(self.data) > 0x7FFF:  # READ BINARY offsets have 15 bits
            raise ValueError(f"EF {self.fid:04X} too large for READ BINARY: {len(self.data)}")

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass(frozen=True, slots=True)
class DedicatedFile:
    """A DF: the MF (no AID) or an application (selected by its AID)."""

    fid: int | None
    aid: bytes | None
    files: Mapping[int, ElementaryFile] = field(default_factory=dict)

    def find(self, fid: int) -> ElementaryFile | None:
        return self.files.get(fid)


class FileSystem:
    """The MF and the applications under it."""

    def __init__(self, applications: Iterable[DedicatedFile] = ()) -> None:
        self.mf = DedicatedFile(MF_FID, None)
        self._apps: dict[bytes, DedicatedFile] = {}
        for app in applications:
            if app.aid is None:
                raise ValueError("an application DF needs an AID")
            if app.aid in self._apps:
                raise ValueError(f"duplicate AID {app.aid.hex()}")
            self._apps[app.aid] = app

    def application(self, aid: bytes) -> DedicatedFile | None:
        """Exact AID match only: the profile does not use partial DF-name selection."""
        return self._apps.get(bytes(aid))

    @staticmethod
    def application_df(aid: bytes, files: Iterable[ElementaryFile]) -> DedicatedFile:
        by_fid: dict[int, ElementaryFile] = {}
        for ef in files:
            if ef.fid in by_fid:
                raise ValueError(f"duplicate FID {ef.fid:04X} in application {aid.hex()}")
            by_fid[ef.fid] = ef
        return DedicatedFile(None, bytes(aid), by_fid)
