"""The paper's claims (docs/method.md §11), each declared once in its own module.

`CLAIMS` is what the study's summary, the report and the sweep's ladders iterate. Each claim's
rule (`verdict.py`) turns measures with their uncertainty into "holds", "does not hold" or
"undetermined", gated by fit.
"""

from __future__ import annotations

from factrecall.study.claims import (
    c1_recall,
    c2_shared_size,
    c3_concentration,
    c4_ablation,
    c5_grafting,
    c6_heads,
    c7_consistency,
)
from factrecall.study.claims.verdict import Claim

CLAIMS: tuple[Claim, ...] = (c1_recall.CLAIM, c2_shared_size.CLAIM, c3_concentration.CLAIM, c4_ablation.CLAIM_A,
                             c4_ablation.CLAIM_B, c5_grafting.CLAIM, c6_heads.CLAIM, c7_consistency.CLAIM)
STATEMENTS: dict[str, str] = {c.id: c.statement for c in CLAIMS}


def check_claims(evidence: dict) -> list[dict]:
    """Every claim's summary entry from {"accuracy" or analysis name: {strategy: result}}."""
    return [claim.check(evidence) for claim in CLAIMS]
