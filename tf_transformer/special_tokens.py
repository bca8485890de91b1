"""The reserved token ids, the same in every tokenizer, mask, loss and decoder (no TensorFlow needed).

Example:

>>> PAD, START, END, UNK
(0, 1, 2, 3)
"""

PAD = 0  # padding: masked everywhere, never generated
START = 1  # first token of every decoder input
END = 2  # ends an output
UNK = 3  # a character or piece the tokenizer does not know
NUM_RESERVED = 4  # learned ids start here
