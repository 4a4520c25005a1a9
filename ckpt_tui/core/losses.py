"""Loss curves of a baseline and a resumed run: pick the tag, align by step, measure, export.

The seed's claim is that resuming from a converted checkpoint gives the same loss curve. This module
turns that claim into numbers: the overlap, the resume step, the difference per step, its maximum and
mean, and the first step where the curves part beyond ``atol + rtol * |baseline|``.

Equality rules: NaN equals NaN and an infinity equals the same infinity. A run that reproduces a
divergence reproduces it. Statistics are taken over the steps where both values are finite.

PNG backend: matplotlib (the optional ``png`` extra), imported only when a PNG is asked for. plotext's
own ``save_fig`` writes only text or HTML, so it cannot produce a PNG. matplotlib's Agg backend needs
no display, which suits a headless node. Without matplotlib, asking for a PNG is a one-line
:class:`CkptError` that names the extra. CSV and the terminal plot need nothing extra.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ckpt_tui.core.errors import CkptError
from ckpt_tui.core.formats.tensorboard import EventFile, ScalarPoints, merge_files, read_scalars

DEFAULT_ATOL = 1e-5  # fp32 resumes agree to ~1e-6 (field notes); bf16 needs ~1e-3
DEFAULT_RTOL = 0.0
_PNG_POINTS = 8000  # per curve: more than the pixels across a 10-inch figure

# Exact names first, in order of preference (Megatron-DeepSpeed, then common trainers).
TRAIN_LOSS_TAGS = (
    "lm-loss-training/lm loss",
    "train/loss",
    "train/lm_loss",
    "training/loss",
    "loss/train",
    "train_loss",
    "train_loss_step",
    "loss",
    "lm loss",
    "lm_loss",
)
VAL_LOSS_TAGS = (
    "lm-loss-validation/lm loss validation",
    "eval/loss",
    "val/loss",
    "validation/loss",
    "loss/val",
    "loss/validation",
    "val_loss",
    "eval_loss",
    "valid/loss",
)
# Loss-looking tags that are not a loss per iteration (Megatron's x-axis variants, the fp16 loss scale).
_NOT_A_LOSS = re.compile(r"vs samples|vs tokens|scale|epoch|_std|/std", re.IGNORECASE)
_VALIDATION = re.compile(r"(^|[/_ -])(val|valid|validation|eval|test)([/_ -]|$)", re.IGNORECASE)


# ------------------------------------------------------------------------------------------ tags


def loss_kind(tag: str) -> str | None:
    """'train' or 'validation' for a loss tag, None for anything else."""
    lowered = tag.lower()
    if lowered in TRAIN_LOSS_TAGS:
        return "train"
    if lowered in VAL_LOSS_TAGS:
        return "validation"
    if "loss" not in lowered or _NOT_A_LOSS.search(tag):
        return None
    return "validation" if _VALIDATION.search(tag) else "train"


def default_loss_tag(tags: Iterable[str]) -> str | None:
    """The training loss among ``tags``: a known name first, else the shortest other loss-like tag."""
    tags = list(tags)
    by_lower = {t.lower(): t for t in tags}
    for name in TRAIN_LOSS_TAGS:
        if name in by_lower:
            return by_lower[name]
    candidates = sorted((t for t in tags if loss_kind(t) == "train"), key=lambda t: (len(t), t))
    return candidates[0] if candidates else None


# ------------------------------------------------------------------------------------------ runs


@dataclass(frozen=True)
class Series:
    """One tag of one run: a point per step, steps strictly increasing."""

    tag: str
    steps: np.ndarray  # int64
    values: np.ndarray  # float64
    wall_times: np.ndarray  # float64
    source: str = ""  # what it was read from, for messages

    def __len__(self) -> int:
        return int(self.steps.size)

    @property
    def first_step(self) -> int | None:
        return int(self.steps[0]) if self.steps.size else None

    @property
    def last_step(self) -> int | None:
        return int(self.steps[-1]) if self.steps.size else None

    @classmethod
    def from_points(cls, tag: str, points: ScalarPoints, source: str = "") -> Series:
        return cls(tag, points.steps, points.values, points.wall_times, source)


@dataclass
class Run:
    """One side of a comparison: event files whose points are merged (latest wall time wins per step)."""

    path: Path
    files: list[EventFile]
    notes: list[str] = field(default_factory=list)
    _merged: dict[str, ScalarPoints] | None = field(default=None, repr=False)

    @property
    def merged(self) -> dict[str, ScalarPoints]:
        if self._merged is None:
            self._merged = merge_files(self.files)
        return self._merged

    @property
    def tags(self) -> list[str]:
        return sorted(self.merged)

    def all_notes(self) -> list[str]:
        return self.notes + [n for f in self.files for n in f.notes]

    def require_data(self) -> None:
        """Raise the clear error for a run with no scalar at all (empty, just started, truncated)."""
        if not self.merged:
            why = "; ".join(self.all_notes()) or "no scalar values in its event files"
            raise CkptError(self.path, f"no scalar data to compare ({why})")

    def series(self, tag: str) -> Series:
        self.require_data()
        if tag not in self.merged:
            raise CkptError(self.path, f"no tag {tag!r}; tags here: {', '.join(self.tags)}")
        return Series.from_points(tag, self.merged[tag], str(self.path))


def load_run(path: Path) -> Run:
    """A run folder (all its event files) or a single event file."""
    path = Path(path)
    return Run(path, read_scalars(path))


def open_pair(baseline: Path, resumed: Path) -> tuple[Run, Run]:
    """Load both sides. The same folder twice means a resumed run that wrote into its baseline's
    folder: its newest event file is the resumed run, the older ones (restarts merged) the baseline."""
    baseline, resumed = Path(baseline), Path(resumed)
    if baseline.exists() and resumed.exists() and baseline.resolve() == resumed.resolve():
        files = read_scalars(baseline)
        if len(files) < 2:
            raise CkptError(baseline, "baseline and resumed are the same single event file")
        note = (
            f"one folder for both runs: baseline = {len(files) - 1} older event file(s), "
            f"resumed = {files[-1].path.name} (pass event files to choose otherwise)"
        )
        return Run(baseline, files[:-1], [note]), Run(files[-1].path, files[-1:])
    return load_run(baseline), load_run(resumed)


def pick_tags(base: Run, resumed: Run, requested: Sequence[str] | None) -> list[str]:
    """The requested tags, or the training loss both runs have."""
    base.require_data()
    resumed.require_data()
    if requested:
        return list(dict.fromkeys(requested))
    both = set(base.tags) & set(resumed.tags)
    tag = default_loss_tag(both)
    if tag is None:
        for run in (base, resumed):
            if default_loss_tag(run.tags) is None:
                raise CkptError(run.path, f"no loss tag found; pass --tag (tags here: {', '.join(run.tags)})")
        raise CkptError(
            resumed.path,
            f"no loss tag in common with the baseline (baseline: {default_loss_tag(base.tags)}, "
            f"resumed: {default_loss_tag(resumed.tags)}); pass --tag",
        )
    return [tag]


# ------------------------------------------------------------------------------------ comparison


@dataclass
class Comparison:
    """Baseline vs resumed on one tag, aligned on the steps both logged."""

    tag: str
    baseline: Series
    resumed: Series
    atol: float
    rtol: float
    steps: np.ndarray  # common steps
    base_values: np.ndarray
    resumed_values: np.ndarray
    diff: np.ndarray  # resumed - baseline (NaN where undefined)
    close: np.ndarray  # bool per common step
    only_baseline: int  # baseline steps inside the overlap window that the resumed run lacks
    only_resumed: int

    @property
    def resume_step(self) -> int | None:
        """First step the resumed run logged (the step after the checkpoint it loaded)."""
        return self.resumed.first_step

    @property
    def overlap(self) -> tuple[int, int] | None:
        return (int(self.steps[0]), int(self.steps[-1])) if self.steps.size else None

    @property
    def compared(self) -> int:
        return int(self.steps.size)

    @property
    def mismatches(self) -> int:
        return int(self.compared - np.count_nonzero(self.close))

    @property
    def _finite(self) -> np.ndarray:
        return np.isfinite(self.base_values) & np.isfinite(self.resumed_values)

    @property
    def nonfinite_mismatches(self) -> int:
        """Steps where one side is NaN/inf and the other does not match it."""
        return int(np.count_nonzero(~self._finite & ~self.close))

    @property
    def max_abs_diff(self) -> float | None:
        d = np.abs(self.diff[self._finite])
        return float(d.max()) if d.size else None

    @property
    def max_abs_diff_step(self) -> int | None:
        finite = np.flatnonzero(self._finite)
        if not finite.size:
            return None
        return int(self.steps[finite[np.argmax(np.abs(self.diff[finite]))]])

    @property
    def mean_abs_diff(self) -> float | None:
        d = np.abs(self.diff[self._finite])
        return float(d.mean()) if d.size else None

    @property
    def max_rel_diff(self) -> float | None:
        """max |resumed - baseline| / |baseline| over finite steps (a zero baseline counts as tiny)."""
        f = self._finite
        if not f.any():
            return None
        denom = np.maximum(np.abs(self.base_values[f]), np.finfo(np.float64).tiny)
        return float((np.abs(self.diff[f]) / denom).max())

    @property
    def first_divergence(self) -> int | None:
        """Index into ``steps`` of the first step beyond tolerance, or None."""
        bad = np.flatnonzero(~self.close)
        return int(bad[0]) if bad.size else None

    @property
    def first_divergence_step(self) -> int | None:
        i = self.first_divergence
        return None if i is None else int(self.steps[i])

    @property
    def passed(self) -> bool:
        return self.compared > 0 and self.mismatches == 0

    @property
    def verdict(self) -> str:
        if not self.compared:
            return "no-overlap"
        return "match" if self.passed else "diverged"

    def summary(self) -> str:
        """One line for people: the verdict and why."""
        if self.verdict == "no-overlap":
            return f"{self.tag}: no step in common (baseline {_range(self.baseline)}, resumed {_range(self.resumed)})"
        tol = f"atol={self.atol:g}" + (f", rtol={self.rtol:g}" if self.rtol else "")
        text = f"{self.tag}: {self.verdict} over {self.compared} step(s), max |diff| {_fmt(self.max_abs_diff)} ({tol})"
        if self.first_divergence_step is not None:
            text += f"; first beyond tolerance at step {self.first_divergence_step}"
        return text

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe (NaN and infinities become null); see compare_loss_cmd for the schema."""
        i = self.first_divergence
        first = None
        if i is not None:
            first = {
                "step": int(self.steps[i]),
                "baseline": _num(self.base_values[i]),
                "resumed": _num(self.resumed_values[i]),
                "diff": _num(self.diff[i]),
            }
        return {
            "tag": self.tag,
            "verdict": self.verdict,
            "passed": self.passed,
            "atol": self.atol,
            "rtol": self.rtol,
            "baseline_points": len(self.baseline),
            "resumed_points": len(self.resumed),
            "baseline_steps": _span(self.baseline),
            "resumed_steps": _span(self.resumed),
            "resume_step": self.resume_step,
            "overlap": list(self.overlap) if self.overlap else None,
            "compared": self.compared,
            "mismatches": self.mismatches,
            "nonfinite_mismatches": self.nonfinite_mismatches,
            "only_baseline": self.only_baseline,
            "only_resumed": self.only_resumed,
            "max_abs_diff": _num(self.max_abs_diff),
            "max_abs_diff_step": self.max_abs_diff_step,
            "mean_abs_diff": _num(self.mean_abs_diff),
            "max_rel_diff": _num(self.max_rel_diff),
            "first_divergence": first,
        }


