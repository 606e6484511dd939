"""Receipt fields: the built-in zh/en templates on realistic receipts, custom templates, bad regexes."""

from __future__ import annotations

import argparse
import json
from decimal import Decimal
from pathlib import Path

import pytest

from gateway.pos import cli as pos_cli
from gateway.pos.escpos_builder import build_receipt
from gateway.pos.fields import (
    BUILTIN_TEMPLATES,
    ReceiptTemplate,
    extract,
    parse_amount,
    template_from_config,
)

SUPERMARKET = """\
        华润万家 万象城店
单号：0012-20240305-000123
收银员：1024   机号：03
时间：2024-03-05 14:23:11
-------------------------------
商品        数量   单价    金额
农夫山泉550ml  2   2.00    4.00
金龙鱼食用油    1  89.90   89.90
-------------------------------
合计：                    93.90
应收：                    93.90
实收：                   100.00
找零：                     6.10
     谢谢惠顾，欢迎再次光临
"""

BOUTIQUE = """\
ZARA 万达广场店
小票号: ZR88001234
2024年03月05日 19:02
合计金额: ￥1,299.00
会员折扣:  -100.00
实付金额: ￥1,199.00
微信支付: ￥1,199.00
"""

FULLWIDTH = """\
销售单号：ＡＢ１２３４５
日期：２０２４－０３－０５　１２：００：００
合　计：　１，２３４．５０
实　收：　１，２３４．５０
"""

REFUND_ZH = """\
*** 退货单 ***
单号: R20240306-0007
时间: 2024/03/06 10:15:00
合计: -68.00
退款金额: 68.00
"""

REPRINT_ZH = """\
单号: S20240305-0001 (重打)
时间: 2024-03-05 14:23
合计: 68.00
"""

EN_RECEIPT = """\
SUPERMART #12
Receipt No: 4471-0093
03/05/2024 02:41 PM
Milk 2L                 3.49
Bread                   2.99
Subtotal                6.48
Tax                     0.52
Total                   7.00
Cash                   20.00
Change                 13.00
Thank you! Keep a copy of this receipt for returns.
"""

EN_PAID = """\
Order # A-99812
2024-03-05 09:10:00
Total                $1,024.00
Discount               -24.00
Amount paid          $1,000.00
"""

EN_REFUND_REPRINT = """\
*** REFUND ***
Receipt No. 77120
2024-03-05 16:00
Refund total          -15.50
REPRINT
"""

EN_COPY = """\
Invoice #: INV-2024-0042
2024-03-05 16:00
Total 10.00
COPY
"""


def test_zh_paid_preferred_and_change_ignored():
    p = extract(SUPERMARKET)
    assert p.template == "zh" and p.receipt_no == "0012-20240305-000123"
    assert p.time == "2024-03-05T14:23:11+08:00"
    assert p.total == Decimal("93.90")
    # 实收 100.00 was the cash handed over (100.00 - 6.10 change == 93.90): the sale is 93.90
    assert p.amount == Decimal("93.90") and p.paid == Decimal("93.90")
    assert not p.refund and not p.reprint and p.currency == "CNY"


def test_zh_paid_after_discount_thousands_and_yen_sign():
    p = extract(BOUTIQUE)
    assert p.receipt_no == "ZR88001234" and p.time == "2024-03-05T19:02:00+08:00"
    assert p.total == Decimal("1299.00") and p.paid == Decimal("1199.00") and p.amount == Decimal("1199.00")


def test_full_width_digits():
    p = extract(FULLWIDTH)
    assert p.receipt_no == "AB12345" and p.amount == Decimal("1234.50")
    assert p.time == "2024-03-05T12:00:00+08:00"
    assert p.text == FULLWIDTH  # the text as printed, not the normalised one


def test_zh_refund_and_reprint():
    p = extract(REFUND_ZH)
    assert p.refund and p.amount == Decimal("68.00") and p.total == Decimal("68.00")
    assert p.time == "2024-03-06T10:15:00+08:00"
    p = extract(REPRINT_ZH)
    assert p.reprint and not p.refund and p.amount == Decimal("68.00")
    # a footer about returns is not a refund
    assert not extract("单号: A123\n合计: 5.00\n退换货请保留小票").refund


