"""What the held-out tools (``benchmark``, ``choose``) share: seed and label-fraction
parsing, their parsers' common options, the commit stamp, progress bars, the one-line
error handling of their ``main``, and :class:`HeldOutTool` (output folder, seeds, log and
the rendered streets, cached). Both tools score students on reserved streets the same way,
so their options, logs and errors read the same."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from xmodelkd_ros.evaluation.ledger import DEFAULT_LEDGER, Ledger, LedgerError, parse_streets
from xmodelkd_ros.evaluation.score import BenchmarkError, HeldOutScan, held_out_scans
from xmodelkd_ros.sim.rigs import rig_arg
from xmodelkd_ros.sim.splits import SplitError


def parse_seeds(text: str) -> list[int]:
    """``"9000-9003"`` or ``"9000,9005,9007"`` (or a mix) -> list of ints: the street
    ledger's parser (:func:`~.ledger.parse_streets`), its errors as argparse errors."""
    if not any(p.strip() for p in str(text).split(",")):
        raise argparse.ArgumentTypeError(f"no seeds in {text!r}")
    try:
        return parse_streets(text)
    except LedgerError:
        raise argparse.ArgumentTypeError(f"bad seed list {text!r}") from None


def parse_fractions(text: str) -> list[float]:
    """``"1.0,0.1"`` -> [1.0, 0.1]; every fraction in (0, 1]."""
    try:
        out = [float(p) for p in str(text).split(",") if p.strip()]
    except ValueError:
        out = []
    if not out or any(not 0.0 < f <= 1.0 for f in out):
        raise argparse.ArgumentTypeError(f"label fractions must be in (0, 1]: {text!r}")
    return out


def parse_fraction(text: str) -> float:
    (f,) = parse_fractions(text)
    return f


def git_commit(path: Path) -> tuple[str, bool]:
    """(commit hash, working tree dirty) of the repository holding ``path``."""
    try:
        rev = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"],
                             capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
        st = subprocess.run(["git", "-C", str(path), "status", "--porcelain", "--", "."],
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
        return rev, any(not line.startswith("??") for line in st.splitlines())
    except (OSError, subprocess.CalledProcessError):
        return "unknown", False


def progress_bar(enabled: bool, total: int, desc: str) -> Any:
    """A tqdm bar over ``total`` items (the benchmark's and ``choose``'s long loops), or
    None when progress is off (``--no-progress``, CI logs); callers update it if given."""
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, dynamic_ncols=True)


def tool_prog(tool: str) -> str:
    """How a tool is run: its parser's prog and the head of the command it records."""
    return f"python -m xmodelkd_ros.evaluation.{tool}"


def tool_parser(tool: str, description: str) -> argparse.ArgumentParser:
    """The parser of ``python -m xmodelkd_ros.evaluation.<tool>``, defaults shown in help."""
    return argparse.ArgumentParser(
        prog=tool_prog(tool),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description=description,
    )


