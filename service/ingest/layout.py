"""Which archive member is which image of which class and split.

Two layouts:

* ImageFolder: ``train/<class>/<image>`` with optional ``val/`` and ``test/``,
  or ``<class>/<image>`` at the top (no splits given). Images may sit in
  sub-folders of their class folder. One wrapping folder around everything
  (``mydata/train/...``) is looked through; loose files at the top are ignored.
* ``labels.csv`` (``path,label[,split]``; header optional; the shallowest one
  wins): paths relative to the csv's folder, labels are class names, a blank
  split means train. Files the csv does not list are ignored.

Class names are sorted, numerically when they are all integers.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass, field

from service.ingest.archive import Member, normalise_name
from service.ingest.dataset import SPLITS
from service.ingest.errors import DatasetRejected, safe_name


@dataclass(frozen=True)
class Item:
    member: Member
    class_name: str
    split: str | None  # None: not given, carved from train later


@dataclass
class Layout:
    format: str  # "imagefolder" | "labels_csv"
    items: list[Item]
    class_names: list[str]
    notes: list[str] = field(default_factory=list)


def sort_class_names(names: Iterable[str]) -> list[str]:
    unique = set(names)
    if unique and all(name.isdecimal() for name in unique):
        return sorted(unique, key=lambda name: (int(name), name))
    return sorted(unique)


def _strip_wrapping_folders(paths: list[list[str]]) -> list[list[str]]:
    """Drop folders that wrap everything, as long as some structure remains below them."""
    while (
        all(len(parts) > 1 for parts in paths)
        and len({parts[0] for parts in paths}) == 1
        and paths[0][0] not in SPLITS
        and any(len(parts) > 2 for parts in paths)
    ):
        paths = [parts[1:] for parts in paths]
    return paths


def plan_folders(members: list[Member]) -> Layout:
    """Assign members of an ImageFolder archive to classes and splits."""
    if not members:
        raise DatasetRejected(422, "the archive holds no files")
    paths = _strip_wrapping_folders([member.name.split("/") for member in members])
    pairs = [(member, parts) for member, parts in zip(members, paths, strict=True) if len(parts) > 1]
    notes = []
    if len(pairs) < len(members):
        notes.append(f"ignored {len(members) - len(pairs)} loose files at the top of the archive")
    if not pairs:
        raise DatasetRejected(422, "no class folders found: expected train/<class>/<image> or <class>/<image>")
    if not any(parts[0] in SPLITS for _, parts in pairs):
        items = [Item(member, parts[0], None) for member, parts in pairs]
        return Layout("imagefolder", items, sort_class_names(i.class_name for i in items), notes)
    items = [_split_item(member, parts) for member, parts in pairs]
    if not any(item.split == "train" for item in items):
        raise DatasetRejected(422, "val/ or test/ folders are given but there is no train/ folder")
    names = sort_class_names(item.class_name for item in items)
    return Layout("imagefolder", items, names, notes)


def _split_item(member: Member, parts: list[str]) -> Item:
    if parts[0] not in SPLITS:
        raise DatasetRejected(
            422,
            f"unexpected folder {safe_name(parts[0])} beside train/ (expected only train/, val/ and test/)",
        )
    if len(parts) < 3:
        raise DatasetRejected(
            422,
            f"file {safe_name(member.name)} is directly in {parts[0]}/; put each image in a class folder "
            f"({parts[0]}/<class>/<image>)",
        )
    return Item(member, parts[1], parts[0])


def find_labels_csv(members: list[Member]) -> Member | None:
    """The shallowest ``labels.csv`` (case-insensitive), or None; two at that depth is an error."""
    found = [m for m in members if m.name.rsplit("/", 1)[-1].lower() == "labels.csv"]
    if not found:
        return None
    depth = min(m.name.count("/") for m in found)
    shallowest = [m for m in found if m.name.count("/") == depth]
    if len(shallowest) > 1:
        names = ", ".join(safe_name(m.name) for m in shallowest)
        raise DatasetRejected(422, f"the archive holds several labels.csv files at the same level: {names}")
    return shallowest[0]


def _columns(header: list[str]) -> tuple[dict[str, int], bool]:
    """Column positions and whether the first row is a header."""
    cells = [cell.strip().lower() for cell in header]
    if "path" in cells and "label" in cells:
        return {name: cells.index(name) for name in ("path", "label", "split") if name in cells}, True
    positions = {"path": 0, "label": 1}
    if len(cells) > 2:
        positions["split"] = 2
    return positions, False


def plan_labels_csv(members: list[Member], *, csv_member: Member, text: str) -> Layout:
    """Assign members to classes and splits from the rows of ``labels.csv``."""
    base = csv_member.name.rpartition("/")[0]
    by_name = {m.name: m for m in members}
    rows = [(number, row) for number, row in enumerate(csv.reader(io.StringIO(text)), start=1) if any(row)]
    if not rows:
        raise DatasetRejected(422, "labels.csv is empty")
    columns, has_header = _columns(rows[0][1])
    items, seen = [], set()
    for number, row in rows[1:] if has_header else rows:
        item = _csv_item(number, row, columns=columns, base=base, by_name=by_name)
        if item.member.name in seen:
            raise DatasetRejected(422, f"labels.csv line {number}: {safe_name(item.member.name)} is listed twice")
        seen.add(item.member.name)
        items.append(item)
    if not items:
        raise DatasetRejected(422, "labels.csv has a header but no rows")
    notes = []
    unlisted = len(members) - len(items) - 1
    if unlisted:
        notes.append(f"ignored {unlisted} files not listed in labels.csv")
    return Layout("labels_csv", items, sort_class_names(i.class_name for i in items), notes)


def _csv_item(number: int, row: list[str], *, columns: dict[str, int], base: str, by_name: dict) -> Item:
    if len(row) <= max(columns.values()):
        raise DatasetRejected(422, f"labels.csv line {number}: expected columns path,label[,split], got {len(row)}")
    path, label = row[columns["path"]].strip(), row[columns["label"]].strip()
    split = row[columns["split"]].strip().lower() if "split" in columns else None
    if not path or not label:
        raise DatasetRejected(422, f"labels.csv line {number}: empty path or label")
    try:
        relative = normalise_name(path)
    except DatasetRejected as exc:
        raise DatasetRejected(422, f"labels.csv line {number}: {exc.detail}") from exc
    member = by_name.get(f"{base}/{relative}" if base else relative)
    if member is None:
        raise DatasetRejected(422, f"labels.csv line {number}: {safe_name(path)} is not in the archive")
    if split is not None and split not in ("", *SPLITS):
        raise DatasetRejected(422, f"labels.csv line {number}: split {safe_name(split)} is not one of train, val, test")
    return Item(member, label, (split or "train") if split is not None else None)
