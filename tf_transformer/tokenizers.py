"""In-graph, reversible tokenizers, learned from training data (needs TensorFlow).

Both tokenizers are `tf.Module`s whose `tokenize` and `detokenize` are
TensorFlow ops, so an exported SavedModel carries them: raw text in, text
out. Ids 0–3 are reserved everywhere: 0 padding, 1 start, 2 end, 3 unknown.

* `CharacterTokenizer`: one id per Unicode character, in core TensorFlow ops
  only (`tf.strings.unicode_decode`/`unicode_encode`, a hash table), so a
  stock TF Serving binary runs it. `detokenize(tokenize(s)) == s` for any
  text made of characters seen in training (without `fold`). With
  `fold=True` it first applies `fold_text` (the dates model's source side),
  so trivial variants of one input become the same ids.
* `SentencePieceTokenizer`: subwords learned with the `sentencepiece`
  library, run in the graph by tensorflow-text's `SentencepieceOp` (a
  serving binary must have tensorflow-text's ops). Byte fallback makes every
  string encodable; `detokenize(tokenize(s)) == s` for NFKC-normalised text
  with single spaces (what SentencePiece's default normaliser produces).
"""

import json
import os
import zlib

import tensorflow as tf

from tf_transformer.special_tokens import END, NUM_RESERVED, PAD, START, UNK  # noqa: F401  re-exported
_UNKNOWN_CHARACTER = "\ufffd"


def fold_text(strings):
    """Folds away what does not change a date's reading, in core TensorFlow ops.

    Invalid UTF-8 becomes U+FFFD; then lower case (Unicode), commas and
    dots that end a word ("sept.", "25th.") dropped, every run of white
    space (including no-break spaces) one space, no space at either end.
    Dots between digits ("25.06.09") stay.

    >>> [t.decode() for t in fold_text(tf.constant(["  Tuesday,  JUNE 25, 2009 ", "25 sept.\u00a02009"])).numpy()]
    ['tuesday june 25 2009', '25 sept 2009']
    """
    strings = tf.strings.unicode_transcode(strings, "UTF-8", "UTF-8", errors="replace")
    strings = tf.strings.lower(strings, encoding="utf-8")
    strings = tf.strings.regex_replace(strings, ",", " ")
    strings = tf.strings.regex_replace(strings, r"\.(?:[\s\p{Zs}]+|$)", " ")
    strings = tf.strings.regex_replace(strings, r"[\s\p{Zs}]+", " ")
    return tf.strings.strip(strings)


def _as_ragged(ids):
    ids = tf.cast(ids, tf.int32)
    if not isinstance(ids, tf.RaggedTensor):
        ids = tf.RaggedTensor.from_tensor(ids)
    # Padding, start and end carry no text.
    return tf.ragged.boolean_mask(ids, ids >= UNK)


