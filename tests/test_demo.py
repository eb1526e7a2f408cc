"""The demo end to end on the real SmolLM2-135M and Shakespeare, shrunk by --quick."""

import json

import pytest

from monosemantic.cli import main
from monosemantic.sae.io import load_sae


@pytest.mark.slow
def test_quick_demo_writes_a_report(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    html = (out / "report.html").read_text()
    (summary,) = json.loads((out / "run" / "summary.json").read_text())["saes"]
    metrics = summary["eval"]
    assert metrics["l0"] == pytest.approx(32)
    assert 0 < metrics["fvu"] < 1
    assert metrics["ce_clean"] < metrics["ce_sae"] < metrics["ce_zero_ablation"]
    assert "loss_recovered" in html and "data:image/png;base64," in html
    sae = load_sae(summary["folder"])
    assert (sae.d_in, sae.d_sae, sae.cfg.hook) == (576, 2304, "model.layers.3.mlp:output")
    assert "href='browser/index.html'" in html and (out / "browser" / "index.html").is_file()
    assert "Towards Monosemanticity in miniature" in html
    assert "href='monosemanticity/browser/index.html'" in html
    (miniature,) = json.loads((out / "monosemanticity" / "run" / "summary.json").read_text())[
        "saes"
    ]
    assert miniature["eval"]["l0"] == pytest.approx(32)
    assert load_sae(miniature["folder"]).cfg.hook == "blocks.0.mlp.down:input"
