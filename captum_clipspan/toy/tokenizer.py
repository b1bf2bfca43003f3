"""Word-level tokenizer for the toy CLIP, shaped like open_clip's tokenizers.

Token ids: ``pad=0``, ``unk=1``, the vocabulary words from 2 on, then ``sot`` and ``eot`` as the
two largest ids, so open_clip's default text pooling (``pool_type="argmax"``, which reads the
feature at ``text.argmax(-1)``) lands on the end-of-text token.

Examples::

    >>> from captum_clipspan.toy.tokenizer import WordTokenizer
    >>> tok = WordTokenizer()
    >>> ids = tok(["a red circle", "a photo of two rings"])
    >>> ids.shape
    torch.Size([2, 20])
    >>> tok.decode(ids[0])
    'a red circle'
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

__all__ = ["WordTokenizer"]

PAD, UNK, SOT, EOT = "<pad>", "<unk>", "<start_of_text>", "<end_of_text>"
_WORD = re.compile(r"[a-z]+")
_SHOWN = 8  # unknown words named in a warning


class WordTokenizer:
    """Lowercase word tokenizer with a fixed vocabulary.

    Args:
        words: vocabulary words; defaults to every word of the synthetic-scene caption grammar
            (:func:`captum_clipspan.toy.scenes.caption_vocabulary`). Duplicates are dropped.
        context_length: default number of tokens per text (``sot`` and ``eot`` included).

    Attributes:
        pad_token_id, unk_token_id, sot_token_id, eot_token_id: special token ids; ``eot`` is
            the largest id.
    """

    def __init__(self, words: Iterable[str] | None = None, context_length: int = 20) -> None:
        if words is None:
            from .scenes import caption_vocabulary

            words = caption_vocabulary()
        vocab: list[str] = []
        for w in words:
            w = w.lower()
            if not _WORD.fullmatch(w):
                raise ValueError(f"vocabulary words must be lowercase letters only, got {w!r}")
            if w not in vocab:
                vocab.append(w)
        self._words = tuple(vocab)
        self._itos = [PAD, UNK, *vocab, SOT, EOT]
        self._stoi = {w: i for i, w in enumerate(self._itos)}
        self.pad_token_id, self.unk_token_id = 0, 1
        self.sot_token_id, self.eot_token_id = len(self._itos) - 2, len(self._itos) - 1
        if context_length < 2:
            raise ValueError("context_length must be >= 2 (sot and eot)")
        self.context_length = int(context_length)

    @property
    def words(self) -> tuple[str, ...]:
        """The vocabulary words, without special tokens, in id order (ids start at 2)."""
        return self._words

    @property
    def vocab_size(self) -> int:
        """Number of token ids, special tokens included."""
        return len(self._itos)

    def encode(self, text: str) -> list[int]:
        """Ids of the words of ``text`` (no ``sot``/``eot``); unknown words map to ``unk``."""
        return [self._stoi.get(w, self.unk_token_id) for w in _WORD.findall(text.lower())]

    def __call__(
        self, texts: str | list[str], context_length: int | None = None
    ) -> torch.LongTensor:
        """Tokenize like ``open_clip.tokenize``.

        Args:
            texts: one text or a list of texts.
            context_length: tokens per row; defaults to :attr:`context_length`.

        Returns:
            LongTensor ``[T, context_length]``: ``sot``, word ids, ``eot``, zero padding. Too long
            texts are truncated, keeping ``eot`` as the last token.
        """
        if isinstance(texts, str):
            texts = [texts]
        self._warn_unknown(texts)
        length = int(context_length or self.context_length)
        out = torch.zeros(len(texts), length, dtype=torch.long)
        for i, text in enumerate(texts):
            ids = [self.sot_token_id, *self.encode(text)][: length - 1] + [self.eot_token_id]
            out[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out  # type: ignore[return-value]

    def unknown_words(self, texts: str | Sequence[str]) -> list[str]:
        """The words of ``texts`` outside the vocabulary (each once, in order of appearance);
        they all become the one ``unk`` token, so the model cannot tell them apart."""
        texts = [texts] if isinstance(texts, str) else texts
        words = (w for text in texts for w in _WORD.findall(text.lower()))
        return list(dict.fromkeys(w for w in words if w not in self._stoi))

    def _warn_unknown(self, texts: Sequence[str]) -> None:
        unknown = self.unknown_words(texts)
        if unknown:
            named = ", ".join(repr(w) for w in unknown[:_SHOWN])
            more = f" and {len(unknown) - _SHOWN} more" if len(unknown) > _SHOWN else ""
            warnings.warn(
                f"the toy tokenizer knows only the {len(self._words)} words of the synthetic "
                f"scenes' captions; {named}{more} "
                f"{'is' if len(unknown) == 1 else 'are'} not among them: every unknown word "
                f"becomes one token, so texts that differ only there get the same embedding (see "
                f"WordTokenizer().words, or use the 'toy' text bank).", UserWarning, stacklevel=3)

    def decode(self, ids: torch.Tensor | Iterable[int]) -> str:
        """Words of one token row, without special tokens (``unk`` shows as ``<unk>``)."""
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        specials = {self.pad_token_id, self.sot_token_id, self.eot_token_id}
        return " ".join(self._itos[i] for i in ids if i not in specials)

    def save(self, path: str | Path) -> Path:
        """Write the vocabulary and context length as JSON; returns the path."""
        path = Path(path)
        data = {
            "words": list(self._words),
            "context_length": self.context_length,
            "special_tokens": {PAD: 0, UNK: 1, SOT: self.sot_token_id, EOT: self.eot_token_id},
        }
        path.write_text(json.dumps(data, indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> WordTokenizer:
        """Read a tokenizer written by :meth:`save`."""
        data = json.loads(Path(path).read_text())
        return cls(data["words"], context_length=data.get("context_length", 20))

    def __repr__(self) -> str:
        return f"WordTokenizer(vocab_size={self.vocab_size}, context_length={self.context_length})"
