"""Reference baseline: character n-gram TF-IDF + logistic regression (scikit-learn).

    python -m classifier.baseline [--data-dir DIR] [--seed 42]

Features: ``TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True,
min_df=2)`` on the cleaned (normalize_text) texts, lower-cased. Classifier:
``LogisticRegression(class_weight="balanced")``. The inverse regularisation strength C is chosen on
the validation slice of the training split (the same slice the BERT model uses for model
selection); the final baseline is then refit on the whole training split (fit + val). The
held-out test split is never looked at before the final evaluation.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence

from classifier.data import LABELS, Splits, add_data_args, load_dataset, make_splits
from classifier.evaluate import compute_metrics, format_report

C_GRID: tuple[float, ...] = (1.0, 3.0, 10.0, 30.0, 100.0)


def build_pipeline(c: float = 10.0, seed: int = 42):
    import numpy as np
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    return Pipeline(
        [
            (
                "tfidf",
                TfidfVectorizer(
                    analyzer="char_wb",
                    ngram_range=(2, 5),
                    lowercase=True,
                    sublinear_tf=True,
                    min_df=2,
                    dtype=np.float32,
                ),
            ),
            (
                "lr",
                LogisticRegression(C=c, class_weight="balanced", max_iter=3000, random_state=seed),
            ),
        ]
    )


def train_and_evaluate(splits: Splits, seed: int = 42, verbose: bool = True) -> dict:
    """Select C on the val slice, refit on the full train split, evaluate on test."""
    t0 = time.perf_counter()
    fit_x = [e.text for e in splits.fit]
    fit_y = [e.label_id for e in splits.fit]
    val_x = [e.text for e in splits.val]
    val_y = [e.label_id for e in splits.val]
    val_scores: dict[str, float] = {}
    best_c, best_f1 = C_GRID[0], -1.0
    for c in C_GRID:
        pipe = build_pipeline(c, seed).fit(fit_x, fit_y)
        f1 = compute_metrics(val_y, pipe.predict(val_x).tolist())["macro_f1"]
        val_scores[str(c)] = round(f1, 4)
        if verbose:
            print(f"baseline C={c:<6} val macro-F1={f1:.4f}", flush=True)
        if f1 > best_f1 + 1e-9:
            best_c, best_f1 = c, f1
    pipe = build_pipeline(best_c, seed).fit(
        [e.text for e in splits.train], [e.label_id for e in splits.train]
    )
    train_s = time.perf_counter() - t0
    test_pred = pipe.predict([e.text for e in splits.test]).tolist()
    metrics = compute_metrics([e.label_id for e in splits.test], test_pred)
    return {
        "description": "char_wb 2-5 TF-IDF (sublinear, min_df=2, lowercase) + "
        "LogisticRegression(class_weight=balanced); C chosen on the val slice, refit on the "
        "full train split",
        "C": best_c,
        "val_macro_f1_by_C": val_scores,
        "n_features": len(pipe.named_steps["tfidf"].vocabulary_),
        "train_seconds": round(train_s, 1),
        "test": metrics,
        "test_predictions": test_pred,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train and evaluate the TF-IDF baseline.")
    add_data_args(parser)
    args = parser.parse_args(argv)
    ds = load_dataset(args.data_dir, conflicts=args.conflicts)
    splits = make_splits(ds, args.seed, args.test_fraction, args.val_fraction)
    res = train_and_evaluate(splits, seed=args.seed)
    print(format_report(f"baseline (C={res['C']}) on held-out test", res["test"]))
    res.pop("test_predictions")
    print(json.dumps({k: v for k, v in res.items() if k != "test"}, indent=2))
    assert len(LABELS) == 3
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
