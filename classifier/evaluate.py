"""Evaluate a saved sequence-classification model on labelled CSV files.

    python -m classifier.evaluate --model classifier/models/default \\
        --data ../shared/data/ots_sample_999.csv [--data other.csv ...] [--json out.json]

Both CSV layouts are detected from the header (``LABEL,TEXT,...`` and ``text,label``; column
names are matched case-insensitively). Texts go through the same cleaning as at training time
(:func:`classifier.data.clean_text`, i.e. ``normalize_text``); labels are mapped onto
ham / spam / phishing. The model is used through ``transformers`` directly (no project runner),
batched, under ``torch.no_grad()``.

The metric helpers here (:func:`compute_metrics`, :func:`format_report`) are shared by
``classifier.train`` and ``classifier.baseline``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from classifier.data import LABELS, clean_text, read_csv

# ---------------------------------------------------------------------------------------------
# Metrics


def compute_metrics(y_true: Sequence[int], y_pred: Sequence[int]) -> dict:
    """Per-class precision/recall/F1/support, macro-F1, accuracy and confusion matrix
    (rows = true label, columns = predicted label, both in LABELS order)."""
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    labels = list(range(len(LABELS)))
    p, r, f, s = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average=None, zero_division=0
    )
    per_class = {
        LABELS[i]: {
            "precision": float(p[i]),
            "recall": float(r[i]),
            "f1": float(f[i]),
            "support": int(s[i]),
        }
        for i in labels
    }
    present = [i for i in labels if s[i] > 0]  # classes absent from y_true do not count
    macro_f1 = float(sum(f[i] for i in present) / len(present)) if present else 0.0
    return {
        "macro_f1": macro_f1,
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "per_class": per_class,
        "confusion_matrix": {
            "labels": list(LABELS),
            "rows_true_cols_pred": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        },
        "n": len(y_true),
    }


def format_report(name: str, m: dict) -> str:
    lines = [
        f"== {name}: n={m['n']}  macro-F1={m['macro_f1']:.4f}  accuracy={m['accuracy']:.4f}",
        f"   {'class':<10}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}",
    ]
    for label, c in m["per_class"].items():
        lines.append(
            f"   {label:<10}{c['precision']:>10.4f}{c['recall']:>10.4f}{c['f1']:>10.4f}"
            f"{c['support']:>10d}"
        )
    cm = m["confusion_matrix"]
    lines.append("   confusion matrix (rows = true, cols = predicted):")
    lines.append("   " + " " * 10 + "".join(f"{lab:>10}" for lab in cm["labels"]))
    for lab, row in zip(cm["labels"], cm["rows_true_cols_pred"], strict=True):
        lines.append("   " + f"{lab:<10}" + "".join(f"{v:>10d}" for v in row))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Model inference (transformers directly)


def load_model(model_dir: str | Path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(
        str(model_dir), local_files_only=True
    )
    model.eval()
    return tokenizer, model


def model_label_order(model) -> list[int]:
    """Map model output index -> index in LABELS (so a model with another id order still works)."""
    id2label = {int(k): v for k, v in model.config.id2label.items()}
    return [LABELS.index(id2label[i].lower()) for i in range(len(id2label))]


def predict_proba(
    tokenizer,
    model,
    texts: Sequence[str],
    batch_size: int = 64,
    max_length: int = 128,
    already_clean: bool = False,
    progress: bool = False,
):
    """Probabilities in LABELS order, shape (len(texts), 3), as a torch tensor.

    Texts are cleaned with clean_text (normalize_text) unless already_clean. Batches are formed
    over texts sorted by length (less padding), results are returned in input order.
    """
    import torch

    cleaned = list(texts) if already_clean else [clean_text(t) for t in texts]
    order = sorted(range(len(cleaned)), key=lambda i: len(cleaned[i]))
    cols = torch.tensor(model_label_order(model))  # model output j -> LABELS index cols[j]
    out = torch.zeros(len(cleaned), len(LABELS))
    batches = range(0, len(order), batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="predict", unit="batch", leave=False)
    with torch.no_grad():
        for start in batches:
            idx = order[start : start + batch_size]
            enc = tokenizer(
                [cleaned[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            enc.pop("token_type_ids", None)
            probs = torch.softmax(model(**enc).logits.float(), dim=-1)
            out[torch.tensor(idx)[:, None], cols[None, :]] = probs
    return out


def predict_labels(tokenizer, model, texts: Sequence[str], **kw) -> list[int]:
    return predict_proba(tokenizer, model, texts, **kw).argmax(dim=-1).tolist()


# ---------------------------------------------------------------------------------------------
# CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="HF model directory")
    parser.add_argument("--data", required=True, action="append", help="labelled CSV (repeatable)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--max-length", type=int, default=None, help="default: from metrics.json or 128"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None, help="also write the metrics to this JSON file")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    max_length = args.max_length
    if max_length is None:
        mpath = Path(args.model) / "metrics.json"
        try:
            max_length = int(json.loads(mpath.read_text())["hyperparameters"]["max_length"])
        except (OSError, KeyError, ValueError):
            max_length = 128
    tokenizer, model = load_model(args.model)

    results: dict[str, dict] = {}
    all_true: list[int] = []
    all_pred: list[int] = []
    for path in args.data:
        rows = read_csv(path)
        texts = [r.text for r in rows]
        y_true = [LABELS.index(r.label) for r in rows]
        t0 = time.perf_counter()
        y_pred = predict_labels(
            tokenizer,
            model,
            texts,
            batch_size=args.batch_size,
            max_length=max_length,
            already_clean=True,
            progress=True,
        )
        dt = time.perf_counter() - t0
        m = compute_metrics(y_true, y_pred)
        m["seconds"] = round(dt, 3)
        results[path] = m
        all_true += y_true
        all_pred += y_pred
        print(format_report(f"{path} ({dt:.1f}s, {len(texts) / max(dt, 1e-9):.0f} texts/s)", m))
        print()
    if len(args.data) > 1:
        m = compute_metrics(all_true, all_pred)
        results["__all__"] = m
        print(format_report("all files together", m))
    print(
        "note: texts are not de-duplicated here, and any of them may have been in the model's "
        "training data (see metrics.json for the held-out split).",
        file=sys.stderr,
    )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
