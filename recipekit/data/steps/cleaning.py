"""Steps that rewrite each text in place (HTML, Unicode, case, whitespace, URLs, personal data); the rows stay."""

from __future__ import annotations

import html
import re
import unicodedata
from dataclasses import dataclass, field

from datasets import Dataset

from .base import STREAM_BATCH, Context, Step, register


class Clean(Step):
    """A step that rewrites each text; subclasses define `clean(text) -> text`."""

    effect = "changed"

    def clean(self, text: str) -> str:
        raise NotImplementedError

    def rewrite(self, batch, columns):
        changed = [False] * len(batch[columns[0]])
        for col in columns:
            new = []
            for i, text in enumerate(batch[col]):
                out = self.clean(text) if isinstance(text, str) else text
                changed[i] |= out != text
                new.append(out)
            batch[col] = new
        batch["__changed"] = changed
        return batch

    def __call__(self, ds: Dataset, ctx: Context):
        ds = ds.map(self.rewrite, batched=True, fn_kwargs={"columns": ctx.columns}, num_proc=ctx.num_proc, desc=self.name)
        count = sum(ds.with_format("arrow")["__changed"].to_pylist())
        return ds.remove_columns("__changed"), count

    def stream(self, ds, ctx: Context):
        return ds.map(self.rewrite, batched=True, batch_size=STREAM_BATCH, fn_kwargs={"columns": ctx.columns}, remove_columns=["__changed"], features=ds.features)


@register("regex_replace")
@dataclass
class RegexReplace(Clean):
    """Replace every match of a regular expression in the text columns (the article strips `[^a-zA-Z\\s]`)."""

    reason = "regular expression replaced"
    pattern: str = field(default="", metadata={"help": "Python regular expression to find"})
    replacement: str = field(default="", metadata={"help": "text put in place of each match (\\1 refers to groups)"})

    def problems(self):
        if not self.pattern:
            return super().problems() + ["pattern: required, a non-empty regular expression"]
        try:
            re.compile(self.pattern)
        except re.error as e:
            return super().problems() + [f"pattern: {self.pattern!r} is not a valid regular expression ({e})"]
        return super().problems()

    def clean(self, text):
        return re.sub(self.pattern, self.replacement, text)  # `re` caches compiled patterns


_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
_TAG = re.compile(r"<!--.*?-->|</?[a-zA-Z][^<>]*>", re.DOTALL)


@register("strip_html")
@dataclass
class StripHtml(Clean):
    """Remove HTML tags and comments; a line break (`<br />`, as in IMDb) becomes a space so words stay apart."""

    reason = "HTML tags removed"

    def clean(self, text):
        return _TAG.sub("", _BREAK.sub(" ", text))


@register("unescape_html")
@dataclass
class UnescapeHtml(Clean):
    """Turn HTML entities (`&amp;`, `&#39;`, `&quot;`) back into the characters they stand for."""

    reason = "HTML entities unescaped"

    def clean(self, text):
        return html.unescape(text)


@register("normalize_unicode")
@dataclass
class NormalizeUnicode(Clean):
    """Unicode normalisation: NFKC also folds look-alikes (full-width letters, ligatures) into plain ones."""

    reason = "Unicode normalised"
    form: str = field(default="NFKC", metadata={"help": "normal form", "choices": ["NFC", "NFKC", "NFD", "NFKD"]})

    def clean(self, text):
        return unicodedata.normalize(self.form, text)


@register("lowercase")
@dataclass
class Lowercase(Clean):
    """Lower-case the text (uncased tokenizers, such as MiniLM's, already do this themselves)."""

    reason = "lower-cased"

    def clean(self, text):
        return text.lower()


_SPACE = re.compile(r"\s+")


@register("collapse_whitespace")
@dataclass
class CollapseWhitespace(Clean):
    """Turn every run of whitespace (tabs, newlines, repeated spaces) into one space and strip both ends."""

    reason = "whitespace collapsed"

    def clean(self, text):
        return _SPACE.sub(" ", text).strip()


# A URL does not end in the punctuation that follows it in a sentence.
_URL = re.compile(r"\b(?:https?://|www\.)[^\s<>\"']*[^\s<>\"'.,;:!?)]", re.IGNORECASE)
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[a-zA-Z]{2,}\b")
# Seven or more digits in groups, optional country code and brackets: phone numbers, not years or prices.
_PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{1,4}\)[\s.-]?)?\d{2,4}(?:[\s.-]?\d{2,4}){1,3}(?!\w)")


@register("remove_urls")
@dataclass
class RemoveUrls(Clean):
    """Replace web addresses (http://, https://, www.) with `replacement`."""

    reason = "URLs removed"
    replacement: str = field(default="", metadata={"help": "text put in place of each URL"})

    def clean(self, text):
        return _URL.sub(self.replacement, text)


PII_KINDS = ["email", "url", "phone"]


@register("mask_pii")
@dataclass
class MaskPii(Clean):
    """Replace e-mail addresses, URLs and phone numbers with placeholder tokens, so a model cannot learn them."""

    reason = "personal data masked"
    kinds: list[str] = field(
        default_factory=lambda: list(PII_KINDS), metadata={"help": "what to mask", "choices": PII_KINDS}
    )
    email_token: str = field(default="[EMAIL]", metadata={"help": "placeholder for an e-mail address"})
    url_token: str = field(default="[URL]", metadata={"help": "placeholder for a URL"})
    phone_token: str = field(default="[PHONE]", metadata={"help": "placeholder for a phone number"})

    def clean(self, text):
        # E-mail first: its domain would otherwise be read as a URL.
        if "email" in self.kinds:
            text = _EMAIL.sub(self.email_token, text)
        if "url" in self.kinds:
            text = _URL.sub(self.url_token, text)
        if "phone" in self.kinds:
            text = _PHONE.sub(lambda m: self.phone_token if sum(c.isdigit() for c in m.group()) >= 7 else m.group(), text)
        return text
