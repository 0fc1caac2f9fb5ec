"""The street ledger: which validation and test streets each committed measurement used
or a pre-registration reserved (``docs/results/streets.yaml``).

Why it exists: "measured once, on test streets no earlier choice was judged on" is the
protocol's promise, and until now it was kept as a paragraph of prose that every
measurement edited by hand. The ledger makes it a file that tools read:

- ``next`` prints the first free streets of a split (what a pre-registration reserves);
- ``reserve`` appends the entry that reserves them, before anything trains;
- ``check`` (and ``choose --measure --registered NAME``) refuses streets that the ledger
  gives to another measurement or to none;
- ``audit`` reads every committed result under a folder (``measure.json``,
  ``benchmark.json``, ``compare.json``, ``choice.json``, ``cross_sensor.json``) and lists
  the streets it scored that the ledger does not give to that result's folder.

Entries of different names never share a street; one name may hold several folders (the
ablation streets 9000-9003 are scored by every benchmark run, by design, and the
validation streets 104-123 choose several measurements). The file is plain YAML, a list
of entries, so that ``reserve`` appends to it without rewriting its comments.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from xmodelkd_ros.sim.splits import SPLITS

#: the committed ledger of a source checkout (absent from an installed wheel: pass --ledger)
DEFAULT_LEDGER = Path(__file__).resolve().parents[2] / "docs" / "results" / "streets.yaml"
#: result files whose streets ``audit`` reads (any other JSON is not a result)
RESULT_FILES = ("benchmark.json", "measure.json", "choice.json", "compare.json",
                "cross_sensor.json")  # fmt: skip


class LedgerError(ValueError):
    """The ledger is malformed, or streets were asked for that it does not give."""


@dataclass(frozen=True)
class Entry:
    """One reservation: ``streets`` of ``split`` belong to the measurement ``name``."""

    split: str
    first: int
    last: int
    name: str
    use: str
    folders: tuple[str, ...] = field(default=())

    @property
    def streets(self) -> range:
        return range(self.first, self.last + 1)

    @property
    def text(self) -> str:
        return f"{self.first}-{self.last}" if self.last > self.first else str(self.first)


def street_text(seeds: Iterable[int]) -> str:
    """``[9000, 9001, 9002, 9005]`` -> ``"9000-9002, 9005"`` (sorted, runs joined)."""
    out: list[str] = []
    for s in sorted(set(seeds)):
        if out and s == int(out[-1].split("-")[-1]) + 1:
            out[-1] = f"{out[-1].split('-')[0]}-{s}"
        else:
            out.append(str(s))
    return ", ".join(out)


def _parse_range(text: Any, where: str) -> tuple[int, int]:
    try:
        a, _, b = str(text).partition("-")
        first, last = int(a), int(b or a)
    except ValueError:
        raise LedgerError(f"{where}: streets {text!r} is not FIRST-LAST") from None
    if last < first:
        raise LedgerError(f"{where}: streets {text!r} run backwards")
    return first, last


def parse_streets(text: str, where: str = "streets") -> list[int]:
    """``"9000-9003,9007"`` -> [9000, 9001, 9002, 9003, 9007] (LedgerError when malformed).
    The one parser of street lists: the tools' ``cli.parse_seeds`` wraps it; here, so that
    the ledger reads without the tools' torch imports."""
    out: list[int] = []
    for part in str(text).split(","):
        if part.strip():
            first, last = _parse_range(part.strip(), where)
            out += range(first, last + 1)
    if not out:
        raise LedgerError(f"{where}: no streets in {text!r}")
    return out


def _entry(raw: Any, where: str) -> Entry:
    if not isinstance(raw, dict):
        raise LedgerError(f"{where}: an entry is a mapping (split, streets, name, use)")
    missing = [k for k in ("split", "streets", "name", "use") if not raw.get(k)]
    if missing:
        raise LedgerError(f"{where}: missing {', '.join(missing)}")
    split = str(raw["split"])
    if split not in ("val", "test"):
        raise LedgerError(f"{where}: split {split!r} is not val or test")
    first, last = _parse_range(raw["streets"], where)
    if first not in SPLITS[split] or last not in SPLITS[split]:
        r = SPLITS[split]
        raise LedgerError(f"{where}: streets {first}-{last} lie outside the {split} range "
                          f"[{r.start}, {r.stop})")  # fmt: skip
    folders = raw.get("folders") or []
    if isinstance(folders, str) or not all(isinstance(f, str) for f in folders):
        raise LedgerError(f"{where}: folders is a list of folder names")
    return Entry(split, first, last, str(raw["name"]), str(raw["use"]), tuple(folders))


