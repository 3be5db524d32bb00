"""Receipt parsing / id rewriting, id generation, policy decisions and config validation."""

from __future__ import annotations

import pytest

from smpp_proxy.config import ConfigError, load_config, parse_config
from smpp_proxy.constants import CommandId, Tag
from smpp_proxy.dlr import (
    build_receipt,
    id_candidates,
    is_receipt,
    parse_receipt,
    rewrite_receipt_id,
)
from smpp_proxy.ids import MessageIdGenerator
from smpp_proxy.pdu import Pdu, decode_pdu
from smpp_proxy.policy import LabelRule, PolicyConfig, PolicyEngine, PolicyOverride

MINIMAL = "upstreams: [{name: up, host: 127.0.0.1, system_id: x}]\n"


def receipt(text: bytes, tlv_id: str | None = None) -> Pdu:
    p = Pdu(int(CommandId.DELIVER_SM), params={"esm_class": 0x04, "short_message": text})
    if tlv_id is not None:
        p.set_tlv(Tag.RECEIPTED_MESSAGE_ID, tlv_id.encode() + b"\x00")
    return p


TEXT = b"id:0000660268 sub:001 dlvrd:001 submit date:2401011200 done date:2401011201 stat:DELIVRD err:000 text:hello"


def test_parse_receipt_from_text_and_tlv():
    info = parse_receipt(receipt(TEXT))
    assert info.message_id == "0000660268" and info.stat == "DELIVRD" and info.err == "000"
    info = parse_receipt(receipt(TEXT, tlv_id="A132C"))
    assert info.message_id == "A132C" and info.from_tlv


def test_id_candidates_cover_hex_decimal_and_zero_padding():
    # upstream returned hex "a132c" in submit_sm_resp, receipt text says decimal with zeros
    assert "a132c" in id_candidates("0000660268")
    assert "660268" in id_candidates("a132c")
    assert "0000660268" in id_candidates("660268")
    assert "A132C" in id_candidates("a132c")
    assert "abc" in id_candidates("00abc")


def test_rewrite_receipt_id_in_text_and_tlv_keeps_the_rest():
    p = receipt(TEXT, tlv_id="660268")
    p.set_tlv(0x1401, b"vendor")
    rewrite_receipt_id(p, "0123456789abcdef")
    assert p.params["short_message"].startswith(b"id:0123456789abcdef sub:001")
    assert p.params["short_message"].endswith(b"stat:DELIVRD err:000 text:hello")
    assert p.get_tlv(Tag.RECEIPTED_MESSAGE_ID) == b"0123456789abcdef\x00"
    assert p.get_tlv(0x1401) == b"vendor"
    again = decode_pdu(p.encode())
    assert parse_receipt(again).message_id == "0123456789abcdef"


def test_build_receipt_is_a_receipt():
    p = build_receipt(
        message_id="abc", source_addr="111", source_addr_ton=1, source_addr_npi=1,
        destination_addr="222", dest_addr_ton=1, dest_addr_npi=1, stat="REJECTD", err="045",
        submitted_at=0.0,
    )
    assert is_receipt(p)
    info = parse_receipt(decode_pdu(p.encode()))
    assert info.message_id == "abc" and info.stat == "REJECTD" and info.err == "045"
    assert p.params["destination_addr"] == "111" and p.params["source_addr"] == "222"


def test_message_ids_unique_and_formatted():
    g = MessageIdGenerator(node_id=5)
    ids = [g.next() for _ in range(20000)]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 16 for i in ids)
    d = MessageIdGenerator(fmt="decimal").next()
    assert d.isdigit() and len(d) <= 20
    assert MessageIdGenerator(node_id=1).next() != MessageIdGenerator(node_id=2).next()


def test_policy_thresholds_lists_shadow_and_overrides():
    cfg = PolicyConfig(
        labels={
            "ham": LabelRule(threshold=0.0, action="forward"),
            "spam": LabelRule(threshold=0.7, action="drop", drop_receipt="DELIVRD"),
            "phishing": LabelRule(threshold=0.5, action="reject", reject_status=0x45),
        },
        allow={"senders": ["MYBANK"]},
        block={"text_patterns": [r"bit\.ly/"], "action": "reject", "reject_status": 0x0B},
    )
    eng = PolicyEngine(cfg, {"shadowed": PolicyOverride(mode="shadow")})
    p = eng.for_client("any")
    v = p.decide("phishing", {"ham": 0.2, "spam": 0.1, "phishing": 0.7})
    assert v.action == "reject" and v.status == 0x45 and v.enforced == "reject"
    v = p.decide("spam", {"ham": 0.4, "spam": 0.6, "phishing": 0.0})
    assert v.action == "forward" and v.reason == "below_threshold"
    v = p.decide("spam", {"ham": 0.1, "spam": 0.9, "phishing": 0.0})
    assert v.action == "drop" and v.receipt == "DELIVRD"
    assert p.pre_check("MYBANK", "44", "click bit.ly/x").action == "forward"
    v = p.pre_check("OTHER", "44", "click BIT.LY/x")
    assert v.action == "reject" and v.status == 0x0B
    assert p.pre_check("OTHER", "44", "hello") is None
    s = eng.for_client("shadowed").decide("phishing", {"phishing": 0.99})
    assert s.action == "reject" and s.shadow and s.enforced == "forward"
    assert p.on_error(overload=True).action == "forward"


def test_policy_refuses_temporary_reject_status():
    with pytest.raises(ConfigError) as ei:
        parse_config(MINIMAL + "policy:\n  labels:\n    phishing: {action: reject, reject_status: 0x58}\n")
    assert "policy.labels.phishing.reject_status" in str(ei.value)


def test_config_errors_name_the_yaml_path_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        MINIMAL
        + "clients:\n  - system_id: a\n    password: ok\n  - system_id: b\n    password: x\n    throughtput: 5\n"
    )
    with pytest.raises(ConfigError) as ei:
        load_config(bad)
    msg = str(ei.value)
    assert "clients[1].throughtput (line 7): unknown key" in msg


def test_config_missing_upstreams_and_bad_yaml():
    with pytest.raises(ConfigError) as ei:
        parse_config("server: {port: 2775}\n")
    assert "upstreams" in str(ei.value)
    with pytest.raises(ConfigError) as ei:
        parse_config("upstreams: [unclosed\n")
    assert "YAML syntax error" in str(ei.value)


def test_example_config_is_valid():
    from smpp_proxy.cli import DEFAULT_CONFIG

    cfg = load_config(DEFAULT_CONFIG)
    assert cfg.clients and cfg.upstreams


def test_client_ip_allowlist():
    cfg = parse_config(MINIMAL + "clients:\n  - {system_id: a, password: p, allowed_ips: ['10.0.0.0/8', '::1']}\n")
    c = cfg.client("a")
    assert c.ip_allowed("10.1.2.3") and c.ip_allowed("::1") and c.ip_allowed("::ffff:10.0.0.1")
    assert not c.ip_allowed("127.0.0.1")


def test_client_label_override_merges_field_by_field():
    eng = PolicyEngine(PolicyConfig(), {"strict": PolicyOverride(labels={"phishing": LabelRule(threshold=0.9)})})
    rule = eng.for_client("strict").cfg.labels["phishing"]
    assert rule.threshold == 0.9 and rule.action == "reject"  # the base action is kept
    assert eng.for_client("strict").decide("phishing", {"phishing": 0.95}).action == "reject"
    assert eng.for_client("strict").decide("phishing", {"phishing": 0.85}).action == "forward"
