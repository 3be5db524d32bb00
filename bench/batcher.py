"""Dynamic batcher benchmark: one forward pass per message vs. the dynamic batcher.

    python bench/batcher.py --model classifier/models/default --concurrency 256 --messages 5000

Both modes use the same model, the same generated SMS texts (OTPs, delivery notices, bank
phishing with URLs, promos, personal messages; several languages and lengths) and C concurrent
asyncio callers that each send their next message as soon as the previous one is answered:

  (a) unbatched: every call runs ``runner.predict([text])`` (tokenize + forward, batch size 1)
      on one dedicated thread, one call at a time;
  (b) batched: every call awaits ``DynamicBatcher.classify(text)``.

Printed for each: msgs/s, p50/p99 latency, mean batch size; the batched/unbatched throughput
ratio is the LAST line.

``--arch mbert-base`` builds a full-size multilingual BERT-base (12 layers, hidden 768,
12 heads, intermediate 3072, vocab 119547; random weights) with a simple WordPiece tokenizer,
first prints a table of raw forward throughput (msgs/s) over batch sizes x sequence lengths
(FP16 on CUDA by default), then runs the same comparison. On CPU it keeps the sizes small.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import logging
import os
import random
import statistics
import string
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402

from classifier.batcher import BatcherConfig, DynamicBatcher  # noqa: E402
from classifier.runner import ModelRunner, RunnerConfig  # noqa: E402

# --------------------------------------------------------------------------- texts

_BRANDS = [
    "PayPal",
    "Santander",
    "BBVA",
    "Chase",
    "HSBC",
    "Itaú",
    "Bradesco",
    "BCA",
    "ING",
    "Deutsche Bank",
    "BNP Paribas",
    "Revolut",
    "Wells Fargo",
    "Sberbank",
    "Mandiri",
]
_COURIERS = [
    "DHL",
    "UPS",
    "FedEx",
    "Correos",
    "CTT",
    "La Poste",
    "DPD",
    "Royal Mail",
    "J&T Express",
    "Hermes",
    "USPS",
    "PostNL",
]
_SERVICES = [
    "WhatsApp",
    "Google",
    "Uber",
    "Microsoft",
    "Amazon",
    "Telegram",
    "Binance",
    "Instagram",
    "Netflix",
    "Apple ID",
    "Steam",
    "Bolt",
]
_NAMES = [
    "Ana",
    "Tom",
    "Maria",
    "João",
    "Ahmed",
    "Li",
    "Sofia",
    "Budi",
    "Hans",
    "Chloé",
    "Priya",
    "Olga",
    "Kemal",
    "Mateo",
]
_TLDS = [".xyz", ".top", ".info", ".co", ".site", ".online", ".click", ".live"]
_SHORT = ["bit.ly", "tinyurl.com", "t.ly", "cutt.ly", "is.gd"]


def _url(rng: random.Random, brand: str) -> str:
    slug = "".join(rng.choices(string.ascii_lowercase + string.digits, k=rng.randint(4, 9)))
    base = brand.lower().replace(" ", "").replace("&", "")
    kind = rng.random()
    if kind < 0.3:
        return f"https://{rng.choice(_SHORT)}/{slug}"
    if kind < 0.7:
        part = rng.choice(["secure", "verify", "login", "account", "update", "help"])
        return f"http://{base}-{part}{rng.choice(_TLDS)}/{slug}"
    sub = rng.choice(["www", "m", "app"])
    return f"https://{sub}.{base}-{slug}{rng.choice(_TLDS)}/auth?id={rng.randint(1000, 99999)}"


def _otp(rng: random.Random) -> str:
    return str(rng.randint(10 ** (n := rng.choice([4, 5, 6])) // 10, 10**n - 1))


def _templates() -> dict[str, list[str]]:
    return {
        "otp": [
            "{code} is your {svc} verification code. Don't share it with anyone.",
            "Your {svc} code: {code}. It expires in 10 minutes.",
            "Tu código de verificación de {svc} es {code}. No lo compartas.",
            "Seu código {svc} é {code}. Não compartilhe este código.",
            "Ihr {svc} Bestätigungscode lautet {code}.",
            "Votre code de vérification {svc} est {code}. Il expire dans 5 minutes.",
            "Kode OTP {svc} Anda {code}. JANGAN berikan kode ini kepada siapa pun.",
            "Ваш код подтверждения {svc}: {code}. Никому не сообщайте его.",
            "رمز التحقق الخاص بك في {svc} هو {code}",
            "您的{svc}验证码是{code}，5分钟内有效。",
            "{svc} doğrulama kodunuz: {code}",
        ],
        "delivery": [
            "{courier}: your parcel {track} is out for delivery today between 9:00 and 13:00.",
            "{courier}: Ihr Paket {track} wird heute zugestellt.",
            "Tu paquete {track} de {courier} llegará mañana. Sigue el envío en la app.",
            "{courier}: votre colis {track} a été déposé en point relais.",
            "Paket {track} dari {courier} sedang dalam perjalanan.",
            "{courier}: we missed you. Your parcel {track} will be redelivered tomorrow.",
        ],
        "phishing": [
            "{brand}: your account has been suspended due to unusual activity. Verify your "
            "identity now: {url}",
            "URGENT! {brand} detected a login from a new device. If this wasn't you, secure "
            "your account: {url}",
            "{courier}: your package {track} is on hold, customs fee of 1.99 EUR unpaid. "
            "Pay here: {url}",
            "Estimado cliente {brand}: su tarjeta ha sido bloqueada. Reactívela en {url}",
            "{brand}: Sua conta será bloqueada hoje. Atualize seus dados: {url}",
            "Lieber Kunde, Ihr {brand} Konto wurde eingeschränkt. Bestätigen Sie: {url}",
            "{brand}: Votre carte expire. Mettez à jour vos informations sous 24h {url}",
            "Nasabah {brand} Yth, rekening Anda diblokir. Segera verifikasi di {url}",
            "Hi mum, it's me, I lost my phone, this is my new number. Can you send me 450 "
            "for the rent today? I'll pay you back. Use this link {url}",
            "{brand} Security Alert: a payment of $749.99 to {svc} is pending. Not you? "
            "Cancel at {url} or call +1 888 {code}",
        ],
        "promo": [
            "MEGA SALE! Up to 70% off everything this weekend only at {svc}. Reply STOP to "
            "opt out.",
            "Congratulations! You've won a {svc} gift card worth $1000. Claim within 24h: {url}",
            "Oferta exclusiva: 2x1 en pizzas hoy. Usa el código PIZZA{code}. Baja: 2255",
            "Promoção! Recarregue 20 reais e ganhe 5GB de internet. Responda SIM.",
            "Nur heute: 30% Rabatt auf alle Schuhe mit Code SHOE{code}. Abmelden: STOP an 7766",
            "Diskon 50% semua produk! Belanja sekarang di aplikasi kami. Stop: ketik UNREG",
            "FREE entry in our weekly draw to win a new car! Text WIN to 80082 now. T&Cs apply.",
        ],
        "personal": [
            "hey, running 10 min late, see you at the station",
            "ok",
            "Thanks {name}! See you tomorrow 😊",
            "Can you pick up milk and bread on the way home?",
            "Feliz cumpleaños {name}!! 🎉🎂 Te quiero mucho",
            "Oi {name}, tudo bem? Vamos almoçar amanhã?",
            "Bin gleich da, stehe noch im Stau.",
            "On se retrouve à 19h devant le cinéma ?",
            "{name}, mama minta kamu telepon balik ya",
            "Happy anniversary! Dinner is booked for 8pm at the usual place. Love you ❤️",
            "Meeting moved to 3pm in room B. Please bring the quarterly numbers and the "
            "slides from last week, {name} will join remotely.",
        ],
    }


def make_texts(n: int, seed: int = 1234) -> list[str]:
    """``n`` varied, realistic SMS texts (deterministic for a seed)."""
    rng = random.Random(seed)
    tpl = _templates()
    kinds = ["otp", "delivery", "phishing", "promo", "personal"]
    weights = [0.25, 0.15, 0.2, 0.15, 0.25]
    out = []
    for _ in range(n):
        kind = rng.choices(kinds, weights)[0]
        brand = rng.choice(_BRANDS)
        text = rng.choice(tpl[kind]).format(
            code=_otp(rng),
            svc=rng.choice(_SERVICES),
            courier=rng.choice(_COURIERS),
            track=f"{rng.choice(['JD', 'RR', 'LX', '1Z'])}{rng.randint(10**8, 10**9 - 1)}",
            brand=brand,
            url=_url(rng, brand),
            name=rng.choice(_NAMES),
        )
        if rng.random() < 0.08:  # concatenated (multi-part) messages
            text = (
                text
                + " "
                + rng.choice(tpl[rng.choice(kinds)]).format(
                    code=_otp(rng),
                    svc=rng.choice(_SERVICES),
                    courier=rng.choice(_COURIERS),
                    track="JD0001",
                    brand=brand,
                    url=_url(rng, brand),
                    name=rng.choice(_NAMES),
                )
            )
        out.append(text)
    return out


# --------------------------------------------------------------------------- models


def build_mbert_base(device: str, fp16: bool, compile_: bool, max_length: int) -> ModelRunner:
    """Random-weight mBERT-base classifier (3 labels) with a simple WordPiece tokenizer."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    vocab_size = 119547
    words = sorted({w for t in make_texts(3000, seed=7) for w in t.lower().split()})
    chars = sorted(set("".join(words)))
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, *chars]
    tokens += ["##" + c for c in chars]
    tokens = list(dict.fromkeys(tokens))
    tokens += [f"[unused{i}]" for i in range(vocab_size - len(tokens))]  # mBERT-sized vocab
    vocab = {t: i for i, t in enumerate(tokens[:vocab_size])}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=512,
    )
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=512,
        num_labels=3,
        id2label={0: "ham", 1: "spam", 2: "phishing"},
        label2id={"ham": 0, "spam": 1, "phishing": 2},
    )
    from classifier.runner import resolve_device

    dev = resolve_device(device)
    t0 = time.perf_counter()
    with torch.device(dev):  # initialise the random weights directly on the target device
        try:
            model = BertForSequenceClassification._from_config(config, attn_implementation="sdpa")
        except Exception:  # noqa: BLE001
            model = BertForSequenceClassification(config)
    n_params = sum(p.numel() for p in model.parameters()) / 1e6
    print(
        f"built mBERT-base ({n_params:.0f}M params, random weights) on {dev} in "
        f"{time.perf_counter() - t0:.1f}s"
    )
    cfg = RunnerConfig(
        model_dir=Path("<mbert-base>"),
        device=device,
        fp16=fp16,
        compile=compile_,
        max_length=max_length,
    )
    return ModelRunner.from_model(model, tokenizer, cfg)


