"""Helpers shared by the classifier tests (imported explicitly; not a pytest conftest).

* ``build_tiny_model(path)``: a tiny, random BERT sequence classifier (3 labels) with a
  WordPiece tokenizer built with the ``tokenizers`` library, saved as a Hugging Face
  directory. Loads in milliseconds; used for the loader tests (HF dir, .pth, bad files).
* ``default_model_dir()``: the project's default model (classifier/models/default), or
  ``$SMSFW_TEST_MODEL_DIR`` when set; the tests that need it skip when it is absent.
* ``wrap_runner(runner, cls)``: an instance of a ModelRunner subclass sharing the already
  loaded model and tokenizer of ``runner`` (so recording / gating subclasses do not reload).
"""

from __future__ import annotations

import os
import string
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL_DIR = REPO_ROOT / "classifier" / "models" / "default"

TINY_LABELS = {0: "ham", 1: "spam", 2: "phishing"}

_WORDS = (
    "the a to you your is of and in for on it code otp bank account verify click link "
    "http https www com parcel delivery package hello mom love see tomorrow win prize free "
    "call now login password update card blocked urgent offer sale today hi ok thanks"
).split()


def tiny_vocab() -> dict[str, int]:
    chars = list(string.ascii_lowercase + string.digits + ".,:/?!-_@#%&*()'\"+=")
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *_WORDS, *chars]
    tokens += ["##" + c for c in chars]
    return {t: i for i, t in enumerate(dict.fromkeys(tokens))}


def build_tiny_tokenizer(max_length: int = 128):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = tiny_vocab()
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    tok.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=max_length,
    )


def tiny_config(num_labels: int = 3, id2label: dict[int, str] | None = None, **overrides):
    from transformers import BertConfig

    if id2label is None and num_labels == 3:
        id2label = TINY_LABELS
    kwargs = dict(
        vocab_size=len(tiny_vocab()),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=num_labels,
        initializer_range=0.5,  # random weights that still give text-dependent outputs
    )
    if id2label is not None:
        kwargs["id2label"] = dict(id2label)
        kwargs["label2id"] = {v: k for k, v in id2label.items()}
    kwargs.update(overrides)
    return BertConfig(**kwargs)


def build_tiny_model(path: Path, seed: int = 0, with_weights: bool = True, **config_kw) -> Path:
    """Save a tiny random BertForSequenceClassification + tokenizer into ``path``."""
    import torch
    from transformers import BertForSequenceClassification

    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = tiny_config(**config_kw)
    if with_weights:
        model = BertForSequenceClassification(config)
        model.save_pretrained(str(path))
    else:
        config.save_pretrained(str(path))
    build_tiny_tokenizer().save_pretrained(str(path))
    return path


def default_model_dir() -> Path | None:
    env = os.environ.get("SMSFW_TEST_MODEL_DIR")
    d = Path(env) if env else DEFAULT_MODEL_DIR
    return d if (d / "config.json").is_file() else None


SKIP_NO_DEFAULT = (
    "default model absent: classifier/models/default/config.json does not exist "
    "(train it or set SMSFW_TEST_MODEL_DIR to a model directory)"
)


def wrap_runner(runner, cls):
    """A ``cls`` (ModelRunner subclass) instance sharing ``runner``'s loaded state."""
    obj = object.__new__(cls)
    obj.__dict__.update(runner.__dict__)
    init = getattr(obj, "_wrapped_init", None)
    if init is not None:
        init()
    return obj


# Short, varied SMS texts (several languages and lengths) used by the batcher tests.
SAMPLE_TEXTS = [
    "Your verification code is 482913. Do not share it with anyone.",
    "Hi mom, I'll be home late tonight, don't wait for dinner",
    "URGENT: your bank account has been blocked. Verify now at http://secure-bank-login.xyz/v",
    "Your parcel could not be delivered. Reschedule: https://dhl-redelivery.info/p/88213",
    "Mega SALE today only! 50% off all shoes, reply STOP to opt out",
    "ok",
    "Tu código de verificación es 5521",
    "Olá! Sua encomenda está a caminho e chega amanhã.",
    "Ihr Paket wartet. Zollgebühr 1,99 EUR bezahlen: http://post-de.zoll-pay.com",
    "Votre compte sera suspendu. Connectez-vous ici: https://ameli-remboursement.fr.co",
    "Selamat! Anda memenangkan hadiah Rp 10.000.000. Klik http://hadiah.id/claim",
    "see you tomorrow at 10 :)",
    "Congratulations! You won a FREE iPhone 15. Claim within 24h: bit.ly/fr33-ph0ne",
    "Your Uber code: 1234",
    "Meeting moved to 3pm, room B. Thanks!",
    "Netflix: payment failed. Update your card details at netflix-billing-help.com to avoid "
    "losing access to your account today.",
]
