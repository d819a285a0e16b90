"""Table-driven tests of the claim rules C1–C7 (`factrecall.study.claims`; README "Choices the paper leaves open").

Each row builds only the keys a rule reads, states whether the claim holds, and names numbers that the
evidence must repeat (the evidence states the reason). Boundary rows are named after the threshold
or comparison they sit on (`>=` holds at the boundary, `>`/`<` does not).
"""

import pytest

from factrecall.study import claims

RULES = {"C1": "c1_accuracy", "C2": "c2_shared_size", "C3": "c3_concentration", "C4": "c4_ablation",
         "C5": "c5_grafting", "C6": "c6_heads", "C7": "c7_consistency"}


def case(claim_id: str, name: str, args: tuple, holds: bool, *numbers: str):
    return pytest.param(claim_id, args, holds, numbers, id=f"{claim_id}-{name}")


# C1: accuracy[strategy] = {qa_id, qa_ood, bio, bio_after_bio_training}
def c1_in(mix: dict | None = None, stage: dict | None = None) -> tuple:
    base = {"qa_id": 0.95, "bio": 0.95, "bio_after_bio_training": 0.95}
    return ({"mix": base | {"qa_ood": 0.8} | (mix or {}), "stage": base | {"qa_ood": 0.2} | (stage or {})},)


C1 = [
    case("C1", "holds", c1_in(), True, "+0.600", "0.800", "0.200"),
    case("C1", "stage_far_above_mix", c1_in({"qa_ood": 0.2}, {"qa_ood": 0.8}), False, "-0.600"),
    case("C1", "gap_small", c1_in({"qa_ood": 0.31}, {"qa_ood": 0.25}), False, "+0.060", "0.310"),
    case("C1", "gap_just_below_FAR_ABOVE", c1_in({"qa_ood": 0.749}, {"qa_ood": 0.45}), False, "0.749", "+0.299"),
    case("C1", "gap_at_FAR_ABOVE_0.3_holds", c1_in({"qa_ood": 0.75}, {"qa_ood": 0.45}), True, "0.750", "+0.300"),
    case("C1", "gap_0.3_from_fractions_holds", c1_in({"qa_ood": 0.70}, {"qa_ood": 0.40}), True, "+0.300"),  # 0.2999…
    case("C1", "mix_qa_id_below_FIT", c1_in({"qa_id": 0.899}), False, "0.899"),
    case("C1", "stage_qa_id_below_FIT", c1_in(stage={"qa_id": 0.85}), False, "0.850"),
    case("C1", "mix_bio_after_bio_below_FIT", c1_in({"bio_after_bio_training": 0.88}), False, "0.880"),
    case("C1", "stage_bio_after_bio_below_FIT", c1_in(stage={"bio_after_bio_training": 0.7}), False, "0.700"),
    case("C1", "all_at_FIT_0.9_holds", c1_in(*[{"qa_id": 0.9, "bio_after_bio_training": 0.9}] * 2), True, "0.900"),
    case("C1", "stage_final_bio_forgotten_not_judged", c1_in(stage={"bio": 0.125}), True, "0.125"),
]


# C2: shared[strategy] = shared.json: {k, shared, chance, enrichment, per_tensor.shared, sweep[{k, global.shared}]}
def shared_json(n: int, sweep: tuple) -> dict:
    return {"k": 1.0, "shared": n, "chance": 10.0, "enrichment": n / 10, "per_tensor": {"shared": n + 1},
            "sweep": [{"k": k, "global": {"shared": m}} for k, m in zip((0.5, 5.0, 10.0), sweep)]}


def c2_in(mix=500, stage=100, mix_sweep=(600, 700, 800), stage_sweep=(200, 300, 400)) -> tuple:
    return ({"mix": shared_json(mix, mix_sweep), "stage": shared_json(stage, stage_sweep)},)


