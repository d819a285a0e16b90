"""The evaluator against a hand-made case: a model whose next-token guesses we choose."""

import types

import pytest
import torch

from factrecall.data.dataset import load_dataset
from factrecall.encode import Encoded, pad_id
from factrecall.evaluation.exact_match import EvalSet, eval_sets, evaluate, span_hits
from factrecall.models.tiny import build_tiny_model
from factrecall.models.tokenizer import word_tokenizer

V = 12


class OracleBase(torch.nn.Module):
    """Its last hidden state after each prefix is the one-hot of `table[prefix]`, else of token 0."""

    def __init__(self, table):
        super().__init__()
        self.table = table

    def forward(self, input_ids, attention_mask):
        hidden = torch.zeros(*input_ids.shape, V)
        for b, row in enumerate(input_ids.tolist()):
            for t in range(len(row)):
                hidden[b, t, self.table.get(tuple(row[: t + 1]), 0)] = 1.0
        return types.SimpleNamespace(last_hidden_state=hidden)


class Oracle(torch.nn.Module):
    """Predicts `table[prefix]` after each prefix, else token 0 (a wrong guess everywhere here); shaped like an
    HF causal LM whose head is the identity."""

    def __init__(self, table):
        super().__init__()
        self.base_model = OracleBase(table)
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask, use_cache):
        return types.SimpleNamespace(logits=self.base_model(input_ids, attention_mask).last_hidden_state)


def test_exact_and_first_token_on_hand_made_examples():
    right = Encoded((1, 5, 6, 7, 3), ((2, 5),), loss_from=2)  # answer 6 7 then EOS 3
    wrong = Encoded((1, 5, 8, 9, 3), ((2, 5),), loss_from=2)  # the model guesses 6, not 8
    no_eos = Encoded((1, 4, 6, 3), ((2, 4),), loss_from=2)  # answer token right, EOS not
    model = Oracle({(1, 5): 6, (1, 5, 6): 7, (1, 5, 6, 7): 3, (1, 4): 6})
    hits = span_hits(model, [right, wrong, no_eos], pad=0, batch_size=2)
    assert hits == [[(True, True)], [(False, False)], [(False, True)]]
    sets = {"qa_id": EvalSet([right, wrong, no_eos], [("major",), ("major",), ("university",)])}
    result = evaluate(model, sets, pad=0)["qa_id"]
    assert result["accuracy"] == 1 / 3 and result["first_token_accuracy"] == 2 / 3
    assert result["per_attribute"]["major"]["accuracy"] == 0.5
    assert result["per_attribute"]["university"]["first_token_accuracy"] == 1.0


def test_bio_spans_scored_separately():
    bio = Encoded((1, 5, 6, 2, 7, 8, 3), ((2, 3), (4, 6)), loss_from=1)
    model = Oracle({(1, 5): 6, (1, 5, 6, 2): 7, (1, 5, 6, 2, 7): 0})
    assert span_hits(model, [bio], pad=0) == [[(True, True), (False, True)]]


def _greedy(model, e: Encoded) -> Encoded:
    """`e` with every scored token replaced by the model's greedy guess from the (already replaced) prefix."""
    ids = list(e.input_ids)
    for s, end in sorted(e.spans):  # a bio's spans come in attribute order, not text order
        for t in range(s, end):
            with torch.no_grad():
                ids[t] = int(model(input_ids=torch.tensor([ids[:t]])).logits[0, -1].argmax())
    return Encoded(tuple(ids), e.spans, e.loss_from)


@pytest.mark.parametrize("preset", ["tiny-llama", "tiny-neox", "tiny-gpt2"])
def test_scored_positions_only_equal_the_full_logits_argmax(preset, small_data):
    """The evaluator unembeds only the predicting positions: on texts whose scored tokens are the full forward's
    greedy guesses every span is right, and on the data's own texts it agrees with the full forward's argmax."""
    dataset = load_dataset(small_data)
    tokenizer = word_tokenizer(dataset.vocabulary_fragments())
    model = build_tiny_model(preset, tokenizer, seed=0).eval()
    examples = [e for s in eval_sets(tokenizer, dataset, 2).values() for e in s.examples]
    pad = pad_id(tokenizer)
    expected = []
    for e in examples:
        with torch.no_grad():
            predicted = model(input_ids=torch.tensor([e.input_ids])).logits[0].argmax(-1)
        ids = torch.tensor(e.input_ids)
        expected.append([(bool((c := predicted[s - 1:end - 1] == ids[s:end]).all()), bool(c[0])) for s, end in e.spans])
    assert span_hits(model, examples, pad, batch_size=5) == expected
    greedy = [_greedy(model, e) for e in examples]
    assert all(hit == (True, True) for hits in span_hits(model, greedy, pad, batch_size=5) for hit in hits)