def _sync(runner: ModelRunner) -> None:
    if runner.device.type == "cuda":
        torch.cuda.synchronize(runner.device)


def forward_table(
    runner: ModelRunner, batch_sizes: list[int], lengths: list[int], min_seconds: float
) -> None:
    """Raw forward throughput (msgs/s) for ready token ids, no batcher, no tokenization."""
    rng = random.Random(0)
    lo, hi = 1000, int(runner.model.config.vocab_size) - 1
    dtype = str(runner.dtype).removeprefix("torch.")
    print(
        f"\nraw forward throughput, msgs/s ({runner.device}, {dtype}, token ids already on "
        "the device); rows: batch size, columns: tokens per message"
    )
    print("batch".rjust(7) + "".join(f"{n:>11}" for n in lengths))
    for bs in batch_sizes:
        cells = []
        for n in lengths:
            ids = [[2] + [rng.randint(lo, hi) for _ in range(n - 2)] + [3] for _ in range(bs)]
            try:
                x = torch.tensor(ids, device=runner.device)
                runner.forward_tensors(x)  # warm-up (and compile) for this shape
                _sync(runner)
                reps, t0 = 0, time.perf_counter()
                while True:
                    runner.forward_tensors(x)
                    reps += 1
                    elapsed = time.perf_counter() - t0
                    if elapsed >= min_seconds and reps >= 3:
                        break
                _sync(runner)
                elapsed = time.perf_counter() - t0
                cells.append(f"{bs * reps / elapsed:>11.0f}")
            except torch.OutOfMemoryError:
                cells.append(f"{'OOM':>11}")
                torch.cuda.empty_cache()
        print(f"{bs:>7}" + "".join(cells), flush=True)


