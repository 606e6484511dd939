"""Receipt fields: the receipt number, time and amount a sale is worth, read from a receipt's text.

A `ReceiptTemplate` is a set of regexes with named groups, applied line by line to the receipt's
text after Unicode NFKC normalisation (full-width digits, `￥` and `：` become ASCII). Sites configure
their own per till; `BUILTIN_TEMPLATES` ("zh", then "en") are tried when a till has none.

What a sale is worth (`ParsedReceipt.amount`): the paid amount (实收, 实付, Paid, ...) when the
receipt shows one, else the total due (合计, 应收, Total, ...). Change (找零, Change) is never an
amount; when the paid figure is the cash handed over (paid - change == total), the sale is the
total. Refunds (退货, 退款, Refund, or a negative amount) are reported with positive amounts and
`refund=True`; reprints (重打, 补打, 重印, Reprint, COPY) with `reprint=True`. A receipt without a
printed number gets one from its printed time (`T` + local time to the second) when the template
allows it (`number_from_time`), since some tills print none. `extract` returns None when it finds
no amount or no receipt number: the caller reports `sale.unparsed`.

Regexes are matched against the NFKC form of the text and are given the same treatment (a `：`
in a pattern matches the `:` the text's `：` became). User regexes run on lines of at most `MAX_LINE` characters of at most `MAX_TEXT` characters of
text, which bounds what a careless pattern can cost.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, PrivateAttr, field_validator, model_validator

from ..validation import StrictModel

__all__ = ["BUILTIN_TEMPLATES", "ParsedReceipt", "ReceiptTemplate", "extract", "parse_amount",
           "template_from_config"]

MAX_TEXT = 64 * 1024
MAX_LINE = 512

# An amount as printed: optional currency, optional sign, digits with thousands separators, decimals.
AMOUNT = r"(?:RMB|CNY|USD|[$¥])?\s*[-−]?\s*(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d{1,2})?"
_AMOUNT_RE = re.compile(r"([-−])?\s*(?:RMB|CNY|USD|[$¥])?\s*([-−])?\s*((?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?)")

# Fields whose regex must capture a group of the field's own name (refund and reprint only match).
_NAMED_GROUP_FIELDS = frozenset({"receipt_no", "time", "paid", "total", "change", "original"})


def parse_amount(text: str) -> Decimal | None:
    """`¥1,280.50`, `RMB 99`, `-12.00`, `１２８.００` -> Decimal; None if there is no amount."""
    text = unicodedata.normalize("NFKC", text).strip()
    match = _AMOUNT_RE.search(text)
    if not match:
        return None
    try:
        value = Decimal(match.group(3).replace(",", ""))
    except InvalidOperation:
        return None
    return -value if (match.group(1) or match.group(2)) else value


class ReceiptTemplate(StrictModel):
    """How to read one till's receipts. Each regex is searched line by line (after NFKC)."""

    name: str = Field(min_length=1)
    receipt_no: str = Field(description="regex with a (?P<receipt_no>...) group")
    time: str | None = Field(None, description="regex with a (?P<time>...) group")
    time_format: list[str] = Field(default_factory=list,
                                   description="strptime formats for the time group; built-in ones if empty")
    paid: str | None = Field(None, description="regex with a (?P<paid>...) group: what the customer paid")
    total: str | None = Field(None, description="regex with a (?P<total>...) group: the total due")
    change: str | None = Field(None, description="regex with a (?P<change>...) group: change given")
    refund: str | None = Field(None, description="regex: a line matching it marks a refund")
    reprint: str | None = Field(None, description="regex: a line matching it marks a reprint")
    original: str | None = Field(None, description="regex with a (?P<original>...) group: on a refund, the "
                                                   "receipt number of the sale it refunds")
    lines: str | None = Field(None, description="regex for item lines: (?P<name>) (?P<qty>) (?P<amount>)")
    currency: str = "CNY"
    number_from_time: bool = Field(True, description="no printed receipt number: use T + the printed time")
    _compiled: Any = PrivateAttr(default=None)

    @field_validator("receipt_no", "time", "paid", "total", "change", "refund", "reprint", "lines", "original")
    @classmethod
    def _regex(cls, value: str | None, info) -> str | None:
        if value is None:
            return None
        try:
            pattern = re.compile(value)
        except re.error as exc:
            raise ValueError(f"{info.field_name}: not a valid regular expression ({exc})") from None
        group = info.field_name
        if group in _NAMED_GROUP_FIELDS and group not in pattern.groupindex:
            raise ValueError(f"{info.field_name}: the regex needs a named group (?P<{group}>...)")
        if info.field_name == "lines" and "amount" not in pattern.groupindex:
            raise ValueError("lines: the regex needs a named group (?P<amount>...)")
        return value

    @field_validator("time_format")
    @classmethod
    def _formats(cls, value: list[str]) -> list[str]:
        for fmt in value:
            if "%" not in fmt:
                raise ValueError(f"time_format {fmt!r} is not a strptime format (e.g. %Y-%m-%d %H:%M:%S)")
        return value

    @model_validator(mode="after")
    def _amount_needed(self) -> ReceiptTemplate:
        if self.paid is None and self.total is None:
            raise ValueError("a receipt template needs a paid or a total regex")
        return self

    def compiled(self) -> _Compiled:
        if self._compiled is None:
            self._compiled = _Compiled(self)
        return self._compiled


