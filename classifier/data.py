"""Loading, cleaning, de-duplication and splitting of the labelled SMS data.

The data lives outside the repository (``../shared/data`` relative to the repo root, or
``$SMSFW_DATA_DIR``, or ``--data-dir``) and is never copied into it. See the data README there
for the attribution and licence of each file.

Pipeline (identical for training and evaluation):

1. read each CSV with :mod:`csv` (UTF-8). The column names are matched case-insensitively, so both
   layouts work: ``LABEL,TEXT,URL,EMAIL,PHONE`` (Mishra & Soni) and ``text,label`` (OpenTextShield);
2. map the labels: ``ham`` -> ham; ``spam``/``Spam`` -> spam; ``smishing``/``Smishing``/``phishing``
   -> phishing (anything else is an error);
3. clean the text: :func:`classifier.normalize.normalize_text` (the same function the runtime
   applies), then remove one pair of double quotes wrapping the *whole* text (an export artefact
   of ``ots_sample_999.csv``: 176 of its rows are stored as ``"..."`` with literal quotes, which
   would otherwise become a spurious "quoted => ham" cue); empty texts are dropped;
4. de-duplicate on the case-folded cleaned text, across all files. When copies of one text carry
   different labels (41 texts in the shipped data, all spam vs. phishing inside the Mishra & Soni
   file) the **most severe** label is kept (phishing > spam > ham): a firewall should rather treat a
   text that some annotator called phishing as phishing, and dropping them would remove hard
   cases from the spam/phishing boundary. ``conflicts="drop"`` is available to drop them instead;
5. split with a seeded, stratified (label x source) shuffle, so the test split shares no text with
   the training split (case-insensitive) and the split is reproducible.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from classifier.normalize import normalize_text

LABELS: tuple[str, ...] = ("ham", "spam", "phishing")
LABEL2ID: dict[str, int] = {name: i for i, name in enumerate(LABELS)}
ID2LABEL: dict[int, str] = dict(enumerate(LABELS))
SEVERITY: dict[str, int] = {"ham": 0, "spam": 1, "phishing": 2}

# Raw label (case-folded) -> project label.
_LABEL_MAP: dict[str, str] = {
    "ham": "ham",
    "spam": "spam",
    "smishing": "phishing",
    "phishing": "phishing",
}

DEFAULT_FILES: tuple[str, ...] = (
    "mishra_soni_5971.csv",
    "ots_synthetic_fable5_v1.csv",
    "ots_sample_999.csv",
)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SEED = 42
DEFAULT_TEST_FRACTION = 0.15
DEFAULT_VAL_FRACTION = 0.10  # of the training split, for early stopping / model selection


def default_data_dir() -> Path:
    """``$SMSFW_DATA_DIR`` if set, else ``../shared/data`` relative to the repository root."""
    env = os.environ.get("SMSFW_DATA_DIR")
    if env:
        return Path(env)
    return (REPO_ROOT.parent / "shared" / "data").resolve()


def map_label(raw: str) -> str:
    """Map a raw dataset label onto ham / spam / phishing; raises ValueError if unknown."""
    key = raw.strip().casefold()
    try:
        return _LABEL_MAP[key]
    except KeyError:
        raise ValueError(f"unknown label {raw!r}") from None


def clean_text(raw: str) -> str:
    """normalize_text + removal of one pair of double quotes wrapping the whole text."""
    text = normalize_text(raw)
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        text = normalize_text(text[1:-1])
    return text


def dedup_key(text: str) -> str:
    """Key used for de-duplication and for the train/test disjointness guarantee."""
    return text.casefold()


@dataclass
class Example:
    text: str
    label: str
    source: str  # file of the first occurrence
    sources: list[str] = field(default_factory=list)  # every file the text occurs in

    @property
    def label_id(self) -> int:
        return LABEL2ID[self.label]


@dataclass
class RawRow:
    text: str  # cleaned
    label: str  # mapped
    source: str


def read_csv(path: str | os.PathLike[str]) -> list[RawRow]:
    """Read one labelled CSV (either layout), map labels, clean text, drop empty texts."""
    path = Path(path)
    rows: list[RawRow] = []
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            return rows
        cols = {name.strip().lstrip("\ufeff").casefold(): i for i, name in enumerate(header)}
        if "text" not in cols or "label" not in cols:
            raise ValueError(f"{path}: expected 'text' and 'label' columns, got {header!r}")
        ti, li = cols["text"], cols["label"]
        for lineno, rec in enumerate(reader, start=2):
            if not rec or len(rec) <= max(ti, li):
                continue
            try:
                label = map_label(rec[li])
            except ValueError as exc:
                raise ValueError(f"{path}:{lineno}: {exc}") from None
            text = clean_text(rec[ti])
            if text:
                rows.append(RawRow(text=text, label=label, source=path.name))
    return rows


@dataclass
class Dataset:
    examples: list[Example]
    stats: dict


def deduplicate(rows: Iterable[RawRow], conflicts: str = "severe") -> Dataset:
    """De-duplicate on the case-folded cleaned text. conflicts: "severe" (keep the most severe
    label) or "drop" (drop texts whose copies disagree)."""
    if conflicts not in ("severe", "drop"):
        raise ValueError("conflicts must be 'severe' or 'drop'")
    rows = list(rows)
    by_key: dict[str, Example] = {}
    labels_by_key: dict[str, set[str]] = {}
    for row in rows:
        key = dedup_key(row.text)
        ex = by_key.get(key)
        if ex is None:
            by_key[key] = Example(row.text, row.label, row.source, [row.source])
            labels_by_key[key] = {row.label}
            continue
        labels_by_key[key].add(row.label)
        if row.source not in ex.sources:
            ex.sources.append(row.source)
        if SEVERITY[row.label] > SEVERITY[ex.label]:
            ex.label = row.label
    conflict_keys = {k for k, labs in labels_by_key.items() if len(labs) > 1}
    examples = [ex for k, ex in by_key.items() if not (conflicts == "drop" and k in conflict_keys)]
    stats = {
        "rows_read": len(rows),
        "rows_read_per_source": dict(Counter(r.source for r in rows)),
        "unique_texts": len(by_key),
        "duplicates_removed": len(rows) - len(by_key),
        "texts_in_several_files": sum(1 for ex in by_key.values() if len(ex.sources) > 1),
        "label_conflicts": len(conflict_keys),
        "conflict_policy": conflicts,
        "conflicts_dropped": len(conflict_keys) if conflicts == "drop" else 0,
        "kept": len(examples),
        "kept_per_label": _count(ex.label for ex in examples),
        "kept_per_source_label": {
            src: _count(ex.label for ex in examples if ex.source == src)
            for src in sorted({ex.source for ex in examples})
        },
    }
    return Dataset(examples, stats)


def _count(labels: Iterable[str]) -> dict[str, int]:
    c = Counter(labels)
    return {name: c.get(name, 0) for name in LABELS}


def load_dataset(
    data_dir: str | os.PathLike[str] | None = None,
    files: Sequence[str] = DEFAULT_FILES,
    conflicts: str = "severe",
) -> Dataset:
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    rows: list[RawRow] = []
    for name in files:
        path = data_dir / name
        if not path.is_file():
            raise FileNotFoundError(
                f"data file not found: {path} (set --data-dir or SMSFW_DATA_DIR)"
            )
        rows.extend(read_csv(path))
    ds = deduplicate(rows, conflicts=conflicts)
    ds.stats["data_dir"] = str(data_dir)
    ds.stats["files"] = list(files)
    return ds


def stratified_split(
    examples: Sequence[Example], fraction: float, seed: int
) -> tuple[list[Example], list[Example]]:
    """Split into (rest, held_out) with about `fraction` of each (label, source) stratum held out.

    Deterministic: independent of the input order (strata and members are sorted by their
    de-duplication key before a seeded shuffle) and of any library version.
    """
    strata: dict[tuple[str, str], list[Example]] = {}
    for ex in examples:
        strata.setdefault((ex.label, ex.source), []).append(ex)
    rest: list[Example] = []
    held: list[Example] = []
    for i, key in enumerate(sorted(strata)):
        members = sorted(strata[key], key=lambda e: dedup_key(e.text))
        random.Random(f"{seed}:{i}:{key[0]}:{key[1]}").shuffle(members)
        n_held = int(round(len(members) * fraction))
        if len(members) >= 2:
            n_held = min(max(n_held, 1), len(members) - 1)
        held.extend(members[:n_held])
        rest.extend(members[n_held:])
    # Final order: deterministic shuffle, so that the strata are interleaved.
    random.Random(f"{seed}:rest").shuffle(rest)
    random.Random(f"{seed}:held").shuffle(held)
    return rest, held


@dataclass
class Splits:
    train: list[Example]  # the full training split (fit + val)
    fit: list[Example]  # the part the network is trained on
    val: list[Example]  # validation slice of the training split (early stopping)
    test: list[Example]  # held-out test split, never used for training or model selection
    stats: dict


def make_splits(
    ds: Dataset,
    seed: int = DEFAULT_SEED,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    val_fraction: float = DEFAULT_VAL_FRACTION,
) -> Splits:
    train, test = stratified_split(ds.examples, test_fraction, seed)
    fit, val = stratified_split(train, val_fraction, seed + 1)
    stats = dict(ds.stats)
    stats["split"] = {
        "seed": seed,
        "test_fraction": test_fraction,
        "val_fraction_of_train": val_fraction,
        "sizes": {"train": len(train), "fit": len(fit), "val": len(val), "test": len(test)},
        "per_label": {
            "train": _count(e.label for e in train),
            "fit": _count(e.label for e in fit),
            "val": _count(e.label for e in val),
            "test": _count(e.label for e in test),
        },
        "test_per_source_label": {
            src: _count(e.label for e in test if e.source == src)
            for src in sorted({e.source for e in test})
        },
    }
    return Splits(train=train, fit=fit, val=val, test=test, stats=stats)


def add_data_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        default=None,
        help="directory with the three CSV files (default: $SMSFW_DATA_DIR or ../shared/data "
        "relative to the repository root)",
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--test-fraction", type=float, default=DEFAULT_TEST_FRACTION)
    parser.add_argument("--val-fraction", type=float, default=DEFAULT_VAL_FRACTION)
    parser.add_argument("--conflicts", choices=("severe", "drop"), default="severe")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print data statistics and split sizes.")
    add_data_args(parser)
    args = parser.parse_args(argv)
    ds = load_dataset(args.data_dir, conflicts=args.conflicts)
    splits = make_splits(ds, args.seed, args.test_fraction, args.val_fraction)
    json.dump(splits.stats, sys.stdout, indent=2, ensure_ascii=False)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
