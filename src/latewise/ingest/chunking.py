"""Tokenizer-aware chunking: split text into pieces an encoder reads whole.

:class:`TokenChunker` tokenises a text once with the encoder's own (fast) tokenizer, using its
character offsets, and cuts it into chunks of at most ``chunk_size`` tokens with ``chunk_overlap``
tokens of overlap. Cuts fall on the best boundary in the second part of each window: a paragraph
break, then a sentence end, a line break, a space, and only if there is none, between two tokens.
Every token that carries text is in some chunk, so the encoder silently truncates nothing, and
each chunk is re-counted on its own text, so the limit holds as the encoder will count it.
Whitespace-only tokens (byte-level BPE) may be left out of chunks.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from latewise.errors import InvalidInputError, InvalidInputTypeError, check_list

logger = logging.getLogger(__name__)

__all__ = ["TextChunk", "TokenChunker"]

# Cut priorities: the cut before token i (between token i-1 and token i).
_SHARED = -1  # the two tokens share a character (e.g. byte pieces of one emoji): never cut there
_INSIDE = 0  # no gap between the tokens (inside a word, or text without spaces)
_SPACE = 1
_LINE = 2
_SENTENCE = 3
_PARAGRAPH = 4
_SENTENCE_END = frozenset(".!?…")
_CJK_SENTENCE_END = frozenset("。！？")
_CLOSERS = frozenset("\"')]}”’»")


@dataclass(frozen=True)
class TextChunk:
    """One chunk of a text.

    Attributes:
        text: the chunk's text, ``source[start:end]``.
        start: the character offset of the chunk's first character in the source text.
        end: the character offset just past the chunk's last character.
        n_tokens: how many tokens the tokenizer gives ``text`` on its own, without special
            tokens: what the encoder will read. At most the chunker's ``chunk_size``, with one
            exception logged as a warning: with a tiny ``chunk_size``, a chunk that cannot be
            cut smaller (one token, or one character that takes several byte-level tokens) can
            have more.
        index: the chunk's position in the text's chunk list.
        token_start: the index of the chunk's first token in the whole text's tokenization.
        token_end: one past the index of its last token there.
    """

    text: str
    start: int
    end: int
    n_tokens: int
    index: int
    token_start: int
    token_end: int


def _strip_span(text: str, start: int, end: int) -> tuple[int, int]:
    """Narrow ``[start, end)`` to leave out leading and trailing whitespace (byte-level BPE
    tokens carry the space before a word in their offsets)."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _backend_of(tokenizer: Any) -> Any:
    """A private copy of the Rust tokenizer behind ``tokenizer``, with truncation and padding
    off (a tokenizer.json often carries them, and transformers leaves them set on the shared
    backend after a call)."""
    try:
        from tokenizers import Tokenizer
    except ImportError as exc:  # pragma: no cover - tokenizers is a core dependency
        raise InvalidInputTypeError(
            "TokenChunker needs the 'tokenizers' package: pip install tokenizers"
        ) from exc
    backend: Any = tokenizer
    if not isinstance(backend, Tokenizer):
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if not isinstance(backend, Tokenizer):
            raise InvalidInputTypeError(
                f"TokenChunker needs a fast (Rust-backed) Hugging Face tokenizer or a "
                f"tokenizers.Tokenizer, got {type(tokenizer).__name__}; load it with "
                "AutoTokenizer.from_pretrained(..., use_fast=True)"
            )
    copy = Tokenizer.from_str(backend.to_str())
    copy.no_truncation()
    copy.no_padding()
    return copy


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputTypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < minimum:
        raise InvalidInputError(f"{name} must be at least {minimum}, got {value}")
    return value


