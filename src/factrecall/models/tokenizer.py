"""A word-level tokenizer for the tiny presets, built from the generator's vocabulary.

Words are split like `\\w+|[^\\w\\s]+`; the vocabulary is every word of the dataset's
`vocabulary.txt` (pools, templates, numbers), so every population drawn from the same pools
shares one tokenizer. Like Llama's, it prepends a BOS token; EOS is appended by the caller.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = {"pad": "[PAD]", "unk": "[UNK]", "bos": "[BOS]", "eos": "[EOS]"}


def word_tokenizer(fragments: Iterable[str]) -> PreTrainedTokenizerFast:
    pre = pre_tokenizers.Whitespace()
    words = sorted({w for text in fragments for w, _ in pre.pre_tokenize_str(text)})
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS.values())}
    for w in words:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL_TOKENS["unk"]))
    tok.pre_tokenizer = pre
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    bos = SPECIAL_TOKENS["bos"]
    tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, vocab[bos])])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=SPECIAL_TOKENS["pad"], unk_token=SPECIAL_TOKENS["unk"],
        bos_token=SPECIAL_TOKENS["bos"], eos_token=SPECIAL_TOKENS["eos"],
    )


def first_uncovered_word(tokenizer: PreTrainedTokenizerFast, texts: Iterable[str]) -> str | None:
    """The first word of `texts` the tokenizer maps to its unknown token, or None."""
    unk = tokenizer.unk_token_id
    if unk is None:
        return None
    for text in texts:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        for token_id, (start, end) in zip(enc["input_ids"], enc["offset_mapping"]):
            if token_id == unk:
                return text[start:end]
    return None