class Ledger:
    """The entries of one ledger file, checked: known splits, ranges inside them, and no
    street held by two names."""

    def __init__(self, entries: Sequence[Entry], path: Path | None = None) -> None:
        self.entries = list(entries)
        self.path = path
        owner: dict[tuple[str, int], Entry] = {}
        for e in self.entries:
            for s in e.streets:
                other = owner.setdefault((e.split, s), e)
                if other.name != e.name:
                    raise LedgerError(f"{path or 'ledger'}: {e.split} street {s} is both "
                                      f"{other.name}'s and {e.name}'s")  # fmt: skip
        self._owner = owner

    @classmethod
    def load(cls, path: str | Path) -> Ledger:
        path = Path(path)
        if not path.is_file():
            raise LedgerError(f"no street ledger at {path} (pass --ledger PATH)")
        try:
            raw = yaml.safe_load(path.read_text()) or []
        except yaml.YAMLError as exc:
            raise LedgerError(f"{path}: not YAML ({str(exc).splitlines()[0]})") from None
        if not isinstance(raw, list):
            raise LedgerError(f"{path}: the ledger is a list of entries")
        return cls([_entry(r, f"{path} entry {i + 1}") for i, r in enumerate(raw)], path)

    def owner(self, split: str, street: int) -> Entry | None:
        """The entry holding ``street`` of ``split``, or None when it is free."""
        return self._owner.get((split, street))

    def free(self, split: str, count: int) -> list[int]:
        """The first ``count`` consecutive free streets of ``split`` (gaps count: streets
        are exchangeable draws of the same world), or LedgerError when none are left."""
        if split not in ("val", "test") or count < 1:
            raise LedgerError(f"need split val or test and a count >= 1, not {split!r}, {count}")
        run: list[int] = []
        for s in SPLITS[split]:
            run = [*run, s] if self.owner(split, s) is None else []
            if len(run) == count:
                return run
        raise LedgerError(f"no {count} consecutive free {split} streets are left")

    def check(self, split: str, streets: Iterable[int], name: str) -> Entry:
        """Refuse ``streets`` unless every one is reserved for ``name``: one held by
        another measurement was judged (or will be) by it; one held by none was never
        pre-registered. Returns ``name``'s first entry."""
        streets = sorted(set(int(s) for s in streets))
        mine = [e for e in self.entries if e.name == name]
        if not mine:
            raise LedgerError(f"{self.path or 'the ledger'} has no entry named {name!r}: "
                              f"reserve the streets first (python -m "
                              f"xmodelkd_ros.evaluation.ledger reserve)")  # fmt: skip
        others: dict[str, list[int]] = {}
        for s in streets:
            e = self.owner(split, s)
            if e is None or e.name != name:
                others.setdefault(e.name if e else "no measurement", []).append(s)
        if others:
            held = "; ".join(f"{street_text(v)}: {k}" for k, v in sorted(others.items()))
            raise LedgerError(f"{split} streets not reserved for {name} ({held})")
        return mine[0]


def reserve_text(split: str, streets: Sequence[int], name: str, use: str,
                 folders: Sequence[str]) -> str:  # fmt: skip
    """The YAML block that ``reserve`` appends (one entry; the file stays a list)."""
    doc = {"split": split, "streets": f"{min(streets)}-{max(streets)}", "name": name,
           "use": use, "folders": list(folders)}  # fmt: skip
    return yaml.safe_dump([doc], sort_keys=False, width=88, allow_unicode=True)


def recorded_streets(doc: Any, file_name: str) -> list[tuple[str, list[int]]]:
    """The (split, streets) a committed result file scored, by the shape each tool writes:
    ``benchmark.json`` / ``cross_sensor.json`` (``meta.test_seeds``, ``meta.split``),
    ``measure.json`` (``test``), ``choice.json`` (``validation``, or a cross-sensor
    choice's ``meta``), ``compare.json`` (``streets``)."""
    if not isinstance(doc, dict):
        return []
    out: list[tuple[str, list[int]]] = []
    meta = doc.get("meta") if isinstance(doc.get("meta"), dict) else {}
    if "test_seeds" in meta:
        out.append((str(meta.get("split", "test")), [int(s) for s in meta["test_seeds"]]))
    if file_name == "measure.json" and isinstance(doc.get("test"), dict):
        out.append((str(doc["test"].get("split", "test")), [int(s) for s in doc["test"]["seeds"]]))
    if file_name == "choice.json" and isinstance(doc.get("validation"), dict):
        v = doc["validation"]
        out.append((str(v.get("split", "val")), [int(s) for s in v["seeds"]]))
    if file_name == "compare.json" and isinstance(doc.get("streets"), dict):
        st = doc["streets"]
        seeds = st["seeds"]
        seeds = parse_streets(seeds) if isinstance(seeds, str) else [int(s) for s in seeds]
        out.append((str(st.get("split", "val")), seeds))
    return out


