"""LRA / S4 ListOps tokenisation: ``]`` becomes ``X``, parentheses are dropped, spaces split.

The closing bracket must survive as a token: tokenisers that strip it make the task
unsolvable (a known LRA bug), since argument lists can no longer be told apart.
"""

from __future__ import annotations

from collections.abc import Iterable

SPECIALS = ("<pad>", "<unk>", "<eos>")
# Fixed order (S4 orders by corpus frequency, which differs between data sets).
SYMBOLS = (*(str(digit) for digit in range(10)), "[MAX", "[MIN", "[MED", "[SM", "X")
VOCAB = SPECIALS + SYMBOLS


def source_to_symbols(source: str) -> list[str]:
    """LRA's transformation of a Source string into symbols, before the vocabulary lookup."""
    return source.replace("]", "X").replace("(", "").replace(")", "").split()


class ListOpsTokenizer:
    """Maps ListOps sources to ids in ``VOCAB`` (size 18): pad 0, unk 1, eos 2, symbols 3..17.

    ``<unk>`` is kept for S4's vocabulary size but never emitted: input that is not ListOps
    raises instead of silently becoming unknown tokens.
    """

    pad_id = 0
    unk_id = 1
    eos_id = 2

    def __init__(self) -> None:
        self._ids = {symbol: index for index, symbol in enumerate(VOCAB)}

    @property
    def vocab_size(self) -> int:
        return len(VOCAB)

    def encode(
        self, source: str, append_eos: bool = True, max_length: int | None = None
    ) -> list[int]:
        """Ids of a Source string, with EOS appended as S4 does.

        ``max_length`` truncates to at most that many ids; with ``append_eos`` the first
        ``max_length - 1`` symbols are kept and EOS still ends the sequence.
        """
        if max_length is not None and max_length < 1:
            raise ValueError(f"max_length must be at least 1, got {max_length}")
        ids = []
        for position, symbol in enumerate(source_to_symbols(source)):
            index = self._ids.get(symbol)
            if index is None or index < len(SPECIALS):
                raise ValueError(
                    f"unknown ListOps symbol {symbol!r} at position {position}; "
                    f"expected one of {' '.join(SYMBOLS)}"
                )
            ids.append(index)
        if max_length is not None:
            ids = ids[: max_length - 1 if append_eos else max_length]
        if append_eos:
            ids.append(self.eos_id)
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Space-separated symbols (``X`` for ``]``), no padding or EOS; encode() inverts it."""
        symbols = []
        for index in ids:
            if not 0 <= index < len(VOCAB):
                raise ValueError(f"id {index} is outside the vocabulary 0..{len(VOCAB) - 1}")
            if index not in (self.pad_id, self.eos_id):
                symbols.append(VOCAB[index])
        return " ".join(symbols)
