"""The evaluator against a hand-made case: a model whose next-token guesses we choose."""

import torch

from factrecall.encode import Encoded
from factrecall.evaluation.exact_match import EvalSet, evaluate, span_hits

V = 12


class Oracle(torch.nn.Module):
    """Predicts `table[prefix]` after each prefix, else token 0 (a wrong guess everywhere here)."""

    def __init__(self, table):
        super().__init__()
        self.table = table
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask):
        logits = torch.zeros(*input_ids.shape, V)
        for b, row in enumerate(input_ids.tolist()):
            for t in range(len(row)):
                logits[b, t, self.table.get(tuple(row[: t + 1]), 0)] = 1.0
        return type("Out", (), {"logits": logits})()


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
