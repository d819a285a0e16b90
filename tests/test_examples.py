"""docs/examples/ run as a user runs them, in a fresh process, and use only factrecall's public names."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import factrecall

EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"


def test_trace_any_loop_prints_shared_parameters_by_layer(tmp_path):
    run = tmp_path / "run"
    done = subprocess.run([sys.executable, str(EXAMPLES / "trace_any_loop.py"), "--out", str(run)],
                          check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    accuracy = re.search(r"QA accuracy ID ([\d.]+), OOD ([\d.]+)", out)
    assert accuracy and float(accuracy[1]) >= 0.9, out  # the toy facts are learnt
    total = int(re.search(r"shared parameters at k = 1% \(global threshold\): ([\d,]+)", out)[1].replace(",", ""))
    by_layer = {int(layer): int(count) for layer, count in re.findall(r"^  layer (\d+): (\d+)$", out, re.MULTILINE)}
    assert "shared parameters by layer:" in out and set(by_layer) == {0, 1}, out
    assert sum(by_layer.values()) == total > 0
    enrichment = float(re.search(r"enrichment ([\d.]+)x", out)[1])
    assert enrichment > 1  # BIO and QA share more entries than two independent top sets would
    assert (run / "trace.safetensors").is_file() and (run / "model" / "config.json").is_file()
    assert (run / "shared" / "shared.json").is_file()  # written by analyze_run, as `factrecall shared` does


def test_examples_use_only_public_names():
    for path in EXAMPLES.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "factrecall":
                assert node.module == "factrecall" and {a.name for a in node.names} <= set(factrecall.__all__), path
            elif isinstance(node, ast.Import):
                assert all(a.name == "factrecall" or not a.name.startswith("factrecall.") for a in node.names), path
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "factrecall":
                assert node.attr in factrecall.__all__, f"{path}: factrecall.{node.attr} is not public"


def test_every_example_config_resolves():
    """Each study config in docs/examples resolves as `factrecall study` would read it (a sweep into its points)."""
    from factrecall.config.study import read_config_file, study_config
    from factrecall.study.sweep import is_sweep, sweep_points

    configs = sorted(EXAMPLES.glob("*.toml"))
    assert len(configs) >= 5
    for path in configs:
        if is_sweep(read_config_file(path)):
            assert sweep_points(path), path
        else:
            study_config(None, path)