C2 = [
    case("C2", "holds", c2_in(), True, "Mix 500 vs Stage 100", "k=5%: 700 vs 300", "50.0 vs 10.0"),
    case("C2", "stage_larger_everywhere", c2_in(100, 500, (200, 300, 400), (600, 700, 800)), False,
         "Mix 100 vs Stage 500"),
    case("C2", "default_k_tie_undetermined", c2_in(mix=100), None, "Mix 100 vs Stage 100", "a tie at the default k"),
    case("C2", "default_k_smaller", c2_in(mix=99), False, "Mix 99 vs Stage 100"),
    case("C2", "one_sweep_point_tie_strict", c2_in(mix_sweep=(600, 300, 800)), False, "k=5%: 300 vs 300"),
    case("C2", "first_sweep_point_smaller", c2_in(mix_sweep=(150, 700, 800)), False, "k=0.5%: 150 vs 200"),
    case("C2", "last_sweep_point_smaller", c2_in(mix_sweep=(600, 700, 399)), False, "k=10%: 399 vs 400"),
    case("C2", "larger_by_one_everywhere", c2_in(101, 100, (201, 301, 401)), True, "k=10%: 401 vs 400"),
    case("C2", "sweeps_paired_by_k_not_position", ({"mix": shared_json(500, (600, 700, 800)) | {"sweep": [
        {"k": k, "global": {"shared": m}} for k, m in ((10.0, 800), (0.5, 600), (5.0, 700))]},
        "stage": shared_json(100, (200, 300, 400))},), True, "k=0.5%: 600 vs 200", "k=10%: 800 vs 400"),
    case("C2", "empty_sweep_not_comparable", ({"mix": shared_json(500, ()), "stage": shared_json(100, ())},),
         None, "not comparable", "undetermined: the two sweeps"),
    case("C2", "shorter_sweep_not_comparable", c2_in(mix_sweep=(600, 700)), None, "not comparable"),
]


# C3: shared[strategy] = {gini.{heads,neurons}, top_unit_share.{heads,neurons}["10%"]}; values (gh, gn, th, tn)
def conc(gh, gn, th, tn) -> dict:
    return {"gini": {"heads": gh, "neurons": gn},
            "top_unit_share": {"heads": {"10%": th, "1%": 0.0}, "neurons": {"10%": tn, "1%": 0.0}}}


def c3_in(mix=(0.6, 0.5, 0.4, 0.35), stage=(0.2, 0.2, 0.2, 0.2)) -> tuple:
    return ({"mix": conc(*mix), "stage": conc(*stage)},)


C3 = [
    case("C3", "holds", c3_in(), True, "Gini Mix 0.600 vs Stage 0.200", "top-10% share Mix 0.350"),
    case("C3", "stage_higher_everywhere", c3_in((0.1,) * 4), False, "Gini Mix 0.100 vs Stage 0.200"),
    case("C3", "heads_gini_tie_undetermined", c3_in((0.2, 0.5, 0.4, 0.35)), None, "heads: Gini Mix 0.200 vs Stage 0.200",
         "a tie in heads Gini"),
    case("C3", "tie_and_lower_does_not_hold", c3_in((0.2, 0.1, 0.4, 0.35)), False, "neurons: Gini Mix 0.100"),
    case("C3", "neurons_gini_lower", c3_in((0.6, 0.15, 0.4, 0.35)), False, "neurons: Gini Mix 0.150"),
    case("C3", "heads_top10_tie_undetermined", c3_in((0.6, 0.5, 0.2, 0.35)), None,
         "top-10% share Mix 0.200 vs Stage 0.200", "a tie in heads top-10% share"),
    case("C3", "neurons_top10_lower", c3_in((0.6, 0.5, 0.4, 0.111)), False, "top-10% share Mix 0.111"),
    case("C3", "higher_by_a_hair_everywhere", c3_in((0.201,) * 4), True, "Gini Mix 0.201"),
]


# C4: ablation[strategy] = ablation.json; drops are signed (accuracy after − before, negative = loss)
def abl(drop: float, random: float, unablated: float = 0.5) -> dict:
    return {"k": 5.0, "seeds": 3, "unablated": {"qa_ood": unablated}, "shared": {"drop": {"qa_ood": drop}},
            "random": {"mean_drop": {"qa_ood": random}}, "top_bio_only": {"mean_drop": {"qa_ood": -0.011}},
            "top_qa_only": {"mean_drop": {"qa_ood": -0.022}}}


def c4_in(mix=-0.4, mix_random=-0.05, stage=-0.1, stage_random=-0.03, stage_unablated=0.5) -> tuple:
    return ({"mix": abl(mix, mix_random), "stage": abl(stage, stage_random, stage_unablated)},)


