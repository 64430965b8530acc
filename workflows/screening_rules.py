"""The screening numbers and the clinic's list of photosensitising drugs (part of the protocol).

Pure; safe in the Temporal workflow sandbox. :mod:`workflows.protocol` re-exports every name.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["DEFAULT_PHOTOSENSITISING_DRUGS", "ScreeningRules", "normalise_drug_name"]

_FROZEN = ConfigDict(frozen=True, extra="forbid")


def normalise_drug_name(name: str) -> str:
    """Normalise a drug name for matching: case-folded, apostrophes dropped, single spaces.

    ``"St John's  Wort"`` → ``"st johns wort"``; a blank name gives ``""``.
    """
    cleaned = name.replace("'", "").replace("’", "").casefold()
    return " ".join(cleaned.split())


_normalise_drug = normalise_drug_name


DEFAULT_PHOTOSENSITISING_DRUGS: dict[str, tuple[str, ...]] = {
    "tetracyclines": (
        "tetracycline",
        "doxycycline",
        "minocycline",
        "lymecycline",
        "oxytetracycline",
    ),
    "fluoroquinolones": (
        "ciprofloxacin",
        "levofloxacin",
        "moxifloxacin",
        "ofloxacin",
        "norfloxacin",
    ),
    "sulfonamides": (
        "sulfamethoxazole",
        "co-trimoxazole",
        "trimethoprim-sulfamethoxazole",
        "sulfasalazine",
    ),
    "thiazides": ("hydrochlorothiazide", "chlorthalidone", "indapamide", "bendroflumethiazide"),
    "nsaids": ("ibuprofen", "naproxen", "ketoprofen", "piroxicam", "diclofenac", "celecoxib"),
    # Isotretinoin is left out on purpose: it has its own question and its own washout.
    "retinoids": ("acitretin", "tretinoin", "alitretinoin"),
    "st johns wort": ("hypericum",),
}
"""The default drug classes (DOMAIN.md) and their common generic names, already normalised.

Each class name also matches itself ("tetracyclines"). Isotretinoin is not here: it is asked
separately and has its own washout (``isotretinoin_washout_months``).
"""

_LEGACY_SCREENING_KEYS = ("photosensitising_drug_washout_days",)
"""Keys of older clinic files and stored protocols that are accepted and ignored."""


class ScreeningRules(BaseModel):
    """Screening numbers and the clinic's list of photosensitising drugs.

    Attributes:
        wound_deferral_days: Open wounds in the area defer screening by this many days.
        tan_deferral_days: A recent tan defers by this many days without sun.
        infection_deferral_days: Active herpes / skin infection defers by this many days.
        isotretinoin_washout_months: Months after the last isotretinoin dose before treatment.
        photosensitising_drugs: The clinic's list as a mapping from drug class to the generic
            names in it, e.g. ``{"tetracyclines": ("doxycycline", ...)}``. A class name matches
            itself too. Matching is case-insensitive, apostrophes and extra spaces ignored
            ("St John's Wort" matches "st johns wort"); keys and names are stored normalised.
            A name may belong to one class only. There is no default washout: a listed drug
            defers with no date until a clinician sets ``drug_washout_until``.

            For older files and stored protocols a flat list is accepted: each entry becomes
            its own class; an entry that names a default class (e.g. ``"tetracyclines"``)
            brings that class's default generic names with it.
        conservative_fitzpatrick_from: Fitzpatrick skin type from which the
            ``conservative_settings`` flag is raised (7 disables the flag).

    The key ``photosensitising_drug_washout_days`` of older files (an invented 30-day default
    washout) is still accepted so that stored protocols and recorded histories parse, but it is
    ignored and never written back.
    """

    model_config = _FROZEN

    wound_deferral_days: int = Field(default=14, ge=1)
    tan_deferral_days: int = Field(default=28, ge=1)
    infection_deferral_days: int = Field(default=14, ge=1)
    isotretinoin_washout_months: int = Field(default=6, ge=1)
    photosensitising_drugs: dict[str, tuple[str, ...]] = Field(
        default_factory=lambda: dict(DEFAULT_PHOTOSENSITISING_DRUGS)
    )
    conservative_fitzpatrick_from: int = Field(default=4, ge=1, le=7)

    @model_validator(mode="before")
    @classmethod
    def _drop_legacy_keys(cls, data: Any) -> Any:
        if isinstance(data, dict) and any(key in data for key in _LEGACY_SCREENING_KEYS):
            return {k: v for k, v in data.items() if k not in _LEGACY_SCREENING_KEYS}
        return data

    @field_validator("photosensitising_drugs", mode="before")
    @classmethod
    def _flat_list_to_classes(cls, value: Any) -> Any:
        if not isinstance(value, list | tuple):
            return value
        if not all(isinstance(entry, str) for entry in value):
            return value  # the type check explains it
        classes: dict[str, tuple[str, ...]] = {}
        for entry in value:
            key = _normalise_drug(entry)
            if key in DEFAULT_PHOTOSENSITISING_DRUGS:
                classes[key] = DEFAULT_PHOTOSENSITISING_DRUGS[key]
        covered = {name for names in classes.values() for name in names}
        for entry in value:
            key = _normalise_drug(entry)
            if key not in classes and key not in covered:
                classes[entry] = ()  # empty names are refused by the next validator
        return classes

    @field_validator("photosensitising_drugs")
    @classmethod
    def _normalise_drugs(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        result: dict[str, tuple[str, ...]] = {}
        owner: dict[str, str] = {}
        for drug_class, names in value.items():
            key = _normalise_drug(drug_class)
            if not key:
                raise ValueError("drug class names must not be empty")
            members = list(result.get(key, ()))
            for name in (drug_class, *names):
                norm = _normalise_drug(name)
                if not norm:
                    raise ValueError(f"drug names must not be empty (in class {key!r})")
                if owner.get(norm, key) != key:
                    raise ValueError(
                        f"drug {norm!r} is listed under two classes ({owner[norm]!r} and "
                        f"{key!r}); a drug must belong to one class"
                    )
                owner[norm] = key
                if norm != key and norm not in members:
                    members.append(norm)
            result[key] = tuple(members)
        return result

    def drug_class(self, name: str) -> str | None:
        """The clinic's drug class that ``name`` belongs to, or None if it is not listed.

        ``name`` may be a class name or one of its generic names; matching ignores case,
        apostrophes and extra spaces. Returns the normalised class name, e.g.
        ``drug_class("Doxycycline") == "tetracyclines"``.
        """
        norm = _normalise_drug(name)
        if not norm:
            return None
        for drug_class, names in self.photosensitising_drugs.items():
            if norm == drug_class or norm in names:
                return drug_class
        return None

    def is_photosensitising(self, drug: str) -> bool:
        """True if ``drug`` (a class or a generic name) is on the clinic's list."""
        return self.drug_class(drug) is not None
