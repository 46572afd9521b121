"""Offline grid carbon intensities and the carbon formula: grams CO2e = kWh x PUE x intensity.

Intensities are life-cycle grams of CO2-equivalent per kWh of electricity *generated* in 2023, from Ember's Yearly
Electricity Data as published by Our World in Data ("Carbon intensity of electricity generation", Ember and Energy
Institute, values for 2023; world average 481 g/kWh from Ember's Global Electricity Review 2024). Only countries
whose 2023 value we could check against that table are listed; pass `intensity=` (`--intensity`) for any other grid,
or for a supplier's own figure. Nothing is fetched at run time.

PUE (power usage effectiveness) defaults to 1.0: the energy we meter or estimate is the machine's own. For work in a
data centre pass its PUE, or the industry average 1.58 (Uptime Institute Global Data Center Survey 2023) stored here
as `PUE_DATA_CENTRE_AVERAGE`.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

INTENSITY_SOURCE = ("Ember Yearly Electricity Data via Our World in Data, 'Carbon intensity of electricity "
                    "generation' (life-cycle gCO2e/kWh)")
INTENSITY_YEAR = 2023
PUE_DEFAULT = 1.0
PUE_DATA_CENTRE_AVERAGE = 1.58
PUE_SOURCE = "PUE 1.0 = the machine's own energy; data-centre average 1.58 per Uptime Institute survey 2023"

# ISO 3166 alpha-2 -> (alpha-3, name, gCO2e/kWh in 2023)
_TABLE: dict[str, tuple[str, str, float]] = {
    "WORLD": ("WLD", "World average", 481.0),
    "AR": ("ARG", "Argentina", 354.0),
    "AT": ("AUT", "Austria", 111.0),
    "AU": ("AUS", "Australia", 549.0),
    "BD": ("BGD", "Bangladesh", 691.0),
    "BE": ("BEL", "Belgium", 138.0),
    "BG": ("BGR", "Bulgaria", 335.0),
    "BR": ("BRA", "Brazil", 98.0),
    "CA": ("CAN", "Canada", 170.0),
    "CL": ("CHL", "Chile", 291.0),
    "CN": ("CHN", "China", 582.0),
    "CO": ("COL", "Colombia", 260.0),
    "CR": ("CRI", "Costa Rica", 53.0),
    "CY": ("CYP", "Cyprus", 534.0),
    "CZ": ("CZE", "Czechia", 450.0),
    "DE": ("DEU", "Germany", 381.0),
    "DK": ("DNK", "Denmark", 152.0),
    "EC": ("ECU", "Ecuador", 150.0),
    "EE": ("EST", "Estonia", 417.0),
    "EG": ("EGY", "Egypt", 570.0),
    "FI": ("FIN", "Finland", 79.0),
    "FR": ("FRA", "France", 56.0),
    "GR": ("GRC", "Greece", 337.0),
    "HR": ("HRV", "Croatia", 205.0),
    "HU": ("HUN", "Hungary", 204.0),
    "IE": ("IRL", "Ireland", 291.0),
    "IN": ("IND", "India", 713.0),
    "IR": ("IRN", "Iran", 655.0),
    "NO": ("NOR", "Norway", 30.0),
    "PL": ("POL", "Poland", 662.0),
    "SE": ("SWE", "Sweden", 41.0),
}


@dataclass(frozen=True)
class GridIntensity:
    """A grid's carbon intensity with where it came from."""

    g_per_kwh: float
    region: str            # e.g. "FR (France)", "World average", "user-supplied"
    iso3: str | None       # for tools such as CodeCarbon that take ISO 3166 alpha-3 codes
    source: str

    def to_dict(self) -> dict:
        return asdict(self)


def available_countries() -> dict[str, str]:
    """Country code -> name for every built-in intensity."""
    return {code: name for code, (_, name, _) in _TABLE.items()}


def grid_intensity(country: str | None = None, intensity: float | None = None) -> GridIntensity:
    """The intensity to use: `intensity` (g/kWh) if given, else the table's value for `country`, else world average.

    `country` is an ISO 3166 alpha-2 or alpha-3 code (case-insensitive) or "world".
    """
    if intensity is not None:
        value = _check_nonnegative("intensity", intensity)
        label = "user-supplied" + (f" for {country.upper()}" if country else "")
        iso3 = _lookup(country)[0] if country and _find(country) else None
        return GridIntensity(value, label, iso3, "given by the user (--intensity)")
    code = "WORLD" if country is None else _find(country)
    if code is None:
        raise ValueError(f"country {country!r} is not in the built-in intensity table "
                         f"(known: {', '.join(sorted(_TABLE))}); pass --intensity G (gCO2e/kWh) instead")
    iso3, name, value = _TABLE[code]
    region = name if code == "WORLD" else f"{code} ({name})"
    return GridIntensity(value, region, None if code == "WORLD" else iso3,
                         f"{INTENSITY_SOURCE}, {INTENSITY_YEAR}")


def carbon_grams(energy_j: float, intensity_g_per_kwh: float, pue: float = PUE_DEFAULT) -> float:
    """grams CO2e = energy (J -> kWh) x PUE x grid intensity (g/kWh)."""
    return float(energy_j) / 3.6e6 * float(pue) * float(intensity_g_per_kwh)


def check_pue(pue: float | None) -> float:
    """PUE to use (default 1.0); must be >= 1."""
    if pue is None:
        return PUE_DEFAULT
    value = _check_nonnegative("pue", pue)
    if value < 1.0:
        raise ValueError(f"pue must be >= 1.0 (facility energy / IT energy), got {pue}")
    return value


def _find(country: str) -> str | None:
    key = str(country).strip().upper()
    if key in ("WORLD", "WLD"):
        return "WORLD"
    if key in _TABLE:
        return key
    for code, (iso3, _, _) in _TABLE.items():
        if iso3 == key:
            return code
    return None


def _lookup(country: str) -> tuple[str, str, float]:
    return _TABLE[_find(country)]  # type: ignore[index]


def _check_nonnegative(name: str, value: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return v
