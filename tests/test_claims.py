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


# C3: shared[strategy] = shared.json; judged on `matched` [{fraction, size, heads/neurons: {entries, gini, top_10%:
# {observed, null_mean, null_std, excess}}}]; values = (heads Gini, heads top-10%, neurons Gini, neurons top-10%)
def conc_kind(gini: float, top: float, null: tuple, std: float) -> dict:
    return {"entries": 100, **{m: {"observed": o, "null_mean": n, "null_std": std, "excess": o - n}
                               for m, o, n in (("gini", gini, null[0]), ("top_10%", top, null[1]))}}


def conc_point(fraction: float, values: tuple, null=(0.1, 0.2, 0.1, 0.2), std=0.01, size=500) -> dict:
    return {"fraction": fraction, "size": size, "depth": 2000, "heads": conc_kind(*values[:2], null[:2], std),
            "neurons": conc_kind(*values[2:], null[2:], std)}


def conc(points: list) -> dict:
    return {"k": 1.0, "shared": 123, "gini": {"heads": 0.111, "neurons": 0.222}, "matched": points}


def c3_in(mix=(0.6, 0.5, 0.4, 0.35), stage=(0.3, 0.3, 0.2, 0.2), fractions=(0.001, 0.002), mix_kw=None,
          stage_kw=None) -> tuple:
    return ({"mix": conc([conc_point(f, mix, **(mix_kw or {})) for f in fractions]),
             "stage": conc([conc_point(f, stage, **(stage_kw or {})) for f in fractions])},)


C3 = [
    case("C3", "holds", c3_in(), True, "at 0.1% (500 entries", "heads Gini Mix 0.600−0.100=+0.500 vs Stage "
         "0.300−0.100=+0.200 (higher, ±0.020)", "at 0.2%", "reported only, at k=1% (|Shared| Mix 123 vs Stage 123)"),
    case("C3", "stage_higher_everywhere", c3_in((0.2,) * 4), False, "Gini Mix 0.200−0.100=+0.100", "(lower"),
    case("C3", "tie_at_1.000_undetermined", c3_in((0.6, 0.5, 0.4, 1.0), (0.3, 0.3, 0.2, 1.0)), None,
         "top-10% Mix 1.000", "a tie in neurons top-10% share at 0.1%, neurons top-10% share at 0.2%"),
    case("C3", "tie_at_1.000_and_lower_does_not_hold", c3_in((0.6, 0.5, 0.1, 1.0), (0.3, 0.3, 0.2, 1.0)), False,
         "neurons Gini Mix 0.100"),
    case("C3", "tie_at_1.000_with_different_nulls_still_a_tie",
         c3_in((0.6, 0.5, 0.4, 1.0), (0.3, 0.3, 0.2, 1.0), stage_kw={"null": (0.1, 0.2, 0.1, 0.9)}), None, "a tie"),
    case("C3", "within_null_resolution_undetermined", c3_in(stage=(0.3, 0.3, 0.385, 0.2)), None,
         "neurons Gini Mix 0.400−0.100=+0.300 vs Stage 0.385−0.100=+0.285 (unresolved, ±0.020)",
         "within the null resolution in neurons Gini at 0.1%"),
    case("C3", "lower_within_resolution_is_not_a_failure", c3_in(stage=(0.3, 0.3, 0.415, 0.2)), None,
         "within the null resolution"),
    case("C3", "just_beyond_resolution_holds", c3_in(stage=(0.3, 0.3, 0.379, 0.2)), True, "(higher, ±0.020)"),
    case("C3", "resolution_follows_the_wider_null", c3_in(stage=(0.3, 0.3, 0.379, 0.2), stage_kw={"std": 0.05}), None,
         "±0.100"),
    case("C3", "excess_not_observed_decides", c3_in((0.5, 0.5, 0.4, 0.35), (0.6, 0.6, 0.5, 0.45),
                                                    stage_kw={"null": (0.4, 0.4, 0.4, 0.4)}), True,
         "heads Gini Mix 0.500−0.100=+0.400 vs Stage 0.600−0.400=+0.200 (higher"),
    case("C3", "one_size_lower", ({"mix": conc([conc_point(0.001, (0.6, 0.5, 0.4, 0.35)),
                                                conc_point(0.002, (0.2,) * 4)]),
                                   "stage": conc([conc_point(f, (0.3, 0.3, 0.2, 0.2)) for f in (0.001, 0.002)])},),
         False, "at 0.2%"),
    case("C3", "set_size_mismatch_undetermined", c3_in(stage_kw={"size": 501}), None, "Mix 500 vs Stage 501 entries",
         "a set-size mismatch at 0.1%, 0.2%"),
    case("C3", "different_fractions_undetermined", (
        {"mix": conc([conc_point(0.001, (0.6,) * 4)]), "stage": conc([conc_point(0.002, (0.3,) * 4)])},), None,
         "not measured at the same matched sizes (Mix [0.001], Stage [0.002])"),
    case("C3", "old_shared_json_without_matched", ({s: {k: v for k, v in conc([]).items() if k != "matched"}
                                                    for s in ("mix", "stage")},), None, "rerun `shared`",
         "Gini Mix 0.111 vs Stage 0.111"),
    case("C3", "paired_by_fraction_not_position", ({
        "mix": conc([conc_point(f, (0.6, 0.5, 0.4, 0.35)) for f in (0.002, 0.001)]),
        "stage": conc([conc_point(0.001, (0.3,) * 4), conc_point(0.002, (0.3,) * 4, size=900)])},),
         None, "a set-size mismatch at 0.2%"),
]


