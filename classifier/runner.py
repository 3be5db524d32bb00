"""Model runner: owns torch, the tokenizer and the sequence-classification model.

The runner is synchronous and not thread-safe: use it from one thread at a time (the dynamic
batcher calls it only from its inference thread). Its API is split so that the batcher can
tokenize once, budget batches by token length and run the forward pass on ready token ids:

    runner = ModelRunner(RunnerConfig(model_dir=Path("classifier/models/default")))
    ids = runner.tokenize(texts)          # normalised, truncated, special tokens, no padding
    probs = runner.forward_ids(ids)       # float32 CPU tensor [len(ids), len(runner.labels)]
    preds = runner.to_predictions(probs)  # list[Prediction]
    runner.predict(texts)                 # the three steps at once

Two model layouts are accepted:

* a Hugging Face directory (``config.json``, ``model.safetensors`` or ``pytorch_model.bin``,
  tokenizer files), loaded with ``local_files_only=True`` (nothing is ever downloaded);
* OpenTextShield style: a ``.pth`` ``state_dict`` of ``BertForSequenceClassification`` given as
  ``pth_path``, applied on top of the config + tokenizer found in ``model_dir``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

import torch

from .errors import ModelLoadError
from .normalize import normalize_text

log = logging.getLogger(__name__)

#: Labels the rest of the firewall understands.
KNOWN_LABELS = ("ham", "spam", "phishing")

_LFS_MAGIC = b"version https://git-lfs"
_TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "sentencepiece.bpe.model",
    "spiece.model",
    "tokenizer.model",
)
_HF_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


@dataclass(frozen=True)
class Prediction:
    """The classification of one text: the winning label and every label's probability."""

    label: str
    probs: dict[str, float] = field(hash=False)


@dataclass
class RunnerConfig:
    """How to load and run the model.

    ``device``: "auto" (CUDA if available, else CPU), "cpu", "cuda" or "cuda:N".
    ``fp16``: half precision, used on CUDA only (CPU always runs FP32).
    ``max_length``: truncation length in tokens, special tokens included (capped at the
    model's ``max_position_embeddings``).
    ``label_map``: renames model labels (``config.id2label``) onto ham/spam/phishing, e.g.
    ``{"LABEL_0": "ham", "LABEL_1": "spam", "LABEL_2": "phishing"}``; several model labels
    may map onto one name, their probabilities are then summed.
    ``num_threads``: ``torch.set_num_threads`` for CPU inference (process-wide setting).
    """

    model_dir: Path
    pth_path: Path | None = None
    device: str = "auto"
    fp16: bool = True
    max_length: int = 128
    compile: bool = False
    label_map: dict[str, str] = field(default_factory=dict)
    num_threads: int | None = None

    def __post_init__(self) -> None:
        self.model_dir = Path(self.model_dir)
        if self.pth_path is not None:
            self.pth_path = Path(self.pth_path)
        if self.max_length < 2:
            raise ValueError("max_length must be at least 2 (room for the special tokens)")
        if self.num_threads is not None and self.num_threads < 1:
            raise ValueError("num_threads must be >= 1")


def resolve_device(spec: str) -> torch.device:
    """Turn "auto" / "cpu" / "cuda" / "cuda:N" into a usable torch.device."""
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(spec)
    except (RuntimeError, ValueError) as exc:
        raise ModelLoadError(f"invalid device {spec!r}: use auto, cpu, cuda or cuda:N") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelLoadError(f"device {spec!r} requested but CUDA is not available")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ModelLoadError(
                f"device {spec!r} requested but only {torch.cuda.device_count()} GPU(s) exist"
            )
        if dev.index is None:  # "cuda" -> "cuda:N" so that device comparisons hold
            dev = torch.device("cuda", torch.cuda.current_device())
    elif dev.type != "cpu":
        raise ModelLoadError(f"unsupported device {spec!r}: use auto, cpu, cuda or cuda:N")
    return dev


def is_lfs_pointer(path: Path) -> bool:
    """True if ``path`` is a Git LFS pointer file instead of the real content."""
    try:
        with open(path, "rb") as fh:
            return fh.read(len(_LFS_MAGIC)) == _LFS_MAGIC
    except OSError:
        return False


