"""Data loading for the classifier: label mapping, cleaning, de-duplication, split.

The tests that need the real data skip cleanly when ../shared/data (or $SMSFW_DATA_DIR) is absent.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

import pytest

from classifier.data import (
    DEFAULT_FILES,
    LABELS,
    RawRow,
    clean_text,
    dedup_key,
    deduplicate,
    default_data_dir,
    load_dataset,
    make_splits,
    map_label,
    read_csv,
    stratified_split,
)

DATA_DIR = default_data_dir()
HAVE_DATA = all((DATA_DIR / name).is_file() for name in DEFAULT_FILES)
needs_data = pytest.mark.skipif(not HAVE_DATA, reason=f"labelled data not found in {DATA_DIR}")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("ham", "ham"),
        ("spam", "spam"),
        ("Spam", "spam"),
        ("smishing", "phishing"),
        ("Smishing", "phishing"),
        ("phishing", "phishing"),
        (" ham ", "ham"),
    ],
)
def test_label_mapping(raw: str, expected: str) -> None:
    assert map_label(raw) == expected


@pytest.mark.parametrize("raw", ["", "fraud", "1", "hamm"])
def test_unknown_label_is_an_error(raw: str) -> None:
    with pytest.raises(ValueError):
        map_label(raw)


def test_clean_text_normalises_and_strips_wrapping_quotes() -> None:
    assert clean_text("  ＦＲＥＥ  pa\u200bypal\n\nnow ") == "FREE paypal now"
    assert clean_text('"Hey, are you coming?"') == "Hey, are you coming?"
    assert clean_text('He said "hi"') == 'He said "hi"'
    assert clean_text("\u200b \t") == ""


def _write(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_read_csv_both_layouts(tmp_path: Path) -> None:
    a = _write(
        tmp_path / "a.csv",
        ["LABEL", "TEXT", "URL", "EMAIL", "PHONE"],
        [
            ["Smishing", "Your parcel, is held.\nPay: http://x.example", "Yes", "No", "No"],
            ["ham", "   ", "No", "No", "No"],  # empty after cleaning: dropped
            ["Spam", "WIN £1000 now", "No", "No", "No"],
        ],
    )
    b = _write(tmp_path / "b.csv", ["text", "label"], [['"Привет, как дела?"', "ham"]])
    rows_a = read_csv(a)
    assert [(r.text, r.label, r.source) for r in rows_a] == [
        ("Your parcel, is held. Pay: http://x.example", "phishing", "a.csv"),
        ("WIN £1000 now", "spam", "a.csv"),
    ]
    assert [(r.text, r.label) for r in read_csv(b)] == [("Привет, как дела?", "ham")]


def test_read_csv_rejects_unknown_label(tmp_path: Path) -> None:
    p = _write(tmp_path / "c.csv", ["text", "label"], [["hello", "fraud"]])
    with pytest.raises(ValueError, match="c.csv:2"):
        read_csv(p)


def test_dedup_is_case_insensitive_and_keeps_most_severe_label() -> None:
    rows = [
        RawRow("Call now to claim", "spam", "x.csv"),
        RawRow("CALL NOW TO CLAIM", "phishing", "y.csv"),
        RawRow("call now to claim", "spam", "x.csv"),
        RawRow("see you at 5", "ham", "x.csv"),
        RawRow("See you at 5", "ham", "y.csv"),
    ]
    ds = deduplicate(rows)
    assert len(ds.examples) == 2
    first = ds.examples[0]
    assert first.text == "Call now to claim"  # first occurrence's spelling is kept
    assert first.label == "phishing"
    assert first.source == "x.csv" and first.sources == ["x.csv", "y.csv"]
    assert ds.stats["label_conflicts"] == 1
    assert ds.stats["duplicates_removed"] == 3

    dropped = deduplicate(rows, conflicts="drop")
    assert [e.text for e in dropped.examples] == ["see you at 5"]


def test_stratified_split_is_order_independent_and_disjoint() -> None:
    rows = [RawRow(f"text {i}", LABELS[i % 3], f"s{i % 2}.csv") for i in range(300)]
    ex = deduplicate(rows).examples
    a_rest, a_held = stratified_split(ex, 0.2, seed=7)
    shuffled = list(ex)
    random.Random(1).shuffle(shuffled)
    b_rest, b_held = stratified_split(shuffled, 0.2, seed=7)
    assert sorted(e.text for e in a_held) == sorted(e.text for e in b_held)
    assert {e.text for e in a_rest}.isdisjoint(e.text for e in a_held)
    assert len(a_rest) + len(a_held) == 300
    assert len(a_held) == 60  # 6 strata of 50, 10 held out of each
    c_rest, c_held = stratified_split(ex, 0.2, seed=8)
    assert {e.text for e in c_held} != {e.text for e in a_held}


@pytest.fixture(scope="module")
def splits():
    if not HAVE_DATA:
        pytest.skip(f"labelled data not found in {DATA_DIR}")
    return make_splits(load_dataset(DATA_DIR))


@needs_data
def test_dataset_labels_and_dedup(splits) -> None:
    examples = splits.train + splits.test
    assert {e.label for e in examples} == set(LABELS)
    keys = [dedup_key(e.text) for e in examples]
    assert len(keys) == len(set(keys)), "duplicate texts survived de-duplication"
    assert all(e.text and e.text == e.text.strip() for e in examples)
    stats = splits.stats
    assert stats["rows_read"] == 5971 + 1894 + 999
    assert stats["kept"] == len(examples)
    for name in DEFAULT_FILES:
        assert name in stats["kept_per_source_label"]


@needs_data
def test_no_text_in_both_train_and_test(splits) -> None:
    train = {dedup_key(e.text) for e in splits.train}
    test = {dedup_key(e.text) for e in splits.test}
    assert train.isdisjoint(test)
    assert {dedup_key(e.text) for e in splits.fit}.isdisjoint(dedup_key(e.text) for e in splits.val)
    assert len(splits.fit) + len(splits.val) == len(splits.train)
    # every class is represented in every split
    for part in (splits.fit, splits.val, splits.test):
        assert {e.label for e in part} == set(LABELS)
    # test fraction is ~15 % overall and per class
    n = len(splits.train) + len(splits.test)
    assert abs(len(splits.test) / n - 0.15) < 0.01
    for label in LABELS:
        total = sum(e.label == label for e in splits.train + splits.test)
        held = sum(e.label == label for e in splits.test)
        assert abs(held / total - 0.15) < 0.02


@needs_data
def test_split_is_deterministic(splits) -> None:
    again = make_splits(load_dataset(DATA_DIR))
    assert [e.text for e in again.test] == [e.text for e in splits.test]
    assert [e.text for e in again.fit] == [e.text for e in splits.fit]
    assert [e.text for e in again.val] == [e.text for e in splits.val]
    other = make_splits(load_dataset(DATA_DIR), seed=1)
    assert {e.text for e in other.test} != {e.text for e in splits.test}