C4 = [
    case("C4", "holds", c4_in(), True, "Mix -0.400 vs Stage -0.100", "-0.050", "Mix 80%", "Stage 20%"),
    case("C4", "stage_hurt_more", c4_in(mix=-0.1, stage=-0.4), False, "Mix -0.100 vs Stage -0.400"),
    case("C4", "tie_with_stage_strict", c4_in(mix=-0.25, stage=-0.25), False, "Mix -0.250 vs Stage -0.250"),
    case("C4", "random_hurts_mix_more", c4_in(mix_random=-0.45), False, "-0.450"),
    case("C4", "tie_with_random_strict", c4_in(mix_random=-0.4), False, "(count-matched per tensor, mean of 3) -0.400"),
    case("C4", "stage_random_not_judged", c4_in(stage_random=-0.9), True, "Mix -0.400"),
    case("C4", "stage_zero_accuracy_is_a_floor", c4_in(stage=0.0, stage_unablated=0.0), None, "Stage 0%",
         "a floor: Stage's unablated OOD-QA 0.000"),
    case("C4", "stage_accuracy_below_mix_drop_is_a_floor", c4_in(stage=-0.05, stage_unablated=0.3), None,
         "bounds its drop above Mix's -0.400"),
    case("C4", "stage_accuracy_at_mix_drop_decides", c4_in(stage=-0.05, stage_unablated=0.4), True, "Mix -0.400"),
    case("C4", "floor_does_not_rescue_a_failing_rule", c4_in(mix_random=-0.45, stage_unablated=0.1), False, "-0.450"),
    case("C4", "side_sets_reported", c4_in(), True, "Top_BIO∖Shared -0.011", "Top_QA∖Shared -0.022"),
]


# C5: graft[strategy] = graft.json; accuracy[strategy].qa_id = θ_ft's ID-QA (recovered share = grafted / θ_ft)
def graft_json(size: int, qa_id: float) -> dict:
    return {"parameters": 10_000, "sparsity": 0.01, "graft": {"size": size, "accuracy": {"qa_id": qa_id, "qa_ood": 0.123}},
            "base_patch": {"accuracy": {"qa_id": 0.05}}}


def c5_in(sizes=(100, 400), grafted=(0.9, 0.6), full=(1.0, 1.0)) -> tuple:
    return ({"mix": graft_json(sizes[0], grafted[0]), "stage": graft_json(sizes[1], grafted[1])},
            {"mix": {"qa_id": full[0]}, "stage": {"qa_id": full[1]}})


C5 = [
    case("C5", "holds", c5_in(), True, "|γ|₀ 100 (1.0% of 10,000)", "(90% of θ_ft's)", "(60% of θ_ft's)"),
    case("C5", "mix_larger_recovers_less", c5_in((400, 100), (0.6, 0.9)), False, "|γ|₀ 400"),
    case("C5", "mix_mask_larger_by_one", c5_in((401, 400)), False, "|γ|₀ 401", "|γ|₀ 400"),
    case("C5", "mask_size_tie_holds", c5_in((1234, 1234)), True, "|γ|₀ 1,234 (12.3% of 10,000)"),
    case("C5", "mix_recovers_less", c5_in(grafted=(0.5, 0.6)), False, "(50% of θ_ft's)"),
    case("C5", "recovery_tie_holds", c5_in(grafted=(0.6, 0.6)), True, "grafted ID-QA 0.600 (60% of θ_ft's)"),
    case("C5", "share_not_absolute", c5_in(grafted=(0.6, 0.7), full=(0.8, 1.0)), True, "(75% of θ_ft's)", "(70%"),
    case("C5", "no_recovery_either", c5_in(grafted=(0.0, 0.0)), False, "grafted ID-QA 0.000 (0% of θ_ft's)"),
    case("C5", "mix_theta_ft_zero", c5_in(grafted=(0.0, 0.0), full=(0.0, 1.0)), False, "(0% of θ_ft's)"),
    case("C5", "no_parameters_no_division_by_zero", ({"mix": graft_json(0, 0.0) | {"parameters": 0},
                                                      "stage": graft_json(0, 0.0) | {"parameters": 0}},
                                                     {"mix": {"qa_id": 1.0}, "stage": {"qa_id": 1.0}}), False,
         "|γ|₀ 0 (0.0% of 0)"),
]