def compare(baseline: Series, resumed: Series, atol: float = DEFAULT_ATOL, rtol: float = DEFAULT_RTOL) -> Comparison:
    """Align two series on their common steps and test ``|r - b| <= atol + rtol * |b|`` at each."""
    if not (np.isfinite(atol) and np.isfinite(rtol) and atol >= 0 and rtol >= 0):
        raise CkptError(None, f"tolerances must be finite and >= 0 (atol={atol}, rtol={rtol})")
    steps, ib, ir = np.intersect1d(baseline.steps, resumed.steps, assume_unique=True, return_indices=True)
    b, r = baseline.values[ib], resumed.values[ir]
    with np.errstate(invalid="ignore", over="ignore"):
        diff = r - b
        close = np.abs(diff) <= atol + rtol * np.abs(b)
    close |= (np.isnan(b) & np.isnan(r)) | (np.isinf(b) & (b == r))
    only_b = only_r = 0
    if steps.size:
        lo, hi = steps[0], steps[-1]
        only_b = int(np.count_nonzero((baseline.steps >= lo) & (baseline.steps <= hi))) - steps.size
        only_r = int(np.count_nonzero((resumed.steps >= lo) & (resumed.steps <= hi))) - steps.size
    return Comparison(baseline.tag, baseline, resumed, atol, rtol, steps, b, r, diff, close, only_b, only_r)


