"""A self-contained HTML fragment of one inspection, for embedding into a report page.

One `<div>` (no `<html>`/`<body>`), class names prefixed `fr-inspect-`, its CSS scoped to the
fragment's id, no external files or CDN: the attention data sit in an inline JSON block and a few
lines of inline JavaScript recolour the tokens when the mouse rests on one (its attention row as
the query); without JavaScript the final token's row is shown. Every string that comes from data
(names, tokens, texts) is HTML-escaped, and the JSON block cannot close its `<script>` element.
"""

from __future__ import annotations

import hashlib
import json
from html import escape
from pathlib import Path

from factrecall.analysis.labels import LABELS
from factrecall.artifacts import write_bytes

TITLES = {"bio": "BIO text", "qa": "Question"}
_CSS = """
#{id} {{ font-family: sans-serif; font-size: 13px; }}
#{id} .fr-inspect-views {{ display: flex; gap: 24px; flex-wrap: wrap; }}
#{id} .fr-inspect-view {{ flex: 1 1 420px; min-width: 0; }}
#{id} .fr-inspect-tokens {{ line-height: 2; }}
#{id} .fr-inspect-tok {{ padding: 1px 2px; margin: 0 1px; border-radius: 3px; cursor: default; }}
#{id} .fr-inspect-subject {{ color: #c0392b; font-weight: bold; }}
#{id} .fr-inspect-relation {{ color: #2471a3; text-decoration: underline; }}
#{id} .fr-inspect-other {{ color: #333; }}
#{id} .fr-inspect-query {{ outline: 2px solid #000; }}
#{id} table {{ border-collapse: collapse; margin: 6px 0; font-size: 12px; }}
#{id} td, #{id} th {{ border: 1px solid #ccc; padding: 2px 6px; text-align: left; }}
"""
_SCRIPT = """(function () {
  var root = document.getElementById(%s);
  var data = JSON.parse(root.querySelector(".fr-inspect-data").textContent);
  root.querySelectorAll(".fr-inspect-view").forEach(function (view) {
    var rows = data[Number(view.getAttribute("data-view"))];
    var tokens = view.querySelectorAll(".fr-inspect-tok");
    function show(q) {
      var top = Math.max.apply(null, rows[q]) || 1;
      tokens.forEach(function (t, i) {
        var w = i <= q ? rows[q][i] : 0;
        t.style.backgroundColor = "rgba(230, 126, 34, " + (w / top).toFixed(3) + ")";
        t.title = t.getAttribute("data-label") + ": attention from token " + q + " = " + w.toFixed(4);
        t.classList.toggle("fr-inspect-query", i === q);
      });
    }
    tokens.forEach(function (t, i) { t.addEventListener("mouseenter", function () { show(i); }); });
    view.addEventListener("mouseleave", function () { show(tokens.length - 1); });
  });
})();"""


def _tokens(view: dict) -> str:
    row = view["attention"]["pattern"][view["final"]]
    top = max(row) or 1.0
    spans = []
    for i, (token, label, w) in enumerate(zip(view["tokens"], view["labels"], row)):
        query = " fr-inspect-query" if i == view["final"] else ""
        spans.append(f'<span class="fr-inspect-tok fr-inspect-{label}{query}" data-label="{label}" '
                     f'style="background-color: rgba(230, 126, 34, {w / top:.3f})" '
                     f'title="{label}: attention from the final token = {w:.4f}">{escape(token)}</span>')
    return " ".join(spans)


def _lens(view: dict) -> str:
    rows = []
    for level in view["logit_lens"]:
        cells = "".join(f"<td>{escape(t['token'])} <small>{t['p']:.2f}</small></td>" for t in level["top"])
        rows.append(f"<tr><th>{level['layer']}</th>{cells}<td>#{level['gold_rank']} "
                    f"<small>{level['gold_p']:.3f}</small></td></tr>")
    head = "".join(f"<th>top {i + 1}</th>" for i in range(len(view["logit_lens"][0]["top"])))
    return (f'<table class="fr-inspect-lens"><tr><th>layer</th>{head}<th>gold rank (p)</th></tr>'
            f'{"".join(rows)}</table>')


def _direct(view: dict, head: str) -> str:
    d = view["direct"]
    promoted = ", ".join(f"{escape(t['token'])} <small>{t['logit']:+.2f}</small>" for t in d["head_top"])
    parts = "".join(f"<tr><td>{f'<b>{escape(head)}</b>' if p['component'] == head else escape(p['component'])}</td>"
                    f"<td>{p['logit']:+.3f}</td></tr>" for p in d["components_on_gold"][:10])
    return (f"<p>{escape(head)} promotes: {promoted}; its logit for the gold token "
            f"{d['head_gold_logit']:+.3f} (rank {d['head_gold_rank']}).</p>"
            f'<table class="fr-inspect-direct"><tr><th>component</th><th>direct logit for gold</th></tr>'
            f"{parts}</table>")


def fragment(result: dict) -> str:
    """The HTML fragment of an `inspect_run` result."""
    key = json.dumps([result["run"], result["person"], result["attribute"], result["layer"], result["head"],
                      result["on"]])
    root = "fr-inspect-" + hashlib.sha256(key.encode()).hexdigest()[:10]
    head = f"L{result['layer']}.H{result['head']}"
    person = result["person"]
    views = []
    for i, view in enumerate(result["views"]):
        shares = " · ".join(f"{label} {view['attention']['final_share'][label]:.2f}" for label in LABELS)
        verdict = "correct" if view["correct"] else f"predicts {escape(view['predicted'])}"
        views.append(
            f'<section class="fr-inspect-view" data-view="{i}">'
            f"<h4>{TITLES[view['form']]} — gold {escape(' '.join(view['gold']))} ({verdict})</h4>"
            f'<p class="fr-inspect-tokens">{_tokens(view)}</p>'
            f'<p class="fr-inspect-shares">final token attends: {shares}</p>'
            f"<h5>Logit lens at the final token</h5>{_lens(view)}"
            f"<h5>Direct contribution</h5>{_direct(view, head)}</section>")
    patterns = json.dumps([v["attention"]["pattern"] for v in result["views"]], separators=(",", ":"))
    patterns = patterns.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return (f'<div class="fr-inspect" id="{root}"><style>{_CSS.format(id=root)}</style>'
            f'<p class="fr-inspect-caption">Person {person["person_id"]} <b>{escape(person["name"])}</b> '
            f"({escape(person['split'])}), attribute {escape(result['attribute'])}, head {head} of the "
            f"{escape(result['on'])} model. Subject tokens red, relation tokens blue and underlined; shading = "
            f"attention of the final token (hover a token to see its own row).</p>"
            f'<div class="fr-inspect-views">{"".join(views)}</div>'
            f'<script type="application/json" class="fr-inspect-data">{patterns}</script>'
            f"<script>{_SCRIPT % json.dumps(root)}</script></div>\n")


def write_fragment(result: dict, path: Path) -> None:
    write_bytes(Path(path), fragment(result).encode())
