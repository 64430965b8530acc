"""The patient's language (issue 18 item 4; docs/languages.md).

Every patient-facing word — the messages, the patient page, the calendar invitations — comes
from a gettext catalog, one per language, under ``activities/locales/<locale>/LC_MESSAGES/
messages.po``. The catalogs are read with babel's ``read_po`` when first needed (nothing is
compiled, nothing generated is committed). Message ids are stable keys (``msg.session_reminder.
body``), not English sentences: the English catalog holds the English wording, so the clinical
wording of each language lives in exactly one file, reviewed like the protocol.

Lookup: the patient's language, then its base language (``en-US`` → ``en``), then English. A
key no catalog knows comes back as the key itself (a test makes sure that never happens).
Placeholders are ``{name}`` (``str.format`` names); every clinical number (SPF factor, months,
days, minutes) is a placeholder filled from the protocol's values, never written in a catalog.

Dates and times are formatted with babel for the language's locale (month and day names,
order, 24-hour or 12-hour clock) in the clinic's zone; the week starts on the locale's first
day (``Locale.first_week_day``: Monday in Germany, France, Spain and Britain, Sunday in the US).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, datetime
from functools import cache
from pathlib import Path
from typing import Any, Final, Literal, get_args
from zoneinfo import ZoneInfo

from babel import Locale
from babel.dates import format_date, format_time
from babel.messages.pofile import read_po
from babel.units import format_unit
from markupsafe import Markup, escape

__all__ = [
    "DEFAULT_LANGUAGE",
    "LANGUAGES",
    "LANGUAGE_NAMES",
    "Language",
    "Translator",
    "catalog",
    "missing_keys",
    "normalise",
    "translator",
]

Language = Literal["en", "en-US", "de", "fr", "es"]
"""A patient's language: a BCP 47 tag the product has a catalog for (the ``patients.language``
column's check constraint is the same list)."""
LANGUAGES: Final[tuple[Language, ...]] = get_args(Language)
DEFAULT_LANGUAGE: Final[Language] = "en"
# Each language's babel locale: the English of the catalog is British (dates "Tuesday 3 March",
# 24-hour clock, Monday first); en-US shares its words and formats dates the American way.
LOCALES: Final[dict[Language, str]] = {
    "en": "en_GB",
    "en-US": "en_US",
    "de": "de_DE",
    "fr": "fr_FR",
    "es": "es_ES",
}
LANGUAGE_NAMES: Final[dict[Language, str]] = {
    "en": "English",
    "en-US": "English (US)",
    "de": "Deutsch",
    "fr": "Français",
    "es": "Español",
}
# Where a language's own catalog is missing a key: its base language, then English.
_FALLBACKS: Final[dict[Language, tuple[Language, ...]]] = {
    "en": ("en",),
    "en-US": ("en-US", "en"),
    "de": ("de", "en"),
    "fr": ("fr", "en"),
    "es": ("es", "en"),
}
LOCALE_DIR: Final = Path(__file__).parent / "locales"
DOMAIN: Final = "messages"


def normalise(language: str | None) -> Language:
    """A stored or requested language as one of :data:`LANGUAGES` (``de-DE``/``de_DE`` → ``de``,
    ``en_US`` → ``en-US``); anything unknown, or nothing, is English."""
    if not language:
        return DEFAULT_LANGUAGE
    tag = language.strip().replace("_", "-")
    for known in LANGUAGES:
        if tag.lower() == known.lower():
            return known
    base = tag.split("-", 1)[0].lower()
    return base if base in LANGUAGES else DEFAULT_LANGUAGE


def catalog_path(language: Language) -> Path:
    """The ``.po`` file of a language (``activities/locales/de/LC_MESSAGES/messages.po``)."""
    folder = LOCALES[language] if "-" in language else language
    return LOCALE_DIR / folder / "LC_MESSAGES" / f"{DOMAIN}.po"


@cache
def catalog(language: Language) -> Mapping[str, str]:
    """A language's own translations, key → text (empty and fuzzy entries left out: they fall
    back); an absent file is an empty catalog."""
    path = catalog_path(language)
    if not path.exists():
        return {}
    with path.open("rb") as f:
        parsed = read_po(f, locale=LOCALES[language].split("_")[0], domain=DOMAIN)
    out: dict[str, str] = {}
    for m in parsed:
        if not m.id or m.fuzzy or not isinstance(m.id, str) or not isinstance(m.string, str):
            continue
        if m.string:
            out[m.id] = m.string
    return out


def missing_keys(language: Language) -> list[str]:
    """The keys the English catalog has and ``language``'s own catalog does not (sorted)."""
    own = catalog(language)
    return sorted(k for k in catalog(DEFAULT_LANGUAGE) if k not in own)


class _Params(dict[str, object]):
    """Format parameters; one a text does not get is left empty rather than failing a send."""

    def __missing__(self, key: str) -> str:
        return ""


