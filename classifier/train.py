"""Train the default SMS classifier (small BERT, from scratch, CPU) and its baseline.

    python -m classifier.train --out classifier/models/default [--data-dir ../shared/data]

Steps (all seeded, see ``--seed``):

1. load, clean (normalize_text), de-duplicate and split the data (:mod:`classifier.data`):
   held-out test split (15 %), and a validation slice (10 % of the training split) used only for
   early stopping / model selection;
2. train the TF-IDF + logistic-regression baseline (:mod:`classifier.baseline`) on the same
   training split;
3. train a WordPiece tokenizer (``tokenizers`` pipeline: NFKC + BERT normaliser, lower-casing,
   accents kept, CJK split per character, BERT pre-tokenizer + symbols/emoji isolated; the
   vocabulary is learned by :func:`learn_wordpiece_vocab`, a reproducible equivalent of the
   library's WordPiece trainer) on the training split texts only;
4. pre-train a small BERT with masked-language modelling on the training split texts (no labels;
   no pretrained checkpoint can be downloaded, so this is the only pre-training available);
5. fine-tune ``BertForSequenceClassification`` (AdamW, linear warmup/decay, class-weighted
   cross-entropy with label smoothing), keeping the epoch with the best validation macro-F1;
6. save the HF model directory (config.json, model.safetensors, tokenizer files), reload it with
   ``AutoTokenizer`` / ``AutoModelForSequenceClassification`` and evaluate BERT and baseline on
   the held-out test split; write ``metrics.json`` and print the report.

``--quick`` runs a small end-to-end smoke test (subset, one epoch each) into a scratch dir.
``--threads 1`` makes a run bit-for-bit reproducible (and is faster on a busy shared machine).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from classifier.data import (  # noqa: E402
    ID2LABEL,
    LABEL2ID,
    LABELS,
    add_data_args,
    load_dataset,
    make_splits,
)
from classifier.evaluate import (  # noqa: E402
    compute_metrics,
    format_report,
    load_model,
    predict_labels,
)

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# Symbols (currency, maths, emoji and other pictographs) become tokens of their own instead of
# sticking to a neighbouring word (an unknown emoji would otherwise turn "win😀" into one [UNK]).
SYMBOL_SPLIT_REGEX = r"[\p{Sc}\p{Sk}\p{Sm}\p{So}]"


# ---------------------------------------------------------------------------------------------
# Tokenizer


def learn_wordpiece_vocab(
    word_counts: dict[str, int],
    vocab_size: int,
    special_tokens: Sequence[str] = SPECIAL_TOKENS,
    initial_alphabet: Sequence[str] = (),
    min_frequency: int = 2,
    prefix: str = "##",
) -> dict[str, int]:
    """Learn a WordPiece vocabulary (BPE-style merges, as the `tokenizers` WordPiece trainer
    does: a word is split into its first character plus prefixed continuation characters, and
    the most frequent adjacent pair is merged until the vocabulary is full).

    Written out here rather than calling ``tokenizers.trainers.WordPieceTrainer`` because that
    trainer is not reproducible: it numbers the ``##`` continuation symbols in hash-map order
    and uses those numbers to break ties between equally frequent pairs, so two runs on the
    same texts give slightly different vocabularies (huggingface/tokenizers issue #1794). Here
    ties are broken by the pair's text, so the vocabulary depends on the word counts only.

    Ids: special tokens, then the alphabet (every character seen, plus `initial_alphabet`, both
    word-initial and ``##`` forms) in code-point order, then merged tokens in merge order.
    """
    import heapq
    from collections import defaultdict

    words: list[list[str]] = []
    counts: list[int] = []
    alphabet: set[str] = set(initial_alphabet)
    alphabet |= {prefix + ch for ch in initial_alphabet if ch.isalnum()}
    for word in sorted(word_counts):
        syms = [word[0]] + [prefix + ch for ch in word[1:]]
        alphabet.update(syms)
        words.append(syms)
        counts.append(word_counts[word])
    vocab: dict[str, int] = {}
    for token in list(special_tokens) + sorted(alphabet - set(special_tokens)):
        vocab.setdefault(token, len(vocab))

    pair_counts: dict[tuple[str, str], int] = defaultdict(int)
    where: dict[tuple[str, str], set[int]] = defaultdict(set)
    for i, syms in enumerate(words):
        for pair in zip(syms, syms[1:], strict=False):
            pair_counts[pair] += counts[i]
            where[pair].add(i)
    heap = [(-c, a, b) for (a, b), c in pair_counts.items()]
    heapq.heapify(heap)
    while len(vocab) < vocab_size and heap:
        neg, a, b = heapq.heappop(heap)
        if pair_counts.get((a, b), 0) != -neg:
            continue  # stale entry: the count changed and was pushed again
        if -neg < min_frequency:
            break
        merged = a + (b[len(prefix) :] if b.startswith(prefix) else b)
        vocab.setdefault(merged, len(vocab))
        changed: set[tuple[str, str]] = set()
        for i in sorted(where.pop((a, b), ())):
            syms = words[i]
            out: list[str] = []
            j = 0
            while j < len(syms):
                if j + 1 < len(syms) and syms[j] == a and syms[j + 1] == b:
                    out.append(merged)
                    j += 2
                else:
                    out.append(syms[j])
                    j += 1
            if len(out) == len(syms):
                continue
            c = counts[i]
            for pair in zip(syms, syms[1:], strict=False):
                pair_counts[pair] -= c
                changed.add(pair)
            for pair in zip(out, out[1:], strict=False):
                pair_counts[pair] += c
                where[pair].add(i)
                changed.add(pair)
            words[i] = out
        for pair in sorted(changed):
            c = pair_counts[pair]
            if c > 0:
                heapq.heappush(heap, (-c, pair[0], pair[1]))
            else:
                pair_counts.pop(pair, None)
                where.pop(pair, None)
    return vocab


def train_tokenizer(texts: Sequence[str], vocab_size: int, lowercase: bool, max_length: int):
    """WordPiece tokenizer trained on `texts`, wrapped as a transformers fast tokenizer."""
    from collections import Counter

    from tokenizers import (
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )
    from transformers import PreTrainedTokenizerFast

    normalizer = normalizers.Sequence(
        [
            normalizers.NFKC(),
            normalizers.BertNormalizer(
                clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=lowercase
            ),
        ]
    )
    pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.BertPreTokenizer(),
            pre_tokenizers.Split(Regex(SYMBOL_SPLIT_REGEX), behavior="isolated"),
        ]
    )
    word_counts: Counter[str] = Counter()
    for text in texts:
        normalized = normalizer.normalize_str(text)
        word_counts.update(w for w, _ in pre_tokenizer.pre_tokenize_str(normalized))
    ascii_printable = [chr(c) for c in range(0x21, 0x7F)]
    if lowercase:
        ascii_printable = sorted({c.lower() for c in ascii_printable})
    vocab = learn_wordpiece_vocab(
        dict(word_counts), vocab_size, SPECIAL_TOKENS, ascii_printable, min_frequency=2
    )
    tok = Tokenizer(
        models.WordPiece(
            vocab, unk_token="[UNK]", continuing_subword_prefix="##", max_input_chars_per_word=100
        )
    )
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.WordPiece(prefix="##")
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=max_length,
        padding_side="right",
        truncation_side="right",
        model_input_names=["input_ids", "attention_mask"],
    )


def save_tokenizer(tokenizer, out: Path) -> None:
    tokenizer.save_pretrained(str(out))
    # Name the generic fast-tokenizer class explicitly: it loads tokenizer.json verbatim with any
    # transformers version (BertTokenizer(Fast) would rebuild a plain BertNormalizer and drop the
    # NFKC step / accent handling configured above).
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def encode(tokenizer, texts: Sequence[str], max_length: int) -> list[list[int]]:
    enc = tokenizer(list(texts), truncation=True, max_length=max_length)
    return [list(ids) for ids in enc["input_ids"]]


# ---------------------------------------------------------------------------------------------
# Batching


def length_batches(
    lengths: Sequence[int], batch_size: int, rng: random.Random | None
) -> list[list[int]]:
    """Batches of indices of similar length (less padding). Shuffled if rng is given."""
    idx = list(range(len(lengths)))
    if rng is None:
        idx.sort(key=lambda i: lengths[i])
        return [idx[i : i + batch_size] for i in range(0, len(idx), batch_size)]
    rng.shuffle(idx)
    pool = batch_size * 50
    batches: list[list[int]] = []
    for start in range(0, len(idx), pool):
        chunk = sorted(idx[start : start + pool], key=lambda i: lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def pad(seqs: Sequence[Sequence[int]], pad_id: int):
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, s in enumerate(seqs):
        ids[row, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[row, : len(s)] = 1
    return ids, mask


def mask_tokens(
    ids,
    attention_mask,
    special_ids: set[int],
    mask_id: int,
    vocab_size: int,
    prob: float,
    generator,
):
    """BERT-style MLM corruption: `prob` of the real tokens are predicted; of those 80 % become
    [MASK], 10 % a random token, 10 % stay unchanged. Returns (inputs, labels)."""
    import torch

    labels = ids.clone()
    special = torch.zeros_like(ids, dtype=torch.bool)
    for sid in special_ids:
        special |= ids == sid
    candidates = (attention_mask == 1) & ~special
    chosen = (torch.rand(ids.shape, generator=generator) < prob) & candidates
    # at least one prediction per sequence that has any candidate
    none = ~chosen.any(dim=1) & candidates.any(dim=1)
    if none.any():
        scores = torch.rand(ids.shape, generator=generator).masked_fill(~candidates, -1.0)
        pick = scores.argmax(dim=1)
        rows = none.nonzero(as_tuple=True)[0]
        chosen[rows, pick[rows]] = True
    labels[~chosen] = -100
    inputs = ids.clone()
    r = torch.rand(ids.shape, generator=generator)
    inputs[chosen & (r < 0.8)] = mask_id
    random_tok = chosen & (r >= 0.8) & (r < 0.9)
    inputs[random_tok] = torch.randint(
        len(SPECIAL_TOKENS), vocab_size, ids.shape, generator=generator
    )[random_tok]
    return inputs, labels


def linear_schedule(optimizer, warmup: int, total: int):
    import torch

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def make_optimizer(model, lr: float, weight_decay: float):
    import torch

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "LayerNorm" in name or "bias" in name else decay).append(p)
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=lr,
        betas=(0.9, 0.98),
        eps=1e-6,
    )


# ---------------------------------------------------------------------------------------------
# Training phases


def mlm_pretrain(config, encoded: list[list[int]], tokenizer, args, log) -> dict:
    """Masked-LM pre-training on unlabelled training-split texts; returns the encoder state."""
    import torch
    from tqdm.auto import tqdm
    from transformers import BertForMaskedLM

    torch.manual_seed(args.seed)
    model = BertForMaskedLM(config)
    model.train()
    rng = random.Random(args.seed + 100)
    gen = torch.Generator().manual_seed(args.seed + 101)
    lengths = [len(s) for s in encoded]
    steps_per_epoch = math.ceil(len(encoded) / args.mlm_batch_size)
    total = steps_per_epoch * args.mlm_epochs
    opt = make_optimizer(model, args.mlm_lr, args.weight_decay)
    sched = linear_schedule(opt, int(total * args.warmup), total)
    special = {tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    history = []
    for epoch in range(1, args.mlm_epochs + 1):
        t0 = time.perf_counter()
        tot_loss, n = 0.0, 0
        bar = tqdm(
            length_batches(lengths, args.mlm_batch_size, rng),
            desc=f"mlm {epoch}/{args.mlm_epochs}",
            unit="batch",
            mininterval=args.tqdm_interval,
            file=sys.stdout,
        )
        for batch in bar:
            ids, mask = pad([encoded[i] for i in batch], tokenizer.pad_token_id)
            inputs, labels = mask_tokens(
                ids, mask, special, tokenizer.mask_token_id, config.vocab_size, args.mlm_prob, gen
            )
            # Decode only the positions to predict (about 15 % of the tokens), not the whole
            # sequence: the vocabulary projection is the most expensive part of the MLM head.
            hidden = model.bert(input_ids=inputs, attention_mask=mask).last_hidden_state
            sel = labels != -100
            logits = model.cls(hidden[sel])
            loss = torch.nn.functional.cross_entropy(logits, labels[sel])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            tot_loss += loss.item()
            n += 1
            bar.set_postfix(loss=f"{tot_loss / n:.3f}", refresh=False)
        bar.close()
        history.append(
            {
                "epoch": epoch,
                "loss": round(tot_loss / max(n, 1), 4),
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
        log(f"mlm epoch {epoch}: loss={tot_loss / max(n, 1):.4f} ({history[-1]['seconds']}s)")
    return {"state": model.bert.state_dict(), "history": history}


def evaluate_encoded(
    model, encoded: list[list[int]], labels: list[int], pad_id: int, batch_size: int = 128
) -> tuple[dict, float]:
    import torch

    model.eval()
    preds = [0] * len(encoded)
    loss_sum = 0.0
    with torch.no_grad():
        for batch in length_batches([len(s) for s in encoded], batch_size, None):
            ids, mask = pad([encoded[i] for i in batch], pad_id)
            logits = model(input_ids=ids, attention_mask=mask).logits
            y = torch.tensor([labels[i] for i in batch])
            loss_sum += torch.nn.functional.cross_entropy(logits, y, reduction="sum").item()
            for i, p in zip(batch, logits.argmax(dim=-1).tolist(), strict=True):
                preds[i] = p
    model.train()
    return compute_metrics(labels, preds), loss_sum / max(1, len(encoded))


def class_weights(labels: list[int], power: float) -> list[float]:
    counts = [max(1, labels.count(k)) for k in range(len(LABELS))]
    n, k = len(labels), len(LABELS)
    w = [(n / (k * c)) ** power for c in counts]
    mean = sum(w[y] for y in labels) / n  # keep the average per-example weight at 1
    return [x / mean for x in w]


def finetune(
    config, encoder_state: dict | None, fit_enc, fit_y, val_enc, val_y, tokenizer, args, log
) -> dict:
    import torch
    from tqdm.auto import tqdm
    from transformers import BertForSequenceClassification

    torch.manual_seed(args.seed + 1)
    model = BertForSequenceClassification(config)
    if encoder_state is not None:
        missing, unexpected = model.bert.load_state_dict(encoder_state, strict=False)
        bad = [k for k in missing if not k.startswith("pooler.")]
        if bad or unexpected:
            raise RuntimeError(f"encoder state mismatch: missing={bad} unexpected={unexpected}")
    model.train()
    weights = torch.tensor(class_weights(fit_y, args.class_weight_power), dtype=torch.float)
    log(f"class weights {dict(zip(LABELS, [round(w, 3) for w in weights.tolist()], strict=True))}")
    loss_fn = torch.nn.CrossEntropyLoss(weight=weights, label_smoothing=args.label_smoothing)
    rng = random.Random(args.seed + 200)
    gen = torch.Generator().manual_seed(args.seed + 201)
    lengths = [len(s) for s in fit_enc]
    steps_per_epoch = math.ceil(len(fit_enc) / args.batch_size)
    total = steps_per_epoch * args.epochs
    opt = make_optimizer(model, args.lr, args.weight_decay)
    sched = linear_schedule(opt, int(total * args.warmup), total)
    best = {
        "macro_f1": -1.0,
        "val_loss": float("inf"),
        "epoch": 0,
        "state": None,
        "metrics": None,
        "weights": None,
    }
    history = []
    bad_epochs = 0
    # Exponential moving average of the weights (evaluated alongside the raw weights; model
    # selection on the validation slice picks whichever is better).
    ema_model = copy.deepcopy(model) if args.ema > 0 else None
    if ema_model is not None:
        ema_params = [p for p in ema_model.parameters()]
        raw_params = [p for p in model.parameters()]
    step = 0
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        tot_loss, n = 0.0, 0
        bar = tqdm(
            length_batches(lengths, args.batch_size, rng),
            desc=f"finetune {epoch}/{args.epochs}",
            unit="batch",
            mininterval=args.tqdm_interval,
            file=sys.stdout,
        )
        for batch in bar:
            ids, mask = pad([fit_enc[i] for i in batch], tokenizer.pad_token_id)
            if args.token_dropout > 0:
                # augmentation: hide a random `token_dropout` share of the real tokens behind
                # [MASK], so the classifier cannot lean on any single token
                drop = (torch.rand(ids.shape, generator=gen) < args.token_dropout) & (mask == 1)
                drop &= (ids != tokenizer.cls_token_id) & (ids != tokenizer.sep_token_id)
                ids = ids.masked_fill(drop, tokenizer.mask_token_id)
            y = torch.tensor([fit_y[i] for i in batch])
            loss = loss_fn(model(input_ids=ids, attention_mask=mask).logits, y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            if ema_model is not None:
                decay = min(args.ema, (1 + step) / (10 + step))
                with torch.no_grad():
                    torch._foreach_lerp_(ema_params, raw_params, 1.0 - decay)
            tot_loss += loss.item()
            n += 1
            bar.set_postfix(loss=f"{tot_loss / n:.3f}", refresh=False)
        bar.close()
        candidates = [("raw", model)] + ([("ema", ema_model)] if ema_model is not None else [])
        improved = False
        rec = {"epoch": epoch, "train_loss": round(tot_loss / max(n, 1), 4)}
        for kind, m in candidates:
            val_m, val_loss = evaluate_encoded(m, val_enc, val_y, tokenizer.pad_token_id)
            rec[f"val_loss_{kind}"] = round(val_loss, 4)
            rec[f"val_macro_f1_{kind}"] = round(val_m["macro_f1"], 4)
            rec[f"val_accuracy_{kind}"] = round(val_m["accuracy"], 4)
            better = val_m["macro_f1"] > best["macro_f1"] + 1e-9 or (
                abs(val_m["macro_f1"] - best["macro_f1"]) <= 1e-9 and val_loss < best["val_loss"]
            )
            if better:
                improved = True
                best.update(
                    macro_f1=val_m["macro_f1"],
                    val_loss=val_loss,
                    epoch=epoch,
                    state=copy.deepcopy(m.state_dict()),
                    metrics=val_m,
                    weights=kind,
                )
        rec["seconds"] = round(time.perf_counter() - t0, 1)
        history.append(rec)
        log(
            f"epoch {epoch}: "
            + " ".join(f"{k}={v}" for k, v in rec.items() if k != "epoch")
            + (f"  *best* ({best['weights']})" if improved else "")
        )
        if improved:
            bad_epochs = 0
        else:
            bad_epochs += 1
            if args.patience and bad_epochs >= args.patience:
                log(f"early stopping after epoch {epoch} (no val improvement for {bad_epochs})")
                break
    model.load_state_dict(best["state"])
    model.eval()
    return {
        "model": model,
        "best_epoch": best["epoch"],
        "best_weights": best["weights"],
        "val": best["metrics"],
        "history": history,
    }


# ---------------------------------------------------------------------------------------------
# Main


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def build_config(args, vocab_size: int, tokenizer):
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        intermediate_size=args.intermediate,
        hidden_act="gelu",
        hidden_dropout_prob=args.dropout,
        attention_probs_dropout_prob=args.dropout,
        max_position_embeddings=args.max_length,
        type_vocab_size=2,
        pad_token_id=tokenizer.pad_token_id,
        num_labels=len(LABELS),
        id2label=dict(ID2LABEL),
        label2id=dict(LABEL2ID),
        problem_type="single_label_classification",
        classifier_dropout=args.dropout,
    )


def parse_args(argv: Sequence[str] | None):
    p = argparse.ArgumentParser(description="Train the default SMS classifier (CPU).")
    p.add_argument("--out", default="classifier/models/default", help="output HF model directory")
    add_data_args(p)
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    # tokenizer
    p.add_argument("--vocab-size", type=int, default=8000)
    p.add_argument("--no-lowercase", dest="lowercase", action="store_false")
    p.add_argument("--max-length", type=int, default=128, help="max tokens (= max_position)")
    # architecture
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--intermediate", type=int, default=512)
    p.add_argument("--dropout", type=float, default=0.1)
    # MLM pre-training
    p.add_argument("--mlm-epochs", type=int, default=6, help="0 disables MLM pre-training")
    p.add_argument("--mlm-lr", type=float, default=1e-3)
    p.add_argument("--mlm-batch-size", type=int, default=64)
    p.add_argument("--mlm-prob", type=float, default=0.15)
    # fine-tuning
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--patience", type=int, default=4, help="early stopping; 0 disables")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--warmup", type=float, default=0.06, help="fraction of steps")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument(
        "--token-dropout",
        type=float,
        default=0.0,
        help="fine-tuning augmentation: share of tokens replaced by [MASK]",
    )
    p.add_argument(
        "--ema",
        type=float,
        default=0.998,
        help="decay of the weight EMA evaluated alongside the raw weights; 0 disables",
    )
    p.add_argument(
        "--class-weight-power",
        type=float,
        default=0.5,
        help="class weight = (n / (k * n_class)) ** power; 1 = 'balanced', 0 = none",
    )
    p.add_argument("--no-baseline", dest="baseline", action="store_false")
    p.add_argument(
        "--quick", action="store_true", help="smoke test: 1500 training texts, 1 epoch each phase"
    )
    p.add_argument("--tqdm-interval", type=float, default=5.0)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.quick:
        args.mlm_epochs = min(args.mlm_epochs, 1)
        args.epochs = 1

    import numpy as np
    import torch
    import transformers

    t_start = time.perf_counter()
    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    transformers.logging.set_verbosity_error()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:7.1f}s] {msg}", flush=True)

    out = Path(args.out)
    ds = load_dataset(args.data_dir, conflicts=args.conflicts)
    splits = make_splits(ds, args.seed, args.test_fraction, args.val_fraction)
    if args.quick:
        splits.fit = splits.fit[:1500]
        splits.train = splits.fit + splits.val
    s = splits.stats["split"]["sizes"]
    log(
        f"data: {ds.stats['kept']} unique texts; train={s['train']} (fit={len(splits.fit)} "
        f"val={len(splits.val)}) test={s['test']}"
    )

    timings: dict[str, float] = {}
    baseline = None
    if args.baseline:
        t0 = time.perf_counter()
        from classifier.baseline import train_and_evaluate

        baseline = train_and_evaluate(splits, seed=args.seed, verbose=False)
        timings["baseline"] = round(time.perf_counter() - t0, 1)
        log(f"baseline: C={baseline['C']} test macro-F1={baseline['test']['macro_f1']:.4f}")

    # Tokenizer: training split texts only (fit + val; no labels involved).
    t0 = time.perf_counter()
    train_texts = [e.text for e in splits.train]
    tokenizer = train_tokenizer(train_texts, args.vocab_size, args.lowercase, args.max_length)
    vocab_size = len(tokenizer)
    timings["tokenizer"] = round(time.perf_counter() - t0, 1)
    fit_enc = encode(tokenizer, [e.text for e in splits.fit], args.max_length)
    val_enc = encode(tokenizer, [e.text for e in splits.val], args.max_length)
    fit_y = [e.label_id for e in splits.fit]
    val_y = [e.label_id for e in splits.val]
    unk = tokenizer.unk_token_id
    n_tok = sum(len(x) for x in fit_enc)
    tok_stats = {
        "vocab_size": vocab_size,
        "mean_tokens_per_text_fit": round(n_tok / len(fit_enc), 1),
        "unk_rate_fit": round(sum(x.count(unk) for x in fit_enc) / n_tok, 5),
        "truncated_fit": sum(len(x) >= args.max_length for x in fit_enc),
    }
    log(f"tokenizer: {tok_stats}")

    config = build_config(args, vocab_size, tokenizer)

    encoder_state, mlm_history = None, []
    if args.mlm_epochs > 0:
        t0 = time.perf_counter()
        mlm_texts = fit_enc + val_enc  # training split only, labels unused
        res = mlm_pretrain(config, mlm_texts, tokenizer, args, log)
        encoder_state, mlm_history = res["state"], res["history"]
        timings["mlm_pretrain"] = round(time.perf_counter() - t0, 1)

    t0 = time.perf_counter()
    ft = finetune(config, encoder_state, fit_enc, fit_y, val_enc, val_y, tokenizer, args, log)
    timings["finetune"] = round(time.perf_counter() - t0, 1)
    model = ft["model"]

    # Save: model + tokenizer into a fresh directory (keep README.md / MODEL_CARD.md if present).
    out.mkdir(parents=True, exist_ok=True)
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "vocab.txt",
        "metrics.json",
    ):
        if (out / name).exists():
            (out / name).unlink()
    model.config.architectures = ["BertForSequenceClassification"]
    model.save_pretrained(str(out), safe_serialization=True)
    (out / "model.safetensors").chmod(0o644)  # written 0600 via a temporary file
    save_tokenizer(tokenizer, out)
    timings["total_training"] = round(time.perf_counter() - t_start, 1)

    # Held-out evaluation through the saved artefact, the way a consumer loads it.
    t0 = time.perf_counter()
    tok2, model2 = load_model(out)
    test_texts = [e.text for e in splits.test]
    test_y = [e.label_id for e in splits.test]
    test_pred = predict_labels(
        tok2, model2, test_texts, batch_size=64, max_length=args.max_length, already_clean=True
    )
    bert_test = compute_metrics(test_y, test_pred)
    timings["test_eval"] = round(time.perf_counter() - t0, 1)
    timings["test_texts_per_second"] = round(len(test_texts) / max(timings["test_eval"], 1e-9), 1)

    n_params = sum(p.numel() for p in model2.parameters())
    metrics = {
        "held_out_macro_f1": {
            "bert": round(bert_test["macro_f1"], 4),
            "baseline": round(baseline["test"]["macro_f1"], 4) if baseline else None,
        },
        "bert": {
            "test": bert_test,
            "val_best": ft["val"],
            "best_epoch": ft["best_epoch"],
            "best_weights": ft["best_weights"],
            "history": ft["history"],
            "mlm_history": mlm_history,
            "parameters": n_params,
        },
        "baseline": (
            {k: v for k, v in baseline.items() if k != "test_predictions"} if baseline else None
        ),
        "disagreements_on_test": (
            sum(a != b for a, b in zip(test_pred, baseline["test_predictions"], strict=True))
            if baseline
            else None
        ),
        "data": splits.stats,
        "tokenizer": tok_stats,
        "seed": args.seed,
        "quick": args.quick,
        "hyperparameters": {
            k: v
            for k, v in vars(args).items()
            if k not in ("out", "data_dir", "tqdm_interval", "quick")
        },
        "architecture": {
            "model_type": "bert",
            "layers": args.layers,
            "hidden": args.hidden,
            "heads": args.heads,
            "intermediate": args.intermediate,
            "max_position_embeddings": args.max_length,
            "vocab_size": vocab_size,
            "parameters": n_params,
        },
        "timings_seconds": timings,
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "threads": args.threads,
            "machine": platform.machine(),
        },
        "command": "python -m classifier.train "
        + " ".join(sys.argv[1:] if argv is None else list(argv)),
    }
    metrics["model_dir_bytes_without_metrics"] = dir_size(out)
    (out / "metrics.json").write_text(
        json.dumps(metrics, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    weights = out / "model.safetensors"

    print()
    print(
        f"data: {ds.stats['rows_read']} rows read, {ds.stats['kept']} unique texts after "
        f"de-duplication ({ds.stats['label_conflicts']} label conflicts, policy "
        f"{ds.stats['conflict_policy']}); split train={s['train']} (fit={len(splits.fit)}, "
        f"val={len(splits.val)}) test={s['test']}"
    )
    print(
        f"model: BERT {args.layers}L/{args.hidden}H/{args.heads}A/{args.intermediate}I, "
        f"vocab {vocab_size}, {n_params / 1e6:.2f}M params, model.safetensors "
        f"{weights.stat().st_size / 1e6:.1f} MB; best epoch {ft['best_epoch']} "
        f"({ft['best_weights']} weights)"
    )
    print(f"timings (s): {timings}")
    print(format_report("BERT on held-out test", bert_test))
    if baseline:
        print(format_report(f"baseline (C={baseline['C']}) on held-out test", baseline["test"]))
        diff = bert_test["macro_f1"] - baseline["test"]["macro_f1"]
        print(
            f"\nmacro-F1: BERT {bert_test['macro_f1']:.4f} vs baseline "
            f"{baseline['test']['macro_f1']:.4f} ({'+' if diff >= 0 else ''}{diff:.4f})"
        )
    print(f"wrote {out}/ ({dir_size(out) / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