class CharacterTokenizer(tf.Module):
    """One id per character of the training data (plus the reserved ids).

    Args:
        characters: the vocabulary, a list of single characters; character
            `characters[i]` gets id `i + 4`.
        fold: apply `fold_text` before tokenizing (and learn the
            vocabulary from folded text).

    Example:

    >>> tokenizer = CharacterTokenizer.train(["25 juin 2009", "2009-06-25"])
    >>> ids = tokenizer.tokenize(tf.constant(["25 juin"]))
    >>> tokenizer.detokenize(ids).numpy().tolist()
    [b'25 juin']
    """

    kind = "character"

    def __init__(self, characters, fold=False, name=None):
        super().__init__(name=name)
        self.fold = bool(fold)
        characters = list(characters)
        if any(len(c) != 1 for c in characters) or len(set(characters)) != len(characters):
            raise ValueError("`characters` must be distinct single characters.")
        self.characters = characters
        codepoints = tf.constant([ord(c) for c in characters], tf.int64)
        ids = tf.range(NUM_RESERVED, NUM_RESERVED + len(characters), dtype=tf.int64)
        self._to_id = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(codepoints, ids), default_value=UNK)
        # id → codepoint; the reserved ids map to the replacement character.
        self._to_codepoint = tf.constant([ord(_UNKNOWN_CHARACTER)] * NUM_RESERVED + [ord(c) for c in characters], tf.int32)

    @classmethod
    def train(cls, texts, max_characters=None, fold=False):
        """The characters of `texts` (folded with `fold`), most frequent first (ties by codepoint)."""
        if fold:
            texts = [t.decode("utf-8") for t in fold_text(tf.constant(list(texts), tf.string)).numpy()]
        counts = {}
        for text in texts:
            for character in text:
                counts[character] = counts.get(character, 0) + 1
        ranked = sorted(counts, key=lambda c: (-counts[c], ord(c)))
        return cls(ranked[:max_characters] if max_characters else ranked, fold=fold)

    @property
    def vocab_size(self):
        return NUM_RESERVED + len(self.characters)

    def tokenize(self, strings):
        """tf.string `[N]` → int32 RaggedTensor `[N, (length)]`, no start/end ids."""
        if self.fold:
            strings = fold_text(strings)
        codepoints = tf.strings.unicode_decode(strings, "UTF-8", errors="replace")
        return tf.cast(self._to_id.lookup(tf.cast(codepoints, tf.int64)), tf.int32)

    def detokenize(self, ids):
        """int ids `[N, L]` (dense or ragged) → tf.string `[N]`; ids 0–2 are dropped."""
        codepoints = tf.gather(self._to_codepoint, _as_ragged(ids))
        return tf.strings.unicode_encode(codepoints, "UTF-8")

    def id_to_token(self, ids):
        return [self.characters[i - NUM_RESERVED] if i >= NUM_RESERVED else ["<pad>", "<s>", "</s>", "<unk>"][i] for i in ids]

    def save(self, path):
        with open(path, "w", encoding="utf-8") as file:
            json.dump({"kind": self.kind, "characters": self.characters, "fold": self.fold}, file, ensure_ascii=False)

    @classmethod
    def from_file(cls, path):
        with open(path, encoding="utf-8") as file:
            saved = json.load(file)
        return cls(saved["characters"], fold=saved.get("fold", False))


