"""Small tokenizers of the real families' kinds, trained on a dataset's own text, and tiny models that use them.

* `gpt2`: byte-level BPE, no BOS added, `<|endoftext|>` as EOS (and BOS, UNK), no pad token;
* `pythia`: the same with NFC and a `<|padding|>` pad token (GPT-NeoX's tokenizer);
* `llama3`: byte-level BPE after Llama-3's split regex (digits in groups of 1–3), `<|begin_of_text|>`
  added by a template post-processor, `<|end_of_text|>` as EOS, no pad token;
* `sentencepiece`: Metaspace BPE (Llama-2 style, `<s>` added, `</s>` EOS), trained with punctuation and
  digits split off as SentencePiece's script and digit splitting do.

Each is saved with the `tokenizer_class` its real model directories name, so loading goes through the
same transformers class a real Llama / Pythia / GPT-2 directory does. `merging` is the counter-example:
a BPE trained on whitespace-split words, so a value and the period after it ("Madrid.") are one token.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    PreTrainedTokenizerFast,
)

from factrecall.data.dataset import load_dataset

FAMILIES = ("gpt2", "pythia", "llama3", "sentencepiece")
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
VOCAB = 500  # alphabet + merges: some words of the data split into several tokens ("held" → "Ġhe" "ld")

# per family: specials (in id order), tokenizer_config.json entries of its real model directories, model config
SPECIALS = {
    "gpt2": ["<|endoftext|>"],
    "pythia": ["<|endoftext|>", "<|padding|>"],
    "llama3": ["<|begin_of_text|>", "<|end_of_text|>"],
    "sentencepiece": ["<unk>", "<s>", "</s>"],
    "merging": ["<s>", "</s>"],
}
TOKENIZER_CONFIG = {
    "gpt2": {"tokenizer_class": "GPT2Tokenizer", "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
             "unk_token": "<|endoftext|>", "add_prefix_space": False},
    "pythia": {"tokenizer_class": "GPTNeoXTokenizer", "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
               "unk_token": "<|endoftext|>", "add_prefix_space": False},
    "llama3": {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|begin_of_text|>",
               "eos_token": "<|end_of_text|>"},
    "sentencepiece": {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>",
                      "unk_token": "<unk>", "add_bos_token": True, "add_eos_token": False, "legacy": False},
    "merging": {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>"},
}
CONFIG = {
    "gpt2": (GPT2Config, dict(n_embd=64, n_inner=128, n_layer=2, n_head=4, n_positions=256,
                              resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)),
    "pythia": (GPTNeoXConfig, dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                   rotary_pct=0.25, max_position_embeddings=256, use_parallel_residual=True,
                                   attention_dropout=0.0, hidden_dropout=0.0, tie_word_embeddings=False)),
    "llama3": (LlamaConfig, dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                 num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True)),
}
CONFIG["sentencepiece"] = CONFIG["merging"] = CONFIG["llama3"]


def dataset_texts(data_dir: Path) -> list[str]:
    """Every bio and question-with-answer text of the dataset."""
    dataset = load_dataset(data_dir)
    return [b["text"] for b in dataset.bios] + [q["text"] for q in dataset.qa]


def train_tokenizer(family: str, texts: list[str]) -> Tokenizer:
    """A `tokenizers.Tokenizer` of `family`'s kind trained on `texts`."""
    specials = SPECIALS[family]
    tok = Tokenizer(models.BPE())
    alphabet = []
    if family in ("gpt2", "pythia", "llama3"):
        if family == "llama3":
            tok.pre_tokenizer = pre_tokenizers.Sequence([
                pre_tokenizers.Split(Regex(LLAMA3_SPLIT), "isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        else:
            tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        if family == "pythia":
            tok.normalizer = normalizers.NFC()
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    elif family == "sentencepiece":
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Metaspace(prepend_scheme="first"), pre_tokenizers.Punctuation(),
            pre_tokenizers.Digits(individual_digits=True)])
        tok.decoder = decoders.Metaspace(prepend_scheme="first")
    else:  # merging: whole whitespace-separated words, punctuation included, become tokens
        tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        tok.decoder = decoders.WordPiece(prefix="##")  # joins tokens with spaces
    vocab = VOCAB if family != "merging" else 100_000
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab, special_tokens=specials,
                                                       initial_alphabet=alphabet, show_progress=False))
    ids = {s: tok.token_to_id(s) for s in specials}
    if family in ("gpt2", "pythia"):
        tok.post_processor = processors.ByteLevel(trim_offsets=family == "pythia")
    elif family == "llama3":
        tok.post_processor = processors.Sequence([
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A $B",
                                          special_tokens=[("<|begin_of_text|>", ids["<|begin_of_text|>"])])])
    else:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B",
                                                           special_tokens=[("<s>", ids["<s>"])])
    return tok


def as_trained(family: str, tok: Tokenizer) -> PreTrainedTokenizerFast:
    """`tok` exactly as its tokenizer.json says (as transformers 4 loads it): GPT-NeoX's offsets trimmed of spaces."""
    return PreTrainedTokenizerFast(tokenizer_object=tok, **{k: v for k, v in TOKENIZER_CONFIG[family].items()
                                                            if k.endswith("_token")})


def save_tokenizer(family: str, tok: Tokenizer, out: Path):
    """Save `tok` as its family's model directories hold it; returns the tokenizer transformers loads back."""
    as_trained(family, tok).save_pretrained(out)
    path = Path(out) / "tokenizer_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **TOKENIZER_CONFIG[family]}, indent=2))
    return AutoTokenizer.from_pretrained(out, local_files_only=True)


def model_dir(family: str, data_dir: Path, out: Path, seed: int = 0) -> Path:
    """A tiny randomly initialised model of `family` with its tokenizer, trained on the data's text, in `out`."""
    tokenizer = save_tokenizer(family, train_tokenizer(family, dataset_texts(data_dir)), out)
    config_class, kwargs = CONFIG[family]
    config = config_class(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                          eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **kwargs)
    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(config).save_pretrained(out)
    return Path(out)
