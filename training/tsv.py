"""`source<TAB>target` corpora (the Tatoeba/Anki format): one small file in memory, or shards streamed.

A corpus is a `.tsv`, a `.tsv.gz`, a directory of them or a glob of shards
(`corpus_files`). A single small plain file keeps the in-memory splits of
`load`; anything else is streamed (`training.pipeline.examples_from_files`)
after one bounded-memory pass, `scan`, that counts and checks every file,
carves the held-out sets by a hash of the source sentence and draws the
tokenizers' sample.
"""

import glob
import gzip
import os
import random
import zlib

# A single plain .tsv up to this size is read into memory whole (`load`):
# exactly-sized, seeded held-out splits, as for the shared Tatoeba pairs.
IN_MEMORY_BYTES = 64 * 1024 * 1024

# Held-out sets of a streamed corpus: a source sentence whose hash bucket
# (of HASH_BUCKETS) is below TEST_BUCKETS is a test sentence, below
# HELD_OUT_BUCKETS a validation one, whichever shard it is in. The rule
# depends on the sentence alone, so adding shards never moves a sentence
# between splits, and a sentence (all its translations) is in one split.
# Only the first `test_size` / `validation_size` of each are kept; the rest
# of those buckets (1 % of the corpus) is trained on by no one.
HASH_BUCKETS = 1000
TEST_BUCKETS = 5
HELD_OUT_BUCKETS = 10


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
    sources, targets, malformed = [], [], []
    for pair in iter_pairs(path, reverse, malformed):
        sources.append(pair[0])
        targets.append(pair[1])
    check_malformed(path, len(sources), malformed, max_reported)
    return sources, targets, malformed


ASCII_SPACE = " \t\n\v\f\r"  # what tf.strings.strip removes
BOM = "\ufeff"  # a UTF-8 byte-order mark, which some editors write at a file's start