class TokenChunker:
    """Split texts into chunks of at most ``chunk_size`` tokens, with overlap, covering every token.

    Args:
        tokenizer: a fast Hugging Face tokenizer (``encoder.tokenizer``) or a
            ``tokenizers.Tokenizer``. A private copy of its Rust backend is used, so the
            chunker neither changes the tokenizer nor is changed by it.
        chunk_size: the most tokens (without special tokens) a chunk may hold; use the encoder's
            ``max_document_tokens`` (see :meth:`from_encoder`).
        chunk_overlap: how many tokens at most consecutive chunks share (``None``:
            ``chunk_size // 8``); must be smaller than ``chunk_size``. The next chunk starts at
            the first word boundary inside the overlap, so the actual overlap can be smaller.
        min_fill: a chunk holds at least this fraction of ``chunk_size`` tokens (unless the
            text ends first); the cut is sought between that point and ``chunk_size``.

    Raises:
        InvalidInputTypeError: the tokenizer is not a fast tokenizer, or an argument has the
            wrong type.
        InvalidInputError: ``chunk_size < 1``, ``chunk_overlap`` negative or not smaller than
            ``chunk_size``, or ``min_fill`` outside ``(0, 1]``.

    Example:
        ::

            chunker = TokenChunker.from_encoder(encoder)
            for chunk in chunker.split_text(long_text):
                print(chunk.start, chunk.end, chunk.n_tokens)
    """

    def __init__(
        self,
        tokenizer: Any,
        chunk_size: int,
        chunk_overlap: int | None = None,
        *,
        min_fill: float = 0.5,
    ) -> None:
        self.chunk_size = _check_int("chunk_size", chunk_size, 1)
        overlap = chunk_size // 8 if chunk_overlap is None else chunk_overlap
        self.chunk_overlap = _check_int("chunk_overlap", overlap, 0)
        if self.chunk_overlap >= self.chunk_size:
            raise InvalidInputError(
                f"chunk_overlap ({self.chunk_overlap}) must be smaller than chunk_size "
                f"({self.chunk_size}); a common choice is chunk_size // 8"
            )
        if isinstance(min_fill, bool) or not isinstance(min_fill, int | float):
            raise InvalidInputTypeError(f"min_fill must be a number, got {type(min_fill).__name__}")
        if not 0.0 < float(min_fill) <= 1.0:
            raise InvalidInputError(f"min_fill must be in (0, 1], got {min_fill}")
        self.min_fill = float(min_fill)
        self.tokenizer = tokenizer
        self._backend = _backend_of(tokenizer)

    @classmethod
    def from_encoder(
        cls,
        encoder: Any,
        *,
        chunk_size: int | None = None,
        chunk_overlap: int | None = None,
        min_fill: float = 0.5,
    ) -> TokenChunker:
        """A chunker with the encoder's tokenizer, cutting to what the encoder reads.

        Args:
            encoder: a latewise text encoder (it has ``.tokenizer`` and ``.max_document_tokens``).
            chunk_size: at most ``encoder.max_document_tokens`` (the default); required when
                the encoder has no limit.
            chunk_overlap: see the class; ``None`` is ``chunk_size // 8``.
            min_fill: see the class.

        Raises:
            InvalidInputError: the encoder has no tokenizer (an image encoder), or ``chunk_size``
                is missing or larger than the encoder reads.
        """
        tokenizer = getattr(encoder, "tokenizer", None)
        name = type(encoder).__name__
        if tokenizer is None:
            raise InvalidInputError(
                f"{name} has no text tokenizer, so its documents cannot be chunked by tokens"
            )
        limit = getattr(encoder, "max_document_tokens", None)
        if chunk_size is None:
            if limit is None:
                raise InvalidInputError(
                    f"{name} has no document length limit (max_document_tokens is None); "
                    "pass chunk_size="
                )
            chunk_size = int(limit)
        elif limit is not None and chunk_size > limit:
            raise InvalidInputError(
                f"chunk_size ({chunk_size}) is larger than the {limit} tokens {name} reads; "
                "the encoder would truncate every full chunk"
            )
        return cls(tokenizer, chunk_size, chunk_overlap, min_fill=min_fill)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(chunk_size={self.chunk_size}, "
            f"chunk_overlap={self.chunk_overlap}, min_fill={self.min_fill})"
        )

    def count_tokens(self, text: str) -> int:
        """How many tokens ``text`` has, without special tokens."""
        return len(self._backend.encode(text, add_special_tokens=False).ids)

    def split_text(self, text: str) -> list[TextChunk]:
        """Split one text into chunks (an empty list for a text with no tokens).

        Raises:
            InvalidInputTypeError: ``text`` is not a string.
        """
        if not isinstance(text, str):
            raise InvalidInputTypeError(f"text must be a string, got {type(text).__name__}")
        if not text.strip():
            return []
        encoding = self._backend.encode(text, add_special_tokens=False)
        return self._split(text, encoding.offsets)

    def split_texts(self, texts: Sequence[str]) -> list[list[TextChunk]]:
        """Split many texts, tokenising them in one batch; one chunk list per text, in order.

        Raises:
            InvalidInputTypeError: ``texts`` is not a list of strings (the message names the
                positions at fault).
        """
        texts = check_list(texts, str, "texts", "strings")
        encodings = self._backend.encode_batch(list(texts), add_special_tokens=False)
        return [
            self._split(text, enc.offsets) if text.strip() else []
            for text, enc in zip(texts, encodings, strict=True)
        ]

    # -- the algorithm -----------------------------------------------------------------------

    @staticmethod
    def _priorities(text: str, offsets: Sequence[tuple[int, int]]) -> list[int]:
        """The quality of the cut before each token (index 0 and ``n`` are the text's ends).

        The whitespace around a cut is the gap between the two tokens plus any whitespace the
        tokens themselves carry at that edge (byte-level BPE tokens such as ``"Ġword"`` hold the
        space before a word; some tokenizers have whitespace-only tokens).
        """
        n = len(offsets)
        prio = [_PARAGRAPH] * (n + 1)
        prev_start, prev_end = offsets[0]
        for i in range(1, n):
            start, end = offsets[i]
            if start < prev_end:
                prio[i] = _SHARED
                prev_end = max(prev_end, end)
                continue
            left = prev_end
            while left > prev_start and text[left - 1].isspace():
                left -= 1
            right = start
            while right < end and text[right].isspace():
                right += 1
            last = text[left - 1] if left > 0 else ""
            if left == right:
                prio[i] = _SENTENCE if last in _CJK_SENTENCE_END else _INSIDE
            else:
                space = text[left:right]
                if last in _CLOSERS and left > 1:
                    last = text[left - 2]
                if space.count("\n") >= 2:
                    prio[i] = _PARAGRAPH
                elif last in _SENTENCE_END or last in _CJK_SENTENCE_END:
                    prio[i] = _SENTENCE
                elif "\n" in space:
                    prio[i] = _LINE
                else:
                    prio[i] = _SPACE
            prev_start, prev_end = start, end
        return prio

    def _choose_end(self, a: int, limit: int, n: int, prio: list[int]) -> int:
        """The end (exclusive token index) of the chunk that starts at token ``a``."""
        hi = min(n, a + limit)
        if hi == n:
            return n
        floor = max(self.chunk_overlap + 1, math.ceil(limit * self.min_fill))
        lo = a + max(1, min(limit, floor))
        best, best_prio = hi, prio[hi]
        for i in range(hi - 1, lo - 1, -1):
            if prio[i] > best_prio:
                best, best_prio = i, prio[i]
                if best_prio == _PARAGRAPH:
                    break
        if best_prio != _SHARED:
            return best
        # No clean cut in the window (the tokens of one character): cut at the last clean
        # place before it, else just after it, so a character is never split.
        for i in range(lo - 1, a, -1):
            if prio[i] >= _INSIDE:
                return i
        for i in range(hi + 1, n):
            if prio[i] >= _INSIDE:
                return i
        return n

    def _next_start(self, a: int, b: int, prio: list[int]) -> int:
        """Where the chunk after ``[a, b)`` starts: the first word start in the overlap."""
        if self.chunk_overlap == 0:
            return b
        lo = max(a + 1, b - self.chunk_overlap)
        for wanted in (_SPACE, _INSIDE):
            for i in range(lo, b):
                if prio[i] >= wanted:
                    return i
        return b

    def _split(self, text: str, offsets: Sequence[tuple[int, int]]) -> list[TextChunk]:
        n = len(offsets)
        if n == 0:
            return []
        prio = self._priorities(text, offsets)
        chunks: list[TextChunk] = []
        a = 0
        prev_b = 0  # where the previous chunk ended
        while True:
            limit = self.chunk_size
            while True:
                b = self._choose_end(a, limit, n, prio)
                if b <= prev_b < n and a < prev_b:
                    # Shrunk into the previous chunk: give up the overlap instead.
                    a, limit = prev_b, self.chunk_size
                    continue
                start, end = _strip_span(text, offsets[a][0], max(offsets[b - 1][1], offsets[a][0]))
                piece = text[start:end]
                count = self.count_tokens(piece)
                if count <= self.chunk_size or b - a <= 1 or len(piece) <= 1 or limit == 1:
                    break
                # The piece re-tokenises longer on its own (a cut inside a word, a BPE merge
                # across the cut): retry with a window smaller by the excess.
                limit = max(1, min(limit, b - a) - max(1, count - self.chunk_size))
            if count > self.chunk_size:
                logger.warning(
                    "chunk at characters %d-%d has %d tokens on its own, more than chunk_size=%d, "
                    "and cannot be cut smaller (one token or one character); keeping it",
                    start,
                    end,
                    count,
                    self.chunk_size,
                )
            if not piece:  # only whitespace tokens: nothing to encode
                if b >= n:
                    return chunks
                a = prev_b = b
                continue
            chunks.append(
                TextChunk(
                    text=piece,
                    start=start,
                    end=end,
                    n_tokens=count,
                    index=len(chunks),
                    token_start=a,
                    token_end=b,
                )
            )
            if b >= n:
                return chunks
            prev_b = b
            a = self._next_start(a, b, prio)