def parse_tool_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None
                    ) -> argparse.Namespace:  # fmt: skip
    """``parser``'s arguments from ``argv`` (default: the command line), with the list
    itself kept as ``args.argv`` (the tools record the command they ran)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    return args


def add_output_args(p: argparse.ArgumentParser, out: str, seeds_help: str) -> None:
    """``--out`` (default ``out``) and ``--seeds`` (training seeds 0..N-1): what
    :class:`HeldOutTool` reads."""
    p.add_argument("--out", default=out, help="output folder")
    p.add_argument("--seeds", type=int, default=3, help=seeds_help)


def add_test_street_args(p: argparse.ArgumentParser, seeds: list[int] | None, help: str) -> None:
    """``--test-seeds`` (default ``seeds``; ``help`` says what they must be), ``--test-scans``,
    ``--test-stride`` and ``--beams``: which held-out scans are rendered and scored."""
    p.add_argument("--test-seeds", type=parse_seeds, default=seeds, help=help)
    p.add_argument("--test-scans", type=int, default=8, help="scans per test street")
    p.add_argument("--test-stride", type=int, default=10, help="frames between test scans")
    p.add_argument("--beams", type=rig_arg, default=32,
                   help="LiDAR of the test streets: beams (16, 32, 64, 128) or a named rig "
                   "(xmodelkd_ros.sim.rigs)")  # fmt: skip


def add_registered_args(p: argparse.ArgumentParser) -> None:
    """``--registered NAME`` and ``--ledger``: the street-ledger entry that reserved the
    streets a pre-registered measurement scores (:mod:`xmodelkd_ros.evaluation.ledger`)."""
    p.add_argument("--registered", metavar="NAME", default=None,
                   help="the street-ledger entry that reserved the scored streets: refuse "
                   "streets the ledger gives to another measurement or to none (without "
                   "it the streets are not checked against the ledger)")  # fmt: skip
    p.add_argument("--ledger", type=Path, default=DEFAULT_LEDGER,
                   help="the street ledger read with --registered")  # fmt: skip


def check_registered(args: argparse.Namespace, split: str, streets: Sequence[int]
                     ) -> str | None:  # fmt: skip
    """``args.registered`` when the ledger reserves ``streets`` of ``split`` for it (else a
    BenchmarkError naming who holds them), None when no entry was named."""
    name = getattr(args, "registered", None)
    if name is None:
        return None
    try:
        Ledger.load(args.ledger).check(split, streets, name)
    except LedgerError as exc:
        raise BenchmarkError(str(exc)) from None
    return name


def add_report_args(p: argparse.ArgumentParser) -> None:
    """``--bootstrap`` (replicates of the paired-gain interval) and ``--no-progress``."""
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap replicates")
    # the default lives on the parser, not the flag: help would print "(default: True)"
    p.set_defaults(progress=True)
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   default=argparse.SUPPRESS, help="no tqdm progress bars")  # fmt: skip


def run_tool(work: Callable[[], int]) -> int:
    """Run a tool's work: its expected failures as one ``error:`` line (exit 2), Ctrl-C as
    the hint that the same command continues (exit 130; both tools resume)."""
    try:
        return work()
    except (BenchmarkError, SplitError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: run the same command again to continue", file=sys.stderr)
        return 130


class HeldOutTool:
    """A held-out tool's run: its output folder, training seeds 0..N-1, a log (stderr and
    ``<out>/<tool>.log``, each line stamped with the time) and the scans of each street
    set it scores, rendered once per run."""

    #: the tool's module name; its log is ``<out>/<tool>.log``
    tool = ""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out = Path(args.out)
        self.seeds = list(range(args.seeds))
        self._scans: dict[str, list[HeldOutScan]] = {}

    def log(self, msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)
        with open(self.out / f"{self.tool}.log", "a") as fh:
            fh.write(time.strftime("%H:%M:%S ") + msg + "\n")

    @property
    def prog(self) -> str:
        return tool_prog(self.tool)

    def commit(self) -> tuple[str, bool]:
        """The package's commit and whether its files have uncommitted changes."""
        return git_commit(Path(__file__).resolve().parents[1])

    def street_scans(
        self,
        split: str,
        seeds: Sequence[int],
        per_street: int,
        stride: int,
        cameras: int,
        render_hw: tuple[int, int],
    ) -> list[HeldOutScan]:
        """``per_street`` scans of each street of ``split`` (:func:`held_out_scans`, at
        ``--beams``), rendered on the first call for ``split`` and reused after it."""
        if split not in self._scans:
            bar = progress_bar(self.args.progress, len(seeds) * per_street, f"{split} scans")
            self._scans[split] = held_out_scans(
                seeds, per_street, stride, self.args.beams, cameras, render_hw, bar, split
            )
            if bar is not None:
                bar.close()
        return self._scans[split]