def read_lines(path):
    """Yields `(number, line)` of a UTF-8 file (gzip when it ends in `.gz`), the byte-order mark dropped.

    Raises:
        DatasetError: naming the file and line, for bytes that are not
            UTF-8 (a Latin-1 file, say) and for a gzip file that is
            truncated or corrupt.
    """
    if not os.path.isfile(path):
        raise DatasetError(f"Dataset file not found: {path}")
    number = 0
    try:
        with (gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")) as file:
            for number, raw in enumerate(file, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as error:
                    raise DatasetError(
                        f"{path}, line {number}: not UTF-8 (byte 0x{raw[error.start]:02x} at column {error.start + 1}). "
                        "Convert the file to UTF-8 (e.g. iconv -f latin1 -t utf-8).") from None
                yield number, line[1:] if line.startswith(BOM) else line  # the graph's rule drops it on any line
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise DatasetError(f"{path}: the gzip file is truncated or corrupt after line {number} ({error}).") from None


def parse_line(line, reverse=False):
    """`(source, target)` of one line, or None when it has fewer than two non-empty columns.

    The same rule as the streamed pipeline's in-graph `parse_lines` below
    (tests/test_data.py checks that they agree): ASCII whitespace stripped,
    as `tf.strings.strip` does — Python's `str.strip` would also strip the
    no-break spaces French puts before "?", and then the held-out hash of
    a sentence would differ between the scan and the stream.
    """
    columns = line.rstrip("\n").rstrip("\r").split("\t")
    if len(columns) < 2 or not columns[0].strip(ASCII_SPACE) or not columns[1].strip(ASCII_SPACE):
        return None
    source, target = columns[0].strip(ASCII_SPACE), columns[1].strip(ASCII_SPACE)
    return (target, source) if reverse else (source, target)


def parse_lines(lines, reverse=False):
    """`(sources, targets, ok)` of a batch of TSV lines, in the graph (the stream's parser): `parse_line`'s rule."""
    import tensorflow as tf

    lines = tf.strings.regex_replace(tf.strings.regex_replace(lines, "\r$", ""), "^\ufeff", "")  # CRLF, a byte-order mark
    columns = tf.strings.split(lines, "\t")
    padded = columns[:, :2].to_tensor("")  # a line without a tab has one column: pad it to two
    padded = tf.pad(padded, [[0, 0], [0, 2 - tf.shape(padded)[1]]])
    first, second = tf.strings.strip(padded[:, 0]), tf.strings.strip(padded[:, 1])
    ok = (tf.strings.length(first) > 0) & (tf.strings.length(second) > 0)
    return (second, first, ok) if reverse else (first, second, ok)


def iter_pairs(path, reverse=False, malformed=None):
    """Yields the pairs of one file, streamed; numbers of malformed lines are appended to `malformed`."""
    for number, line in read_lines(path):
        if not line.strip():
            continue
        pair = parse_line(line, reverse)
        if pair is None:
            if malformed is not None:
                malformed.append(number)
            continue
        yield pair


def check_malformed(path, good, malformed, max_reported=10):
    """Raises `DatasetError` for an empty file, or one with no pair or more than 1 % malformed lines."""
    if not good and not malformed:
        raise DatasetError(f"Dataset file is empty: {path}")
    total = good + len(malformed)
    if not good or len(malformed) > 0.01 * total:
        raise DatasetError(
            f"{path}: {len(malformed)} of {total} lines are not `source<TAB>target` "
            f"(lines {shown_lines(malformed, max_reported)}). Is this a tab-separated file of pairs?"
        )


def shown_lines(numbers, max_reported=10):
    return ", ".join(map(str, numbers[:max_reported])) + (" …" if len(numbers) > max_reported else "")


def corpus_files(spec):
    """The shard files `--dataset` names: a file, a directory of `.tsv`/`.tsv.gz` files, or a quoted glob.

    Raises:
        DatasetError: nothing matches, naming `spec`.
    """
    if os.path.isdir(spec):
        files = [os.path.join(spec, name) for name in os.listdir(spec) if name.endswith((".tsv", ".tsv.gz"))]
        where = f"the directory {spec} holds no .tsv or .tsv.gz file"
    elif glob.has_magic(spec):
        files = [path for path in glob.glob(spec) if os.path.isfile(path)]
        where = f"no file matches the pattern {spec!r}"
    else:
        files = [spec] if os.path.isfile(spec) else []
        where = f"Dataset file not found: {spec}"
    if not files:
        raise DatasetError(where[0].upper() + where[1:])
    return sorted(files)


def is_small(files):
    """One plain file small enough for `load`'s in-memory splits."""
    return len(files) == 1 and not files[0].endswith(".gz") and os.path.getsize(files[0]) <= IN_MEMORY_BYTES


def hash_buckets(sources):
    """Each source's bucket of `HASH_BUCKETS`, by TensorFlow's fingerprint: the same op the stream runs."""
    import tensorflow as tf  # here: the rest of this module reads files without TensorFlow

    return tf.strings.to_hash_bucket_fast(tf.constant(sources, tf.string), HASH_BUCKETS).numpy().tolist()


def held_out_split(bucket):
    """The split a source sentence's hash bucket puts it in when that split is carved: "test", "validation" or "train"."""
    return "test" if bucket < TEST_BUCKETS else "validation" if bucket < HELD_OUT_BUCKETS else "train"


def trained_on_graph(sources, carved):
    """`held_out_split`'s rule in the graph, as the stream filters a batch: True where a source is trained on.

    A source is trained on unless its bucket's split is one of `carved`
    (`tests/test_data.py` holds the two forms to the same answers).
    """
    import tensorflow as tf

    bucket = tf.strings.to_hash_bucket_fast(sources, HASH_BUCKETS)
    trained = tf.ones_like(bucket, tf.bool)
    if "test" in carved:
        trained &= bucket >= TEST_BUCKETS
    if "validation" in carved:
        trained &= (bucket < TEST_BUCKETS) | (bucket >= HELD_OUT_BUCKETS)
    return trained


def scan(files, reverse=False, validation_size=500, test_size=1000, sample_size=1_000_000, carve=("validation", "test"),
         seed=0, chunk=8192, log=print):
    """One pass over a streamed corpus in bounded memory: counts, checks, held-out sets, tokenizer sample.

    Every file is read once, line by line. Each is checked as `read_pairs`
    checks one (malformed lines named per file; more than 1 % is an error
    naming the file). Held-out pairs are those of `HASH_BUCKETS`' rule
    (module docstring), kept up to `validation_size` / `test_size` for the
    splits named in `carve`; a split not carved (given as its own file)
    leaves its buckets to training.
    Training pairs are sampled uniformly, `sample_size` of them, with a
    seeded reservoir (Algorithm R); memory holds only the sample and the
    held-out sets, whatever the corpus size.

    Returns:
        dict: `"train_pairs"` (training pairs in the corpus), `"lines"`,
        `"malformed"` (per file), `"validation"` / `"test"` (sources,
        targets) lists for the carved splits, `"sample"` (sources, targets).
    """
    rng = random.Random(seed)
    sample, train_pairs, lines = [], 0, 0
    held_out = {"test": [], "validation": []}
    wanted = {"test": test_size if "test" in carve else 0, "validation": validation_size if "validation" in carve else 0}
    malformed_by_file = {}

    def route(pairs):
        nonlocal train_pairs
        for pair, bucket in zip(pairs, hash_buckets([source for source, _ in pairs])):
            split = held_out_split(bucket)
            if split in carve:
                if len(held_out[split]) < wanted[split]:
                    held_out[split].append(pair)
                continue
            train_pairs += 1
            if len(sample) < sample_size:
                sample.append(pair)
            else:
                slot = rng.randrange(train_pairs)
                if slot < sample_size:
                    sample[slot] = pair

    for path in files:
        malformed, good, pending = [], 0, []
        for pair in iter_pairs(path, reverse, malformed):
            good += 1
            pending.append(pair)
            if len(pending) == chunk:
                route(pending)
                pending = []
        route(pending)
        check_malformed(path, good, malformed)
        lines += good + len(malformed)
        if malformed:
            malformed_by_file[path] = len(malformed)
            log(f"Skipped {len(malformed)} malformed line(s) of {path}: {shown_lines(malformed)}")
    if not train_pairs:
        raise DatasetError(f"{', '.join(files)}: no training pairs left after the held-out sets.")

    def columns(pairs):
        return [s for s, _ in pairs], [t for _, t in pairs]

    return {
        "train_pairs": train_pairs, "lines": lines, "malformed": malformed_by_file, "carved": list(carve),
        **{split: columns(held_out[split]) for split in carve}, "sample": columns(sample),
    }


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
