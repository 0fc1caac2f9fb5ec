"""The reports of ``choose``: ``choice.md`` (validation mIoU per candidate, the choice and
whether it sits at its grid's edge) and ``measure.md`` (the chosen pair on test streets).

Why the edge check: the grids behind the committed results (``docs/results/``) were
extended five times because a control chosen at the longest length it was offered had not
stopped gaining, and each extension moved the measured gain (+5.1 against a 128-epoch 10 %
baseline, +1.8 against 192). A choice at the edge of its grid says only that the best
length is at least that long, so both reports say so where it happens, before anyone
quotes the measurement.
"""

from __future__ import annotations

from typing import Any

from xmodelkd_ros.evaluation.claim import TINY_BRANCH
from xmodelkd_ros.evaluation.report import ci_text, pct
from xmodelkd_ros.labels import CLASS_NAMES

#: arm -> the ``recipe_epochs`` key that is its length (the student's weights stand on its
#: whole lineage: teacher and pretraining too, when it starts from the teacher's 3D branch)
ARM_LENGTH = {"distilled": "distilled_lineage", "baseline": "controls", "selftrain": "controls",
              "lasermix": "controls"}  # fmt: skip


def grid_edges(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per arm of a ``choice.json`` document: the chosen candidate's epochs, the distinct
    epochs of the arm's candidates (its grid) and ``edge``: ``"longest"`` or ``"shortest"``
    when the choice is the grid's end, ``"single"`` when the arm was offered one length,
    ``"unknown"`` when a candidate's folder states no epochs, else None (bracketed).
    The grid is the lengths of the candidates of the chosen one's ``variant`` (its recipe
    apart from the schedule; every candidate when the document records none)."""
    out: dict[str, dict[str, Any]] = {}
    for arm in doc["arms"]:
        key = ARM_LENGTH[arm]
        pool = [c for c in doc["candidates"] if arm in c["miou"]]
        chosen_variant = next((c.get("variant") or {}).get(arm) for c in pool
                              if c["name"] == doc["choice"][arm])  # fmt: skip
        pool = [c for c in pool if (c.get("variant") or {}).get(arm) == chosen_variant]
        lengths = [(c.get("epochs") or {}).get(key) for c in pool]
        chosen = next((c.get("epochs") or {}).get(key) for c in pool
                      if c["name"] == doc["choice"][arm])  # fmt: skip
        grid = sorted({int(n) for n in lengths if n is not None})
        if chosen is None or None in lengths:
            edge = "unknown"
        elif len(grid) < 2:
            edge = "single"
        elif chosen == grid[-1]:
            edge = "longest"
        elif chosen == grid[0]:
            edge = "shortest"
        else:
            edge = None
        out[arm] = {"epochs": chosen, "grid": grid, "edge": edge}
    return out


def edge_lines(edges: dict[str, dict[str, Any]]) -> list[str]:
    """Markdown bullets for the arms whose choice is not bracketed by its grid."""
    lines = []
    for arm, e in edges.items():
        grid = ", ".join(str(n) for n in e["grid"])
        if e["edge"] == "longest":
            lines.append(f"- {arm}: {e['epochs']} epochs, the longest of its grid ({grid}): "
                         "its best length may lie beyond; extend the grid and choose again "
                         "before a measurement of this choice is believed.")  # fmt: skip
        elif e["edge"] == "shortest":
            lines.append(f"- {arm}: {e['epochs']} epochs, the shortest of its grid ({grid}): "
                         "its best length may lie below.")  # fmt: skip
        elif e["edge"] == "single":
            lines.append(f"- {arm}: one length only ({grid}): not varied.")
        elif e["edge"] == "unknown":
            lines.append(f"- {arm}: a candidate's folder states no epochs (no recipe.json): "
                         "whether the choice is bracketed is unknown.")  # fmt: skip
    if lines:
        lines.insert(0, "Not bracketed by its grid:")
        lines.append("")
    return lines


def choice_markdown(doc: dict[str, Any]) -> str:
    """``choice.md`` of a ``choice.json`` document (with its ``edges``, :func:`grid_edges`)."""
    v = doc["validation"]
    arms = doc["arms"]
    lines = [
        "# Schedules chosen on the validation streets",
        "",
        f"Validation streets {v['seeds'][0]}-{v['seeds'][-1]} ({len(v['seeds'])} streets x "
        f"{v['scans']} scans = {v['n_scans']}), seeds {doc['seeds']}, label fraction "
        f"{doc['label_fraction']:g}; mIoU (%) mean over seeds, per seed in brackets; ties "
        f"within {doc['tie'] * 100:.1f} go to the candidate listed first; '-' = not a "
        f"candidate for that arm. Commit {doc['commit'][:10]}.",
        "",
        "| candidate | epochs (student lineage / controls) | " + " | ".join(arms) + " |",
        "| --- | --- | " + " | ".join("---" for _ in arms) + " |",
    ]
    for c in doc["candidates"]:
        e = c["epochs"] or {}
        student = e.get("distilled_lineage", "?") if "distilled" in c["miou"] else "-"
        controls = e.get("controls", "?") if set(c["miou"]) - {"distilled"} else "-"
        cells = [f"{student} / {controls}"]
        for arm in arms:
            if arm not in c["miou"]:
                cells.append("-")
                continue
            mark = "**" if doc["choice"][arm] == c["name"] else ""
            seeds = " / ".join(pct(x) for x in c["per_seed"][arm])
            cells.append(f"{mark}{pct(c['miou'][arm])}{mark} ({seeds})")
        lines.append(f"| {c['name']} | " + " | ".join(cells) + " |")
    chosen = ", ".join(f"{a} **{n}**" for a, n in doc["choice"].items())
    gains = "; ".join(f"distilled - {a} {ci_text(g)}" for a, g in doc["validation_gain"].items())
    lines += ["", f"Chosen: {chosen}. Validation gains of the chosen arms: {gains} mIoU "
              "(validation numbers, not a claim).", ""]  # fmt: skip
    for arm in arms:  # candidates that differ in more than length: one grid per variant
        groups: dict[str, list[str]] = {}
        for c in doc["candidates"]:
            v = (c.get("variant") or {}).get(arm)
            if v is not None:
                groups.setdefault(v, []).append(c["name"])
        if len(groups) > 1:
            lines += [f"{arm}: {len(groups)} variants (recipes that differ in more than "
                      "length): " + " | ".join(", ".join(g) for g in groups.values())
                      + "; a choice is bracketed only by its own variant's lengths.", ""]
    pools = doc.get("pool_scans") or {}
    if any(pools.values()):
        lines += ["Unlabeled scans from extra streets the chosen networks trained with: "
                  + ", ".join(f"{a} {n}" for a, n in pools.items()) + ".", ""]
    branch = doc.get("image_branch")
    if branch and branch != TINY_BRANCH:
        lines += [f"The chosen student's teacher saw the cameras with the image branch {branch}.",
                  ""]  # fmt: skip
    return "\n".join(lines + edge_lines(doc["edges"]))


def measure_markdown(m: dict[str, Any], choice_doc: dict[str, Any]) -> str:
    t = m["test"]
    controls = list(m["gains"])
    lines = [
        "# The chosen arms on the test streets (measured once)",
        "",
        f"Test streets {t['seeds']} x {t['scans']} scans ({t['n_scans']}), seeds "
        f"{choice_doc['seeds']}; chosen on validation: "
        + ", ".join(f"{a} {n}" for a, n in m["choice"].items()) + ". mIoU: "
        + ", ".join(f"{a} {pct(v)}" for a, v in m["miou"].items()) + "."
        + (f" The street ledger reserved these streets for `{t['registered']}`."
           if t.get("registered") else " Not checked against the street ledger."),
        "",
        *edge_lines(choice_doc["edges"]),
    ]
    for a, g in m["gains"].items():
        lines.append(f"**distilled - {a} {ci_text(g)} mIoU** (95 % CI, bootstrap over seeds, "
                     "test streets and their scans); per seed "
                     + " / ".join(pct(x, True) for x in g["per_seed"]))  # fmt: skip
        lines.append("")
    lines += ["| class | " + " | ".join(f"distilled - {a} IoU (95 % CI)" for a in controls)
              + " |", "| --- | " + " | ".join("---" for _ in controls) + " |"]  # fmt: skip
    for c in CLASS_NAMES:
        cells = [ci_text(m["gains"][a]["per_class"][c]) for a in controls]
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    if m["ablation"]:
        arms = choice_doc["arms"]
        heads = [*arms, *(f"own distilled - {a} (95 % CI)" for a in arms[1:])]
        lines += ["", "Every candidate on the same test streets, mIoU (ablation; chose "
                  "nothing):", "", "| candidate | " + " | ".join(heads) + " |",
                  "| --- | " + " | ".join("---" for _ in heads) + " |"]  # fmt: skip
        for n, v in m["ablation"].items():
            cells = [pct(v["miou"][a]) if a in v["miou"] else "-" for a in arms]
            cells += [ci_text(v["gains"][a]) if a in v["gains"] else "-" for a in arms[1:]]
            lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