def audit(ledger: Ledger, results: Path) -> list[str]:
    """One line per committed result under ``results`` that scored streets its folder does
    not hold in the ledger (the folder: the first path part below ``results``; a file
    directly in ``results`` is the folder ``.``)."""
    problems: list[str] = []
    for f in sorted(results.rglob("*.json")):
        rel = f.relative_to(results)
        if f.name not in RESULT_FILES or "scores" in rel.parts:
            continue
        folder = rel.parts[0] if len(rel.parts) > 1 else "."
        try:
            doc = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            problems.append(f"{rel}: unreadable ({exc})")
            continue
        for split, seeds in recorded_streets(doc, f.name):
            owners = {s: ledger.owner(split, s) for s in seeds}
            stray = [s for s, e in owners.items() if e is None or folder not in e.folders]
            if stray:
                held = sorted({e.name for s in stray if (e := owners[s]) is not None})
                where = f" (held by {', '.join(held)})" if held else " (in no entry)"
                problems.append(f"{rel}: {split} streets {street_text(stray)} are not "
                                f"{folder}'s in the ledger{where}")  # fmt: skip
    return problems


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m xmodelkd_ros.evaluation.ledger",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="The street ledger: which validation and test streets each measurement "
        "used or reserved. Reserve new streets before anything trains; measure only on "
        "streets reserved for the measurement.",
    )
    p.add_argument("--ledger", type=Path, default=DEFAULT_LEDGER, help="ledger file")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="every entry, split by split")
    n = sub.add_parser("next", help="the first free consecutive streets of a split")
    n.add_argument("--split", choices=("val", "test"), default="test")
    n.add_argument("--count", type=int, default=16)
    r = sub.add_parser("reserve", help="append an entry for the next free streets")
    r.add_argument("--split", choices=("val", "test"), default="test")
    r.add_argument("--count", type=int, default=16)
    r.add_argument("--name", required=True, help="the measurement (its docs/results folder)")
    r.add_argument("--use", required=True, help="what the streets will measure, one line")
    c = sub.add_parser("check", help="exit 2 unless the streets are reserved for NAME")
    c.add_argument("--split", choices=("val", "test"), default="test")
    c.add_argument("--streets", required=True, help="e.g. 9112-9127")
    c.add_argument("--name", required=True)
    a = sub.add_parser("audit", help="committed results whose streets the ledger does not "
                       "give to their folder")  # fmt: skip
    a.add_argument("results", type=Path, nargs="?", default=DEFAULT_LEDGER.parent)
    return p


def run(args: argparse.Namespace) -> int:
    ledger = Ledger.load(args.ledger)
    if args.command == "list":
        for split in ("test", "val"):
            for e in sorted((e for e in ledger.entries if e.split == split),
                            key=lambda e: e.first):  # fmt: skip
                print(f"{split:4} {e.text:>9}  {e.name}: {e.use}")
    elif args.command == "next":
        print(street_text(ledger.free(args.split, args.count)))
    elif args.command == "reserve":
        if any(e.name == args.name for e in ledger.entries):
            raise LedgerError(f"{args.ledger} already has an entry named {args.name!r}")
        streets = ledger.free(args.split, args.count)
        text = Path(args.ledger).read_text()
        with open(args.ledger, "a") as f:
            f.write(("" if text.endswith("\n") or not text else "\n")
                    + reserve_text(args.split, streets, args.name, args.use, [args.name]))
        Ledger.load(args.ledger)  # what was appended must read back
        print(f"reserved {args.split} streets {street_text(streets)} for {args.name}")
    elif args.command == "check":
        ledger.check(args.split, parse_streets(args.streets, "--streets"), args.name)
        print(f"{args.split} streets {args.streets} are reserved for {args.name}")
    else:
        problems = audit(ledger, args.results)
        for line in problems:
            print(line)
        if problems:
            return 1
        print(f"every result under {args.results} scored streets the ledger gives its folder")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except LedgerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