def test_en_total_change_ignored_and_no_false_refund_or_reprint():
    p = extract(EN_RECEIPT)
    assert p.template == "en" and p.receipt_no == "4471-0093"
    assert p.total == Decimal("7.00") and p.paid is None and p.amount == Decimal("7.00")
    assert p.time == "2024-03-05T14:41:00+08:00"
    assert not p.refund and not p.reprint  # "copy" and "returns" in a footer


def test_en_paid_preferred_refund_reprint_copy():
    p = extract(EN_PAID)
    assert p.receipt_no == "A-99812" and p.total == Decimal("1024.00") and p.amount == Decimal("1000.00")
    p = extract(EN_REFUND_REPRINT)
    assert p.refund and p.reprint and p.amount == Decimal("15.50") and p.receipt_no == "77120"
    p = extract(EN_COPY)
    assert p.reprint and p.receipt_no == "INV-2024-0042"


def test_time_zone_and_no_time():
    p = extract(EN_COPY, tz="Europe/London")
    assert p.time == "2024-03-05T16:00:00+00:00"
    p = extract("Receipt No: 12345\nTotal 3.00")
    assert p.time is None and p.amount == Decimal("3.00")
    with pytest.raises(ValueError):
        extract(EN_COPY, tz="Mars/Olympus")


def test_unreadable_receipts_give_none():
    assert extract("") is None
    assert extract("谢谢惠顾") is None
    assert extract("单号: S1234\n欢迎光临") is None  # no amount
    assert extract("合计: 12.00") is None  # no number, no time
    assert extract("x" * 200_000 + "\n合计: 1.00") is None  # beyond the text cap


def test_parse_amount():
    assert parse_amount("¥1,280.50") == Decimal("1280.50")
    assert parse_amount("RMB 99") == Decimal("99")
    assert parse_amount("$ -12.00") == Decimal("-12.00")
    assert parse_amount("-¥3.00") == Decimal("-3.00")
    assert parse_amount("１２８．００") == Decimal("128.00")
    assert parse_amount("n/a") is None


def test_custom_template_from_config_dict():
    template = template_from_config({
        "name": "mall-till-7",
        "receipt_no": r"流水\s*(?P<receipt_no>\d{6,})",
        "time": r"(?P<time>\d{2}/\d{2}/\d{4} \d{2}:\d{2})",
        "time_format": ["%d/%m/%Y %H:%M"],
        "total": r"^应付\s+(?P<total>[\d.,]+)$",
        "paid": r"^顾客支付\s+(?P<paid>[\d.,]+)$",
        "refund": r"冲红",
        "lines": r"^(?P<name>\S+)\s+x(?P<qty>\d+)\s+(?P<amount>[\d.]+)$",
        "currency": "HKD",
    })
    text = "流水 00088123\n05/03/2024 18:30\n奶茶 x2 36.00\n应付 36.00\n顾客支付 36.00\n"
    p = extract(text, template)
    assert (p.receipt_no, p.time, p.amount, p.currency) == ("00088123", "2024-03-05T18:30:00+08:00",
                                                         Decimal("36.00"), "HKD")
    assert p.items == ({"name": "奶茶", "qty": "2", "amount": Decimal("36.00")},)
    assert extract(text + "冲红\n", template).refund
    # the Korean capture, read with a site's own template
    korean = template_from_config({"name": "ko", "receipt_no": r"영수증\s*(?P<receipt_no>\d+)",
                                   "time": r"(?P<time>\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2})",
                                   "total": r"^합\s*계:\s*(?P<total>[\d,]+)$", "currency": "KRW"})
    path = Path(__file__).resolve().parents[1].parent / "shared/data/escpos/korean-receipt-mixed-encoding.txt"
    if path.exists():
        p = extract(path.read_text(encoding="utf-8"), korean, tz="Asia/Seoul")
        assert p.amount == Decimal("9700") and p.receipt_no == "T20201003091042"


