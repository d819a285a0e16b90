"""The project's shared terms, named once: what the CLI, configs, artifacts and report call things.

    STRATEGIES     the two training strategies (docs/method.md §3)
    TASKS          the two forms of a fact, and the two halves of the trace (§4)
    EVAL_SETS      the exact-match evaluation sets of a run (§3)
    MODEL_VARIANTS the weights an analysis looks at: θ_ft, or the grafted θ(γ) (§7)
"""

STRATEGIES = ("stage", "mix")
TASKS = ("bio", "qa")
EVAL_SETS = ("qa_id", "qa_ood", "bio")
MODEL_VARIANTS = ("finetuned", "grafted")