def _nfkc_pattern(pattern: str) -> str:
    """The pattern for NFKC text: `：` becomes `:`, `（` a literal `\\(`, `１` `1`."""
    out = []
    for ch in pattern:
        norm = unicodedata.normalize("NFKC", ch) if ord(ch) > 0x7F else ch
        out.append(ch if norm == ch else re.escape(norm) if any(m in norm for m in "()[]{}.*+?^$|\\-#&~") else norm)
    return "".join(out)


class _Compiled:
    def __init__(self, template: ReceiptTemplate):
        def c(pattern: str | None) -> re.Pattern | None:
            return re.compile(_nfkc_pattern(pattern)) if pattern else None

        self.receipt_no = c(template.receipt_no)
        self.time = c(template.time)
        self.paid = c(template.paid)
        self.total = c(template.total)
        self.change = c(template.change)
        self.refund = c(template.refund)
        self.reprint = c(template.reprint)
        self.lines = c(template.lines)
        self.original = c(template.original)


@dataclass(frozen=True)
class ParsedReceipt:
    receipt_no: str
    time: str | None        # ISO-8601 with offset, or None
    total: Decimal | None
    paid: Decimal | None
    amount: Decimal         # what the sale is worth: paid if found, else total
    refund: bool
    reprint: bool
    currency: str
    text: str
    template: str = ""
    items: tuple = field(default=())  # ({"name", "qty", "amount"}, ...) when the template has `lines`
    original_receipt_no: str | None = None  # a refund's sale, when the receipt prints it


_ZH_NO = r"(?:单\s*号|小票号|流水号|单据号|票据号|交易号|订单号|销售单号?|收银单号|票号|NO\.?|No\.?)"
_EN_NO = (r"(?i:(?:receipt|invoice|order|trans(?:action)?|ticket|check|bill|sale)\s*"
          r"(?:no\.?|number|num\.?|#|id))")
_NUMBER = r"\s*[:#]?\s*#?\s*(?P<receipt_no>[A-Za-z0-9][A-Za-z0-9\-_/]{2,39})\b"
_TIME_ISO = (r"(?P<time>\d{4}\s*[-/.年]\s*\d{1,2}\s*[-/.月]\s*\d{1,2}\s*日?[T\s]*\d{1,2}:\d{2}(?::\d{2})?"
             r"(?:\s*[AaPp][Mm])?)")
_TIME_EN = (r"(?P<time>\d{4}-\d{1,2}-\d{1,2}[T\s]+\d{1,2}:\d{2}(?::\d{2})?(?:\s*[AaPp][Mm])?"
            r"|\d{1,2}/\d{1,2}/\d{4}\s+\d{1,2}:\d{2}(?::\d{2})?(?:\s*[AaPp][Mm])?"
            r"|(?:[A-Za-z]+day,?\s+)?\d{1,2}(?:st|nd|rd|th)?\s+(?:of\s+)?[A-Za-z]{3,9},?\s+\d{4},?\s+"
            r"\d{1,2}:\d{2}(?::\d{2})?(?:\s*[AaPp][Mm])?"
            r"|(?:[A-Za-z]+day,?\s+)?[A-Za-z]{3,9}\s+\d{1,2}(?:st|nd|rd|th)?,?\s+\d{4},?\s+"
            r"\d{1,2}:\d{2}(?::\d{2})?(?:\s*[AaPp][Mm])?)")

def _amount_line(labels: str, group: str, middle: str = r".*?") -> str:
    return r"^\s*(?:" + labels + r")" + middle + r"(?<![\d.,])(?P<" + group + r">" + AMOUNT + r")\s*(?:元|RMB|CNY)?\s*$"