# ---------------------------------------------------------------------------------------- export


def safe_filename(tag: str) -> str:
    """'lm-loss-training/lm loss' -> 'lm-loss-training_lm_loss'."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", tag).strip("._")
    return name or "tag"


def export_names(tags: Sequence[str]) -> dict[str, str]:
    """A distinct file stem per tag (two tags can sanitise to the same name)."""
    seen: dict[str, int] = {}
    out = {}
    for tag in tags:
        stem = safe_filename(tag)
        n = seen.get(stem, 0)
        seen[stem] = n + 1
        out[tag] = stem if n == 0 else f"{stem}-{n + 1}"
    return out


def write_csv(cmp: Comparison, path: Path) -> Path:
    """``step,baseline,resumed,diff`` over the union of steps; a cell is empty where a run has no point.

    Values are written with Python's shortest round-trip repr, so the CSV reproduces them exactly.
    """
    steps = np.union1d(cmp.baseline.steps, cmp.resumed.steps)
    b = _on_steps(steps, cmp.baseline)
    r = _on_steps(steps, cmp.resumed)
    path = Path(path)
    _mkdir(path.parent)
    try:
        with open(path, "w", newline="") as fh:
            fh.write("step,baseline,resumed,diff\n")
            for s, bv, rv in zip(steps.tolist(), b, r):
                d = "" if bv is None or rv is None else repr(rv - bv)
                fh.write(f"{s},{'' if bv is None else repr(bv)},{'' if rv is None else repr(rv)},{d}\n")
    except OSError as exc:
        raise CkptError(path, exc.strerror or str(exc)) from None
    return path


def write_png(cmp: Comparison, path: Path, *, title: str | None = None) -> Path:
    """Both curves with the resume step marked, and the difference below with the tolerance band."""
    plt = _pyplot()
    path = Path(path)
    _mkdir(path.parent)
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(10, 6.5), height_ratios=(3, 2))
    try:
        top.plot(*decimate(cmp.baseline.steps, cmp.baseline.values, _PNG_POINTS), label="baseline",
                 color="tab:blue", lw=1.6)
        top.plot(*decimate(cmp.resumed.steps, cmp.resumed.values, _PNG_POINTS), label="resumed",
                 color="tab:orange", lw=1.2, ls="--")
        bottom.plot(*decimate(cmp.steps, cmp.diff, _PNG_POINTS), color="tab:red", lw=1.0, label="resumed - baseline")
        if cmp.rtol == 0:
            bottom.axhspan(-cmp.atol, cmp.atol, color="tab:green", alpha=0.15, label=f"±atol {cmp.atol:g}")
        for ax in (top, bottom):
            if cmp.resume_step is not None:
                ax.axvline(cmp.resume_step, color="gray", ls=":", lw=1)
            if cmp.first_divergence_step is not None:
                ax.axvline(cmp.first_divergence_step, color="tab:red", ls=":", lw=1)
            ax.grid(alpha=0.3)
            ax.legend(loc="best", fontsize=8)
        top.set_ylabel(cmp.tag)
        bottom.set_ylabel("diff")
        bottom.set_xlabel("step")
        top.set_title(title or cmp.summary(), fontsize=9)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    except OSError as exc:
        raise CkptError(path, exc.strerror or str(exc)) from None
    finally:
        plt.close(fig)
    return path


def require_png() -> None:
    """Raise the one-line "install the png extra" error now, before any work, if matplotlib is missing."""
    _pyplot()


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError:
        raise CkptError(None, "PNG export needs matplotlib: pip install 'ckpt-tui[png]'") from None
    return plt


# --------------------------------------------------------------------------------------- helpers


def decimate(x: np.ndarray, y: np.ndarray, max_points: int) -> tuple[list[Any], list[float]]:
    """At most ``max_points`` points that keep each bucket's minimum and maximum (spikes survive).

    Non-finite values are dropped: a terminal plot cannot draw them, and the statistics report them.
    A terminal is a few hundred cells wide and a PNG a few thousand pixels: plotting 1M points through
    plotext takes seconds for nothing.
    """
    keep = np.isfinite(y)
    x, y = x[keep], y[keep]
    if x.size <= max_points:
        return x.tolist(), y.tolist()
    buckets = max(max_points // 2, 1)
    edges = np.linspace(0, x.size, buckets + 1).astype(np.int64)
    picks: list[int] = []
    for a, b in zip(edges[:-1].tolist(), edges[1:].tolist()):
        if b <= a:
            continue
        lo, hi = a + int(np.argmin(y[a:b])), a + int(np.argmax(y[a:b]))
        picks.extend(sorted({lo, hi}))
    idx = np.asarray(picks, dtype=np.int64)
    return x[idx].tolist(), y[idx].tolist()



def _on_steps(steps: np.ndarray, series: Series) -> list[float | None]:
    """Values of ``series`` at ``steps`` (a superset of its steps), None where it has no point."""
    if not series.steps.size:
        return [None] * steps.size
    idx = np.minimum(np.searchsorted(series.steps, steps), series.steps.size - 1)
    present = (series.steps[idx] == steps).tolist()
    return [v if p else None for v, p in zip(series.values[idx].tolist(), present)]


def _mkdir(folder: Path) -> None:
    if folder.exists() and not folder.is_dir():
        raise CkptError(folder, "exists and is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CkptError(folder, exc.strerror or str(exc)) from None


def _num(x: float | np.floating | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if np.isfinite(x) else None


def _span(s: Series) -> list[int] | None:
    return [s.first_step, s.last_step] if len(s) else None


def _range(s: Series) -> str:
    return f"{s.first_step}..{s.last_step}" if len(s) else "empty"


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3g}"