class SentencePieceTokenizer(tf.Module):
    """Subword tokenizer learned with SentencePiece, run by tensorflow-text.

    Set seeds (`keras.utils.set_random_seed`) before creating one: in eager
    mode, setting a seed clears TensorFlow's kernel cache, which holds the
    SentencePiece model resource, and a live tokenizer then fails with
    "Resource … SentencepieceResource does not exist".

    Args:
        model_proto: the serialized SentencePiece model (bytes), trained with
            pad/start/end/unknown at ids 0/1/2/3 (as `train` does).
        nbest_size: `tokenize` samples each sentence's segmentation from its
            `nbest_size` best (subword regularization, Kudo 2018; -1: from
            all of them) instead of taking the best; 0 or 1: no sampling.
            For training only: `sampled` makes one; `save` keeps the model,
            not the sampling, so a reloaded or exported tokenizer is
            deterministic.
        alpha: the smoothing of the sampled segmentations' probabilities
            (small: closer to uniform).

    Example:

    >>> texts = ["Je t'aime.", "Où est la gare ?", "Il fait beau aujourd'hui.", "Nous avons besoin d'aide."] * 20
    >>> tokenizer = SentencePieceTokenizer.train(texts, vocab_size=300)  # 256 byte pieces: any string encodes
    >>> ids = tokenizer.tokenize(tf.constant(["Où est la gare ?"]))
    >>> tokenizer.detokenize(ids).numpy().tolist()
    [b'O\xc3\xb9 est la gare ?']
    """

    kind = "sentencepiece"

    def __init__(self, model_proto, name=None, nbest_size=0, alpha=1.0):
        super().__init__(name=name)
        import tensorflow_text  # imported here: only subword tokenizers need its ops

        self.model_proto = model_proto
        # The op's name says which model it holds. Why: the op keeps its
        # model in a kernel-owned resource, and a reloaded SavedModel gives
        # two `SentencepieceOp`s of the same node name one resource — the
        # second tokenizer then silently runs the first one's model. A name
        # from the model's bytes keeps two models apart and lets one model
        # used twice (a shared vocabulary) share its resource.
        name = f"sentencepiece_{zlib.crc32(model_proto):08x}"
        self.nbest_size, self.alpha = int(nbest_size), float(alpha)
        self._tokenizer = tensorflow_text.SentencepieceTokenizer(model=model_proto, out_type=tf.int32, name=name,
                                                                 nbest_size=self.nbest_size, alpha=self.alpha)

    def sampled(self, nbest_size, alpha):
        """This vocabulary with segmentations sampled at every `tokenize` call (see the class's `nbest_size`).

        The same text gets different pieces from call to call, so a model
        trained on them learns what a rare word's pieces mean in several
        splits rather than one (Kudo 2018: better rare-word and
        out-of-domain translation). Not seeded: SentencePiece's sampler
        has its own generator.
        """
        if nbest_size == 0 or not 0 < alpha:
            raise ValueError(f"Subword sampling needs nbest_size != 0 and alpha > 0, got {nbest_size} and {alpha}.")
        return SentencePieceTokenizer(self.model_proto, nbest_size=nbest_size, alpha=alpha)

    @classmethod
    def train(cls, texts, vocab_size, model_type="unigram"):
        """Learns a vocabulary of `vocab_size` pieces from `texts` with `sentencepiece`."""
        import io

        import sentencepiece

        proto = io.BytesIO()
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=iter(texts),
            model_writer=proto,
            vocab_size=vocab_size,
            model_type=model_type,
            pad_id=PAD,
            bos_id=START,
            eos_id=END,
            unk_id=UNK,
            byte_fallback=True,  # any character can be written: nothing is lost
            character_coverage=1.0,
            hard_vocab_limit=False,  # small corpora may not have vocab_size pieces
            num_threads=os.cpu_count() or 1,
            minloglevel=2,
        )
        return cls(proto.getvalue())

    @property
    def vocab_size(self):
        return int(self._tokenizer.vocab_size())

    def tokenize(self, strings):
        return self._tokenizer.tokenize(strings)

    def detokenize(self, ids):
        return self._tokenizer.detokenize(_as_ragged(ids))

    def id_to_token(self, ids):
        return [t.decode("utf-8") for t in self._tokenizer.id_to_string(tf.constant(list(ids), tf.int32)).numpy()]

    def save(self, path):
        with open(path, "wb") as file:
            file.write(self.model_proto)

    @classmethod
    def from_file(cls, path):
        with open(path, "rb") as file:
            return cls(file.read())


_KINDS = {"character": (CharacterTokenizer, "json"), "sentencepiece": (SentencePieceTokenizer, "model")}


def save_tokenizers(directory, source, target):
    """Writes both tokenizers and an index `tokenizers.json` into `directory`.

    Example:

    >>> import tempfile
    >>> source, target = CharacterTokenizer.train(["25 juin 2009"]), CharacterTokenizer.train(["2009-06-25"])
    >>> directory = tempfile.mkdtemp()
    >>> save_tokenizers(directory, source, target)
    >>> [t.vocab_size for t in load_tokenizers(directory)] == [source.vocab_size, target.vocab_size]
    True
    """
    os.makedirs(directory, exist_ok=True)
    index = {}
    for role, tokenizer in (("source", source), ("target", target)):
        _, extension = _KINDS[tokenizer.kind]
        filename = f"{role}_tokenizer.{extension}"
        tokenizer.save(os.path.join(directory, filename))
        index[role] = {"kind": tokenizer.kind, "file": filename}
    with open(os.path.join(directory, "tokenizers.json"), "w") as file:
        json.dump(index, file, indent=2)


def load_tokenizers(directory):
    """The `(source, target)` tokenizers saved by `save_tokenizers`."""
    path = os.path.join(directory, "tokenizers.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"No tokenizers in {directory}: {path} is missing.")
    with open(path) as file:
        index = json.load(file)
    loaded = []
    for role in ("source", "target"):
        cls, _ = _KINDS[index[role]["kind"]]
        loaded.append(cls.from_file(os.path.join(directory, index[role]["file"])))
    return tuple(loaded)
