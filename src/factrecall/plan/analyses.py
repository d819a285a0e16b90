"""Peak GPU memory of each analysis, from the model's shapes alone (part of `factrecall plan`).

An analysis holds one model on its device: θ_ft in float32, 4·P bytes. θ_pre, θ_ft and the trace
stay in their files and are read a tensor at a time (host memory; a tensor's `.to(device)` copy is
counted below); sets of entries (Top, Shared, ablation sets, graft masks) are index masks in host
memory, not counted. On top of the weights, in bytes, with n = entries of the largest parameter
tensor (Llama-3.2-3B: the 394 M-entry embedding), n_T the largest traced tensor's, Q = traced
entries, E(r, T) = `plan.evaluation_bytes` (an exact-match batch of r rows of T tokens, 256 rows
at most) and A(r × T) = `plan.activation_bytes` in fp32 (a forward and backward):

eval         E over bios (T = seq_len) and over questions (T = qa_seq_len): the larger.
ablate       12·|set| + max(E, 8·n_T): a reset keeps the overwritten values (4 B) and their int64
             positions (8 B) on the device, and reads one θ_pre tensor and gathers from it. |set| ≤
             k_abl % of Q: the plan takes this bound (|Shared| is known only after the run).
graft        S over the traced block matrices (4·Q), then the largest of: their gradients (4·Q) +
             A(64 questions); the gradients + 32·n_T, updating S a tensor at a time (θ_pre, θ_ft, Δ, the
             base patch as floats and four temporaries of ∂L/∂S); 24·n_T, writing the relaxed θ(γ) into a
             tensor (θ_pre, θ_ft, the base patch and three temporaries); E, evaluating a mask.
heads,       5·U + max(E(questions), 24·n_U), or 8·n before the curves (‖θ_ft − θ_pre‖ per unit: the
neurons      difference and its square). U: entries of the tensors holding that kind's units (heads:
             attention, neurons: MLP), n_U the largest; a sufficiency point that keeps few units
             resets nearly all of them, keeping a bool mask (1 B) and the old values (4 B) per entry;
             indexing with a bool mask makes int64 positions (16 B per entry of a 2-D tensor).
attention    one `readout.read` of 64 rows, eager attention, no K/V cache: the recorded residual stream, head inputs, attention and MLP outputs ((4·L + 1)·h), the
             attention weights (L·H·T), and the larger of the logits (h + V) and a block's transient
             (its MLP, or 2·H·T of scores and softmax; GPT-2 3·H·T). `inspect` reads one text: less.
consistency  the larger of `read` without attention weights (64 rows) and the gradient probe: the
             gradients (4·P) + the traced gradients of the previous person and of this one (8·Q) +
             the larger of A(6 questions), A(1 bio) and 24·n_T (one tensor's float64 cosine sums).

Tested (`tests/test_plan_analyses.py`) against torch.profiler's peak on CPU: E on tiny Llama and
NeoX models within 1 %, `read` within 15 %, and each analysis on a smoke run, in a setting where
the named phase sets its peak, within 25 % (measured: 2–17 %; the graft update's 32·n, the heads'
24·n_U and ‖θ_ft − θ_pre‖'s 8·n within 3 %; the other per-tensor terms are counted from the code,
as is |set| ≤ k %·Q, which a run undercuts). Not modelled: the GPU caching allocator's slack
(PyTorch reserves more than it allocates), eager attention's 4-D mask and a Llama layer's attention
weights kept through its MLP (H·T + T per token: < 1 % at the paper's models), `heads
--intervention zero|mean` and `--bio`.
"""

from __future__ import annotations

from factrecall.analysis.config import AnalysisConfig
from factrecall.analysis.threshold import top_count
from factrecall.data.generate import DataConfig
from factrecall.data.pools import ATTRIBUTES
from factrecall.plan.training import (
    EVAL_ROWS,
    GIB,
    PlanSettings,
    Shapes,
    activation_bytes,
    evaluation_bytes,
    forward_elements,
)

GRAFT_ROWS = 64  # questions per graft batch (`graft.graft_run`)
READ_ROWS = 64  # texts per `read` batch (`attention.attention_stats`, `consistency.consistency_run`)
QUESTIONS = len(ATTRIBUTES)  # per person: one per attribute; a bio scores one answer per attribute


