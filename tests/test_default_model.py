"""The shipped default model (classifier/models/default): loadable with plain transformers,
sane on obvious inputs, within the size budget, and with held-out metrics recorded.

Never retrains: everything here reads the committed artefacts.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from classifier.normalize import normalize_text

MODEL_DIR = Path(__file__).resolve().parent.parent / "classifier" / "models" / "default"
EXPECTED_ID2LABEL = {0: "ham", 1: "spam", 2: "phishing"}
MAX_DIR_BYTES = 25 * 1024 * 1024

PHISHING = (
    "Your bank account has been suspended. Verify your identity now at "
    "http://secure-bank-login.example.com/verify"
)
HAM = "Hey, are we still meeting for lunch tomorrow at 1?"


@pytest.fixture(scope="module")
def loaded():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.set_num_threads(2)
    tok = transformers.AutoTokenizer.from_pretrained(str(MODEL_DIR), local_files_only=True)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        str(MODEL_DIR), local_files_only=True
    )
    model.eval()
    return tok, model


def _classify(loaded, texts: list[str]) -> list[tuple[str, list[float]]]:
    import torch

    tok, model = loaded
    enc = tok(
        [normalize_text(t) for t in texts],
        padding=True,
        truncation=True,
        max_length=128,
        return_tensors="pt",
    )
    enc.pop("token_type_ids", None)
    with torch.no_grad():
        probs = torch.softmax(model(**enc).logits, dim=-1)
    id2label = model.config.id2label
    return [(id2label[int(p.argmax())], p.tolist()) for p in probs]


def test_required_files_present() -> None:
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "metrics.json",
        "README.md",
    ):
        assert (MODEL_DIR / name).is_file(), f"missing {name}"


def test_weights_are_not_a_git_lfs_pointer() -> None:
    weights = MODEL_DIR / "model.safetensors"
    head = weights.read_bytes()[:200]
    assert not head.startswith(b"version https://git-lfs"), "model.safetensors is an LFS pointer"
    assert weights.stat().st_size > 1_000_000
    # safetensors layout: 8-byte little-endian header length, then a JSON header
    n = int.from_bytes(head[:8], "little")
    header = json.loads(weights.read_bytes()[8 : 8 + n])
    assert any(k.startswith("classifier.") for k in header)


def test_model_dir_size_budget() -> None:
    total = sum(p.stat().st_size for p in MODEL_DIR.rglob("*") if p.is_file())
    assert total < MAX_DIR_BYTES, f"model dir is {total / 1e6:.1f} MB"


def test_config_labels() -> None:
    cfg = json.loads((MODEL_DIR / "config.json").read_text())
    assert {int(k): v for k, v in cfg["id2label"].items()} == EXPECTED_ID2LABEL
    assert {k: int(v) for k, v in cfg["label2id"].items()} == {
        v: k for k, v in EXPECTED_ID2LABEL.items()
    }
    assert cfg["model_type"] == "bert"


def test_loaded_config_labels(loaded) -> None:
    _, model = loaded
    assert dict(model.config.id2label) == EXPECTED_ID2LABEL
    assert model.config.num_labels == 3


def test_held_out_metrics_recorded() -> None:
    m = json.loads((MODEL_DIR / "metrics.json").read_text())
    assert m["quick"] is False
    bert = m["bert"]["test"]
    assert bert["macro_f1"] >= 0.85
    assert set(bert["per_class"]) == {"ham", "spam", "phishing"}
    assert m["baseline"]["test"]["n"] == bert["n"] == m["data"]["split"]["sizes"]["test"]
    assert m["held_out_macro_f1"]["bert"] == pytest.approx(bert["macro_f1"], abs=1e-4)


def test_obvious_phishing_and_ham(loaded) -> None:
    (phish_label, phish_p), (ham_label, ham_p) = _classify(loaded, [PHISHING, HAM])
    assert phish_label == "phishing", phish_p
    assert ham_label == "ham", ham_p


def test_tokenizer_handles_many_scripts(loaded) -> None:
    tok, model = loaded
    texts = [
        "Ваш пакет задержан, оплатите доставку",  # Cyrillic
        "تم تعليق حسابك المصرفي",  # Arabic
        "您的账户已被冻结，请点击链接",  # CJK
        "Félicitations ! Vous avez gagné 😀🎉",  # accented Latin + emoji
        "ＦＲＥＥ ｍｏｎｅｙ",  # full-width (NFKC)
        "",
    ]
    enc = tok([normalize_text(t) for t in texts], truncation=True, max_length=128)
    for ids in enc["input_ids"]:
        assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
        assert all(0 <= i < model.config.vocab_size for i in ids)
    # full-width letters fold onto plain ones
    assert enc["input_ids"][4] == tok(normalize_text("free money"))["input_ids"]
    labels = [label for label, _ in _classify(loaded, texts[:5])]
    assert set(labels) <= {"ham", "spam", "phishing"}


def test_batch_and_single_predictions_agree(loaded) -> None:
    texts = [PHISHING, HAM, "WINNER!! Claim your free prize, text WIN to 80086 now"]
    batch = _classify(loaded, texts)
    for text, (label, probs) in zip(texts, batch, strict=True):
        single_label, single_probs = _classify(loaded, [text])[0]
        assert single_label == label
        assert single_probs == pytest.approx(probs, abs=1e-4)
