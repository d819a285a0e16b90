"""PNG figures of one inspection (`inspect.json`): attention, logit lens, direct contributions.

Each figure puts the BIO view and the question side by side. Token colours: subject red,
relation blue, other grey (the same in the HTML fragment).
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from factrecall.artifacts import write_bytes  # noqa: E402
from factrecall.layout import InspectLayout  # noqa: E402
from factrecall.report.save import literal_text  # noqa: E402

COLORS = {"subject": "#c0392b", "relation": "#2471a3", "other": "#7f8c8d"}
TITLES = {"bio": "BIO", "qa": "QA"}


def _save(fig, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    write_bytes(path, buffer.getvalue())


def _title(result: dict, view: dict) -> str:
    return (f"{TITLES[view['form']]}: {result['person']['name']} ({view['attribute']}), "
            f"L{result['layer']}.H{result['head']}, gold {' '.join(view['gold'])!r}")


def _label_ticks(ax, view: dict, axis: str) -> None:
    ticks = range(len(view["tokens"]))
    set_ticks, labels = (ax.set_xticks, ax.get_xticklabels) if axis == "x" else (ax.set_yticks, ax.get_yticklabels)
    set_ticks(list(ticks), view["tokens"], fontsize=6, rotation=90 if axis == "x" else 0)
    for tick, label in zip(labels(), view["labels"]):
        tick.set_color(COLORS[label])


def attention_figure(result: dict, path: Path) -> None:
    """Top: the head's full pattern (query rows, key columns); bottom: the final token's row, bars by label."""
    views = result["views"]
    widths = [max(len(v["tokens"]), 8) for v in views]
    fig, axes = plt.subplots(2, len(views), figsize=(0.17 * sum(widths) + 3, 10),
                             gridspec_kw={"width_ratios": widths, "height_ratios": [3, 1]}, squeeze=False,
                             layout="constrained")
    for col, view in enumerate(views):
        top, bottom = axes[0, col], axes[1, col]
        image = top.imshow(view["attention"]["pattern"], cmap="Greys", vmin=0, vmax=1, aspect="auto")
        _label_ticks(top, view, "x")
        _label_ticks(top, view, "y")
        top.set_title(_title(result, view), fontsize=8)
        row = view["attention"]["pattern"][view["final"]]
        bottom.bar(range(len(row)), row, color=[COLORS[label] for label in view["labels"]])
        _label_ticks(bottom, view, "x")
        bottom.set_ylim(0, 1)
        shares = ", ".join(f"{k} {v:.2f}" for k, v in view["attention"]["final_share"].items())
        bottom.set_title(f"final token {view['tokens'][-1]!r} attends:\n{shares}", fontsize=8)
    fig.colorbar(image, ax=axes[0, :], shrink=0.8, label="attention weight (query row → key column)")
    _save(fig, path)


def lens_figure(result: dict, path: Path) -> None:
    """Rows = layers (0 = embeddings), columns = top tokens; cell colour = probability."""
    views = result["views"]
    fig, axes = plt.subplots(1, len(views), figsize=(8 * len(views), 0.6 * len(views[0]["logit_lens"]) + 1.5),
                             squeeze=False, layout="constrained")
    for ax, view in zip(axes[0], views):
        lens = view["logit_lens"]
        probs = [[t["p"] for t in level["top"]] for level in lens]
        ax.imshow(probs, cmap="Blues", vmin=0, vmax=1, aspect="auto")
        for r, level in enumerate(lens):
            for c, t in enumerate(level["top"]):
                ax.text(c, r, f"{t['token']}\n{t['p']:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if t["p"] > 0.6 else "black")
        ax.set_yticks(range(len(lens)), [f"layer {level['layer']}  gold #{level['gold_rank']} ({level['gold_p']:.2f})"
                                         for level in lens], fontsize=7)
        ax.set_xticks(range(len(probs[0])), [f"top {i + 1}" for i in range(len(probs[0]))], fontsize=7)
        ax.set_title(_title(result, view), fontsize=8)
    _save(fig, path)


def direct_figure(result: dict, path: Path) -> None:
    """Top: the head's most promoted tokens; bottom: each component's direct logit for the gold token."""
    views = result["views"]
    fig, axes = plt.subplots(2, len(views), figsize=(6 * len(views), 8), squeeze=False, layout="constrained")
    head = f"L{result['layer']}.H{result['head']}"
    for col, view in enumerate(views):
        d = view["direct"]
        tokens = [t["token"] for t in d["head_top"]][::-1]
        axes[0, col].barh(tokens, [t["logit"] for t in d["head_top"]][::-1],
                          color=["#c0392b" if t == view["gold"][0] else "#5d6d7e" for t in tokens])
        axes[0, col].set_title(f"{TITLES[view['form']]}: {head} promotes (gold {view['gold'][0]!r}: "
                               f"{d['head_gold_logit']:+.2f}, rank {d['head_gold_rank']})", fontsize=8)
        parts = d["components_on_gold"][:12][::-1]
        axes[1, col].barh([p["component"] for p in parts], [p["logit"] for p in parts],
                          color=["#c0392b" if p["component"] == head else "#5d6d7e" for p in parts])
        axes[1, col].axvline(0, color="black", linewidth=0.5)
        axes[1, col].set_title(f"direct logit for gold {view['gold'][0]!r} by component", fontsize=8)
        for ax in axes[:, col]:
            ax.tick_params(labelsize=7)
    _save(fig, path)


def write_figures(result: dict, out: Path) -> None:
    """`attention.png`, `logit_lens.png` and `direct.png` in `out`."""
    files = InspectLayout(Path(out))
    with literal_text():  # tokens are the data's text
        attention_figure(result, files.figure("attention"))
        lens_figure(result, files.figure("logit_lens"))
        direct_figure(result, files.figure("direct"))