def readout_parts(shapes: Shapes, rows: int, seq_len: int, attentions: bool = True) -> dict[str, int]:
    """Device bytes of one `readout.read` over rows × seq_len tokens (eager attention): what stays until it
    returns, and the larger transient; their sum is its peak."""
    tokens = rows * seq_len
    block, logits = forward_elements(shapes, eager_seq_len=seq_len)
    return {"recorded": 4 * tokens * (4 * shapes.layers + 1) * shapes.hidden,
            "attentions": 4 * tokens * shapes.layers * shapes.heads * seq_len if attentions else 0,
            # a block's input and attention output are among the recorded tensors
            "transient": 4 * tokens * max(block - 2 * shapes.hidden, logits)}


def _eval_rows(data: DataConfig, eval_people: int) -> tuple[int, int]:
    """(question rows, bio rows) of an evaluation batch over the first `eval_people` people per split (0: all)."""
    split = max(data.id_people, data.people - data.id_people)  # the larger split's questions
    people = min(data.people, 2 * eval_people) if eval_people else data.people
    return (min(EVAL_ROWS, QUESTIONS * (min(split, eval_people) if eval_people else split)),
            min(EVAL_ROWS, people * data.bios_per_person))


def analysis_phases(shapes: Shapes, s: PlanSettings, a: AnalysisConfig, data: DataConfig) -> dict[str, dict[str, int]]:
    """{analysis: {phase: device bytes on top of the weights}} (see the module doc); an analysis peaks at its
    largest phase."""
    p, q, n = shapes.params, shapes.traced_entries, shapes.largest()

    def evaluation(eval_people: int, bios: bool = True) -> dict[str, int]:
        qa_rows, bio_rows = _eval_rows(data, eval_people)
        batches = {f"{qa_rows} questions": evaluation_bytes(shapes, qa_rows, s.qa_seq_len, s.answer_len)}
        if bios:
            batches[f"{bio_rows} bios"] = evaluation_bytes(shapes, bio_rows, s.seq_len, QUESTIONS * s.answer_len)
        return batches

    def read(people: int, attentions: bool) -> dict[str, int]:  # a bio per person, then their questions
        people = min(people, data.people)
        batches = {"bios": (min(READ_ROWS, people), s.seq_len),
                   "questions": (min(READ_ROWS, QUESTIONS * people), s.qa_seq_len)}
        return {f"read {rows} {form}": sum(readout_parts(shapes, rows, seq_len, attentions).values())
                for form, (rows, seq_len) in batches.items()}

    def backward(rows: int, seq_len: int) -> int:
        return activation_bytes(shapes, rows * seq_len, seq_len, "fp32")

    reset, n_traced = 12 * top_count(a.ablation.k, q), shapes.largest(shapes.traced)
    phases = {
        "eval": evaluation(0),
        "ablate": {"reset set + evaluation": reset + max(evaluation(a.ablation.eval_people).values()),
                   "reset set + one tensor": reset + 8 * n_traced},
        "graft": {"S + gradients + backward": 8 * q + backward(GRAFT_ROWS, s.qa_seq_len),
                  "S + gradients + update of S": 8 * q + 32 * n_traced,
                  "S + writing θ(γ)": 4 * q + 24 * n_traced,
                  "S + evaluation": 4 * q + max(evaluation(a.graft.eval_people).values())},
    }
    for kind, key in (("head", "heads"), ("neuron", "neurons")):
        reset = 5 * shapes.entries(shapes.units[kind])
        people = getattr(a, key).eval_people
        phases[key] = {"reset units + evaluation": reset + max(evaluation(people, bios=False).values()),
                       "reset units + one tensor": reset + 24 * shapes.largest(shapes.units[kind]),
                       "‖θ_ft − θ_pre‖ per unit": 8 * n}
    phases["attention"] = read(a.attention.people, True)
    probe = max(backward(1, s.seq_len), backward(QUESTIONS, s.qa_seq_len), 24 * n_traced)
    phases["consistency"] = {**read(a.consistency.people, False), "gradient probe": 4 * p + 8 * q + probe}
    return phases


def analyses_plan(shapes: Shapes, s: PlanSettings, a: AnalysisConfig, data: DataConfig) -> dict[str, dict]:
    """Per analysis: its peak GPU memory (`total`: the weights + its largest phase), the phase that sets it,
    whether it fits one GPU of `s.gpu_memory_gib`, and every phase's bytes."""
    weights = 4 * shapes.params
    out = {}
    for name, phases in analysis_phases(shapes, s, a, data).items():
        peak = max(phases, key=phases.get)
        total = weights + phases[peak]
        out[name] = {"total": total, "fits": total <= s.gpu_memory_gib * GIB, "weights": weights, "peak": peak,
                     "phases": phases}
    return out