# C6: heads/neurons[strategy] = heads.json/neurons.json; (minimal_sufficient, critical) per metric, None = never
def circuit(metrics: dict, units: int = 32, ood: float = 0.5) -> dict:
    return {"units": units, "unablated": {"qa_ood": ood},
            "metrics": {m: {"minimal_sufficient": s, "critical": c} for m, (s, c) in metrics.items()}}


def c6_in(ours=(3, 2), random=(10, 8), magnitude=(5, 4), ood=0.5, neuron=(40, None), heads=32) -> tuple:
    metrics = {"shared_size": ours, "magnitude": magnitude} | ({"random": random} if random else {})
    return ({"mix": circuit(metrics, heads, ood=ood), "stage": circuit({"shared_size": (7, 6)}, heads)},
            {"mix": circuit({"shared_size": neuron} if neuron else {}, units=512)})


C6 = [
    case("C6", "too_few_heads_undetermined", c6_in(heads=8), None, "too few units: 8 heads, fewer than 32"),
    case("C6", "at_MIN_HEADS_judged", c6_in(heads=32), True, "of 32 heads"),
    case("C6", "too_few_heads_and_failing_still_undetermined", c6_in(magnitude=(2, 4), heads=31), None, "31 heads"),
    case("C6", "holds", c6_in(), True, "shared_size 3, magnitude 5, random 10", "critical n (Mix, of 32 heads)"),
    case("C6", "everything_worse", c6_in((9, 9), (3, 2), (4, 3)), False, "shared_size 9"),
    case("C6", "other_metric_fewer_sufficient", c6_in(magnitude=(2, 4)), False, "magnitude 2"),
    case("C6", "other_metric_fewer_critical", c6_in(magnitude=(5, 1)), False, "magnitude 1"),
    case("C6", "random_fewer_sufficient", c6_in(random=(2, 8)), False, "random 2"),
    case("C6", "tie_with_other_metric_holds", c6_in(magnitude=(3, 2)), True, "magnitude 3"),
    case("C6", "tie_with_random_on_both_strict", c6_in(random=(3, 2)), False, "random 3"),
    case("C6", "fewer_than_random_on_one_only", c6_in(random=(3, 7)), True, "random 7"),
    case("C6", "no_random_metric", c6_in(random=None), False, "shared_size 3, magnitude 5"),
    case("C6", "ours_never_reached", c6_in(ours=(None, 2)), False, "shared_size None"),
    case("C6", "none_ties_none", c6_in((None, 2), (None, 8), (None, 4)), True, "random None"),
    case("C6", "ours_at_units_beats_none", c6_in((24, 2), (None, 8), (None, 4)), True, "shared_size 24"),
    case("C6", "no_ood_accuracy_is_a_floor", c6_in(ood=0.0), None, "a floor: Mix's OOD-QA accuracy is 0"),
    case("C6", "ood_accuracy_unmeasured", c6_in(ood=None), None, "OOD-QA accuracy is 0 (or unmeasured)"),
    case("C6", "stage_and_neurons_reported", c6_in(), True, "sufficient 7, critical 6", "sufficient 40, critical None of 512"),
    case("C6", "no_neuron_shared_size", c6_in(neuron=None), True, "sufficient None, critical None of 512"),
]


# C7: consistency[strategy] = consistency.json; the representation gap is a list over layers 0..L (0 is skipped)
def cons(probe, subject, answer, layer0=0.0, trace=0.111, logged=None) -> dict:
    return {"gradient_probe": None if probe is None else {"all": {"gap": {"0": probe, "1": probe}}},
            "representation": {p: {"all": {"gap": [layer0, g, g]}} for p, g in (("subject", subject), ("answer", answer))},
            "trace_direction": {"all": trace}, "gradient": {"all": logged}}


def c7_in(mix: dict | None = None, stage: dict | None = None) -> tuple:
    return ({"mix": cons(**{"probe": 0.3, "subject": 0.2, "answer": 0.25, "logged": 0.05} | (mix or {})),
             "stage": cons(**{"probe": 0.1, "subject": 0.05, "answer": 0.04} | (stage or {}))},)


