"""The audit's HTML page (image grids for each finding, to open in a browser and look) and
the files a user acts on: `exclude-suggested.txt` for `data.exclude`, and
`relabel-suggested.csv` for `data.relabel`, each to be reviewed first."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from pathlib import Path

from imgcls.audit.duplicates import EDITS
from imgcls.audit.pool import Pool
from imgcls.audit.records import Findings
from imgcls.report.html import Section, write_report
from imgcls.report.plots import image_groups
from imgcls.tracking.io import atomic_write_text

SHOWN = 48  # findings drawn per grid


def _short(name: str, width: int = 34) -> str:
    return name if len(name) <= width else "..." + name[-(width - 3):]


def _counts(findings: Findings) -> list[dict[str, str]]:
    rows = []
    for i, name in enumerate(findings.classes):
        rows.append({"class": name, **{split: str(c[i]) for split, c in
                                        findings.counts.items()}})
    rows.append({"class": "total", **{split: str(sum(c)) for split, c in
                                       findings.counts.items()}})
    return rows


def _duplicates(findings: Findings, pool: Pool, across: bool) -> Section:
    pairs = [p for p in findings.duplicates if p.across == across]
    title = ("Duplicates across the splits (leakage)" if across
             else "Duplicates within a split")
    leak = findings.leakage
    text = [f"{len(pairs)} pair(s), {sum(p.exact for p in pairs)} of them pixel-identical."]
    if across:
        text.append(f"{leak.test_leaking} of {leak.test_images} test images "
                    f"({leak.test_share:.2%}) and {leak.val_leaking} of {leak.val_images} "
                    "validation images have a duplicate in the training split.")
    section = Section(title, text)
    if pairs:
        groups = [([pool.image(p.a.name), pool.image(p.b.name)],
                   f"{_short(p.a.name)}\n{_short(p.b.name)}\n"
                   + ("identical" if p.exact else
                      f"similarity {p.similarity:.3f}, aligned {p.aligned:.3f}"))
                  for p in pairs[:SHOWN]]
        section.figures.append(("duplicates-across" if across else "duplicates-within",
                                image_groups(groups, f"{title}: the first {len(groups)}")))
    return section


def _labels(findings: Findings, pool: Pool) -> Section:
    suspects = findings.label_suspects
    text = [f"Method: {findings.label_method}."]
    if findings.label_accuracy is not None:
        text.append(f"The out-of-sample predictions agree with {findings.label_accuracy:.1%} "
                    f"of the given labels; {len(suspects)} images are predicted as another "
                    "class, listed with the lowest probability of their own label first.")
    section = Section("Likely label errors", text)
    if suspects:
        groups = [([pool.image(s.image.name)],
                   f"{_short(s.image.name, 24)}\ngiven {s.image.label} "
                   f"{s.given_probability:.0%}\nlooks {s.suggested} "
                   f"{s.suggested_probability:.0%}") for s in suspects[:SHOWN]]
        section.figures.append(("label-suspects", image_groups(
            groups, "the most likely label errors", per_row=8)))
    return section


def _outliers(findings: Findings, pool: Pool) -> Section:
    by_kind = defaultdict(list)
    for o in findings.outliers:
        by_kind[o.kind].append(o)
    section = Section("Odd images", [f"{kind}: {len(items)}" for kind, items in
                                     by_kind.items()] or ["none found"])
    for kind, items in by_kind.items():
        groups = [([pool.image(o.image.name)], f"{_short(o.image.name, 24)}\n{o.evidence}")
                  for o in items[:SHOWN]]
        section.figures.append((f"odd-{kind}", image_groups(groups, kind, per_row=8)))
    return section


def write_page(findings: Findings, pool: Pool, out: Path) -> Path:
    """out/report.html with every finding's grid."""
    thr = findings.threshold
    method = [f"Features: {findings.features}."]
    if thr is not None:
        method.append(
            f"Near duplicates: cosine similarity >= {thr.value:.3f} in the features and "
            f"alignment >= {thr.aligned:.3f} (normalized cross-correlation of the gray "
            f"images, crop, resize and mirror undone), what 99% of {thr.sample} images' "
            f"copies, each edited {len(EDITS)} ways, reach: {thr.twins_below:.1%} of those "
            f"copies fall below it in the features, {thr.strangers_above:.2%} of the "
            f"images' nearest other images are above it (quantiles of the copies' "
            f"similarity {thr.twin_quantiles}, of their alignment {thr.aligned_quantiles}, "
            f"of the nearest others' similarity {thr.stranger_quantiles}).")
    seconds = ", ".join(f"{k} {v:.1f} s" for k, v in findings.seconds.items())
    sections = [Section("Images per class and split", method + [f"Time: {seconds}."],
                        table=_counts(findings)),
                _duplicates(findings, pool, across=True),
                _duplicates(findings, pool, across=False),
                _labels(findings, pool), _outliers(findings, pool)]
    return write_report(out, f"imgcls audit: {findings.data}", sections)


def write_suggestions(findings: Findings, out: Path) -> None:
    """The lists to review and then pass as `data.exclude` and `data.relabel`: the training
    copies of held-out images (the test stays as it was), all but the first of each
    repeated image within a split, blank images; the suspects with their suggested class."""
    lines = ["# imgcls audit: images to leave out (data.exclude); review before use"]
    leaks = sorted({(p.a if p.a.split == "train" else p.b).name
                    for p in findings.duplicates if p.across and "train" in
                    (p.a.split, p.b.split)})
    lines += ["# training copies of validation / test images"] + leaks
    repeats = sorted({p.b.name for p in findings.duplicates if not p.across} - set(leaks))
    lines += ["# second copies within a split"] + repeats
    blank = sorted({o.image.name for o in findings.outliers if o.kind == "constant"})
    lines += ["# near-constant images"] + blank
    atomic_write_text(out / "exclude-suggested.txt", "\n".join(lines) + "\n")
    text = io.StringIO()
    text.write("# imgcls audit: likely label errors (data.relabel); review each before use\n")
    table = csv.writer(text, lineterminator="\n")
    table.writerow(["path", "label"])
    table.writerows([s.image.name, s.suggested] for s in findings.label_suspects)
    atomic_write_text(out / "relabel-suggested.csv", text.getvalue())