class Translator:
    """Words, dates and times in one language (see the module's docstring)."""

    def __init__(self, language: Language) -> None:
        self.language: Language = language
        self.locale = Locale.parse(LOCALES[language])
        self._chain = [catalog(lang) for lang in _FALLBACKS[language]]

    # ------------------------------------------------------------------ words

    def text(self, key: str) -> str:
        """The raw catalog text of ``key`` (with the fallbacks), unformatted."""
        for found in self._chain:
            text = found.get(key)
            if text:
                return text
        return key

    def __call__(self, key: str, /, **params: object) -> str:
        """The text of ``key`` with ``{name}`` placeholders filled from ``params``."""
        return self.text(key).format_map(_Params(params))

    def has(self, key: str) -> bool:
        """True when some catalog of the chain has ``key``."""
        return any(key in found for found in self._chain)

    def markup(self, key: str, /, **params: object) -> Markup:
        """Like calling the translator, for HTML: the text and the parameters are escaped,
        except parameters that are already markup (:meth:`strong`)."""
        escaped = {k: v if isinstance(v, Markup) else escape(v) for k, v in params.items()}
        return Markup(escape(self.text(key)).format_map(_Params(escaped)))

    def reason(self, rule: str, message: str) -> str:
        """Why a request was refused, for the patient: English keeps the rule's own sentence
        (``workflows.reasons.Reason.message``, with its dates); another language says it in
        general words (``rule.<rule>.explain`` of its own catalog) when it has them, else the
        English sentence."""
        key = f"rule.{rule}.explain"
        if self.language.startswith("en") or key not in catalog(self.language):
            return message
        return self(key)

    def reasons_text(self, reasons: Iterable[Any]) -> str:
        """Several refusals (objects with ``rule`` and ``message``) as one text."""
        return " ".join(self.reason(r.rule, r.message) for r in reasons)

    @staticmethod
    def strong(value: object) -> Markup:
        """``<strong>value</strong>`` (escaped), to emphasise a parameter in :meth:`markup`."""
        return Markup("<strong>{}</strong>").format(value)

    # ------------------------------------------------------------------ dates and times

    @property
    def first_week_day(self) -> int:
        """The locale's first day of the week, Monday=0 … Sunday=6."""
        return int(self.locale.first_week_day)

    def weekday_names(self, width: Literal["abbreviated", "wide"] = "abbreviated") -> list[str]:
        """The seven weekday names from the locale's first day of the week."""
        names = self.locale.days["stand-alone"][width]
        return [str(names[(self.first_week_day + i) % 7]) for i in range(7)]

    def month_abbr(self, month: int) -> str:
        """The month's short name (``Mär``, ``mars``, ``Mar``)."""
        return str(self.locale.months["stand-alone"]["abbreviated"][month])

    def long_date(self, d: date) -> str:
        """A date in the locale's long form: ``15 March 2027``, ``15. März 2027``,
        ``15 mars 2027``, ``15 de marzo de 2027``, ``March 15, 2027``."""
        return format_date(d, format="long", locale=self.locale)

    def weekday_date(self, d: date) -> str:
        """A date with its weekday (the catalog's ``format.weekday_date`` pattern, the locale's
        names): ``Tuesday 3 March 2026``, ``Dienstag, 3. März 2026``."""
        return format_date(d, format=self.text("format.weekday_date"), locale=self.locale)

    def weekday_day(self, d: date) -> str:
        """A date with its weekday and no year: ``Tuesday 3 March``, ``Dienstag, 3. März``."""
        return format_date(d, format=self.text("format.weekday_day"), locale=self.locale)

    def time(self, at: datetime, zone: ZoneInfo | str) -> str:
        """The time of day in the clinic's zone, as the locale writes it (``09:00``,
        ``9:00 AM``)."""
        local = at.astimezone(ZoneInfo(zone) if isinstance(zone, str) else zone)
        return format_time(local.time(), format="short", locale=self.locale)

    def when(self, at: datetime, zone: ZoneInfo | str) -> str:
        """An appointment in the clinic's zone: ``Tuesday 3 March at 09:00``,
        ``Dienstag, 3. März um 09:00 Uhr``."""
        local = at.astimezone(ZoneInfo(zone) if isinstance(zone, str) else zone)
        return self("format.when", day=self.weekday_day(local.date()), time=self.time(at, zone))

    def when_with_year(self, at: datetime, zone: ZoneInfo | str) -> str:
        """Like :meth:`when`, with the year: ``Tuesday 3 March 2026 at 09:00``."""
        local = at.astimezone(ZoneInfo(zone) if isinstance(zone, str) else zone)
        return self("format.when", day=self.weekday_date(local.date()), time=self.time(at, zone))

    def months(self, n: int | str) -> str:
        """``2 months``, ``2 Monate``, ``2 mois``, ``2 meses`` (the locale's plural)."""
        return format_unit(int(n), "duration-month", length="long", locale=self.locale)

    def days(self, n: int | str) -> str:
        """``5 days``, ``5 Tage``, ``5 jours``, ``5 días``; ``1 day`` (the locale's plural)."""
        return format_unit(int(n), "duration-day", length="long", locale=self.locale)

    def minutes(self, n: int | str) -> str:
        """``60 minutes``, ``60 Minuten``…"""
        return format_unit(int(n), "duration-minute", length="long", locale=self.locale)


@cache
def translator(language: str | None) -> Translator:
    """The :class:`Translator` of a language (normalised; unknown → English)."""
    return Translator(normalise(language))
