"""The patient's language (issue 18 item 4; docs/languages.md): complete catalogs, every message
kind in every language, dates and week start for the locale, the English fallback, the calendar
text, the patient's page and plan in German, and the language at enrolment and by staff."""

from __future__ import annotations

import json
import re
import string
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import get_args

import asyncpg
import httpx
import pytest
from babel.messages.pofile import read_po

from activities import i18n, repository
from activities.channels import FileChannel, as_html
from activities.dispatcher import OutboxDispatcher
from activities.i18n import LANGUAGES, Translator, catalog, missing_keys, translator
from activities.ics import CalendarSession, build_calendar
from activities.messages_text import render
from api.routes.me import plain_plan
from api.web.views import DayOption, calendar_weeks
from tests.test_api import Stack, enrol, enrol_body, eventually, stack  # noqa: F401
from tests.test_dispatcher import enqueue, lines
from workflows.messages import JourneyStatus, SessionStatus
from workflows.records import NotificationKind, NotificationRecord

FULL = ("de", "fr", "es")  # translated in full; en-US keeps only its date formats
ROOT = Path(__file__).resolve().parent.parent
STARTS_AT = "2026-03-03T08:00:00+00:00"  # Tuesday 3 March 2026, 09:00 in Berlin
PATIENT_KINDS = [k for k in get_args(NotificationKind) if k not in ("staff_alert", "rescreen_due")]
# Every parameter a journey passes to a patient message (workflows/journey/*).
PARAMS = {
    "session": "2",
    "starts_at": STARTS_AT,
    "timezone": "Europe/Berlin",
    "arrive_by": "2026-03-03T07:40:00+00:00",
    "arrive_early_minutes": "20",
    "recovery_days_min": "5",
    "recovery_days_max": "7",
    "spf_factor": "50",
    "spf_until": "2026-05-01",
    "review_on": "2026-06-01",
    "review_months": "3",
    "starts_on": "2026-03-03",
    "channel": "sms",
    "offer_1": "2026-03-10T08:00:00+00:00",
    "offer_2": "2026-03-11T13:30:00+00:00",
    "link": "https://clinic.example/p/abc",
}


def _placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def _english_fragments() -> list[str]:
    """The literal parts (between placeholders) of every English text, long enough to be
    telling: none of them may appear in a message written in another language."""
    out: list[str] = []
    for key, text in catalog("en").items():
        if key.startswith("format."):
            continue
        for literal, *_ in string.Formatter().parse(text):
            out.extend(
                part.strip() for part in re.split(r"[.:,;]", literal) if len(part.strip()) >= 12
            )
    return out


# ---------------------------------------------------------------- the catalogs


@pytest.mark.parametrize("language", FULL)
def test_catalog_misses_no_english_key(language: str) -> None:
    missing = missing_keys(language)  # type: ignore[arg-type]
    assert missing == [], f"{language} misses {len(missing)} keys: {missing}"


@pytest.mark.parametrize("language", [*FULL, "en-US"])
def test_translations_keep_the_placeholders(language: str) -> None:
    english = catalog("en")
    for key, text in catalog(language).items():  # type: ignore[arg-type]
        assert key in english, f"{language} has {key!r}, which English does not"
        assert _placeholders(text) == _placeholders(english[key]), (language, key)


@pytest.mark.parametrize("language", ["en", *FULL, "en-US"])
def test_catalogs_write_no_clinical_number(language: str) -> None:
    """SPF factor, months, days, minutes come from the protocol as placeholders."""
    path = i18n.catalog_path(language)  # type: ignore[arg-type]
    with path.open("rb") as f:
        parsed = read_po(f)
    numbers = [(m.id, m.string) for m in parsed if m.id and re.search(r"\d", str(m.string))]
    assert numbers == []