# --------------------------------------------------------------------------- load generator


@dataclass
class Result:
    name: str
    messages: int
    seconds: float
    latencies: list[float]
    mean_batch: float
    errors: int
    cpu_s: float = float("nan")  # process CPU seconds during the run
    thread_cpu_s: float = float("nan")  # CPU seconds of the inference thread

    @property
    def rate(self) -> float:
        return self.messages / self.seconds

    def pct(self, q: float) -> float:
        lat = sorted(self.latencies)
        return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000.0

    def line(self) -> str:
        return (
            f"{self.name:<24} {self.rate:>9.0f} msgs/s   p50 {self.pct(0.50):>7.1f} ms   "
            f"p99 {self.pct(0.99):>7.1f} ms   mean batch {self.mean_batch:>6.1f}"
            + (f"   errors {self.errors}" if self.errors else "")
        )

    def cpu_line(self) -> str:
        n = self.messages
        return (
            f"    CPU per message: process {1000 * self.cpu_s / n:.2f} ms, inference thread "
            f"{1000 * self.thread_cpu_s / n:.2f} ms ({n / self.cpu_s:.0f} msgs per "
            f"process-CPU-second; the load from other processes does not count here)"
        )


def _thread_cpu(ident: int | None) -> float:
    """CPU seconds consumed so far by one thread (NaN where the platform cannot tell)."""
    if ident is None:
        return float("nan")
    try:
        return time.clock_gettime(time.pthread_getcpuclockid(ident))
    except (AttributeError, OSError):
        return float("nan")


