"""House rule: no module over 500 lines, no function or method over 80 lines (tests aside).

Why a test: size creeps up one small addition at a time and nobody notices in review; a
long module or function is where unrelated concerns end up sharing state. The check runs
on the package and the benchmarks, never on ``test/``.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECKED_FOLDERS = ("xmodelkd_ros", "bench")
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80


def size_offenders(folder: Path, relative_to: Path) -> list[str]:
    """Every module over :data:`MAX_MODULE_LINES` lines and every function or method over
    :data:`MAX_FUNCTION_LINES` lines (``end_lineno - lineno + 1``) under ``folder``."""
    offenders: list[str] = []
    for path in sorted(folder.rglob("*.py")):
        rel = path.relative_to(relative_to)
        source = path.read_text(encoding="utf-8")
        lines = len(source.splitlines())
        if lines > MAX_MODULE_LINES:
            offenders.append(f"{rel}: module of {lines} lines (max {MAX_MODULE_LINES})")
        functions = [node for node in ast.walk(ast.parse(source, filename=str(path)))
                     if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]  # fmt: skip
        for node in sorted(functions, key=lambda f: f.lineno):
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                offenders.append(f"{rel}:{node.lineno} {node.name}: {length} lines "
                                 f"(max {MAX_FUNCTION_LINES})")  # fmt: skip
    return offenders


def test_package_and_benchmarks_within_size_limits() -> None:
    offenders = [o for name in CHECKED_FOLDERS for o in size_offenders(ROOT / name, ROOT)]
    assert not offenders, "over the size limits:\n" + "\n".join(offenders)


def _function(name: str, lines: int, indent: str = "", prefix: str = "def") -> str:
    """Source of a function spanning exactly ``lines`` lines."""
    body = [f"{indent}    x = {k}" for k in range(lines - 2)]
    return "\n".join([f"{indent}{prefix} {name}():", *body, f"{indent}    return x"]) + "\n"


def test_size_check_lists_every_offender(tmp_path: Path) -> None:
    """The check itself: it must name each violation, and nothing at the limits."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    at_limit = _function("fits", MAX_FUNCTION_LINES)
    (pkg / "ok.py").write_text(at_limit + "\n" * (MAX_MODULE_LINES - at_limit.count("\n")))
    assert len((pkg / "ok.py").read_text().splitlines()) == MAX_MODULE_LINES
    (pkg / "long_module.py").write_text("x = 1\n" * (MAX_MODULE_LINES + 1))
    (pkg / "sub" / "long_functions.py").write_text(
        _function("too_long", MAX_FUNCTION_LINES + 1)
        + "\n\nclass Holder:\n"
        + _function("long_method", MAX_FUNCTION_LINES + 5, indent="    ")
        + "\n\n"
        + _function("long_coroutine", MAX_FUNCTION_LINES + 2, prefix="async def")
    )
    assert size_offenders(pkg, tmp_path) == [
        f"pkg/long_module.py: module of {MAX_MODULE_LINES + 1} lines (max 500)",
        f"pkg/sub/long_functions.py:1 too_long: {MAX_FUNCTION_LINES + 1} lines (max 80)",
        f"pkg/sub/long_functions.py:85 long_method: {MAX_FUNCTION_LINES + 5} lines (max 80)",
        f"pkg/sub/long_functions.py:172 long_coroutine: {MAX_FUNCTION_LINES + 2} lines "
        "(max 80)",
    ]
