"""Any `source<TAB>target` file (the Tatoeba/Anki format) as a dataset."""

import os
import random


class DatasetError(ValueError):
    """A dataset file that cannot be used, with the reason and where."""


def read_pairs(path, reverse=False, max_reported=10):
    """Reads `source<TAB>target` pairs; extra columns (Anki's attribution) are ignored.

    Args:
        path: the file, UTF-8.
        reverse: swap the two columns (the Anki files are English first).
        max_reported: how many malformed line numbers to name.

    Returns:
        `(sources, targets, malformed)`: lists of strings, and the numbers
        (1-based) of the lines skipped for having fewer than two non-empty
        columns.

    Raises:
        DatasetError: the file is missing, empty, or has no usable pair, or
            more than 1 % of its lines are malformed (a wrong file or
            format, not noise: we never silently drop a corpus).
    """
    if not os.path.isfile(path):
        raise DatasetError(f"Dataset file not found: {path}")
    sources, targets, malformed = [], [], []
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, start=1):
            line = line.rstrip("\n").rstrip("\r")
            if not line.strip():
                continue
            columns = line.split("\t")
            if len(columns) < 2 or not columns[0].strip() or not columns[1].strip():
                malformed.append(number)
                continue
            source, target = columns[0].strip(), columns[1].strip()
            if reverse:
                source, target = target, source
            sources.append(source)
            targets.append(target)
    if not sources and not malformed:
        raise DatasetError(f"Dataset file is empty: {path}")
    total = len(sources) + len(malformed)
    if not sources or len(malformed) > 0.01 * total:
        shown = ", ".join(map(str, malformed[:max_reported])) + (" …" if len(malformed) > max_reported else "")
        raise DatasetError(
            f"{path}: {len(malformed)} of {total} lines are not `source<TAB>target` "
            f"(lines {shown}). Is this a tab-separated file of pairs?"
        )
    return sources, targets, malformed


def load(path, reverse=False, validation_size=500, test_size=1000, seed=0, train_size=None, log=print):
    """Seeded train/validation/test splits of a TSV corpus.

    Duplicate sources are kept in one split only (the Anki files hold
    several translations of one sentence), so held-out scores measure
    translation of unseen sentences.
    """
    sources, targets, malformed = read_pairs(path, reverse)
    if malformed:
        shown = ", ".join(map(str, malformed[:10])) + (" …" if len(malformed) > 10 else "")
        log(f"Skipped {len(malformed)} malformed line(s) of {path}: {shown}")
    groups = {}
    for source, target in zip(sources, targets):
        groups.setdefault(source, []).append(target)
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)

    def take(count):
        pairs = []
        while keys and len(pairs) < count:
            key = keys.pop()
            pairs += [(key, target) for target in groups[key]]
        return pairs

    test, validation = take(test_size), take(validation_size)
    train = [(key, target) for key in keys for target in groups[key]]
    random.Random(seed + 1).shuffle(train)
    if train_size:
        train = train[:train_size]
    if not train:
        raise DatasetError(f"{path}: too few pairs ({len(sources)}) for the held-out splits.")

    def columns(split):
        return [s for s, _ in split], [t for _, t in split]

    return {"train": columns(train), "validation": columns(validation), "test": columns(test)}