async def _drive(
    call,
    texts: list[str],
    concurrency: int,
    thread_ident: int | None = None,
    rate: float | None = None,
) -> tuple[float, list[float], int, float, float]:
    """Send ``texts``: C closed-loop callers, or (``rate``) open-loop Poisson arrivals at
    ``rate`` msgs/s. Returns (wall s, latencies, errors, process CPU s, thread CPU s)."""
    it = iter(texts)
    latencies: list[float] = []
    errors = 0

    async def one(text: str) -> None:
        nonlocal errors
        t0 = time.perf_counter()
        try:
            await call(text)
        except Exception:  # noqa: BLE001
            errors += 1
        latencies.append(time.perf_counter() - t0)

    if rate:
        rng = random.Random(42)
        c0, th0 = time.process_time(), _thread_cpu(thread_ident)
        t0 = time.perf_counter()
        due = t0
        tasks = []
        for text in texts:
            due += rng.expovariate(rate)
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one(text)))
        await asyncio.gather(*tasks)
        wall = time.perf_counter() - t0
        return wall, latencies, errors, time.process_time() - c0, _thread_cpu(thread_ident) - th0

    async def caller() -> None:
        nonlocal errors
        for text in it:
            t0 = time.perf_counter()
            try:
                await call(text)
            except Exception:  # noqa: BLE001
                errors += 1
            latencies.append(time.perf_counter() - t0)

    c0, th0 = time.process_time(), _thread_cpu(thread_ident)
    t0 = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    return wall, latencies, errors, time.process_time() - c0, _thread_cpu(thread_ident) - th0


async def run_unbatched(
    runner: ModelRunner,
    texts: list[str],
    concurrency: int,
    warm: list[str],
    rate: float | None = None,
) -> Result:
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="unbatched")
    loop = asyncio.get_running_loop()
    split = [0.0, 0.0]  # tokenize, forward (+ to_predictions)

    def predict_one(text: str):
        # runner.predict([text]), timed in two parts
        t0 = time.perf_counter()
        ids = runner.tokenize([text])
        t1 = time.perf_counter()
        pred = runner.to_predictions(runner.forward_ids(ids))
        split[0] += t1 - t0
        split[1] += time.perf_counter() - t1
        return pred

    async def call(text: str):
        return await loop.run_in_executor(pool, predict_one, text)

    try:
        ident = await loop.run_in_executor(pool, threading.get_ident)
        await _drive(call, warm, concurrency)
        split[:] = [0.0, 0.0]
        seconds, lat, errors, cpu, tcpu = await _drive(call, texts, concurrency, ident, rate)
    finally:
        pool.shutdown(wait=True)
    res = Result("(a) one-at-a-time", len(texts), seconds, lat, 1.0, errors, cpu, tcpu)
    res.split = (split[0], split[1])  # type: ignore[attr-defined]
    return res


