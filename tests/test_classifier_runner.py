"""classifier.runner: loading (HF directory, .pth state_dict, bad files) and inference."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from classifier.errors import ModelLoadError
from classifier.runner import ModelRunner, Prediction, RunnerConfig, is_lfs_pointer

from .conftest_classifier import (
    SAMPLE_TEXTS,
    SKIP_NO_DEFAULT,
    build_tiny_model,
    default_model_dir,
    tiny_config,
)

LFS_POINTER = (
    b"version https://git-lfs.github.com/spec/v1\n"
    b"oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
    b"size 711396152\n"
)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def tiny_runner(tiny_dir: Path) -> ModelRunner:
    return ModelRunner(RunnerConfig(model_dir=tiny_dir, device="cpu"))


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# ---------------------------------------------------------------- HF directory


def test_load_hf_directory_and_predict(tiny_runner: ModelRunner) -> None:
    r = tiny_runner
    assert r.labels == ("ham", "spam", "phishing")
    assert r.device.type == "cpu" and r.dtype == torch.float32
    assert r.attn_implementation in ("sdpa", "eager")
    preds = r.predict(SAMPLE_TEXTS)
    assert len(preds) == len(SAMPLE_TEXTS)
    for p in preds:
        assert isinstance(p, Prediction)
        assert set(p.probs) == {"ham", "spam", "phishing"}
        assert math.isclose(sum(p.probs.values()), 1.0, abs_tol=1e-5)
        assert p.label == max(p.probs, key=p.probs.get)
    with pytest.raises(AttributeError):
        preds[0].label = "ham"  # frozen
    assert r.predict([]) == []


def test_tokenize_normalises_truncates_and_counts_special_tokens(tiny_dir: Path) -> None:
    r = ModelRunner(RunnerConfig(model_dir=tiny_dir, device="cpu", max_length=16))
    # normalisation happens before tokenization: full-width and zero-width forms collapse
    a, b = r.tokenize(["ｐａｙｐａｌ  ｌｏｇｉｎ", "pay\u200bpal\tlogin"])
    assert a == b
    assert a[0] == r.tokenizer.cls_token_id and a[-1] == r.tokenizer.sep_token_id
    long_text = "click the link now " * 50
    ids = r.tokenize([long_text])[0]
    assert len(ids) == 16 and ids[-1] == r.tokenizer.sep_token_id
    assert r.token_lengths(["ok", long_text]) == [len(r.tokenize(["ok"])[0]), 16]
    assert r.token_lengths([]) == []


def test_backend_tokenization_matches_transformers_wrapper(tiny_runner: ModelRunner) -> None:
    from classifier.normalize import normalize_text

    texts = [normalize_text(t) for t in SAMPLE_TEXTS]
    assert tiny_runner.tokenize(SAMPLE_TEXTS) == tiny_runner._encode_slow(texts)


def test_padding_does_not_change_results(tiny_runner: ModelRunner) -> None:
    """A text alone and the same text padded inside a mixed-length batch agree."""
    r = tiny_runner
    ids = r.tokenize(SAMPLE_TEXTS)
    batched = r.forward_ids(ids)
    assert batched.shape == (len(SAMPLE_TEXTS), 3) and batched.dtype == torch.float32
    for i, row in enumerate(ids):
        alone = r.forward_ids([row])[0]
        torch.testing.assert_close(batched[i], alone, atol=1e-5, rtol=1e-4)


def test_pad_batch(tiny_runner: ModelRunner) -> None:
    pad = tiny_runner.pad_token_id
    ids, mask = tiny_runner.pad_batch([[2, 7, 3], [2, 3], [2, 8, 9, 10, 3]])
    assert ids.tolist() == [[2, 7, 3, pad, pad], [2, 3, pad, pad, pad], [2, 8, 9, 10, 3]]
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]]
    ids, mask = tiny_runner.pad_batch([[2, 7, 3], [2, 8, 3]])
    assert ids.tolist() == [[2, 7, 3], [2, 8, 3]] and mask is None
    with pytest.raises(ValueError):
        tiny_runner.pad_batch([[2, 3], []])


def test_max_length_capped_by_position_embeddings(tmp_path: Path) -> None:
    d = build_tiny_model(tmp_path / "m", max_position_embeddings=32)
    r = ModelRunner(RunnerConfig(model_dir=d, device="cpu", max_length=512))
    assert r.max_length == 32
    assert len(r.tokenize(["x " * 200])[0]) == 32
    assert len(r.predict(["x " * 200])) == 1


def test_warmup_runs(tiny_runner: ModelRunner) -> None:
    tiny_runner.warmup(batch_sizes=(1, 4), seq_lens=(8, 500))


# ---------------------------------------------------------------- labels


def test_label_map_renames_generic_labels(tmp_path: Path) -> None:
    d = build_tiny_model(tmp_path / "m", id2label={0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"})
    with pytest.raises(ModelLoadError, match="label_map"):
        ModelRunner(RunnerConfig(model_dir=d, device="cpu"))
    r = ModelRunner(
        RunnerConfig(
            model_dir=d,
            device="cpu",
            label_map={"LABEL_0": "ham", "LABEL_1": "spam", "LABEL_2": "phishing"},
        )
    )
    assert r.labels == ("ham", "spam", "phishing")
    assert r.model_labels == ("LABEL_0", "LABEL_1", "LABEL_2")


def test_label_map_merges_labels(tmp_path: Path) -> None:
    """Two model labels mapped onto one name: their probabilities are summed."""
    d = build_tiny_model(
        tmp_path / "m",
        num_labels=4,
        id2label={0: "ham", 1: "spam", 2: "smishing", 3: "phishing"},
    )
    r = ModelRunner(RunnerConfig(model_dir=d, device="cpu", label_map={"smishing": "phishing"}))
    assert r.labels == ("ham", "spam", "phishing")
    ids = r.tokenize(SAMPLE_TEXTS[:4])
    merged = r.forward_ids(ids)
    with torch.inference_mode():
        raw = r.model(input_ids=torch.tensor([ids[0]])).logits.softmax(-1)[0]
    torch.testing.assert_close(merged[0], torch.stack([raw[0], raw[1], raw[2] + raw[3]]))
    for p in r.predict(SAMPLE_TEXTS[:4]):
        assert math.isclose(sum(p.probs.values()), 1.0, abs_tol=1e-5)


# ---------------------------------------------------------------- .pth state_dict


def _save_state_dict(path: Path, seed: int = 1, prefix: str = "", **config_kw) -> torch.nn.Module:
    from transformers import BertForSequenceClassification

    torch.manual_seed(seed)
    model = BertForSequenceClassification(tiny_config(**config_kw)).eval()
    torch.save({prefix + k: v for k, v in model.state_dict().items()}, path)
    return model


def test_load_pth_state_dict(tmp_path: Path) -> None:
    d = build_tiny_model(tmp_path / "cfg", with_weights=False)  # config + tokenizer only
    assert not (d / "model.safetensors").exists()
    pth = tmp_path / "ots.pth"
    ref = _save_state_dict(pth)
    r = ModelRunner(RunnerConfig(model_dir=d, pth_path=pth, device="cpu"))
    assert r.labels == ("ham", "spam", "phishing")
    ids = r.tokenize(SAMPLE_TEXTS[:5])
    got = r.forward_ids(ids)
    with torch.inference_mode():
        for i, row in enumerate(ids):
            want = ref(input_ids=torch.tensor([row])).logits.softmax(-1)[0]
            torch.testing.assert_close(got[i], want, atol=1e-5, rtol=1e-4)


def test_load_pth_with_dataparallel_prefix_and_two_label_config(tmp_path: Path) -> None:
    """OpenTextShield case: a bert config with 2 generic labels, a 3-class 'module.' dict."""
    d = build_tiny_model(tmp_path / "cfg", with_weights=False, num_labels=2)
    pth = tmp_path / "ots.pth"
    _save_state_dict(pth, prefix="module.")
    r = ModelRunner(
        RunnerConfig(
            model_dir=d,
            pth_path=pth,
            device="cpu",
            label_map={"LABEL_0": "ham", "LABEL_1": "spam", "LABEL_2": "phishing"},
        )
    )
    assert r.labels == ("ham", "spam", "phishing")
    assert len(r.predict(["Your OTP is 1234"])[0].probs) == 3


def test_pth_wrong_shapes(tmp_path: Path) -> None:
    d = build_tiny_model(tmp_path / "cfg", with_weights=False)
    pth = tmp_path / "wrong.pth"
    _save_state_dict(pth, hidden_size=48, num_attention_heads=2, intermediate_size=64)
    with pytest.raises(ModelLoadError, match="does not fit"):
        ModelRunner(RunnerConfig(model_dir=d, pth_path=pth, device="cpu"))


def test_pth_missing_keys(tmp_path: Path) -> None:
    d = build_tiny_model(tmp_path / "cfg", with_weights=False)
    pth = tmp_path / "partial.pth"
    from transformers import BertForSequenceClassification

    sd = BertForSequenceClassification(tiny_config()).state_dict()
    torch.save({k: v for k, v in sd.items() if not k.startswith("classifier.")}, pth)
    with pytest.raises(ModelLoadError, match="missing keys"):
        ModelRunner(RunnerConfig(model_dir=d, pth_path=pth, device="cpu"))


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"this is not a torch file", "cannot read the state_dict"),
        (LFS_POINTER, "git lfs pull"),
    ],
)
def test_pth_unreadable(tmp_path: Path, content: bytes, match: str) -> None:
    d = build_tiny_model(tmp_path / "cfg", with_weights=False)
    pth = tmp_path / "bad.pth"
    pth.write_bytes(content)
    with pytest.raises(ModelLoadError, match=match):
        ModelRunner(RunnerConfig(model_dir=d, pth_path=pth, device="cpu"))


def test_pth_not_a_state_dict(tmp_path: Path) -> None:
    d = build_tiny_model(tmp_path / "cfg", with_weights=False)
    pth = tmp_path / "list.pth"
    torch.save([1, 2, 3], pth)
    with pytest.raises(ModelLoadError, match="state_dict"):
        ModelRunner(RunnerConfig(model_dir=d, pth_path=pth, device="cpu"))


def test_pth_missing_file(tmp_path: Path) -> None:
    d = build_tiny_model(tmp_path / "cfg", with_weights=False)
    with pytest.raises(ModelLoadError, match="does not exist"):
        ModelRunner(RunnerConfig(model_dir=d, pth_path=tmp_path / "nope.pth", device="cpu"))


# ---------------------------------------------------------------- bad directories


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        ModelRunner(RunnerConfig(model_dir=tmp_path / "absent"))


def test_missing_config(tmp_path: Path, tiny_dir: Path) -> None:
    d = _copy(tiny_dir, tmp_path / "m")
    (d / "config.json").unlink()
    with pytest.raises(ModelLoadError, match="config.json is missing"):
        ModelRunner(RunnerConfig(model_dir=d))


def test_missing_weights(tmp_path: Path, tiny_dir: Path) -> None:
    d = _copy(tiny_dir, tmp_path / "m")
    (d / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="no model weights"):
        ModelRunner(RunnerConfig(model_dir=d))


def test_lfs_pointer_weights(tmp_path: Path, tiny_dir: Path) -> None:
    d = _copy(tiny_dir, tmp_path / "m")
    (d / "model.safetensors").write_bytes(LFS_POINTER)
    assert is_lfs_pointer(d / "model.safetensors")
    with pytest.raises(ModelLoadError) as info:
        ModelRunner(RunnerConfig(model_dir=d))
    msg = str(info.value)
    assert "model.safetensors" in msg and "Git LFS pointer" in msg and "git lfs pull" in msg


def test_lfs_pointer_tokenizer(tmp_path: Path, tiny_dir: Path) -> None:
    d = _copy(tiny_dir, tmp_path / "m")
    (d / "tokenizer.json").write_bytes(LFS_POINTER)
    with pytest.raises(ModelLoadError, match="git lfs pull"):
        ModelRunner(RunnerConfig(model_dir=d))


def test_corrupt_weights(tmp_path: Path, tiny_dir: Path) -> None:
    d = _copy(tiny_dir, tmp_path / "m")
    (d / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ModelLoadError, match="cannot load the model"):
        ModelRunner(RunnerConfig(model_dir=d))


def test_missing_tokenizer(tmp_path: Path, tiny_dir: Path) -> None:
    d = _copy(tiny_dir, tmp_path / "m")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (d / name).unlink(missing_ok=True)
    cfg = json.loads((d / "config.json").read_text())
    cfg.pop("tokenizer_class", None)
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="no tokenizer"):
        ModelRunner(RunnerConfig(model_dir=d))


def test_tokenizer_of_another_model(tmp_path: Path, tiny_dir: Path) -> None:
    d = _copy(tiny_dir, tmp_path / "m")
    cfg = json.loads((d / "config.json").read_text())
    cfg["vocab_size"] = 10 * cfg["vocab_size"]
    (d / "config.json").write_text(json.dumps(cfg))
    for f in (d / "model.safetensors",):
        f.unlink()
    pth = tmp_path / "w.pth"
    _save_state_dict(pth, vocab_size=cfg["vocab_size"])
    with pytest.raises(ModelLoadError, match="tokenizer"):
        ModelRunner(RunnerConfig(model_dir=d, pth_path=pth))


# ---------------------------------------------------------------- devices


def test_cuda_requested_without_cuda(tiny_dir: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ModelLoadError, match="CUDA is not available"):
        ModelRunner(RunnerConfig(model_dir=tiny_dir, device="cuda"))


def test_invalid_device(tiny_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match="device"):
        ModelRunner(RunnerConfig(model_dir=tiny_dir, device="tpu"))


def test_auto_device_is_cpu_without_cuda_and_fp32(tiny_dir: Path) -> None:
    r = ModelRunner(RunnerConfig(model_dir=tiny_dir, device="auto", fp16=True, num_threads=1))
    if not torch.cuda.is_available():
        assert r.device.type == "cpu"
        assert r.dtype == torch.float32  # fp16 is for CUDA only
    assert next(r.model.parameters()).dtype == r.dtype


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fp16_matches_cpu(tiny_dir: Path) -> None:
    cpu = ModelRunner(RunnerConfig(model_dir=tiny_dir, device="cpu"))
    gpu = ModelRunner(RunnerConfig(model_dir=tiny_dir, device="cuda", fp16=True))
    assert gpu.dtype == torch.float16
    ids = cpu.tokenize(SAMPLE_TEXTS)
    got = gpu.forward_ids(ids)
    assert got.device.type == "cpu" and got.dtype == torch.float32
    torch.testing.assert_close(got, cpu.forward_ids(ids), atol=2e-2, rtol=2e-2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_compile(tiny_dir: Path) -> None:
    gpu = ModelRunner(RunnerConfig(model_dir=tiny_dir, device="cuda", compile=True))
    gpu.warmup(batch_sizes=(1, 4), seq_lens=(8, 16))
    assert len(gpu.predict(SAMPLE_TEXTS)) == len(SAMPLE_TEXTS)


# ---------------------------------------------------------------- the default model


@pytest.fixture(scope="module")
def default_runner() -> ModelRunner:
    d = default_model_dir()
    if d is None:
        pytest.skip(SKIP_NO_DEFAULT)
    return ModelRunner(RunnerConfig(model_dir=d, device="cpu"))


def test_default_model_loads_and_classifies(default_runner: ModelRunner) -> None:
    r = default_runner
    assert set(r.labels) == {"ham", "spam", "phishing"}
    preds = r.predict(SAMPLE_TEXTS)
    assert len(preds) == len(SAMPLE_TEXTS)
    for p in preds:
        assert p.label in r.labels
        assert math.isclose(sum(p.probs.values()), 1.0, abs_tol=1e-4)
    # batching must not change results
    ids = r.tokenize(SAMPLE_TEXTS)
    batched = r.forward_ids(ids)
    for i in (0, 5, len(ids) - 1):
        torch.testing.assert_close(batched[i], r.forward_ids([ids[i]])[0], atol=1e-4, rtol=1e-3)


def test_from_model_wraps_built_objects(tiny_dir: Path, tiny_runner: ModelRunner) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_dir), local_files_only=True)
    tok = AutoTokenizer.from_pretrained(str(tiny_dir), local_files_only=True)
    r = ModelRunner.from_model(model, tok, RunnerConfig(model_dir=tiny_dir, device="cpu"))
    assert r.labels == tiny_runner.labels
    ids = r.tokenize(SAMPLE_TEXTS)
    torch.testing.assert_close(r.forward_ids(ids), tiny_runner.forward_ids(ids))