# C4: ablation[strategy] = ablation.json with `matched` (the same-size set); drops are signed (negative = loss)
def abl_sets(ood: float, qa_id: float = -0.05, random: float = -0.05, size: int = 1000) -> dict:
    def control(d: float) -> dict:
        return {"size": size, "mean_drop": {"qa_ood": d, "qa_id": 0.0}}
    return {"shared": {"size": size, "drop": {"qa_ood": ood, "qa_id": qa_id}}, "random": control(random),
            "top_bio_only": control(-0.111), "top_qa_only": control(-0.222)}


def abl(unablated=(0.5, 1.0), matched: dict | None = None, fraction=0.02) -> dict:
    out = {"k": 5.0, "seeds": 3, "unablated": {"qa_ood": unablated[0], "qa_id": unablated[1]},
           **abl_sets(-0.123, size=4321)}
    return out | ({"matched": {"fraction": fraction, "depth": 5000, **matched}} if matched else {})


def c4_in(mix=None, stage=None, mix_unablated=(0.8, 1.0), stage_unablated=(0.5, 1.0), stage_fraction=0.02) -> tuple:
    return ({"mix": abl(mix_unablated, abl_sets(**({"ood": -0.4, "qa_id": -0.1} | (mix or {})))),
             "stage": abl(stage_unablated, abl_sets(**({"ood": -0.1, "qa_id": -0.05} | (stage or {}))),
                          stage_fraction)},)


C4 = [
    case("C4", "holds", c4_in(), True, "OOD-QA relative loss Mix 50.0% (drop -0.400 of 0.800) vs Stage 20.0%",
         "ID-QA relative loss Mix 10.0% (drop -0.100) vs Stage 5.0%",
         "2% of the tracked entries: Mix 1,000, Stage 1,000",
         "Mix random 6% (1,000), Top_BIO∖Shared 14% (1,000), Top_QA∖Shared 28% (1,000)",
         "reported only, at k=5% (sets of different sizes): OOD-QA drop Mix -0.123 (4,321 entries)"),
    case("C4", "floor_bounded_absolute_drop_judged_relative", c4_in({"ood": -0.17}, {"ood": -0.045},
                                                                    (0.98, 1.0), (0.075, 1.0)), False,
         "Mix 17.3% (drop -0.170 of 0.980) vs Stage 60.0% (drop -0.045 of 0.075)"),
    case("C4", "stage_hurt_more", c4_in({"ood": -0.1}, {"ood": -0.4}), False, "Mix 12.5%"),
    case("C4", "relative_tie_strict", c4_in({"ood": -0.16}), False, "Mix 20.0% (drop -0.160 of 0.800) vs Stage 20.0%"),
    case("C4", "random_hurts_mix_more", c4_in({"random": -0.45}), False, "Mix random 56%"),
    case("C4", "random_tie_strict", c4_in({"random": -0.4}), False, "Mix random 50%"),
    case("C4", "stage_loses_more_id", c4_in({"qa_id": -0.022}, {"qa_id": -0.085}), False,
         "ID-QA relative loss Mix 2.2% (drop -0.022) vs Stage 8.5%"),
    case("C4", "id_tie_holds", c4_in({"qa_id": 0.0}, {"qa_id": 0.0}), True, "ID-QA relative loss Mix 0.0%"),
    case("C4", "stage_random_not_judged", c4_in(stage={"random": -0.5}), True, "Stage random 100%"),
    case("C4", "stage_ood_floor_of_0", c4_in(stage={"ood": 0.0}, stage_unablated=(0.0, 1.0)), None,
         "a floor: Stage's unablated OOD-QA is 0, so a relative loss is undefined"),
    case("C4", "mix_id_floor_of_0", c4_in(mix_unablated=(0.8, 0.0)), None, "a floor: Mix's unablated ID-QA is 0"),
    case("C4", "set_size_mismatch", ({"mix": abl((0.8, 1.0), abl_sets(-0.4, size=1000)),
                                      "stage": abl((0.5, 1.0), abl_sets(-0.1, size=999))},), None,
         "Mix 1,000, Stage 999 entries", "a set-size mismatch (Mix 1,000 vs Stage 999 entries)"),
    case("C4", "different_fractions", c4_in(stage_fraction=0.01), None, "a set-size mismatch"),
    case("C4", "old_ablation_json", ({"mix": abl((0.8, 1.0), abl_sets(-0.4)), "stage": abl()},), None,
         "no same-size ablation in Stage; rerun `ablation`", "Mix -0.123 (4,321 entries)"),
]