def test_every_key_the_code_names_is_in_the_english_catalog() -> None:
    english = catalog("en")
    sources = [
        ROOT / "activities/messages_text.py",
        ROOT / "activities/ics.py",
        ROOT / "api/routes/me.py",
        ROOT / "api/web/routes.py",
        ROOT / "api/web/templates/patient.html",
        ROOT / "api/web/templates/_clinical_patient.html",
        ROOT / "api/web/clinical_pages.py",
        ROOT / "api/web/templates/base.html",
    ]
    named = {
        key
        for src in sources
        for key in re.findall(
            r"""\bt(?:\.markup)?\(\s*["']([a-z_]+\.[a-z_.]+)["']""", src.read_text()
        )
    }
    assert len(named) > 60
    assert sorted(named - set(english)) == []
    # Keys built from a kind or a stage.
    for kind in PATIENT_KINDS:
        assert f"msg.{kind}.subject" in english, kind


def test_every_language_has_a_locale_and_a_catalog() -> None:
    for language in LANGUAGES:
        assert i18n.catalog_path(language).exists(), language
        assert Translator(language).locale is not None


# ---------------------------------------------------------------- messages


@pytest.mark.parametrize("kind", PATIENT_KINDS)
@pytest.mark.parametrize("language", LANGUAGES)
def test_every_message_kind_renders_in_every_language(language: str, kind: str) -> None:
    text = render(
        kind,
        PARAMS,
        patient_name="Ada Lovelace",
        patient_id="p_x",
        clinic_name="Clinic",
        language=language,
    )
    words = text.subject + "\n" + text.body
    assert text.language == language
    assert not re.search(r"\b(msg|format|ics|page|plan)\.[a-z_]+", words), words
    assert "{" not in words and "}" not in words
    assert "Ada Lovelace" in text.body
    if language in FULL:
        english = render(
            kind, PARAMS, patient_name="Ada Lovelace", patient_id="p_x", clinic_name="Clinic"
        )
        assert text.subject != english.subject
        left = [f for f in _english_fragments() if f in words]
        assert left == [], f"untranslated English in {language} {kind}: {left}"


def test_the_session_reminder_in_english_and_german() -> None:
    common = {"patient_name": "Ada Lovelace", "patient_id": "p_x", "clinic_name": "Pore Clinic"}
    params = {**PARAMS, "session": "1"}
    en = render("session_reminder", params, **common)
    de = render("session_reminder", params, **common, language="de")
    assert en.subject == "Reminder of your session"
    assert en.body == (
        "Dear Ada Lovelace,\n\nYour session is on Tuesday 3 March at 09:00. Please arrive 20 "
        "minutes early for the numbing cream.\n\nReply YES to confirm, R to ask for another "
        "time, or STOP to receive no more messages here.\n\nPore Clinic\n"
    )
    assert de.subject == "Erinnerung an Ihre Sitzung"
    assert de.body == (
        "Guten Tag Ada Lovelace,\n\nIhre Sitzung ist am Dienstag, 3. März um 09:00 Uhr. "
        "Bitte kommen Sie 20 Minuten früher, damit die Betäubungscreme einwirken kann.\n\n"
        "Antworten Sie JA zur Bestätigung, R für einen anderen Termin oder STOP, wenn Sie hier "
        "keine Nachrichten mehr erhalten möchten.\n\nPore Clinic\n"
    )


def test_clinical_values_come_from_the_parameters() -> None:
    params = {**PARAMS, "spf_factor": "30", "recovery_days_min": "2", "recovery_days_max": "4"}
    de = render("aftercare", params, patient_name=None, patient_id="p_x", language="de")
    assert "LSF 30" in de.body and "sind 2 bis 4 Tage lang normal" in de.body
    fr = render("aftercare", params, patient_name=None, patient_id="p_x", language="fr")
    assert "SPF 30" in fr.body and "pendant 2 à 4\u00a0jours" in fr.body  # babel: a no-break space
    es = render("spf_reminder", params, patient_name=None, patient_id="p_x", language="es")
    assert "FPS 30" in es.body and "viernes, 1 de mayo de 2026" in es.body


