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

How people type dates: the source tokenizer folds case, commas, word-final
dots and white space in the graph (`tokenizers.fold_text`), so "25 SEPTEMBRE
2009", "  tuesday june 25 2009 " and "Sept. 25, 2009" / "Sept 25 2009" reach
the model as the generated forms do; the data adds what folding cannot:
year-first numeric forms (`2009/09/25`, `2009.09.25`), space-separated
numbers, two-digit years in written forms ("June 25, 09"), English ordinals
and the "Sept" abbreviation.

Not a date → "" (the empty translation): a tenth of the examples are texts
that are not dates, each with the empty target: phrases and word salads
from CLDR's names of places, languages and currencies (month and weekday
names mixed in), partial dates (no year, no day), numbers, amounts, times
and random characters. Impossible dates (31 April, 29 February 2009, month
13) are read literally (2% of the examples, "31 avril 2009" → 2009-04-31)
and the export's `valid_date_or_empty` answers "" for any output that is
not a calendar date: a rule, where a model would have to learn the calendar
from examples (a model trained to answer "" itself refused real 30ths and
31sts).

Any string that two different readings would produce (after folding) is
dropped. The held-out dates are held out by date: no date of the
validation or test split occurs in training in any form, so the perturbed
test sets (`perturbations`) are unseen too.
"""

import datetime
import random
import string
import zlib

import tensorflow as tf
from babel import Locale
from babel.dates import format_date, format_skeleton, format_time
from babel.numbers import format_currency, format_decimal, format_percent

from tf_transformer.tokenizers import fold_text

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
    "y/MM/dd",
    "y.MM.dd",
    "y/M/d",
    "dd MM y",
    "d MMM yy",
    "d MMMM yy",
)
LOCALE_PATTERNS = {
    "en_US": ("MMMM d, y", "MMM d, y", "EEEE, MMMM d, y", "EEE, MMM d, y", "M/d/yy", "MM/dd/yy", "MMMM d, yy", "MMM d, yy",
              "EEE, MMM d, yy"),
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


# US month-first and written two-digit years are few among the forms: drawn three times as often.
OVERSAMPLED = ("M/d/yy", "MM/dd/yy", "MMMM d, yy", "MMM d, yy")


def formats(locale):
    """Every (kind, pattern) a locale writes dates in (a pattern twice is drawn twice as often)."""
    result = [("style", style) for style in STYLES]
    result += [("pattern", pattern) for pattern in COMMON_PATTERNS + LOCALE_PATTERNS.get(locale, ())]
    result += [("pattern", pattern) for pattern in LOCALE_PATTERNS.get(locale, ()) if pattern in OVERSAMPLED] * 2
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
    if locale.startswith("en") and "Sep " in text and rng.random() < 0.5:
        text = text.replace("Sep ", "Sept ", 1)  # the common English abbreviation CLDR does not write
    if weekday_pattern and rng.random() < 0.25:
        true_weekday = format_date(date, weekday_pattern, locale=locale)
        other = date + datetime.timedelta(days=rng.randint(1, 6))
        text = text.replace(true_weekday, format_date(other, weekday_pattern, locale=locale), 1)
    return text


def fold(texts):
    """`tokenizers.fold_text` on a list of strings (what the model's source side sees)."""
    return [t.decode("utf-8") for t in fold_text(tf.constant(list(texts), tf.string)).numpy()] if texts else []


def generate(num_examples, seed=0):
    """`num_examples` (text, iso) pairs of distinct folded text, drawn with a seeded RNG."""
    rng = random.Random(seed)
    span = (LAST_DAY - FIRST_DAY).days
    all_formats = {locale: formats(locale) for locale in LOCALES}
    drawn = {}
    while len(drawn) < num_examples * 23 // 20:  # a margin for the texts folding merges
        date = FIRST_DAY + datetime.timedelta(days=rng.randint(0, span))
        locale = rng.choice(LOCALES)
        kind, pattern = rng.choice(all_formats[locale])
        text = render(date, locale, kind, pattern, rng)
        if text is not None:
            drawn.setdefault(text, set()).add(date.isoformat())
    drawn = [(text, isos.pop()) for text, isos in drawn.items() if len(isos) == 1]
    return _one_reading(drawn)[:num_examples]


def _one_reading(pairs):
    """Pairs whose folded text has one reading, one pair per folded text, sorted."""
    readings, first = {}, {}
    for (text, target), folded in zip(pairs, fold([text for text, _ in pairs])):
        readings.setdefault(folded, set()).add(target)
        first.setdefault(folded, (text, target))
    # A string with two readings would teach a coin toss: drop it.
    kept = [first[folded] for folded, targets in readings.items() if len(targets) == 1]
    random.Random(len(kept)).shuffle(kept)
    return kept


# Words that are not dates, from CLDR: names of places, languages and currencies.
def _cldr_words(locale):
    data = Locale.parse(locale)
    names = list(data.territories.values()) + list(data.languages.values()) + list(data.currencies.values())
    return sorted({name for name in names if name and not any(c.isdigit() for c in name)})


def impossible_date(rng, locale):
    """`(text, literal reading)` of a date no calendar has: 31 April, 29 February of a common year, month 13, day 32.

    The model learns to read these literally ("31 février 2009" →
    2009-02-31), and `valid_date_or_empty` in the export turns what is not
    a calendar date into "": a check by rule, not a calendar the model
    would have to learn from examples.
    """
    year = rng.choice([y for y in range(1900, 2100) if "28" not in str(y)])
    if rng.random() < 0.6:  # a real month, a day past its end, written in a format that spells the day
        month = rng.choice([2, 4, 6, 9, 11])
        if month == 2:
            day = rng.choice([30, 31] + ([29] if year % 4 or (year % 100 == 0 and year % 400) else []))
        else:
            day = 31
        pattern = rng.choice(["d MMMM y", "dd/MM/y", "d MMM y", "y-MM-dd", "dd.MM.y", "EEEE d MMMM y"])
        if locale == "en_US" and rng.random() < 0.5:
            pattern = rng.choice(["MMMM d, y", "MMM d, y"])
        text = format_date(datetime.date(year, month, 28), pattern, locale=locale).replace("28", str(day), 1)
        return text, f"{year}-{month:02d}-{day:02d}"
    separator = rng.choice("/.-")
    if rng.random() < 0.5:  # month 13-19 after a day over 12: no US month-first reading either
        day, month = rng.randint(13, 31), rng.randint(13, 19)
    else:  # day 32-39
        day, month = rng.randint(32, 39), rng.randint(1, 12)
    first, second = (day, month) if rng.random() < 0.5 else (month, day)  # "06/35/2029" is no date either
    # Read literally day-first, as every numeric date but the US month-first ones: both readings are impossible.
    return f"{first:02d}{separator}{second:02d}{separator}{year}", f"{year}-{second:02d}-{first:02d}"


def valid_date_or_empty(text, translation):
    """The translation if it is a real date from 1900 to 2099 in ISO form, else "" (core TensorFlow ops).

    The dates export's `postprocess`: whatever the model writes for a text
    that is not a date (or an impossible one, read literally) is refused
    here by rule.
    """
    del text  # the check needs only the output
    shaped = tf.strings.regex_full_match(translation, r"(19|20)\d\d-\d\d-\d\d")
    safe = tf.where(shaped, translation, tf.fill(tf.shape(translation), "1900-01-01"))
    year = tf.strings.to_number(tf.strings.substr(safe, 0, 4), tf.int32)
    month = tf.strings.to_number(tf.strings.substr(safe, 5, 2), tf.int32)
    day = tf.strings.to_number(tf.strings.substr(safe, 8, 2), tf.int32)
    leap = ((year % 4 == 0) & (year % 100 != 0)) | (year % 400 == 0)
    month_lengths = tf.constant([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])
    valid_month = (month >= 1) & (month <= 12)
    length = tf.gather(month_lengths, tf.clip_by_value(month - 1, 0, 11)) + tf.cast(leap & (month == 2), tf.int32)
    valid = shaped & valid_month & (day >= 1) & (day <= length)
    return tf.where(valid, translation, tf.fill(tf.shape(translation), ""))


def non_dates(count, seed=0):
    """`count` distinct texts that are not dates (see the module docstring), each with the target ""."""
    rng = random.Random(seed)
    words = {locale: _cldr_words(locale) for locale in LOCALES}
    calendar_words = {
        locale: [format_date(datetime.date(2001, m, 1), p, locale=locale) for m in range(1, 13) for p in ("MMMM", "MMM")]
        + [format_date(datetime.date(2001, 1, d), p, locale=locale) for d in range(1, 8) for p in ("EEEE", "EEE")]
        for locale in LOCALES
    }

    def one():
        locale = rng.choice(LOCALES)
        kind = rng.random()
        date = FIRST_DAY + datetime.timedelta(days=rng.randint(0, (LAST_DAY - FIRST_DAY).days))
        if kind < 0.3:  # a word salad, sometimes with calendar words and small numbers
            pool = words[locale] + calendar_words[locale] * 3
            salad = [rng.choice(pool) for _ in range(rng.randint(1, 7))]
            if rng.random() < 0.3:
                salad.insert(rng.randrange(len(salad) + 1), str(rng.randint(1, 99)))
            return " ".join(salad) + rng.choice(["", "", ".", " ?", " !"])
        if kind < 0.55:  # a partial date: no year, or no day
            skeleton = rng.choice(["MMMMd", "MMMd", "Md", "yMMMM", "yMMM", "yMM", "y", "MMMMEEEEd"])
            if skeleton == "y":
                return str(date.year)
            return format_skeleton(skeleton, date, locale=locale)
        if kind < 0.62:  # a month or weekday name alone
            return rng.choice(calendar_words[locale])
        if kind < 0.8:  # numbers, amounts, times
            return rng.choice([
                lambda: str(rng.randint(0, 10**rng.randint(1, 8))),
                lambda: format_decimal(rng.uniform(0, 10**5), locale=locale),
                lambda: format_currency(rng.uniform(0, 10**4), rng.choice(["EUR", "USD", "GBP", "BRL"]), locale=locale),
                lambda: format_percent(rng.random(), locale=locale),
                lambda: format_time(datetime.time(rng.randint(0, 23), rng.randint(0, 59)), rng.choice(["short", "medium"]), locale=locale),
                lambda: " ".join(f"{rng.randint(0, 99):02d}" for _ in range(5)),
            ])()
        if rng.random() < 0.3:  # one character repeated
            return rng.choice(string.ascii_letters + string.digits + "-./") * rng.randint(1, 40)
        return "".join(rng.choice(string.ascii_letters + string.digits + string.punctuation + " ") for _ in range(rng.randint(1, 40)))

    texts, seen = [], set()
    while len(texts) < count:  # distinct after folding, as the model reads them
        batch = [text for text in (one().strip() for _ in range(count)) if text]
        for text, folded in zip(batch, fold(batch)):
            if folded not in seen and len(texts) < count:
                seen.add(folded)
                texts.append(text)
    return texts


def _held_out(key, fraction, seed):
    """Whether `key` (a date or a text) is held out: a seeded hash, stable whatever else is generated."""
    return zlib.crc32(f"{seed}:{key}".encode("utf-8")) % 1000 < fraction * 1000


YEAR_FIRST_PATTERNS = ("y/MM/dd", "y.MM.dd", "y/M/d", "y-M-d")


def perturbations(sources, targets, seed=0, size=500):
    """How people type the held-out dates, one perturbation per set: name → (sources, targets).

    `upper`, `lower`, `spaces_around`, `doubled_spaces`, `commas_dropped`
    (of the strings that have commas) and `year_first` (the same dates
    written 2009/09/25, 2009.09.25, 2009/9/25, 2009-9-25).
    """
    rng = random.Random(seed)
    pairs = list(zip(sources, targets))[:size]
    with_commas = [(s, t) for s, t in zip(sources, targets) if "," in s][:size]

    def year_first(iso):
        date = datetime.date.fromisoformat(iso)
        return format_date(date, rng.choice(YEAR_FIRST_PATTERNS), locale="en_GB")

    sets = {
        "upper": [(s.upper(), t) for s, t in pairs],
        "lower": [(s.lower(), t) for s, t in pairs],
        "spaces_around": [(f"{' ' * rng.randint(1, 3)}{s}{' ' * rng.randint(1, 3)}", t) for s, t in pairs],
        "doubled_spaces": [(s.replace(" ", "  "), t) for s, t in pairs],
        "commas_dropped": [(s.replace(",", ""), t) for s, t in with_commas],
        "year_first": [(year_first(t), t) for _, t in pairs],
    }
    return {name: ([s for s, _ in split], [t for _, t in split]) for name, split in sets.items()}


def tatoeba_sentences(path, count=1000, seed=0):
    """`count` sentences of a Tatoeba TSV (both languages), seeded; [] when the file is absent."""
    try:
        with open(path, encoding="utf-8") as file:
            sentences = sorted({column.strip() for line in file for column in line.split("\t")[:2] if column.strip()})
    except OSError:
        return []
    return random.Random(seed).sample(sentences, min(count, len(sentences)))


def load(num_examples=60000, validation_fraction=0.05, test_size=2500, seed=0, non_date_fraction=0.1,
         impossible_fraction=0.02, tatoeba_path=None):
    """Seeded train/validation/test splits, held out by date; non-dates held out by text.

    Returns:
        dict of split name → (sources, targets) lists, and `"held_out"`:
        name → (sources, targets) of the perturbed test dates
        (`perturbations`), the held-out generated non-dates
        (`non_dates`), impossible dates (`impossible_dates`, target "")
        and, when `tatoeba_path` exists, sentences of that
        file (`non_dates_tatoeba`; the model never sees them).
    """
    # A tenth more held-out dates than asked, so the hashed split always fills `test_size`.
    test_fraction = 1.1 * test_size / (num_examples + test_size)
    pairs = generate(num_examples + test_size, seed=seed)
    negatives = [(text, "") for text in non_dates(int(num_examples * non_date_fraction * 1.2), seed=seed + 2)]
    splits = {"train": [], "validation": [], "test": []}
    for text, iso in pairs:
        if _held_out(iso, test_fraction, seed):
            splits["test"].append((text, iso))
        elif _held_out(iso, test_fraction + validation_fraction, seed):
            splits["validation"].append((text, iso))
        else:
            splits["train"].append((text, iso))
    rng = random.Random(seed + 5)
    impossible = dict(impossible_date(rng, rng.choice(LOCALES)) for _ in range(int(num_examples * impossible_fraction * 1.2)))
    held_out_impossible = []
    for text, literal in sorted(impossible.items()):
        if _held_out(text, 1 / 6, seed + 3):
            held_out_impossible.append((text, ""))  # what the export must answer
        else:
            (splits["validation"] if _held_out(text, 0.2, seed + 4) else splits["train"]).append((text, literal))
    held_out_negatives = []
    for (text, target), folded in zip(negatives, fold([text for text, _ in negatives])):
        if _held_out(folded, 1 / 6, seed + 3):
            held_out_negatives.append((text, target))
        else:
            (splits["validation"] if _held_out(folded, 0.2, seed + 4) else splits["train"]).append((text, target))
    for name in splits:
        random.Random(seed + 1).shuffle(splits[name])
    splits["test"] = splits["test"][:test_size]

    def columns(split):
        return [text for text, _ in split], [target for _, target in split]

    result = {name: columns(split) for name, split in splits.items()}
    held_out = perturbations(*result["test"], seed=seed)
    held_out["non_dates"] = columns(held_out_negatives[:1000])
    held_out["impossible_dates"] = columns(held_out_impossible[:500])
    sentences = tatoeba_sentences(tatoeba_path, seed=seed) if tatoeba_path else []
    if sentences:
        held_out["non_dates_tatoeba"] = (sentences, [""] * len(sentences))
    result["held_out"] = held_out
    return result