def _split_line(res: Result, tokenize_s: float, forward_s: float) -> str:
    rest = max(0.0, res.seconds - tokenize_s - forward_s)
    return (
        f"    time split over {res.seconds:.2f}s wall: forward {forward_s:.2f}s "
        f"({100 * forward_s / res.seconds:.0f}%), tokenize {tokenize_s:.2f}s "
        f"({100 * tokenize_s / res.seconds:.0f}%), other (Python, batching, thread "
        f"handoff, idle) {rest:.2f}s ({100 * rest / res.seconds:.0f}%)"
    )


async def run_batched(
    runner: ModelRunner,
    texts: list[str],
    concurrency: int,
    warm: list[str],
    cfg: BatcherConfig,
    rate: float | None = None,
) -> Result:
    batcher = DynamicBatcher(runner, cfg, registry=CollectorRegistry())
    await batcher.start()
    try:
        await _drive(batcher.classify, warm, concurrency)
        reg = batcher.metrics.registry
        names = (
            "batch_size_count",
            "batch_size_sum",
            "padding_ratio_sum",
            "padding_ratio_count",
            "inference_seconds_sum",
            "tokenize_seconds_sum",
        )

        def snap() -> dict[str, float]:
            return {n: reg.get_sample_value("smsfw_classifier_" + n) or 0.0 for n in names}

        before = snap()
        ident = batcher._thread.ident if batcher._thread is not None else None
        seconds, lat, errors, cpu, tcpu = await _drive(
            batcher.classify, texts, concurrency, ident, rate
        )
        after = snap()
    finally:
        await batcher.close()
    d = {n: after[n] - before[n] for n in names}
    mean = d["batch_size_sum"] / max(1.0, d["batch_size_count"])
    res = Result("(b) dynamic batcher", len(texts), seconds, lat, mean, errors, cpu, tcpu)
    res.padding = d["padding_ratio_sum"] / max(1.0, d["padding_ratio_count"])  # type: ignore
    res.split = (d["tokenize_seconds_sum"], d["inference_seconds_sum"])  # type: ignore
    return res


# --------------------------------------------------------------------------- main


def _ratio(s: str) -> float | str | None:
    s = s.strip().lower()
    if s == "none":
        return None
    if s == "auto":
        return "auto"
    return float(s)