def test_times_are_in_the_clinic_zone_as_the_locale_writes_them() -> None:
    def body(language: str) -> str:
        return render(
            "booking_confirmation",
            {"session": "1", "starts_at": "2026-03-03T13:30:00+00:00"},
            patient_name=None,
            patient_id="p_x",
            clinic_timezone="America/New_York",
            language=language,
        ).body

    assert "Tuesday 3 March at 08:30" in body("en")
    assert "Tuesday, March 3 at 8:30\u202fAM" in body("en-US")  # CLDR: a narrow no-break space
    assert "Dienstag, 3. März um 08:30 Uhr" in body("de")
    assert "mardi 3 mars à 08:30" in body("fr")
    assert "martes, 3 de marzo a las 8:30" in body("es")


def test_staff_alerts_stay_in_english() -> None:
    text = render(
        "staff_alert",
        {"alert": "no_show", "session": "1"},
        patient_name="Ada",
        patient_id="p_x",
        audience="staff",
        language="de",
    )
    assert text.subject.startswith("[journey] No-show") and text.language == "en"


def test_the_html_part_names_the_language() -> None:
    assert '<html lang="de">' in as_html("Betreff", "Guten Tag,\n\nText", "de")


# ---------------------------------------------------------------- dates and week start


@pytest.mark.parametrize(
    ("language", "expected"),
    [
        ("en", "15 March 2027"),
        ("en-US", "March 15, 2027"),
        ("de", "15. März 2027"),
        ("fr", "15 mars 2027"),
        ("es", "15 de marzo de 2027"),
    ],
)
def test_dates_for_the_locale(language: str, expected: str) -> None:
    assert translator(language).long_date(date(2027, 3, 15)) == expected


def test_weekday_dates_for_the_locale() -> None:
    d = date(2027, 3, 15)
    assert translator("en").weekday_date(d) == "Monday 15 March 2027"
    assert translator("de").weekday_date(d) == "Montag, 15. März 2027"
    assert translator("fr").weekday_date(d) == "lundi 15 mars 2027"
    assert translator("es").weekday_date(d) == "lunes, 15 de marzo de 2027"
    assert translator("en-US").weekday_date(d) == "Monday, March 15, 2027"


@pytest.mark.parametrize(
    ("language", "first", "head"),
    [("de", 0, "Mo"), ("fr", 0, "lun."), ("es", 0, "lun"), ("en", 0, "Mon"), ("en-US", 6, "Sun")],
)
def test_week_start_for_the_locale(language: str, first: int, head: str) -> None:
    t = translator(language)
    assert t.first_week_day == first
    assert t.weekday_names()[0] == head
    # The reschedule calendar: a Monday 1 March 2027 is the first cell of a Monday week and
    # the second of a Sunday week.
    days = [DayOption(on=date(2027, 3, 1) + timedelta(days=i), allowed=True) for i in range(14)]
    weeks = calendar_weeks(days, first_weekday=t.first_week_day)
    first_week = weeks[0]
    assert first_week.index(days[0]) == (0 if first == 0 else 1)
    assert all(len(w) == 7 for w in weeks)


def test_plurals_of_durations() -> None:
    assert translator("de").months(1) == "1 Monat"
    assert translator("de").months(2) == "2 Monate"
    assert translator("fr").days(1) == "1\u00a0jour"
    assert translator("es").minutes(20) == "20 minutos"


# ---------------------------------------------------------------- fallback


@pytest.fixture
def tiny_catalogs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """An English catalog with two keys and a German one with one of them."""
    for folder, entries in (
        ("en", {"greeting": "Hello {name}", "only.english": "Only in English, {name}"}),
        ("de", {"greeting": "Hallo {name}"}),
    ):
        po = tmp_path / folder / "LC_MESSAGES" / "messages.po"
        po.parent.mkdir(parents=True)
        po.write_text(
            'msgid ""\nmsgstr "Content-Type: text/plain; charset=UTF-8\\n"\n\n'
            + "".join(
                f"msgid {json.dumps(k)}\nmsgstr {json.dumps(v)}\n\n" for k, v in entries.items()
            ),
            encoding="utf-8",
        )
    monkeypatch.setattr(i18n, "LOCALE_DIR", tmp_path)
    i18n.catalog.cache_clear()
    i18n.translator.cache_clear()
    yield
    i18n.catalog.cache_clear()
    i18n.translator.cache_clear()