@pytest.mark.parametrize("bad, message", [
    ({"name": "x", "receipt_no": r"(?P<receipt_no>\d+", "total": r"(?P<total>\d+)"}, "not a valid regular"),
    ({"name": "x", "receipt_no": r"No (\d+)", "total": r"(?P<total>\d+)"}, r"\(\?P<receipt_no>"),
    ({"name": "x", "receipt_no": r"(?P<receipt_no>\d+)", "total": r"Total (\d+)"}, r"\(\?P<total>"),
    ({"name": "x", "receipt_no": r"(?P<receipt_no>\d+)"}, "paid or a total"),
    ({"name": "x", "receipt_no": r"(?P<receipt_no>\d+)", "total": r"(?P<total>\d+)", "refund": "[退"},
     "refund: not a valid"),
    ({"name": "x", "receipt_no": r"(?P<receipt_no>\d+)", "total": r"(?P<total>\d+)", "lines": r"(\d+)"},
     r"\(\?P<amount>"),
    ({"name": "x", "receipt_no": r"(?P<receipt_no>\d+)", "total": r"(?P<total>\d+)", "colour": "red"},
     "Extra inputs"),
])
def test_bad_templates_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        template_from_config(bad)
    with pytest.raises(ValueError):
        ReceiptTemplate.model_validate(bad)


def test_builtin_templates_are_valid_and_named():
    assert list(BUILTIN_TEMPLATES) == ["zh", "en"]
    for name, template in BUILTIN_TEMPLATES.items():
        assert ReceiptTemplate.model_validate(template.model_dump()).name == name


def test_cli_parse_prints_receipts_and_unparsed_ones(tmp_path, capsys):
    capture = tmp_path / "till.bin"
    capture.write_bytes(build_receipt(SUPERMARKET.splitlines(), qr="https://example.cn/q")
                        + build_receipt(["欢迎光临", "谢谢"], cut="full"))
    config = tmp_path / "site.yaml"
    site = "site_id: s\ngateway_id: g\napi: {token: a-token-of-24-characters}\ntimezone: Asia/Shanghai\n"
    config.write_text(site + "pos:\n  templates:\n    - name: mine\n"
                      "      receipt_no: '单号：(?P<receipt_no>\\S+)'\n"
                      "      total: '^应收：\\s*(?P<total>[\\d.]+)$'\n", encoding="utf-8")
    parser = argparse.ArgumentParser()
    pos_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["pos", "parse", str(capture), "--tz", "Asia/Shanghai"])
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert [e["parsed"] for e in out] == [True, False]
    first = out[0]
    assert {k: first[k] for k in ("receipt_no", "time", "total", "paid", "refund", "reprint", "currency")} == {
        "receipt_no": "0012-20240305-000123", "time": "2024-03-05T14:23:11+08:00", "total": "93.90",
        "paid": "93.90", "refund": False, "reprint": False, "currency": "CNY"}
    assert first["text"].splitlines()[1] == "单号：0012-20240305-000123"
    assert out[1]["text"] == "欢迎光临\n谢谢" and len(out[1]["sha256"]) == 64

    args = parser.parse_args(["pos", "parse", str(capture), "--templates-from", str(config), "--template", "mine"])
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out[0]["template"] == "mine" and out[0]["total"] == "93.90" and out[0]["paid"] is None
    assert out[0]["time"] is None  # "mine" reads no time

    args = parser.parse_args(["pos", "parse", str(capture), "--template", "nope"])
    assert args.func(args) == 1
    assert "no receipt template 'nope'" in capsys.readouterr().err
    config.write_text(site + "pos:\n  templates:\n    - name: bad\n      receipt_no: '(oops'\n      total: 'x'\n")
    args = parser.parse_args(["pos", "parse", str(capture), "--templates-from", str(config)])
    assert args.func(args) == 1
    assert "not a valid regular expression" in capsys.readouterr().err


def test_a_refund_names_the_sale_it_refunds():
    zh = extract("万象城 S101\n*** 退货单 ***\n单号：R-0007\n原单号：A-0042\n时间：2026-11-24 10:15:00\n合计：-68.00\n")
    assert zh.refund and zh.receipt_no == "R-0007" and zh.original_receipt_no == "A-0042"
    en = extract("SHOP\nREFUND\nReceipt No: R-0008\nOriginal Receipt: A-0043\n2026-11-24 10:15:00\nTotal -12.00\n",
                 BUILTIN_TEMPLATES["en"])
    assert en.refund and en.receipt_no == "R-0008" and en.original_receipt_no == "A-0043"
    # The refunded sale's number is never taken for the refund's own, whichever line comes first.
    first = extract("*** 退货单 ***\n原单号：A-0044\n单号：R-0009\n合计：-5.00\n")
    assert first.receipt_no == "R-0009" and first.original_receipt_no == "A-0044"
    sale = extract("单号：A-0045\n合计：5.00\n")
    assert sale.original_receipt_no is None