def _ints(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--model",
        type=Path,
        default=REPO / "classifier" / "models" / "default",
        help="Hugging Face model directory (config, weights, tokenizer)",
    )
    p.add_argument("--pth", type=Path, default=None, help="optional .pth state_dict")
    p.add_argument(
        "--arch",
        choices=["model", "mbert-base"],
        default="model",
        help="'model': load --model; 'mbert-base': random full-size mBERT-base",
    )
    p.add_argument("--concurrency", type=int, default=256)
    p.add_argument(
        "--rate",
        type=float,
        default=None,
        help="open loop: Poisson arrivals at this many msgs/s instead of C closed-loop callers",
    )
    p.add_argument("--messages", type=int, default=5000)
    p.add_argument(
        "--warmup-messages",
        type=int,
        default=None,
        help="messages sent before measuring (default: min(1000, messages/5))",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument(
        "--fp16",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="half precision on CUDA (CPU is always FP32)",
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--max-batch-size", type=int, default=64)
    p.add_argument("--max-batch-tokens", type=int, default=8192)
    p.add_argument("--max-wait-ms", type=float, default=0.0)
    p.add_argument(
        "--max-padding-ratio",
        type=_ratio,
        default="auto",
        help="cap on padded/real tokens per batch: a number, 'auto' (1.2 on CPU, none on "
        "GPU) or 'none' (BatcherConfig.max_padding_ratio)",
    )
    p.add_argument(
        "--batch-sizes",
        type=_ints,
        default=None,
        help="mbert-base table rows (default 64..1024 on CUDA, 1,8,32 on CPU)",
    )
    p.add_argument(
        "--lengths",
        type=_ints,
        default=None,
        help="mbert-base table columns (default 16,32,64,128 on CUDA, 16,32 on CPU)",
    )
    p.add_argument(
        "--table-seconds", type=float, default=None, help="minimum seconds per table cell"
    )
    p.add_argument("--no-table", action="store_true", help="mbert-base: skip the table")
    p.add_argument("--skip-unbatched", action="store_true")
    p.add_argument("--uvloop", action="store_true", help="run on uvloop")
    p.add_argument("--seed", type=int, default=1234)
    return p.parse_args(argv)


async def amain(args: argparse.Namespace) -> None:
    if args.arch == "mbert-base":
        runner = build_mbert_base(args.device, args.fp16, args.compile, args.max_length)
        if args.threads:
            torch.set_num_threads(args.threads)
        on_cuda = runner.device.type == "cuda"
        if not args.no_table:
            forward_table(
                runner,
                args.batch_sizes or ([64, 128, 256, 512, 1024] if on_cuda else [1, 8, 32]),
                args.lengths or ([16, 32, 64, 128] if on_cuda else [16, 32]),
                args.table_seconds or (1.0 if on_cuda else 0.5),
            )
    else:
        runner = ModelRunner(
            RunnerConfig(
                model_dir=args.model,
                pth_path=args.pth,
                device=args.device,
                fp16=args.fp16,
                compile=args.compile,
                max_length=args.max_length,
                num_threads=args.threads,
            )
        )

    if args.arch == "mbert-base" and runner.device.type == "cpu":
        if args.messages > 200 or args.concurrency > 32:
            print("mbert-base on CPU: capping to 200 messages and 32 callers (it is slow)")
        args.messages = min(args.messages, 200)
        args.concurrency = min(args.concurrency, 32)
        args.warmup_messages = min(args.warmup_messages or 32, 32)
    texts = make_texts(args.messages, args.seed)
    n_warm = args.warmup_messages
    if n_warm is None:
        n_warm = min(1000, max(args.concurrency, args.messages // 5))
    warm = make_texts(n_warm, args.seed + 1)
    lengths = runner.token_lengths(texts)
    runner.warmup()
    print(
        f"\nmodel: {args.model if args.arch == 'model' else 'mbert-base (random)'}  "
        f"device={runner.device} dtype={str(runner.dtype).removeprefix('torch.')} "
        f"attn={runner.attn_implementation} torch threads={torch.get_num_threads()} "
        f"cpus={os.cpu_count()}"
    )
    print(
        f"{len(texts)} messages, "
        + (
            f"open loop at {args.rate:g} msgs/s"
            if args.rate
            else f"{args.concurrency} concurrent callers"
        )
        + ", tokens/msg "
        f"mean {statistics.mean(lengths):.1f} min {min(lengths)} max {max(lengths)}; "
        f"batcher: max_batch_size={args.max_batch_size} "
        f"max_batch_tokens={args.max_batch_tokens} max_wait_ms={args.max_wait_ms} "
        f"max_padding_ratio={args.max_padding_ratio}"
    )

    bcfg = BatcherConfig(
        max_batch_size=args.max_batch_size,
        max_batch_tokens=args.max_batch_tokens,
        max_queue=max(2048, args.concurrency),
        max_wait_ms=args.max_wait_ms,
        max_padding_ratio=args.max_padding_ratio,
    )
    unbatched = None
    if not args.skip_unbatched:
        unbatched = await run_unbatched(runner, texts, args.concurrency, warm, args.rate)
        print(unbatched.line(), flush=True)
        print(_split_line(unbatched, *unbatched.split), flush=True)  # type: ignore
        print(unbatched.cpu_line(), flush=True)
    batched = await run_batched(runner, texts, args.concurrency, warm, bcfg, args.rate)
    print(batched.line() + f"   padding {batched.padding:.2f}", flush=True)  # type: ignore
    print(_split_line(batched, *batched.split), flush=True)  # type: ignore
    print(batched.cpu_line(), flush=True)
    if unbatched is not None:
        cpu_ratio = (unbatched.cpu_s / unbatched.messages) / (batched.cpu_s / batched.messages)
        print(f"CPU-cost ratio (process CPU per message, unbatched/batched): {cpu_ratio:.1f}x")
        if args.rate:
            print("(open loop: each mode's throughput is capped by the offered rate)")
        print(f"throughput ratio batched/unbatched: {batched.rate / unbatched.rate:.1f}x")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except Exception:  # noqa: BLE001
        pass
    if args.uvloop:
        import uvloop

        uvloop.install()
    asyncio.run(amain(args))


if __name__ == "__main__":
    main()
