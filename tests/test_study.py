import json

import pytest

from factrecall.errors import UserError
from factrecall.study import run_study


def test_smoke_study_end_to_end_and_rerun_skips(tmp_path):
    out = tmp_path / "study"
    lines = []
    summary = run_study(out, "smoke", log=lines.append)
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    for strategy in ("stage", "mix"):
        assert set(on_disk["accuracy"][strategy]) == {"qa_id", "qa_ood", "bio", "bio_after_bio_training"}
        assert on_disk["shared"][strategy]["shared"] >= 0
        assert (out / "runs" / strategy / "trace.safetensors").is_file()
        assert (out / "runs" / strategy / "shared" / "shared.json").is_file()
    assert [c["id"] for c in on_disk["claims"]] == ["C1", "C2", "C3", "C4"]
    assert (out / "runs" / "mix" / "analysis" / "ablation.json").is_file()
    for claim in on_disk["claims"]:
        assert isinstance(claim["holds"], bool) and claim["evidence"] and claim["statement"]
    model_file = out / "runs" / "mix" / "model" / "model.safetensors"
    before = model_file.stat().st_mtime_ns
    again = run_study(out, "smoke", log=lambda _: None)  # resumes: nothing retrained
    assert model_file.stat().st_mtime_ns == before
    assert again["accuracy"] == summary["accuracy"] and again["claims"] == summary["claims"]


def test_study_refuses_other_config_and_unknown_preset(tmp_path):
    out = tmp_path / "study"
    out.mkdir()
    (out / "study.json").write_text(json.dumps({"preset": "default"}))
    with pytest.raises(UserError, match="different config"):
        run_study(out, "smoke")
    with pytest.raises(UserError, match="unknown preset"):
        run_study(tmp_path / "other", "paper")