# C5: graft[strategy] = graft.json with `sweep` [{sparsity, size, accuracy.qa_id}] and `finetuned` (θ_ft, same people)
def graft_json(points: list, finetuned: float = 1.0) -> dict:
    return {"parameters": 10_000, "finetuned": {"qa_id": finetuned},
            "sweep": [{"sparsity": s, "size": n, "accuracy": {"qa_id": a}} for s, n, a in points]}


def c5_in(mix=((0.1, 1000, 0.95), (0.4, 4000, 0.99)), stage=((0.1, 1000, 0.5), (0.4, 4000, 0.95)),
          full=(1.0, 1.0)) -> tuple:
    return ({"mix": graft_json(list(mix), full[0]), "stage": graft_json(list(stage), full[1])},
            {"mix": {"qa_id": 0.987}, "stage": {"qa_id": 0.876}})


C5 = [
    case("C5", "holds", c5_in(), True, "target: grafted ID-QA ≥ 0.9 × θ_ft's", "s=0.1: |γ|₀ 1,000 (10.0%) ID-QA 0.950",
         "Mix (θ_ft ID-QA 1.000 on the graft's people, 0.987 on all)", "smallest reaching 1,000 (10.0%, s=0.1)",
         "smallest reaching 4,000 (40.0%, s=0.4)"),
    case("C5", "stage_smaller", c5_in(((0.1, 1000, 0.5), (0.4, 4000, 0.95)), ((0.1, 1000, 0.95), (0.4, 4000, 0.99))),
         False, "smallest reaching 4,000"),
    case("C5", "only_mix_reaches", c5_in(stage=((0.1, 1000, 0.5), (0.4, 4000, 0.6))), True, "smallest reaching none"),
    case("C5", "only_stage_reaches", c5_in(((0.1, 1000, 0.5), (0.4, 4000, 0.6))), False, "smallest reaching none"),
    case("C5", "neither_reaches", c5_in(((0.1, 1000, 0.5), (0.4, 4000, 0.6)), ((0.1, 1000, 0.5), (0.4, 4000, 0.89))),
         None, "neither strategy's graft reaches the target at any swept sparsity"),
    case("C5", "equal_smallest_sizes_tie", c5_in(stage=((0.1, 1000, 0.91), (0.4, 4000, 0.95))), None,
         "a tie: both first reach the target from the base patch at s=0.1"),
    case("C5", "same_sparsity_smaller_by_search_flips_is_a_tie",
         c5_in(((0.1, 1000, 0.5), (0.4, 3996, 0.91)), ((0.1, 1000, 0.5), (0.4, 4000, 0.99))), None,
         "smallest reaching 3,996 (40.0%, s=0.4)", "so their sizes differ only by the search's flips"),
    case("C5", "target_boundary_reaches", c5_in(((0.1, 1000, 0.9), (0.4, 4000, 0.99))), True, "ID-QA 0.900"),
    case("C5", "just_below_target", c5_in(((0.1, 1000, 0.899), (0.2, 2000, 0.5), (0.4, 4000, 0.99)),
                                         ((0.1, 1000, 0.5), (0.2, 3000, 0.95), (0.4, 4000, 0.99))), False,
         "ID-QA 0.899", "smallest reaching 4,000 (40.0%, s=0.4)", "smallest reaching 3,000 (30.0%, s=0.2)"),
    case("C5", "target_is_a_share_of_theta_ft", c5_in(((0.1, 1000, 0.72), (0.4, 4000, 0.8)), full=(0.8, 1.0)), True,
         "θ_ft ID-QA 0.800"),
    case("C5", "smallest_over_the_sweep_not_the_base", c5_in(((0.05, 500, 0.92), (0.4, 4000, 0.99)),
                                                             ((0.05, 500, 0.3), (0.4, 600, 0.95))), True,
         "smallest reaching 500 (5.0%, s=0.05)", "smallest reaching 600 (6.0%, s=0.4)"),
    case("C5", "theta_ft_floor", c5_in(full=(0.0, 1.0)), None, "a floor: θ_ft's ID-QA is 0"),
    case("C5", "sweeps_at_different_sparsities", c5_in(stage=((0.2, 1000, 0.5), (0.4, 4000, 0.95))), None,
         "not run at the same sparsities"),
    case("C5", "old_graft_json_without_sweep", ({"mix": {"parameters": 10_000}, "stage": {"parameters": 10_000}},
                                                {"mix": {"qa_id": 1.0}, "stage": {"qa_id": 1.0}}), None,
         "no sparsity sweep in graft.json; rerun `graft`", "no sweep"),
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
