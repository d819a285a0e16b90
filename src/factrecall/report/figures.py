"""The paper's figures, regenerated from a study's artifacts (matplotlib, Agg; one function per figure).

Every function takes the artifacts it draws ({strategy: JSON} dicts, see `summary.study_artifacts`)
and returns a `Figure`; none reads files, so each can be called on any study's numbers.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from factrecall.terms import STRATEGIES  # noqa: E402

COLORS = {"stage": "#d95f02", "mix": "#1b9e77"}  # each strategy's colour in every figure, the sweep's too
SETS = {"qa_id": "ID-QA", "qa_ood": "OOD-QA", "bio": "BIO"}


def _bars(ax, groups: list[str], values: dict[str, list[float]], errors: dict[str, list[float]] | None = None):
    """Grouped bars: one group per label, one bar per strategy."""
    x = np.arange(len(groups))
    width = 0.8 / len(values)
    for i, (name, vals) in enumerate(values.items()):
        err = errors.get(name) if errors else None
        ax.bar(x + (i - (len(values) - 1) / 2) * width, vals, width, yerr=err, capsize=3 if err else 0,
               label=name.capitalize(), color=COLORS.get(name))
    ax.set_xticks(x, groups)


def accuracy(acc: dict) -> Figure:
    """Fig. 1a: final ID-QA, OOD-QA and BIO accuracy, Stage vs Mix."""
    fig, ax = plt.subplots(figsize=(5, 3.2))
    _bars(ax, list(SETS.values()), {s: [acc[s][m] for m in SETS] for s in STRATEGIES})
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("exact-match accuracy")
    ax.legend()
    ax.set_title("Fact recall after training (Fig. 1a)")
    fig.tight_layout()
    return fig


def training_curves(metrics: dict[str, list[dict]]) -> Figure:
    """Periodic evaluations (subset) against optimizer steps; Stage's phase boundary dashed."""
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2), sharey=True)
    for strategy, rows in metrics.items():
        evals = [r for r in rows if r.get("event") == "eval"]
        for ax, (m, title) in zip(axes, SETS.items()):
            ax.plot([r["global_step"] for r in evals], [r[m]["accuracy"] for r in evals], marker=".",
                    color=COLORS[strategy], label=strategy.capitalize())
            ax.set_title(title)
            ax.set_xlabel("optimizer step")
        phases = [r for r in rows if r.get("event") == "step"]
        if strategy == "stage" and phases:
            switch = next((r["global_step"] for r in phases if r["phase"] != phases[0]["phase"]), None)
            for ax in axes if switch else ():
                ax.axvline(switch, color=COLORS["stage"], linestyle="--", linewidth=0.8)
    axes[0].set_ylabel("accuracy")
    axes[0].legend()
    fig.tight_layout()
    return fig