BUILTIN_TEMPLATES: dict[str, ReceiptTemplate] = {
    "zh": ReceiptTemplate(
        name="zh",
        receipt_no=_ZH_NO + _NUMBER,
        time=_TIME_ISO,
        paid=_amount_line(r"实\s*收(?:\s*金\s*额)?|实\s*付(?:\s*金\s*额)?|实\s*付\s*款|实\s*际\s*支\s*付|"
                          r"已\s*付(?:\s*金\s*额)?|支\s*付\s*金\s*额|付\s*款\s*金\s*额", "paid"),
        total=_amount_line(r"合\s*计(?:\s*金\s*额)?|应\s*收(?:\s*金\s*额)?|应\s*付(?:\s*金\s*额)?|"
                           r"总\s*计|总\s*金\s*额|消\s*费\s*金\s*额|退\s*款\s*金\s*额|退\s*货\s*金\s*额",
                           "total"),
        change=_amount_line(r"找\s*零|找\s*赎", "change"),
        refund=r"^[\s*=\-]*(?:退\s*货|退\s*款|退\s*单)(?:单|小票|凭证)?[\s*=\-]*$|(?:退\s*货|退\s*款)\s*(?:金\s*额|合\s*计|总\s*额)",
        reprint=r"重\s*打|补\s*打|重\s*印|补\s*印|重\s*复\s*打\s*印",
        original=r"(?:原\s*(?:单\s*号|小\s*票\s*号|交\s*易\s*号|流\s*水\s*号|销\s*售\s*单\s*号?))\s*[:#]?\s*"
                 r"(?P<original>[A-Za-z0-9][A-Za-z0-9\-_/]{2,39})",
        currency="CNY",
    ),
    "en": ReceiptTemplate(
        name="en",
        receipt_no=_EN_NO + _NUMBER,
        time=_TIME_EN,
        paid=_amount_line(r"(?i:(?:total\s+)?(?:amount\s+)?paid\b|amount\s+charged\b)", "paid"),
        total=_amount_line(r"(?i:(?:grand\s+|order\s+|refund\s+)?total\b(?!\s*(?:items?|qty|quantity|savings?|"
                           r"discounts?|tax|units?)\b)|amount\s+due\b|balance\s+due\b)", "total"),
        change=_amount_line(r"(?i:change(?:\s+due)?\b)", "change"),
        refund=r"(?i:^[\s*=\-]*(?:refund|return)(?:\s+(?:receipt|slip|sale|transaction))?[\s*=\-]*$|\brefund\s+(?:total|amount|due)\b)",
        reprint=r"(?i:\breprint(?:ed)?\b|\bduplicate\b)|\bCOPY\b",
        original=r"(?i:orig(?:inal)?\.?\s*(?:receipt|invoice|trans(?:action)?|order|sale)?\s*(?:no\.?|number|#)?)"
                 r"\s*[:#]?\s*(?P<original>[A-Za-z0-9][A-Za-z0-9\-_/]{2,39})",
    ),
}

_EN_DATE_FORMATS = (
    "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%m/%d/%Y %H:%M:%S", "%m/%d/%Y %H:%M",
    "%m/%d/%Y %I:%M:%S %p", "%m/%d/%Y %I:%M %p", "%d %B %Y %I:%M:%S %p", "%d %B %Y %I:%M %p",
    "%d %B %Y %H:%M:%S", "%d %B %Y %H:%M", "%d %b %Y %I:%M:%S %p", "%d %b %Y %I:%M %p", "%d %b %Y %H:%M:%S",
    "%d %b %Y %H:%M", "%B %d %Y %I:%M:%S %p", "%B %d %Y %I:%M %p", "%B %d %Y %H:%M:%S", "%B %d %Y %H:%M",
    "%b %d %Y %I:%M:%S %p", "%b %d %Y %I:%M %p", "%b %d %Y %H:%M:%S", "%b %d %Y %H:%M",
    "%Y-%m-%d %I:%M:%S %p", "%Y-%m-%d %I:%M %p",
)
_WEEKDAY = re.compile(r"^[A-Za-z]+day,?\s+")
_ORDINAL = re.compile(r"(\d)(?:st|nd|rd|th)\b")


def _normalise_time(text: str) -> str:
    text = re.sub(r"\s*[年月/.]\s*(?=\d)", "-", text.strip()) if re.match(r"^\d{4}\s*[年/.-]", text.strip()) else text
    text = _WEEKDAY.sub("", text.replace("日", " "))
    text = re.sub(r"(?<=\d)T(?=\d)", " ", text)
    text = _ORDINAL.sub(r"\1", text)
    text = re.sub(r"\bof\s+", "", text).replace(",", " ")
    text = re.sub(r"\s*([AaPp][Mm])$", r" \1", text)
    return re.sub(r"\s+", " ", text).strip()