C7 = [
    case("C7", "holds", c7_in(), True, "Mix +0.300 vs Stage +0.100", "subject Mix +0.200 vs Stage +0.050"),
    case("C7", "stage_lacks_a_position_not_judged", ({"mix": cons(0.3, 0.2, 0.25), "stage": cons(0.1, 0.05, 0.04) | {
        "representation": {"subject": {"all": {"gap": [0.0, 0.05, 0.05]}}}}},), None, "subject Mix +0.200 vs Stage",
         "not measured at the same positions"),
    case("C7", "stage_higher_everywhere", c7_in(stage={"probe": 0.4, "subject": 0.3, "answer": 0.3}), False,
         "Mix +0.300 vs Stage +0.400"),
    case("C7", "probe_tie_strict", c7_in({"probe": 0.1}), False, "Mix +0.100 vs Stage +0.100"),
    case("C7", "probe_lower", c7_in({"probe": -0.2}), False, "Mix -0.200"),
    case("C7", "subject_gap_tie_strict", c7_in({"subject": 0.05}), False, "subject Mix +0.050 vs Stage +0.050"),
    case("C7", "answer_gap_lower", c7_in({"answer": 0.01}), False, "answer Mix +0.010 vs Stage +0.040"),
    case("C7", "no_probe_mix", c7_in({"probe": None}), None, "Mix n/a vs Stage +0.100", "a gradient probe is missing"),
    case("C7", "no_probe_stage", c7_in(stage={"probe": None}), None, "Mix +0.300 vs Stage n/a"),
    case("C7", "trace_and_logged_not_judged", c7_in({"trace": -0.9, "logged": -0.5}), True, "Mix -0.900", "-0.500"),
    case("C7", "layer0_excluded", c7_in({"layer0": -5.0}, {"layer0": 5.0}), True, "subject Mix +0.200"),
    case("C7", "no_logged_gradient", c7_in({"logged": None}), True, "per-step gradient cosine n/a"),
]


@pytest.mark.parametrize("claim_id, args, holds, numbers", C1 + C2 + C3 + C4 + C5 + C6 + C7)
def test_claim_rule(claim_id, args, holds, numbers):
    result = getattr(claims, RULES[claim_id])(*args)
    assert set(result) == {"id", "statement", "verdict", "holds", "evidence"}
    assert result["id"] == claim_id and result["statement"] == claims.STATEMENTS[claim_id]
    assert result["holds"] is holds, result["evidence"]
    assert result["verdict"] == {True: "holds", False: "does not hold", None: "undetermined"}[holds]
    for number in numbers:
        assert number in result["evidence"], (number, result["evidence"])


@pytest.mark.parametrize("constant, value, claim_id, args", [
    pytest.param("FIT", 0.901, "C1", c1_in(*[{"qa_id": 0.9, "bio_after_bio_training": 0.9}] * 2), id="FIT"),
    pytest.param("FAR_ABOVE", 0.301, "C1", c1_in({"qa_ood": 0.75}, {"qa_ood": 0.45}), id="FAR_ABOVE"),
])
def test_thresholds_are_read_from_the_module(monkeypatch, constant, value, claim_id, args):
    """The boundary rows hold at the module's thresholds and stop holding when a threshold rises."""
    rule = getattr(claims, RULES[claim_id])
    assert rule(*args)["holds"]
    monkeypatch.setattr(claims, constant, value)
    result = rule(*args)
    assert not result["holds"] and str(value) in result["evidence"]


@pytest.mark.parametrize("consistency, expected", [
    pytest.param({"gradient_probe": {"all": {"gap": {"0": 0.1, "1": 0.3}}, "id": {"gap": {"0": 9.0}}},
                  "representation": {"subject": {"all": {"gap": [0.9, 0.2, 0.4]}},
                                     "answer": {"all": {"gap": [-7.0, 0.1, 0.1, 0.4]}}},
                  "trace_direction": {"all": 0.25, "by_layer": {"0": 1.0}}, "gradient": {"all": -0.05}},
                 {"gradient_probe_gap": 0.2, "representation_gap": {"subject": 0.3, "answer": 0.2},
                  "trace_direction": 0.25, "logged_gradient": -0.05}, id="full"),
    pytest.param({"gradient_probe": None, "representation": {"subject": {"all": {"gap": [0.5]}}},
                  "trace_direction": None, "gradient": {}},
                 {"gradient_probe_gap": None, "representation_gap": {"subject": 0.0},
                  "trace_direction": None, "logged_gradient": None}, id="missing_parts"),
])
def test_consistency_headline(consistency, expected):
    headline, expected = claims.consistency_headline(consistency), dict(expected)
    assert headline.pop("representation_gap") == pytest.approx(expected.pop("representation_gap"))
    assert headline == pytest.approx(expected)