def shared_sweep(shared: dict) -> Figure:
    """Fig. 2a: |Shared| against k (global and per-tensor thresholds), with chance (k/100)²·P."""
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for strategy in STRATEGIES:
        ks = [p["k"] for p in shared[strategy]["sweep"]]
        ax.plot(ks, [p["global"]["shared"] for p in shared[strategy]["sweep"]], marker="o",
                color=COLORS[strategy], label=f"{strategy.capitalize()} (global)")
        ax.plot(ks, [p["per_tensor"]["shared"] for p in shared[strategy]["sweep"]], marker="s", linestyle=":",
                color=COLORS[strategy], label=f"{strategy.capitalize()} (per tensor)")
    sweep = shared["mix"]["sweep"]
    ax.plot([p["k"] for p in sweep], [p["global"]["chance"] for p in sweep], color="grey", linestyle="--",
            label="chance")
    ax.set(xscale="log", yscale="log", xlabel="k (% of tracked entries)", ylabel="|Shared(k)|",
           title="Shared parameters vs k (Fig. 2a)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def shared_heatmaps(grids: dict[str, tuple[list[str], list[str], np.ndarray]]) -> Figure:
    """Shared entries by layer × module, one panel per strategy: {strategy: (layers, modules, counts)}."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
    top = max(float(g[2].max()) for g in grids.values()) or 1.0
    for ax, strategy in zip(axes, STRATEGIES):
        layers, modules, counts = grids[strategy]
        image = ax.imshow(counts, cmap="viridis", vmin=0, vmax=top, aspect="auto")
        ax.set_xticks(range(len(modules)), [m.removesuffix(".weight") for m in modules], rotation=35, ha="right",
                      fontsize=7)
        ax.set_yticks(range(len(layers)), [f"layer {layer}" for layer in layers])
        for (i, j), v in np.ndenumerate(counts):
            ax.text(j, i, f"{int(v)}", ha="center", va="center", fontsize=7, color="white" if v < top / 2 else "k")
        ax.set_title(f"{strategy.capitalize()}: shared entries")
    fig.colorbar(image, ax=axes, shrink=0.8)
    return fig


def concentration(shared: dict) -> Figure:
    """Shared entries per attention head (bars) and the Lorenz curve of the neurons' counts."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.3))
    for i, strategy in enumerate(STRATEGIES):
        heads = np.asarray(shared[strategy]["heads"], dtype=float).flatten()
        x = np.arange(heads.size)
        axes[0].bar(x + (i - 0.5) * 0.4, heads, 0.4, color=COLORS[strategy],
                    label=f"{strategy.capitalize()} (Gini {shared[strategy]['gini']['heads']:.2f})")
        neurons = np.sort(np.asarray(shared[strategy]["neurons"], dtype=float).flatten())
        lorenz = np.concatenate([[0], np.cumsum(neurons) / max(neurons.sum(), 1)])
        axes[1].plot(np.linspace(0, 1, lorenz.size), lorenz, color=COLORS[strategy],
                     label=f"{strategy.capitalize()} (Gini {shared[strategy]['gini']['neurons']:.2f})")
    axes[0].set(xlabel="head (layer-major)", ylabel="shared entries", title="Shared entries per head")
    axes[1].plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=0.8)
    axes[1].set(xlabel="fraction of neurons (ascending)", ylabel="fraction of shared entries",
                title="Lorenz curve over MLP neurons")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _exact(value: float) -> float:
    """A mean of equal accuracies, where float rounding left ±1e−17 instead of 0."""
    return 0.0 if abs(value) < 1e-12 else value


def ablation(ablation: dict) -> Figure:
    """Fig. 2b: the change of OOD-QA (and ID-QA, BIO) accuracy after resetting each set to θ_pre (negative = lost)."""
    names = {"shared": "Shared", "random": "random", "top_bio_only": "Top_BIO∖S", "top_qa_only": "Top_QA∖S"}
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.3), sharey=True)
    for ax, (m, title) in zip(axes, SETS.items()):
        values = {s: [_exact(v) for v in [ablation[s]["shared"]["change"][m]]
                      + [ablation[s][n]["mean_change"][m] for n in list(names)[1:]]] for s in STRATEGIES}
        errors = {s: [0.0] + [ablation[s][n]["std_change"][m] for n in list(names)[1:]] for s in STRATEGIES}
        _bars(ax, list(names.values()), values, errors)
        ax.axhline(0, color="k", linewidth=0.6)
        low, high = ax.get_ylim()  # at least ±0.05: no change reads as no change, not as a scale of 1e−17
        ax.set_ylim(min(low, -0.05), max(high, 0.05))
        ax.set_title(f"{title}: change after reset")
        ax.tick_params(axis="x", labelsize=8)
    axes[0].set_ylabel(f"accuracy change (k={ablation['mix']['k']:g}%)")
    axes[0].legend()
    fig.tight_layout()
    return fig


