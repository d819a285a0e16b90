"""Consistency (docs/method.md §10): logged gradient cosines against an autograd replay, trace untouched,
trace directions and representations against direct computations, centred cosines and retrieval against
numpy loops, and the bootstrap standard error against the analytic one."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from factrecall.analysis.consistency import bootstrap_means, consistency_run, pair_measures, value_and_se
from factrecall.config.presets import train_config
from factrecall.data.dataset import load_dataset
from factrecall.encode import collate, encode_bio, encode_qa
from factrecall.errors import UserError
from factrecall.models.adapters import layer_of, tracked_parameter_names
from factrecall.models.loading import load_model
from factrecall.training.loop import train
from factrecall.training.schedule import build_phases, lr_at

CFG = dict(strategy="mix", grad_accum=2, max_steps=5, eval_people=2, checkpoint_every=0)


def _cos_by_layer(a: dict, b: dict) -> dict:
    layers = sorted({layer_of(n) for n in a})
    out = {}
    for layer in layers:
        x = torch.cat([a[n].flatten() for n in a if layer_of(n) == layer]).double()
        y = torch.cat([b[n].flatten() for n in b if layer_of(n) == layer]).double()
        out[layer] = float(torch.nn.functional.cosine_similarity(x, y, dim=0))
    return out


def _replayed_cosines(cfg, data_dir, base_dir) -> dict[int, tuple[int, dict]]:
    """{global step: (lag, per-layer cosine)} from per-micro-batch autograd.grad and the same updates."""
    model, tok = load_model(base_dir)
    model.train()
    ds = load_dataset(data_dir)
    examples = {"bio": [encode_bio(tok, b) for b in ds.bios], "qa": [encode_qa(tok, q) for q in ds.qa_split("id")]}
    names = [n for n, _ in model.named_parameters()]
    params = [p for _, p in model.named_parameters()]
    tracked = set(tracked_parameter_names(model))
    (phase,) = build_phases(cfg, len(examples["bio"]), len(examples["qa"]))
    optimizer = torch.optim.AdamW([{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
                                   {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
                                  lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    latest, when, expected = {}, {}, {}
    for i, step in enumerate(phase.steps):
        total = [torch.zeros_like(p) for p in params]
        this_step: dict[str, dict] = {}
        for mb in step:
            loss = model(**collate([examples[mb.task][r] for r in mb.rows], tok.pad_token_id)).loss
            grads = torch.autograd.grad(loss / len(step), params)
            acc = this_step.setdefault(mb.task, {n: torch.zeros_like(p) for n, p in zip(names, params) if n in tracked})
            for n, g, t in zip(names, grads, total):
                t += g
                if n in tracked:
                    acc[n] += g
        for task, grads in this_step.items():
            latest[task], when[task] = grads, i + 1
        if len(latest) == 2:
            expected[i + 1] = (abs(when["bio"] - when["qa"]), _cos_by_layer(latest["bio"], latest["qa"]))
        for p, g in zip(params, total):
            p.grad = g
        torch.nn.utils.clip_grad_norm_(params, cfg.clip)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(i, len(phase.steps), phase.peak_lr, cfg)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return expected


def _steps(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
            if json.loads(line)["event"] == "step"]


@pytest.fixture(scope="module")
def runs(train_smoke):
    """{"on": a run logging gradient cosines every step, "off": the same run without}."""
    return {"on": train_smoke("consistency-on", grad_consistency=1, **CFG), "off": train_smoke("consistency-off", **CFG)}


def test_logged_gradient_cosines_equal_an_autograd_replay(runs, small_data):
    cfg = train_config("smoke", grad_consistency=1, **CFG)
    expected = _replayed_cosines(cfg, small_data, runs["on"] / "base")
    logged = {r["global_step"]: r["grad_cosine"] for r in _steps(runs["on"]) if "grad_cosine" in r}
    assert logged.keys() == expected.keys() and logged
    assert any(lag == 0 for lag, _ in expected.values())  # a step with both tasks: the same step's gradients
    for step, (lag, by_layer) in expected.items():
        assert logged[step]["lag"] == lag
        assert logged[step]["by_layer"].keys() == by_layer.keys()
        for layer, value in by_layer.items():
            assert abs(logged[step]["by_layer"][layer] - value) < 1e-4, (step, layer)


def test_gradient_logging_leaves_trace_and_model_bitwise_unchanged(runs):
    for path in ("trace.safetensors", "model/model.safetensors"):
        on, off = load_file(str(runs["on"] / path)), load_file(str(runs["off"] / path))
        assert on.keys() == off.keys() and all(torch.equal(on[k], off[k]) for k in on), path
    assert not any("grad_cosine" in r for r in _steps(runs["off"]))


def test_stage_logs_no_gradient_cosines(small_data, tmp_path):
    train(train_config("smoke", strategy="stage", grad_consistency=1, max_steps=2, eval_people=2,
                       checkpoint_every=0), small_data, tmp_path / "stage")
    assert not any("grad_cosine" in r for r in _steps(tmp_path / "stage"))
    with pytest.raises(UserError, match="grad_consistency must not be negative"):
        train(train_config("smoke", grad_consistency=-1), small_data, tmp_path / "bad")


def test_consistency_run(runs):
    run = runs["on"]
    result = consistency_run(run, people=8)
    assert (run / "analysis" / "consistency.json").is_file()
    trace = load_file(str(run / "trace.safetensors"))
    bio = {k[4:]: v for k, v in trace.items() if k.startswith("bio/")}
    qa = {k[3:]: v for k, v in trace.items() if k.startswith("qa/")}
    direct = _cos_by_layer(bio, qa)
    assert result["trace_direction"]["by_layer"].keys() == direct.keys()
    for layer, value in direct.items():
        assert abs(result["trace_direction"]["by_layer"][layer] - value) < 1e-6
    representation = result["representation"]
    for position in ("subject", "answer"):
        table = representation[position]["all"]
        assert table["pairs"] == 8 * 6 and len(table["matched"]) == 3
        assert all(-1 - 1e-6 <= c <= 1 + 1e-6 for c in table["matched"] + table["mismatched"])
    # layer 0 is the token embedding (Llama adds no positions): the name's last token is the same in both forms
    assert representation["subject"]["all"]["matched"][0] == pytest.approx(1.0, abs=1e-6)
    for position in ("subject", "answer"):  # each judged number: the mean over layers 1..L of its per-layer means
        table = representation[position]["all"]
        per_layer = {"gap": table["gap"], "centred_gap": table["centred"]["gap"], **table["retrieval"]}
        for key, summary in table["over_layers"].items():
            assert summary["value"] == pytest.approx(np.mean(per_layer[key][1:])) and summary["se"] >= 0
        assert all(0 <= t <= m <= 1 for t, m in zip(table["retrieval"]["top1"], table["retrieval"]["mrr"]))
        assert table["retrieval"]["candidates"] == 8
    probe = result["gradient_probe"]
    assert probe["over_layers"]["all"]["gap"]["value"] == pytest.approx(np.mean(list(probe["all"]["gap"].values())))
    assert probe["over_layers"]["all"]["gap"]["se"] > 0 and result["bootstrap"] == 200
    gradient = result["gradient"]
    assert gradient["logged"] == sum("grad_cosine" in r for r in _steps(run)) and "by_layer" in gradient
    with pytest.raises(UserError, match="at least 2"):
        consistency_run(run, people=1)
    with pytest.raises(UserError, match="--bootstrap must be at least 2"):
        consistency_run(run, bootstrap=1)


def _loop_measures(bio: np.ndarray, qa: np.ndarray, attribute: np.ndarray, other: np.ndarray) -> dict:
    """Centred cosines and retrieval of [n, L+1, D] states, pair by pair in numpy (the independent computation)."""
    n, layers, _ = bio.shape
    out = {k: np.zeros((n, layers)) for k in ("centred_matched", "centred_mismatched", "top1", "mrr")}

    def cos(a, b):
        return a @ b / (np.linalg.norm(a) * np.linalg.norm(b))

    for layer in range(layers):
        x, y = bio[:, layer].copy(), qa[:, layer].copy()
        for a in set(attribute.tolist()):
            x[attribute == a] -= bio[attribute == a, layer].mean(0)
            y[attribute == a] -= qa[attribute == a, layer].mean(0)
        for i in range(n):
            out["centred_matched"][i, layer] = cos(x[i], y[i])
            out["centred_mismatched"][i, layer] = cos(x[i], y[other[i]])
            candidates = np.flatnonzero(attribute == attribute[i])
            similarity = np.array([cos(x[i], y[j]) for j in candidates])
            out["top1"][i, layer] = candidates[np.argmax(similarity)] == i
            out["mrr"][i, layer] = 1 / (1 + np.sum(similarity > cos(x[i], y[i])))
    return out


def test_centred_cosines_and_retrieval_equal_numpy_loops():
    rng = np.random.default_rng(0)
    n, layers, width = 24, 3, 16
    shared = rng.normal(size=width) * 5  # a direction every state has, as Mix's do
    fact = rng.normal(size=(n, layers, width))
    bio = shared + fact + rng.normal(size=(n, layers, width))
    qa = shared + fact + rng.normal(size=(n, layers, width))
    attribute = np.arange(n) % 3
    other = np.array([(i + 3) % n for i in range(n)])  # the next person's pair of the same attribute
    got = pair_measures(torch.tensor(bio, dtype=torch.float32), torch.tensor(qa, dtype=torch.float32),
                        torch.tensor(attribute), torch.tensor(other))
    want = _loop_measures(bio, qa, attribute, other)
    for key in ("centred_matched", "centred_mismatched"):
        np.testing.assert_allclose(got[key], want[key], atol=1e-5)
    np.testing.assert_array_equal(got["rank"] == 1, want["top1"] == 1)
    np.testing.assert_allclose(1 / got["rank"], want["mrr"])
    assert 0 < want["top1"].mean() < 1  # the retrieval is neither trivial nor hopeless here
    # the shared direction inflates the uncentred mismatched cosine and so shrinks the uncentred gap
    uncentred = (got["matched"] - got["mismatched"]).mean()
    centred = (got["centred_matched"] - got["centred_mismatched"]).mean()
    assert got["mismatched"].mean() > 0.5 and centred > uncentred + 0.2


def test_identical_states_centre_to_zero_and_rank_last():
    bio = torch.ones(4, 2, 3)  # layer 1 the same for every person: nothing to retrieve
    bio[:, 0] = torch.eye(4, 3)
    got = pair_measures(bio, bio.clone(), torch.zeros(4, dtype=torch.long), torch.tensor([1, 2, 3, 0]))
    assert (got["centred_matched"][:, 1] == 0).all() and (got["rank"][:, 1] == 4).all()
    assert (got["matched"][:, 1] == pytest.approx(1.0))


def test_bootstrap_is_seeded_and_matches_the_analytic_se_of_a_mean():
    rng = np.random.default_rng(1)
    people = 400
    values = rng.normal(size=people)
    analytic = values.std(ddof=1) / np.sqrt(people)
    twice = np.repeat(values, 2)[:, None]  # two rows per person (two attributes): people, not rows, are resampled
    person = np.repeat(np.arange(people), 2)
    resampled = bootstrap_means(twice, person, 2000)
    assert resampled.shape == (2000, 1)
    assert value_and_se(twice.mean(), resampled[:, 0], people)["se"] == pytest.approx(analytic, rel=0.08)
    np.testing.assert_array_equal(resampled, bootstrap_means(twice, person, 2000))
    assert not np.array_equal(resampled, bootstrap_means(twice, person, 2000, seed=1))


def test_bootstrap_skips_absent_values():
    values = np.array([[1.0, 2.0], [3.0, np.nan]])  # the last person has no mismatched pair (the probe)
    resampled = bootstrap_means(values, np.arange(2), 50)
    assert np.isnan(resampled[:, 1]).any() and np.nanmax(resampled[:, 1]) == 2.0
    assert value_and_se(2.0, np.array([np.nan, 1.0]), 2)["se"] is None
    assert value_and_se(2.0, np.array([1.0, 3.0]), 1)["se"] is None  # one person: no spread to speak of


def test_gradient_probe_equals_autograd(runs, small_data):
    from factrecall.analysis.consistency import gradient_probe
    from factrecall.analysis.weights import analysis_model

    model, tok = analysis_model(runs["on"])
    ds = load_dataset(small_data)
    result = gradient_probe(model, tok, ds, 2)
    names = set(tracked_parameter_names(model))
    params = {n: p for n, p in model.named_parameters() if n in names}

    def grads(**batch):
        return dict(zip(params, torch.autograd.grad(model(**batch).loss, list(params.values()))))

    g_bio, g_qa = [], []
    for person in ds.people[:2]:
        bio = encode_bio(tok, next(b for b in ds.bios if b["person_id"] == person["person_id"]))
        ids = torch.tensor([bio.input_ids])
        labels = torch.full_like(ids, -100)
        for s, e in bio.spans:  # the six values only
            labels[0, s:e] = ids[0, s:e]
        g_bio.append(grads(input_ids=ids, labels=labels))
        g_qa.append(grads(**collate([encode_qa(tok, q) for q in ds.qa if q["person_id"] == person["person_id"]],
                                    tok.pad_token_id)))
    matched = [_cos_by_layer(g_bio[i], g_qa[i]) for i in range(2)]
    mismatched = _cos_by_layer(g_bio[0], g_qa[1])
    for layer in matched[0]:
        assert abs(result["all"]["matched"][layer] - (matched[0][layer] + matched[1][layer]) / 2) < 1e-5
        assert abs(result["all"]["mismatched"][layer] - mismatched[layer]) < 1e-5