@pytest.mark.usefixtures("tiny_catalogs")
def test_a_missing_translation_falls_back_to_english_and_is_listed() -> None:
    de = Translator("de")
    assert de("greeting", name="Ada") == "Hallo Ada"
    assert de("only.english", name="Ada") == "Only in English, Ada"
    assert missing_keys("de") == ["only.english"]
    assert missing_keys("fr") == ["greeting", "only.english"]  # no catalog: all of them
    assert Translator("fr")("greeting", name="Ada") == "Hello Ada"


def test_refusals_are_explained_in_the_language() -> None:
    sentence = "The clinic is closed on Saturdays and Sundays."
    assert translator("de").reason("closed_day", sentence) == (
        "An diesem Wochentag behandelt die Klinik nicht."
    )
    assert translator("en").reason("closed_day", sentence) == sentence  # with its dates
    assert translator("en-US").reason("closed_day", sentence) == sentence
    assert translator("fr").reason("some_new_rule", "In English.") == "In English."


def test_en_us_falls_back_to_english_words_with_its_own_dates() -> None:
    t = translator("en-US")
    assert t("msg.session_reminder.subject") == "Reminder of your session"
    assert t.text("format.weekday_day") == "EEEE, MMMM d"


def test_unknown_languages_read_english() -> None:
    assert i18n.normalise("de-AT") == "de"
    assert i18n.normalise("en_US") == "en-US"
    assert i18n.normalise("xx") == "en"
    assert i18n.normalise(None) == "en"


# ---------------------------------------------------------------- calendar and plan


def _session(language: str) -> CalendarSession:
    starts = datetime(2027, 3, 15, 9, 0, tzinfo=UTC)
    return CalendarSession(
        workflow_id="journey-p_x",
        patient_id="p_x",
        course_number=1,
        session_number=2,
        starts_at=starts,
        arrive_by=starts - timedelta(minutes=20),
        duration_minutes=30,
        status="booked",
        version=3,
        timezone="Europe/Berlin",
        clinic_name="Hautklinik",
        language=language,
    )


def test_the_calendar_invitation_in_german() -> None:
    ics = build_calendar([_session("de")], method="REQUEST").decode()
    unfolded = ics.replace("\r\n ", "")
    assert "SUMMARY:Lasersitzung 2 bei Hautklinik" in unfolded
    assert "Sitzung 2 Ihrer Behandlungsreihe." in unfolded
    assert "Bitte kommen Sie um 09:40 Uhr (20 Minuten früher)" in unfolded
    en = build_calendar([_session("en")], method="REQUEST").decode().replace("\r\n ", "")
    assert "SUMMARY:Laser session 2 at Hautklinik" in en
    assert "Please arrive at 09:40 (20 minutes early) for the numbing cream." in en
    # The staff feed stays in English.
    staff = build_calendar([_session("de")], method="PUBLISH", audience="staff").decode()
    assert "Laser session 2: p_x" in staff


def _status() -> JourneyStatus:
    at = datetime(2027, 3, 15, 8, 0, tzinfo=UTC)
    return JourneyStatus(
        patient_id="p_x",
        clinic_id="default",
        stage="spf_window",
        protocol_version="pore-2026.1",
        pore_grade="moderate",
        numbing_cream=True,
        timezone="Europe/Berlin",
        sessions=[
            SessionStatus(number=1, planned_on=date(2027, 3, 15), starts_at=at, state="done"),
            SessionStatus(
                number=2,
                planned_on=date(2027, 4, 5),
                starts_at=at + timedelta(days=21),
                arrive_by=at + timedelta(days=21, minutes=-20),
                state="booked",
            ),
        ],
        spf_until=date(2027, 6, 5),
        review_on=date(2027, 7, 5),
    )