def grafting(graft: dict) -> Figure:
    """Fig. 3b: grafted ID-QA as a share of θ_ft's against |γ|₀ / traced entries for every search (report people),
    with C5's target and each run's bracket shaded; the saved graft's accuracy beside its magnitude-only base patch."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.3))
    for s in STRATEGIES:
        g = graft[s]
        points = g.get("sweep") or [{"size": g["graft"]["size"], "accuracy": g["graft"]["accuracy"]}]
        full = g["finetuned"]["qa_id"] or 1.0  # θ_ft answers nothing: shares are plain accuracies
        axes[0].plot([p["size"] / g["traced"] for p in points], [p["accuracy"]["qa_id"] / full for p in points],
                     "o-", color=COLORS[s], label=s.capitalize())
        if g.get("bracket"):
            b = g["bracket"]
            axes[0].axvspan(b["miss"]["size"] / g["traced"], b["hit"]["size"] / g["traced"], color=COLORS[s], alpha=0.2)
    recover = graft["mix"].get("recover")
    if recover:
        axes[0].axhline(recover, color="k", linestyle="--", linewidth=0.8)
    axes[0].set(xlabel="|γ|₀ / traced entries", ylabel="grafted ID-QA / θ_ft's", title="Graft size (Fig. 3b)")
    axes[0].legend()
    groups = [f"{SETS[m]}\n{kind}" for m in ("qa_id", "qa_ood") for kind in ("graft", "base patch")]
    _bars(axes[1], groups, {s: [graft[s][kind]["accuracy"][m] for m in ("qa_id", "qa_ood")
                                for kind in ("graft", "base_patch")] for s in STRATEGIES})
    axes[1].set(ylim=(0, 1.05), ylabel="accuracy", title="Grafted model")
    axes[1].tick_params(axis="x", labelsize=8)
    axes[1].legend()
    fig.tight_layout()
    return fig


LINESTYLES = ("--", ":", "-.", (0, (5, 1, 1, 1)))
MARKERS = (".", "s", "^", "v", "D", "x")


def nothing(ax, title: str) -> None:
    """A panel with no value to show: it says so instead of drawing empty axes."""
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)
    ax.text(0.5, 0.5, "not measured here", ha="center", va="center", transform=ax.transAxes, color="grey")


def circuit(curves: dict, kind: str) -> Figure:
    """Fig. 4a–c: sufficiency and criticality (OOD-QA vs n) per metric, and the fraction of parameters reset."""
    fig, axes = plt.subplots(2, 3, figsize=(12, 6))
    for row, strategy in enumerate(STRATEGIES):
        c = curves[strategy]
        for i, (metric, v) in enumerate(c["metrics"].items()):  # line styles and markers apart: equal curves show
            style = ({"linewidth": 2.2} if metric == "shared_size" else
                     {"linewidth": 1, "alpha": 0.8, "linestyle": LINESTYLES[i % len(LINESTYLES)]})
            style["marker"] = MARKERS[i % len(MARKERS)]
            label = f"{metric} (1 of {len(v['permutations'])} permutations)" if "permutations" in v else metric
            for ax, mode in zip(axes[row][:2], ("sufficiency", "criticality")):
                ax.plot([p["n"] for p in v[mode]], [p["accuracy"]["qa_ood"] for p in v[mode]], label=label,
                        markersize=4, **style)
            axes[row][2].plot([p["n"] for p in v["sufficiency"]], [p["reset_fraction"] for p in v["sufficiency"]],
                              label=label, markersize=4, **style)
        ood = c["unablated"]["qa_ood"]
        for ax, share, what in ((axes[row][0], 0.9, "sufficient"), (axes[row][1], 0.5, "critical")):
            line = ax.axhline(share * ood, color="grey", linestyle="--", linewidth=0.8,
                              label=f"{share:.0%} of θ_ft's OOD-QA ({what} at or {'above' if share > 0.5 else 'below'})")
            if ax is not axes[0][0]:
                ax.legend(handles=[line], fontsize=7)
        units = f"{kind}s kept (top n by metric)", f"{kind}s reset (top n by metric)", f"n ({kind}s kept)"
        titles = ("sufficiency (Fig. 4a)", "criticality (Fig. 4b)", "parameters reset (Fig. 4c)")
        for ax, unit, title in zip(axes[row], units, titles):
            ax.set(xlabel=unit, title=f"{strategy.capitalize()}: {title}")
        axes[row][0].set_ylabel("OOD-QA accuracy")
        axes[row][2].set_ylabel("fraction of parameters")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def per_layer(series: dict[str, dict[str, list[float]]], title: str, ylabel: str) -> Figure:
    """Lines per layer: {panel: {strategy: [value per layer]}}; a panel with no value says so."""
    fig, axes = plt.subplots(1, len(series), figsize=(3.2 * len(series), 3.2), squeeze=False)
    for ax, (panel, by_strategy) in zip(axes[0], series.items()):
        if not any(v is not None and np.isfinite(v) for values in by_strategy.values() for v in values):
            nothing(ax, panel)
            continue
        for strategy, values in by_strategy.items():
            ax.plot(range(len(values)), values, marker="o", color=COLORS.get(strategy), label=strategy.capitalize())
        ax.set(xlabel="layer", ylabel=ylabel, title=panel)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.title.set_fontsize(9)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def attention(stats: dict) -> Figure:
    """Final-token attention share on subject and relation tokens per head, BIO vs QA, per strategy."""
    fig, axes = plt.subplots(2, 2, figsize=(11, 5.5), sharey=True)
    for row, strategy in enumerate(STRATEGIES):
        shares = stats[strategy]["shares"]
        for ax, label in zip(axes[row], ("subject", "relation")):
            values = {form: np.asarray(shares[form][label]).flatten() for form in ("bio", "qa")}
            x = np.arange(values["bio"].size)
            for i, (form, v) in enumerate(values.items()):
                ax.bar(x + (i - 0.5) * 0.4, v, 0.4, label=form.upper(), color=("#7570b3", "#e7298a")[i])
            heads = stats[strategy]["heads"]
            ax.set_xticks(x, [f"L{j // heads}H{j % heads}" for j in x], fontsize=7)
            ax.set(title=f"{strategy.capitalize()}: attention on {label} tokens", ylim=(0, 1))
    for ax in axes[:, 0]:
        ax.set_ylabel("share of final-token attention")
    axes[0][0].legend()
    fig.tight_layout()
    return fig


def consistency(runs: dict) -> Figure:
    """BIO–QA consistency per layer: gradient-probe gap, centred representation gap at both positions (C7's
    measures; matched − mismatched cosine), trace-direction cosine."""
    def blocks(by_layer: dict) -> list[float]:
        return [np.nan if v is None else v for k, v in by_layer.items() if k.isdigit()]

    series, trace = {}, "trace direction cos(Δ_BIO, Δ_QA) (blocks)"
    if all(runs[s].get("gradient_probe") for s in STRATEGIES):
        series["gradient probe gap (blocks)"] = {s: blocks(runs[s]["gradient_probe"]["all"]["gap"]) for s in STRATEGIES}
    for position in runs["mix"]["representation"]:
        series[f"centred gap at {position} (0 = embeddings)"] = {
            s: runs[s]["representation"][position]["all"]["centred"]["gap"] for s in STRATEGIES}
    if all(runs[s].get("trace_direction") for s in STRATEGIES):
        series[trace] = {s: blocks(runs[s]["trace_direction"]["by_layer"]) for s in STRATEGIES}
    fig = per_layer(series, "BIO–QA consistency per layer", "gap (matched − mismatched cosine)")
    for ax in fig.axes:
        if ax.get_title() == trace:
            ax.set_ylabel("cosine")
    return fig