def _check_not_lfs(path: Path) -> None:
    if is_lfs_pointer(path):
        raise ModelLoadError(
            f"{path} is a Git LFS pointer file, not the real file: the model was checked out "
            "without its LFS content. Run `git lfs install && git lfs pull` in the repository "
            "(or copy the real files) and restart."
        )


class ModelRunner:
    """Loads the tokenizer and model once; tokenizes and classifies batches of texts."""

    def __init__(self, cfg: RunnerConfig) -> None:
        self.cfg = cfg
        self._validate_files()
        self._pre_setup()
        tokenizer = self._load_tokenizer()
        model, attn = self._load_model()
        self._setup(model, tokenizer, attn)

    @classmethod
    def from_model(
        cls, model: torch.nn.Module, tokenizer: Any, cfg: RunnerConfig | None = None
    ) -> ModelRunner:
        """Wrap an already built model + tokenizer (benchmarks, tests, conversion tools).

        ``cfg.model_dir`` / ``pth_path`` are ignored; device, precision, max_length,
        label_map, compile and num_threads apply as usual.
        """
        self = cls.__new__(cls)
        self.cfg = cfg or RunnerConfig(model_dir=Path("<in-memory>"))
        self._pre_setup()
        attn = getattr(model.config, "_attn_implementation", None) or "eager"
        self._setup(model, tokenizer, attn)
        return self

    def _pre_setup(self) -> None:
        cfg = self.cfg
        if cfg.num_threads is not None:
            torch.set_num_threads(cfg.num_threads)
        self.device = resolve_device(cfg.device)
        self.dtype = torch.float16 if (cfg.fp16 and self.device.type == "cuda") else torch.float32

    def _setup(self, model: torch.nn.Module, tokenizer: Any, attn: str) -> None:
        cfg = self.cfg
        self.tokenizer = tokenizer
        self.model, self.attn_implementation = model, attn
        self.model.to(device=self.device, dtype=self.dtype)
        self.model.eval()
        self.model.requires_grad_(False)

        config = self.model.config
        limit = getattr(config, "max_position_embeddings", None) or cfg.max_length
        self.max_length = min(cfg.max_length, int(limit))
        self._check_vocab(config)
        self.pad_token_id = self._pad_id()
        self._backend = self._make_backend()
        self.model_labels, self.labels, self._projection = self._resolve_labels(config)
        if self._projection is not None:
            self._projection = self._projection.to(self.device)
        self._forward = self.model
        if cfg.compile:
            self._forward = torch.compile(self.model, dynamic=True)
        log.info(
            "classifier model loaded from %s%s: device=%s dtype=%s attn=%s labels=%s "
            "max_length=%d threads=%d compile=%s",
            cfg.model_dir,
            f" + {cfg.pth_path}" if cfg.pth_path else "",
            self.device,
            str(self.dtype).removeprefix("torch."),
            self.attn_implementation,
            list(self.labels),
            self.max_length,
            torch.get_num_threads(),
            cfg.compile,
        )

    # ------------------------------------------------------------------ loading

    def _validate_files(self) -> None:
        d = self.cfg.model_dir
        if not d.exists():
            raise ModelLoadError(f"model directory {d} does not exist")
        if not d.is_dir():
            raise ModelLoadError(f"model path {d} is not a directory")
        for f in sorted(d.iterdir()):
            if f.is_file():
                _check_not_lfs(f)
        if not (d / "config.json").is_file():
            raise ModelLoadError(
                f"{d / 'config.json'} is missing: {d} is not a Hugging Face model directory"
            )
        if not any((d / name).is_file() for name in _TOKENIZER_FILES):
            raise ModelLoadError(
                f"no tokenizer in {d}: expected one of {', '.join(_TOKENIZER_FILES)}"
            )
        pth = self.cfg.pth_path
        if pth is not None:
            if not pth.is_file():
                raise ModelLoadError(f"state_dict file {pth} does not exist")
            _check_not_lfs(pth)
        elif not any((d / name).is_file() for name in _HF_WEIGHT_FILES):
            raise ModelLoadError(
                f"no model weights in {d}: expected one of {', '.join(_HF_WEIGHT_FILES)} "
                "(or give RunnerConfig.pth_path for a .pth state_dict)"
            )

    def _load_tokenizer(self) -> Any:
        from transformers import AutoTokenizer

        try:
            tok = AutoTokenizer.from_pretrained(str(self.cfg.model_dir), local_files_only=True)
        except Exception as exc:  # noqa: BLE001 - every loader failure becomes one clear error
            raise ModelLoadError(
                f"cannot load the tokenizer from {self.cfg.model_dir}: {exc}"
            ) from exc
        if not getattr(tok, "is_fast", False):
            log.warning("tokenizer in %s is not a fast (Rust) tokenizer", self.cfg.model_dir)
        return tok

    def _load_model(self) -> tuple[torch.nn.Module, str]:
        if self.cfg.pth_path is not None:
            return self._load_pth(self.cfg.pth_path)
        from transformers import AutoModelForSequenceClassification

        def load(attn: str | None) -> torch.nn.Module:
            kwargs: dict[str, Any] = {"local_files_only": True}
            if attn is not None:
                kwargs["attn_implementation"] = attn
            return AutoModelForSequenceClassification.from_pretrained(
                str(self.cfg.model_dir), **kwargs
            )

        return self._with_attn_fallback(load, f"weights in {self.cfg.model_dir}")

    def _with_attn_fallback(self, build, what: str) -> tuple[torch.nn.Module, str]:
        try:
            return build("sdpa"), "sdpa"
        except Exception as exc:  # noqa: BLE001
            msg = str(exc).lower()
            if "sdpa" not in msg and "attention" not in msg and "attn" not in msg:
                raise ModelLoadError(f"cannot load the model {what}: {exc}") from exc
            log.info("SDPA attention not supported for this model (%s); using eager", exc)
        try:
            return build("eager"), "eager"
        except Exception as exc:  # noqa: BLE001
            raise ModelLoadError(f"cannot load the model {what}: {exc}") from exc

    def _load_pth(self, pth: Path) -> tuple[torch.nn.Module, str]:
        from transformers import AutoConfig, AutoModelForSequenceClassification

        try:
            obj = torch.load(str(pth), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001
            raise ModelLoadError(
                f"cannot read the state_dict {pth}: {exc} (expected a file written by "
                "torch.save(model.state_dict(), path))"
            ) from exc
        state = _extract_state_dict(obj, pth)
        try:
            config = AutoConfig.from_pretrained(str(self.cfg.model_dir), local_files_only=True)
        except Exception as exc:  # noqa: BLE001
            raise ModelLoadError(
                f"cannot read {self.cfg.model_dir / 'config.json'}: {exc}"
            ) from exc
        head = state.get("classifier.weight")
        if head is not None and head.ndim == 2 and head.shape[0] != config.num_labels:
            # e.g. a bert-base config with the default 2 labels under a 3-class state_dict
            config.num_labels = int(head.shape[0])  # resets id2label to LABEL_0..LABEL_{n-1}

        def build(attn: str) -> torch.nn.Module:
            return AutoModelForSequenceClassification.from_config(config, attn_implementation=attn)

        model, attn = self._with_attn_fallback(build, f"for {pth}")
        try:
            result = model.load_state_dict(state, strict=False)
        except RuntimeError as exc:  # size mismatches
            raise ModelLoadError(
                f"state_dict {pth} does not fit the model described by "
                f"{self.cfg.model_dir / 'config.json'}: {exc}"
            ) from exc
        missing = [k for k in result.missing_keys if not k.endswith("position_ids")]
        unexpected = [k for k in result.unexpected_keys if not k.endswith("position_ids")]
        if missing or unexpected:
            raise ModelLoadError(
                f"state_dict {pth} does not match the model of {self.cfg.model_dir}: "
                f"missing keys {missing[:8]}{'...' if len(missing) > 8 else ''}, "
                f"unexpected keys {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}"
            )
        return model, attn

    def _check_vocab(self, config: Any) -> None:
        model_vocab = getattr(config, "vocab_size", None)
        if not model_vocab:
            return
        tok_vocab = len(self.tokenizer)
        if tok_vocab > model_vocab:
            raise ModelLoadError(
                f"the tokenizer in {self.cfg.model_dir} has {tok_vocab} tokens but the model "
                f"only {model_vocab} embeddings: tokenizer and weights do not belong together"
            )
        if tok_vocab < model_vocab // 2:
            raise ModelLoadError(
                f"the tokenizer in {self.cfg.model_dir} has only {tok_vocab} tokens for a model "
                f"of {model_vocab}: wrong or incomplete tokenizer files"
            )

    def _pad_id(self) -> int:
        pad = getattr(self.tokenizer, "pad_token_id", None)
        if pad is None:
            pad = getattr(self.model.config, "pad_token_id", None)
        return int(pad) if pad is not None else 0

    def _make_backend(self) -> Any:
        """A private copy of the Rust tokenizer set to truncate at max_length, no padding.

        Calling it directly skips the Python-side overhead of the transformers wrapper, which is
        most of the tokenization cost for SMS-length texts. None if the tokenizer is not a fast
        one (the wrapper is used then).
        """
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is None:
            return None
        try:
            from tokenizers import Tokenizer

            copy = Tokenizer.from_str(backend.to_str())
            copy.no_padding()
            copy.enable_truncation(max_length=self.max_length)
            probe = "Runner probe: ÄÖÜ 123 http://x.y/z"
            if copy.encode(probe).ids != self._encode_slow([probe])[0]:
                log.info("backend tokenizer differs from the wrapper; using the wrapper")
                return None
            return copy
        except Exception as exc:  # noqa: BLE001 - the wrapper path always works
            log.info("cannot use the backend tokenizer directly (%s); using the wrapper", exc)
            return None

    def _resolve_labels(
        self, config: Any
    ) -> tuple[tuple[str, ...], tuple[str, ...], torch.Tensor | None]:
        id2label = getattr(config, "id2label", None) or {}
        n = int(getattr(config, "num_labels", len(id2label)) or len(id2label))
        model_labels = tuple(str(id2label.get(i, f"LABEL_{i}")) for i in range(n))
        mapped = [self.cfg.label_map.get(lbl, lbl) for lbl in model_labels]
        unknown = [
            f"{a!r}->{b!r}" if a != b else repr(a)
            for a, b in zip(model_labels, mapped, strict=True)
            if b not in KNOWN_LABELS
        ]
        if unknown:
            raise ModelLoadError(
                f"model labels {', '.join(unknown)} are not among {KNOWN_LABELS}: set "
                "RunnerConfig.label_map to rename them, e.g. "
                "{'LABEL_0': 'ham', 'LABEL_1': 'spam', 'LABEL_2': 'phishing'}"
            )
        labels = tuple(dict.fromkeys(mapped))
        projection = None
        if len(labels) != len(mapped):  # several model labels share a name: sum them
            projection = torch.zeros(len(mapped), len(labels))
            for i, name in enumerate(mapped):
                projection[i, labels.index(name)] = 1.0
        return model_labels, labels, projection

    # ------------------------------------------------------------------ inference

    def _encode_slow(self, texts: Sequence[str]) -> list[list[int]]:
        enc = self.tokenizer(
            list(texts),
            truncation=True,
            max_length=self.max_length,
            padding=False,
            add_special_tokens=True,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        return [list(ids) for ids in enc["input_ids"]]

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Normalise and tokenize: one list of token ids per text (special tokens included,
        truncated at ``max_length``, not padded)."""
        norm = [normalize_text(t) for t in texts]
        if not norm:
            return []
        if self._backend is not None:
            return [e.ids for e in self._backend.encode_batch(norm, add_special_tokens=True)]
        return self._encode_slow(norm)

    def token_lengths(self, texts: Sequence[str]) -> list[int]:
        """Token counts after normalisation and truncation, special tokens included."""
        return [len(ids) for ids in self.tokenize(texts)]

    def pad_batch(self, batch: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Pad token-id lists to the longest of the batch: ``(input_ids, attention_mask)``,
        CPU long tensors; the mask is None when no row needed padding."""
        lengths = [len(ids) for ids in batch]
        if not lengths or min(lengths) < 1:
            raise ValueError("empty batch or empty token-id list in batch")
        longest = max(lengths)
        flat = torch.tensor(list(chain.from_iterable(batch)), dtype=torch.long)
        if min(lengths) == longest:
            return flat.view(len(batch), longest), None
        mask = torch.arange(longest).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
        input_ids = torch.full((len(batch), longest), self.pad_token_id, dtype=torch.long)
        input_ids[mask] = flat  # row-major order: each row's ids, then its padding
        return input_ids, mask.to(torch.long)

    def forward_tensors(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Run the model on ready tensors (any device); probabilities as in ``forward_ids``."""
        with torch.inference_mode():
            if input_ids.device != self.device:
                input_ids = input_ids.to(self.device, non_blocking=True)
            if attention_mask is not None and attention_mask.device != self.device:
                attention_mask = attention_mask.to(self.device, non_blocking=True)
            out = self._forward(input_ids=input_ids, attention_mask=attention_mask)
            probs = out.logits.float().softmax(dim=-1)
            if self._projection is not None:
                probs = probs @ self._projection
            return probs.cpu()

    def forward_ids(self, batch: Sequence[Sequence[int]]) -> torch.Tensor:
        """Run the model on token-id lists (padded here to the longest of the batch only).

        Returns a float32 CPU tensor ``[len(batch), len(self.labels)]`` of probabilities whose
        columns follow ``self.labels``.
        """
        if not batch:
            return torch.empty(0, len(self.labels))
        return self.forward_tensors(*self.pad_batch(batch))

    def to_predictions(self, probs: torch.Tensor) -> list[Prediction]:
        """Turn ``forward_ids`` output into Predictions (label = the most probable one)."""
        labels = self.labels
        idx = range(len(labels))
        out = []
        for row in probs.tolist():
            best = max(idx, key=row.__getitem__)
            out.append(Prediction(labels[best], dict(zip(labels, row, strict=True))))
        return out

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        """Classify texts in one forward pass (the caller chooses the batch)."""
        if not texts:
            return []
        return self.to_predictions(self.forward_ids(self.tokenize(texts)))

    def warmup(
        self, batch_sizes: Iterable[int] = (1, 8, 32), seq_lens: Iterable[int] = (16, 64)
    ) -> None:
        """Run dummy batches so the first real requests do not pay for lazy initialisation
        (allocator, oneDNN primitives, CUDA kernels, torch.compile graphs)."""
        filler = self.tokenizer.unk_token_id
        if filler is None:
            filler = self.pad_token_id
        cls_id = getattr(self.tokenizer, "cls_token_id", None)
        sep_id = getattr(self.tokenizer, "sep_token_id", None)
        for n in batch_sizes:
            for length in seq_lens:
                length = max(2, min(int(length), self.max_length))
                row = [filler] * length
                if cls_id is not None and sep_id is not None:
                    row[0], row[-1] = cls_id, sep_id
                self.forward_ids([row] * int(n))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def _extract_state_dict(obj: Any, pth: Path) -> dict[str, torch.Tensor]:
    """Accept a bare state_dict, or a checkpoint dict holding one; strip DataParallel prefixes."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model_state_dict", "model"):
            inner = obj.get(key)
            if (
                isinstance(inner, Mapping)
                and inner
                and all(isinstance(v, torch.Tensor) for v in inner.values())
            ):
                obj = inner
                break
    if (
        not isinstance(obj, Mapping)
        or not obj
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    ):
        raise ModelLoadError(
            f"{pth} does not hold a state_dict (a mapping of parameter names to tensors); "
            "save it with torch.save(model.state_dict(), path)"
        )
    state = dict(obj)
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def default_model_dir() -> Path:
    """classifier/models/default (overridable with SMSFW_CLASSIFIER_MODEL_DIR)."""
    env = os.environ.get("SMSFW_CLASSIFIER_MODEL_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent / "models" / "default"


__all__ = [
    "KNOWN_LABELS",
    "ModelRunner",
    "Prediction",
    "RunnerConfig",
    "default_model_dir",
    "is_lfs_pointer",
    "resolve_device",
]
