"""The embedded `dates` dataset: human-readable dates → ISO `YYYY-MM-DD`.

Generated reproducibly with Babel's CLDR data, no download: dates from
1900-01-01 to 2099-12-31 written in en (US and GB), fr, es, de, it, pt (BR
and PT) and nl, in the four CLDR styles (`short`, `medium`, `long`, `full`)
and common custom patterns (with and without the weekday, abbreviated
months, English ordinals like "June 25th, 2009", ISO itself).

Every string has exactly one reading, by these documented rules:

* Numeric dates (slash, dot or dash) are read day-first: `25/06/2009`,
  `03/04/2009` = 3 April, `25.06.09`, as fr/es/it/pt/de/nl and en-GB write
  them. US month-first dates (`6/25/09`) appear only where day-first cannot
  read them, i.e. when the second number is over 12.
* Two-digit years lie in the window 1950–2049: `50`–`99` → 1950–1999 and
  `00`–`49` → 2000–2049 (so two-digit forms are only generated for those
  years).
* The weekday never decides the date: a quarter of the strings with a
  weekday carry a wrong one, so "Tuesday, June 25, 2009" still reads
  2009-06-25 (25 June 2009 was a Thursday).

Any string that two different dates would produce is dropped, and the
split into train/validation/test is by distinct string, so no string is
shared between splits.
"""

import datetime
import random

from babel.dates import format_date

FIRST_DAY = datetime.date(1900, 1, 1)
LAST_DAY = datetime.date(2099, 12, 31)
TWO_DIGIT_YEARS = (1950, 2049)

LOCALES = ("en_US", "en_GB", "fr_FR", "es_ES", "de_DE", "it_IT", "pt_BR", "pt_PT", "nl_NL")
STYLES = ("short", "medium", "long", "full")
# Custom CLDR patterns written in every locale (month and weekday names localised).
COMMON_PATTERNS = (
    "d MMMM y",
    "d MMM y",
    "EEEE d MMMM y",
    "EEE d MMM y",
    "dd/MM/y",
    "d/M/y",
    "dd.MM.y",
    "dd-MM-y",
    "y-MM-dd",
    "dd/MM/yy",
    "dd.MM.yy",
)
LOCALE_PATTERNS = {
    "en_US": ("MMMM d, y", "MMM d, y", "EEEE, MMMM d, y", "EEE, MMM d, y", "M/d/yy", "MM/dd/yy"),
    "en_GB": ("EEEE d MMMM y", "d MMMM, y"),
    "fr_FR": ("EEEE d MMMM y", "'le' d MMMM y", "EEE d MMM y"),
    "es_ES": ("d 'de' MMMM 'de' y", "EEEE d 'de' MMMM 'de' y", "d-MMM-y"),
    "de_DE": ("d. MMMM y", "EEEE, d. MMMM y", "d. MMM y", "EEEE, 'den' d. MMMM y"),
    "it_IT": ("d MMMM y", "EEEE d MMMM y"),
    "pt_BR": ("d 'de' MMMM 'de' y", "EEEE, d 'de' MMMM 'de' y"),
    "pt_PT": ("d 'de' MMMM 'de' y",),
    "nl_NL": ("EEEE d MMMM y", "d-M-y"),
}
ENGLISH_ORDINAL_PATTERNS = ("MMMM {d}, y", "EEEE, MMMM {d}, y", "{d} MMMM y", "'the' {d} 'of' MMMM y", "MMM {d} y")


def ordinal(day):
    """1 → 1st, 2 → 2nd, 11 → 11th, 22 → 22nd."""
    suffix = "th" if 10 <= day % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


def _is_month_first(pattern):
    return pattern in ("M/d/yy", "MM/dd/yy", "short@en_US")


def _has_two_digit_year(text_pattern):
    return "yy" in text_pattern and "yyy" not in text_pattern


def formats(locale):
    """Every (kind, pattern) a locale writes dates in."""
    result = [("style", style) for style in STYLES]
    result += [("pattern", pattern) for pattern in COMMON_PATTERNS + LOCALE_PATTERNS.get(locale, ())]
    if locale.startswith("en"):
        result += [("ordinal", pattern) for pattern in ENGLISH_ORDINAL_PATTERNS]
    return result


def render(date, locale, kind, pattern, rng):
    """One string for `date`, or None where the reading rules exclude it."""
    if kind == "style":
        # The CLDR short styles: en_US M/d/yy (month-first), de dd.MM.yy,
        # es d/M/yy, it dd/MM/yy, pt_PT dd/MM/yy have two-digit years.
        two_digit = pattern == "short" and locale in ("en_US", "de_DE", "es_ES", "it_IT", "pt_PT")
        month_first = pattern == "short" and locale == "en_US"
        text = format_date(date, pattern, locale=locale)
        weekday_pattern = "EEEE" if pattern == "full" else None
    else:
        two_digit = _has_two_digit_year(pattern)
        month_first = _is_month_first(pattern)
        if kind == "ordinal":
            pattern = pattern.replace("{d}", f"'{ordinal(date.day)}'")
        text = format_date(date, pattern, locale=locale)
        weekday_pattern = "EEEE" if "EEEE" in pattern else ("EEE" if "EEE" in pattern else None)
    if two_digit and not TWO_DIGIT_YEARS[0] <= date.year <= TWO_DIGIT_YEARS[1]:
        return None
    if month_first and date.day <= 12:
        return None  # day-first would read it differently
    if weekday_pattern and rng.random() < 0.25:
        true_weekday = format_date(date, weekday_pattern, locale=locale)
        other = date + datetime.timedelta(days=rng.randint(1, 6))
        text = text.replace(true_weekday, format_date(other, weekday_pattern, locale=locale), 1)
    return text


def generate(num_examples, seed=0):
    """`num_examples` distinct (text, iso) pairs, drawn with a seeded RNG."""
    rng = random.Random(seed)
    span = (LAST_DAY - FIRST_DAY).days
    all_formats = {locale: formats(locale) for locale in LOCALES}
    readings = {}
    attempts = 0
    while len(readings) < num_examples and attempts < 20 * num_examples:
        attempts += 1
        date = FIRST_DAY + datetime.timedelta(days=rng.randint(0, span))
        locale = rng.choice(LOCALES)
        kind, pattern = rng.choice(all_formats[locale])
        text = render(date, locale, kind, pattern, rng)
        if text is not None:
            readings.setdefault(text, set()).add(date.isoformat())
    # A string with two readings would teach a coin toss: drop it.
    return sorted((text, dates.pop()) for text, dates in readings.items() if len(dates) == 1)


def load(num_examples=60000, validation_fraction=0.05, test_size=2500, seed=0):
    """Seeded train/validation/test splits of distinct strings.

    Returns:
        dict of split name → (sources, targets) lists.
    """
    pairs = generate(num_examples + test_size, seed=seed)
    random.Random(seed + 1).shuffle(pairs)
    test, rest = pairs[:test_size], pairs[test_size:]
    num_validation = max(1, int(len(rest) * validation_fraction))
    validation, train = rest[:num_validation], rest[num_validation:]

    def columns(split):
        return [text for text, _ in split], [iso for _, iso in split]

    return {"train": columns(train), "validation": columns(validation), "test": columns(test)}
