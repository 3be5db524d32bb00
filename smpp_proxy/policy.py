"""Policy: what happens to a message, from allow/block lists and the classifier's verdict.

Order of decisions for one message (all of its text at once):

1. allow lists (sender / alphanumeric sender id, destination prefix, text regex) → forward,
   whatever the model would say;
2. block lists → the block list's action;
3. the classifier: the predicted label L with probability p; if p >= threshold(L) the label's
   action applies, else ``below_threshold_action`` (default forward);
4. classifier failure or overload → ``on_classifier_error`` (forward = fail open, the default;
   reject; or tempfail = 0x58 so the client retries later).

Shadow mode (global or per client) computes and counts all of this but always forwards.
Per-client overrides replace any of the global settings for that client's traffic.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Action = Literal["forward", "reject", "drop"]
ReceiptStat = Literal["REJECTD", "DELIVRD", "none"]

# Statuses a client treats as "try again later": a blocked message must never get one, or the
# client would resubmit it forever.
TEMPORARY_STATUSES = frozenset({0x08, 0x14, 0x58, 0x64})
RSUBMITFAIL = 0x45
RTHROTTLED = 0x58


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_reject_status(v: int) -> int:
    if v == 0:
        raise ValueError("a reject status must be non-zero")
    if v in TEMPORARY_STATUSES:
        raise ValueError(f"{v:#x} is a temporary error: clients would resubmit blocked messages")
    return v


class LabelRule(_Model):
    threshold: float = Field(0.5, ge=0.0, le=1.0)
    action: Action = "forward"
    reject_status: int = Field(RSUBMITFAIL, ge=1, le=0xFFFFFFFF)
    drop_receipt: ReceiptStat = "REJECTD"

    @field_validator("reject_status")
    @classmethod
    def _status(cls, v: int) -> int:
        return _check_reject_status(v)


class ListRules(_Model):
    senders: list[str] = Field(default_factory=list, description="exact source_addr / sender ids")
    sender_patterns: list[str] = Field(default_factory=list, description="regexes on source_addr")
    destination_prefixes: list[str] = Field(default_factory=list)
    text_patterns: list[str] = Field(default_factory=list, description="regexes on the text")

    @field_validator("sender_patterns", "text_patterns")
    @classmethod
    def _compile(cls, v: list[str]) -> list[str]:
        for i, pat in enumerate(v):
            try:
                re.compile(pat)
            except re.error as exc:
                raise ValueError(f"pattern [{i}] {pat!r} is not a valid regex: {exc}") from exc
        return v


class BlockRules(ListRules):
    action: Literal["reject", "drop"] = "reject"
    reject_status: int = Field(RSUBMITFAIL, ge=1, le=0xFFFFFFFF)
    drop_receipt: ReceiptStat = "REJECTD"

    @field_validator("reject_status")
    @classmethod
    def _status(cls, v: int) -> int:
        return _check_reject_status(v)


DEFAULT_LABELS = {
    "ham": LabelRule(threshold=0.0, action="forward"),
    "spam": LabelRule(threshold=0.8, action="forward"),
    "phishing": LabelRule(threshold=0.6, action="reject"),
}


class PolicyConfig(_Model):
    mode: Literal["enforce", "shadow"] = "enforce"
    labels: dict[str, LabelRule] = Field(default_factory=lambda: dict(DEFAULT_LABELS))
    below_threshold_action: Action = "forward"
    on_classifier_error: Literal["forward", "reject", "tempfail"] = "forward"
    error_reject_status: int = Field(RSUBMITFAIL, ge=1, le=0xFFFFFFFF)
    allow: ListRules = ListRules()
    block: BlockRules = BlockRules()

    @field_validator("error_reject_status")
    @classmethod
    def _status(cls, v: int) -> int:
        return _check_reject_status(v)


class PolicyOverride(_Model):
    """Per-client override: every field optional; labels merge per label."""

    mode: Literal["enforce", "shadow"] | None = None
    labels: dict[str, LabelRule] | None = None
    below_threshold_action: Action | None = None
    on_classifier_error: Literal["forward", "reject", "tempfail"] | None = None
    error_reject_status: int | None = None
    allow: ListRules | None = None
    block: BlockRules | None = None

    @model_validator(mode="after")
    def _check(self) -> PolicyOverride:
        if self.error_reject_status is not None:
            _check_reject_status(self.error_reject_status)
        return self


def merge_policy(base: PolicyConfig, override: PolicyOverride | None) -> PolicyConfig:
    if override is None:
        return base
    upd = {k: v for k, v in override.model_dump(exclude_none=True).items()}
    if override.labels is not None:
        # field by field: {phishing: {threshold: 0.9}} keeps the base rule's action
        labels = dict(base.labels)
        for name, rule in override.labels.items():
            if name in labels:
                labels[name] = labels[name].model_copy(
                    update={f: getattr(rule, f) for f in rule.model_fields_set}
                )
            else:
                labels[name] = rule
        upd["labels"] = labels
    for k in ("allow", "block"):
        if getattr(override, k) is not None:
            upd[k] = getattr(override, k)
    return base.model_copy(update=upd)


@dataclass(frozen=True)
class Verdict:
    action: Action
    reason: str  # allowlist | blocklist | model | below_threshold | classifier_error | overload
    label: str | None = None
    score: float | None = None
    probs: dict[str, float] | None = None
    status: int = 0  # the command_status for reject (or tempfail)
    receipt: str | None = None  # stat of the receipt to synthesise on drop (None: no receipt)
    shadow: bool = False  # the enforced action is forward; ``action`` is what would have happened
    tempfail: bool = False

    @property
    def enforced(self) -> Action:
        return "forward" if self.shadow else self.action


class _Compiled:
    def __init__(self, rules: ListRules):
        self.senders = frozenset(rules.senders)
        self.sender_res = [re.compile(p) for p in rules.sender_patterns]
        self.prefixes = tuple(rules.destination_prefixes)
        self.text_res = [re.compile(p, re.IGNORECASE) for p in rules.text_patterns]

    def matches(self, source: str, destination: str, text: str) -> str | None:
        if source in self.senders:
            return f"sender {source}"
        for r in self.sender_res:
            if r.search(source):
                return f"sender ~ {r.pattern}"
        if self.prefixes and destination.startswith(self.prefixes):
            return "destination prefix"
        for r in self.text_res:
            if r.search(text):
                return f"text ~ {r.pattern}"
        return None


class ClientPolicy:
    """The effective policy of one client, with its regexes compiled once."""

    def __init__(self, cfg: PolicyConfig):
        self.cfg = cfg
        self.allow = _Compiled(cfg.allow)
        self.block = _Compiled(cfg.block)

    @property
    def shadow(self) -> bool:
        return self.cfg.mode == "shadow"

    def pre_check(self, source: str, destination: str, text: str) -> Verdict | None:
        why = self.allow.matches(source, destination, text)
        if why is not None:
            return Verdict("forward", f"allowlist: {why}", shadow=self.shadow)
        why = self.block.matches(source, destination, text)
        if why is not None:
            b = self.cfg.block
            return Verdict(
                b.action, f"blocklist: {why}", status=b.reject_status if b.action == "reject" else 0,
                receipt=None if b.drop_receipt == "none" else b.drop_receipt, shadow=self.shadow,
            )
        return None

    def decide(self, label: str, probs: dict[str, float]) -> Verdict:
        score = probs.get(label, 0.0)
        rule = self.cfg.labels.get(label)
        if rule is not None and score >= rule.threshold:
            action: Action = rule.action
            reason = "model"
        else:
            action = self.cfg.below_threshold_action
            reason = "below_threshold"
            rule = rule or LabelRule(action=action)
        return Verdict(
            action, reason, label=label, score=score, probs=probs,
            status=rule.reject_status if action == "reject" else 0,
            receipt=None if rule.drop_receipt == "none" else rule.drop_receipt,
            shadow=self.shadow,
        )

    def on_error(self, overload: bool) -> Verdict:
        reason = "overload" if overload else "classifier_error"
        mode = self.cfg.on_classifier_error
        if mode == "forward":
            return Verdict("forward", reason, shadow=self.shadow)
        if mode == "tempfail":
            return Verdict("reject", reason, status=RTHROTTLED, shadow=self.shadow, tempfail=True)
        return Verdict("reject", reason, status=self.cfg.error_reject_status, shadow=self.shadow)


class PolicyEngine:
    """Global policy plus per-client overrides; rebuilt on SIGHUP."""

    def __init__(self, base: PolicyConfig, overrides: dict[str, PolicyOverride | None]):
        self.base = ClientPolicy(base)
        self._clients = {
            cid: ClientPolicy(merge_policy(base, ov)) for cid, ov in overrides.items() if ov
        }

    def for_client(self, client_id: str) -> ClientPolicy:
        return self._clients.get(client_id, self.base)