def _parse_time(raw: str, formats: list[str], tz: ZoneInfo) -> str | None:
    candidates = [(raw.strip(), formats)] if formats else []
    candidates.append((_normalise_time(raw), list(_EN_DATE_FORMATS)))
    for text, fmts in candidates:
        for fmt in fmts:
            try:
                dt = datetime.strptime(text, fmt)
            except ValueError:
                continue
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=tz)
            return dt.isoformat()
    return None


def _first(pattern: re.Pattern | None, lines: list[str], group: str) -> str | None:
    if pattern is None:
        return None
    for line in lines:
        match = pattern.search(line)
        if match and match.group(group):
            return match.group(group)
    return None


def _last_amount(pattern: re.Pattern | None, lines: list[str], group: str) -> Decimal | None:
    """The last line's amount: a receipt's final figure follows its subtotals."""
    if pattern is None:
        return None
    found = None
    for line in lines:
        match = pattern.search(line)
        if match:
            value = parse_amount(match.group(group) or "")
            if value is not None:
                found = value
    return found


def _apply(template: ReceiptTemplate, raw_text: str, lines: list[str], tz: ZoneInfo) -> ParsedReceipt | None:
    c = template.compiled()
    total = _last_amount(c.total, lines, "total")
    paid = _last_amount(c.paid, lines, "paid")
    if total is None and paid is None:
        return None
    change = _last_amount(c.change, lines, "change")
    time_text = _first(c.time, lines, "time")
    when = _parse_time(time_text, template.time_format, tz) if time_text else None
    original = _first(c.original, lines, "original") if c.original else None
    # "原单号: X" also reads as a receipt number ("单号"): the refunded sale's line is not this receipt's.
    own_lines = [line for line in lines if not (c.original and c.original.search(line))]
    number = _first(c.receipt_no, own_lines, "receipt_no")
    if number is None:
        if not (template.number_from_time and when):
            return None
        number = "T" + re.sub(r"\D", "", when[:19])
    refund = any(c.refund.search(line) for line in lines) if c.refund else False
    reprint = any(c.reprint.search(line) for line in lines) if c.reprint else False
    if (total is not None and total < 0) or (paid is not None and paid < 0):
        refund = True
    total = abs(total) if total is not None else None
    paid = abs(paid) if paid is not None else None
    if paid is not None and change and total is not None and paid - abs(change) == total:
        paid = total  # the paid figure was the cash handed over
    amount = paid if paid is not None else total
    items: tuple = ()
    if c.lines is not None:
        found = []
        for line in lines:
            match = c.lines.search(line)
            if match:
                groups = match.groupdict()
                value = parse_amount(groups.get("amount") or "")
                if value is not None:
                    found.append({"name": (groups.get("name") or "").strip(),
                                  "qty": (groups.get("qty") or "").strip() or None, "amount": value})
        items = tuple(found)
    return ParsedReceipt(receipt_no=number, time=when, total=total, paid=paid, amount=amount,
                         refund=refund, reprint=reprint, currency=template.currency, text=raw_text,
                         template=template.name, items=items,
                         original_receipt_no=original if refund else None)


def extract(raw_text: str, template: ReceiptTemplate | None = None,
            tz: str = "Asia/Shanghai") -> ParsedReceipt | None:
    """The receipt's fields with this template (or the built-in ones in order); None if unreadable."""
    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {tz!r}") from None
    text = unicodedata.normalize("NFKC", raw_text[:MAX_TEXT])
    lines = [line[:MAX_LINE] for line in text.splitlines()]
    templates = [template] if template is not None else list(BUILTIN_TEMPLATES.values())
    for candidate in templates:
        parsed = _apply(candidate, raw_text, lines, zone)
        if parsed is not None:
            return parsed
    return None


def template_from_config(value: dict | ReceiptTemplate) -> ReceiptTemplate:
    """A template from a config dict (ValueError with the reasons if it is not a good one)."""
    if isinstance(value, ReceiptTemplate):
        return value
    from pydantic import ValidationError

    try:
        return ReceiptTemplate.model_validate(value)
    except ValidationError as exc:
        reasons = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'template'}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"receipt template {value.get('name', '?') if isinstance(value, dict) else '?'}: "
                         f"{reasons}") from None