def test_the_plain_plan_in_german() -> None:
    plan = plain_plan(_status(), "de", spf_factor=30)
    assert plan.headline == (
        "Ihre Sitzungen sind abgeschlossen: Schützen Sie Ihre Haut jeden Tag mit LSF 30."
    )
    assert plan.lines == [
        "Sitzung 1: Montag, 15. März 2027 um 09:00 Uhr, erledigt.",
        "Sitzung 2: Montag, 5. April 2027 um 10:00 Uhr, gebucht; bitte kommen Sie bis "
        "09:40 Uhr für die Betäubungscreme.",
        "Verwenden Sie jeden Tag LSF 30 bis 5. Juni 2027.",
        "Ihre Nachkontrolle ist für 5. Juli 2027 geplant.",
    ]
    english = plain_plan(_status(), None, spf_factor=50)
    assert english.lines[0] == "Session 1: Monday 15 March 2027 at 09:00, done."
    assert english.lines[2] == "Use SPF 50 every day until 5 June 2027."


# ---------------------------------------------------------------- sending


async def test_the_dispatcher_writes_in_the_patients_language(
    pg_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    wf = await enqueue(
        pg_pool,
        [NotificationRecord(key="c1:reminder", kind="session_reminder", params=PARAMS)],
    )
    patient_id = wf.removeprefix("journey-")
    await repository.set_patient_language(pg_pool, patient_id, "fr")
    channel = FileChannel(tmp_path / "outbox.log")
    noon = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # outside any quiet hours
    assert await OutboxDispatcher(pg_pool, channel, clock=lambda: noon).run_once() == 1
    [sent] = lines(channel.path)
    assert sent["subject"] == "Rappel de votre séance"
    assert sent["body"].startswith("Bonjour Ada Lovelace,\n\nVotre séance a lieu le mardi 3 mars")


# ---------------------------------------------------------------- the API and the page


async def test_enrolment_stores_the_language(stack: Stack) -> None:  # noqa: F811
    body = enrol_body()
    body["patient"]["language"] = "de"
    r = await stack.http.post("/api/journeys", json=body, headers=stack.auth())
    assert r.status_code == 201, r.text
    pid = r.json()["patient_id"]
    assert (
        await stack.pool.fetchval("SELECT language FROM patients WHERE patient_id = $1", pid)
        == "de"
    )
    detail = await stack.http.get(f"/api/journeys/{pid}", headers=stack.auth())
    assert detail.json()["patient"]["language"] == "de"

    # Without one: the clinic's default, English until the clinic sets another.
    plain = await enrol(stack)
    assert (await repository.get_patient(stack.pool, plain["patient_id"])).language == "en"  # type: ignore[union-attr]
    r = await stack.http.put(
        "/api/admin/clinics/default/default-language", json={"language": "fr"}, headers=stack.auth()
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"clinic_id": "default", "default_language": "fr"}
    french = await enrol(stack)
    assert (await repository.get_patient(stack.pool, french["patient_id"])).language == "fr"  # type: ignore[union-attr]

    # Staff change it.
    r = await stack.http.put(
        f"/api/journeys/{pid}/language", json={"language": "es"}, headers=stack.auth()
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"patient_id": pid, "language": "es"}


async def test_an_unknown_language_is_refused(stack: Stack) -> None:  # noqa: F811
    body = enrol_body()
    body["patient"]["language"] = "xx"
    r = await stack.http.post("/api/journeys", json=body, headers=stack.auth())
    assert r.status_code == 422, r.text
    assert "language" in r.text
    created = await enrol(stack)
    r = await stack.http.put(
        f"/api/journeys/{created['patient_id']}/language",
        json={"language": "klingon"},
        headers=stack.auth(),
    )
    assert r.status_code == 422, r.text
    r = await stack.http.put(
        "/api/admin/clinics/nowhere/default-language", json={"language": "de"}, headers=stack.auth()
    )
    assert r.status_code == 404, r.text


async def test_the_patient_page_in_german(stack: Stack) -> None:  # noqa: F811
    body = enrol_body()
    body["patient"]["language"] = "de"
    body["patient"]["full_name"] = "Bruno Keller"
    r = await stack.http.post("/api/journeys", json=body, headers=stack.auth())
    assert r.status_code == 201, r.text
    link = r.json()["patient_link"].removeprefix("http://testserver")
    # Until the journey's first step is in the read model, the page says so, in German too.
    early = await stack.http.get(link)
    assert early.status_code == 200 or "Wir können Ihren Plan gerade nicht finden" in early.text

    async def shown() -> httpx.Response | None:
        page = await stack.http.get(link)
        return page if page.status_code == 200 else None

    page = await eventually(shown)
    html = page.text
    assert '<html lang="de">' in html
    assert "Guten Tag Bruno, hier ist Ihr Plan" in html
    assert "<title>Ihr Behandlungsplan</title>" in html
    assert "Sonnenschutz" in html and "Verwenden Sie nach Ihrer letzten Sitzung 2 Monate" in html
    assert "Diese Seite ist nur für Sie" in html
    assert "Zum Inhalt springen" in html
    for english in (
        "Your plan",
        "Sun protection",
        "What to expect",
        "here is your plan",
        "The clinic is closed on",
        "not available",
    ):
        assert english not in html, english
    # The reschedule calendar: German weekdays from Monday, the refusals explained in German.
    assert '<div class="cal-head" aria-hidden="true"><span>Mo</span><span>Di</span>' in html
    assert "Warum manche Tage nicht möglich sind" in html
    assert "An diesem Wochentag behandelt die Klinik nicht." in html
    token = link.removeprefix("/p/")
    me = await stack.http.get("/api/me/journey", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200, me.text
    assert me.json()["headline"] in {
        translator("de")(f"page.headline.{stage}", factor=50)
        for stage in ("screening", "awaiting_season", "scheduled", "session_due")
    }
    # A form the patient sends without a choice is answered in German too.
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert csrf is not None
    r = await stack.http.post(
        f"{link}/reschedule", data={"csrf_token": csrf.group(1), "session_number": "1"}
    )
    assert r.status_code == 422, r.text
    assert "Bitte wählen Sie einen neuen Tag." in r.text


def test_the_fhir_patient_names_the_language() -> None:
    from api.fhir.resources import patient

    resource = patient(
        {
            "patient_id": "p_x",
            "full_name": "Ada Lovelace",
            "email": "ada@example.com",
            "phone": None,
            "preferred_channel": "email",
            "clinic_id": "default",
            "language": "de",
        }
    )
    [communication] = resource["communication"]
    assert communication["preferred"] is True
    assert communication["language"]["coding"] == [{"system": "urn:ietf:bcp:47", "code": "de"}]
    assert communication["language"]["text"] == "Deutsch"


async def test_staff_change_the_language_on_the_journey_page(stack: Stack) -> None:  # noqa: F811
    from tests.access_helpers import CSRF_FIELD, login

    created = await enrol(stack)
    pid = created["patient_id"]
    assert (await login(stack.http, stack.admin)).status_code in (200, 303)

    async def page_shown() -> httpx.Response | None:
        page = await stack.http.get(f"/journeys/{pid}")
        return page if page.status_code == 200 and "form-language" in page.text else None

    page = await eventually(page_shown)
    assert 'data-language="en"' in page.text
    csrf = CSRF_FIELD.search(page.text)
    assert csrf is not None
    bad = await stack.http.post(
        f"/journeys/{pid}/language", data={"csrf_token": csrf.group(1), "language": "xx"}
    )
    assert bad.status_code == 422 and "Choose one of the languages offered" in bad.text
    r = await stack.http.post(
        f"/journeys/{pid}/language", data={"csrf_token": csrf.group(1), "language": "es"}
    )
    assert r.status_code == 303, r.text
    shown = await stack.http.get(r.headers["location"])
    assert 'data-language="es"' in shown.text and "Language changed" in shown.text
    assert (await repository.get_patient(stack.pool, pid)).language == "es"  # type: ignore[union-attr]
