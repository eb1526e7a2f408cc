"""The feature browser: its streamed data against brute force, the site in a real headless
Chromium (file://, no network), untrusted strings shown as text, the Neuronpedia export, serve."""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import urllib.request
from pathlib import Path

import pytest
import torch
from tiny_lm import sharp_lm

from monosemantic.cli import main
from monosemantic.commands.browse import site_server
from monosemantic.interpret.browser import CHROMIUM, CHROMIUM_FLAGS, write_browser
from monosemantic.interpret.dashboard import collect
from monosemantic.interpret.neuronpedia import write_neuronpedia
from monosemantic.sae.registry import config, create

D, VOCAB, CTX = 16, 300, 12
SCRIPT = "<script>window.__ran = 'script'</script>"
IMAGE = "<img src=x onerror=\"window.__ran = 'img'\">"
PLANTED = {7: SCRIPT, 8: IMAGE}


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return sharp_lm(d_model=D, vocab_size=VOCAB, context_size=CTX)


@pytest.fixture(scope="module")
def sae():
    torch.manual_seed(2)
    return create(config("standard", d_in=D, d_sae=40, hook="blocks.0:output")).eval()


@pytest.fixture(scope="module")
def tokens() -> torch.Tensor:
    ids = torch.randint(9, VOCAB, (30, CTX), generator=torch.Generator().manual_seed(1))
    ids[::3, 5], ids[1::3, 6] = 7, 8  # the planted strings appear in many contexts
    return ids


@pytest.fixture(scope="module")
def dash(model, sae, tokens):
    exclude = torch.zeros_like(tokens, dtype=torch.bool)
    exclude[:, 0] = True
    return collect(model, sae, tokens, exclude=exclude, n_top=5, n_samples=6, left=3, right=2,
                   batch_size=4)  # fmt: skip


def decode(ids: list[int]) -> list[str]:
    return [PLANTED.get(i, f"tok{i}") for i in ids]


def test_dashboard_equals_brute_force(model, sae, tokens, dash) -> None:
    """One pass over all 30 windows at once (no streaming) gives the same statistics and top
    examples; logit effects are those of the decoder rows."""
    from monosemantic.data.harvest import forward_activations
    from monosemantic.interpret.logit_effects import logit_effects

    x = forward_activations(model, tokens, ["blocks.0:output"])["blocks.0:output"]
    codes = sae.encode(x).detach()
    codes[:, 0] = 0  # the excluded BOS column
    counted = codes[:, 1:].reshape(-1, sae.d_sae)
    torch.testing.assert_close(dash.stats.density, (counted > 0).double().mean(0))
    torch.testing.assert_close(dash.stats.max, counted.max(0).values.double())
    flat = codes.reshape(-1, sae.d_sae)
    for latent in range(sae.d_sae):
        expected = flat[:, latent].topk(5)
        assert dash.top.where[latent].tolist() == expected.indices.tolist()
        torch.testing.assert_close(dash.top.values[latent], expected.values)
    assert dash.n_tokens == 30 * (CTX - 1) and dash.n_windows == 30
    assert torch.equal(dash.logits.raise_ids, logit_effects(model, sae).raise_ids)


@pytest.fixture(scope="module")
def site(tmp_path_factory, dash) -> Path:
    out = tmp_path_factory.mktemp("site")
    meta = {"title": f"browser {SCRIPT}", "model": IMAGE, "hook": "blocks.0:output", "data": "x"}
    write_browser(dash, out, decode, meta=meta, chunk=16)
    return out


def test_the_site_is_split_into_chunks_read_on_demand(site, dash) -> None:
    names = sorted(p.name for p in (site / "data").iterdir())
    assert names == ["chunk-0000.js", "chunk-0001.js", "chunk-0002.js", "latents.js", "meta.js",
                     "vocab.js"]  # fmt: skip
    payload = json_of(site, "chunk-1")
    assert sorted(map(int, payload)) == list(range(16, 32))
    entry = payload["20"]
    assert entry["top"]["where"] == dash.top.where[20][dash.top.where[20] >= 0].tolist()


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium driven by Playwright. Missing, it skips here and fails on CI
    (``.ci/run`` installs Debian's chromium and sets MONOSEMANTIC_REQUIRE_BROWSER=1)."""
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        message = f"no Chromium at {CHROMIUM}: apt-get install chromium"
        if os.environ.get("MONOSEMANTIC_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_FLAGS))
        yield chromium
        chromium.close()


def open_page(browser, url: str):
    page = browser.new_page()
    problems: list[str] = []
    page.on("console", lambda m: m.type in ("error", "warning") and problems.append(m.text))
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("request", lambda r: None if r.url.startswith("file://") else problems.append(r.url))
    page.goto(url)
    return page, problems


def test_the_site_works_from_file_with_no_errors_and_runs_no_data(browser, site) -> None:
    page, problems = open_page(browser, (site / "index.html").as_uri())
    rows = page.locator("#latents tbody tr")
    alive = sum(d > 0 for d in json_of(site, "latents")["density"])
    assert rows.count() == alive
    assert page.locator("#title").text_content() == f"browser {SCRIPT}"

    page.fill("#search", "#17")
    assert rows.count() == 1 and rows.first.locator("td").first.text_content() == "17"
    page.fill("#search", "TOK2")  # a label's or a top logit token's text, any case
    listed = {int(t) for t in page.locator("#latents tbody td:first-child").all_text_contents()}
    latents = json_of(site, "latents")
    expected = {
        i
        for i, (label, raises) in enumerate(zip(latents["label"], latents["raises"], strict=True))
        if latents["density"][i] > 0 and "tok2" in f"{label} {' '.join(raises)}".lower()
    }
    assert 0 < len(listed) < alive and listed == expected

    page.fill("#search", "")
    rows.first.click()
    page.wait_for_selector("#panel .context")
    latent = int(page.locator("#latents tbody tr.selected td").first.text_content())
    chunk = json_of(site, f"chunk-{latent // 16}")[str(latent)]
    assert page.locator("#panel .examples").first.locator(".context").count() == len(
        chunk["top"]["value"]
    )
    shaded = page.locator("#panel .context .tok[style*='background-color']")
    assert shaded.count() > 0, "tokens shaded by activation"
    assert page.locator("#panel .tok.here").count() == len(chunk["top"]["value"]) + len(
        chunk["samples"]["value"]
    )

    page.fill("#search", "script")  # the planted strings, shown in the list and the panel
    page.locator("#latents tbody tr").first.click()
    page.wait_for_selector("#panel .context")
    page.wait_for_timeout(200)
    shown = page.locator("body").inner_text()
    assert SCRIPT in shown and (IMAGE in shown or "onerror" in shown)
    assert page.evaluate("window.__ran") is None, "a planted string ran"
    assert page.locator("body script").count() == 0 and page.locator("img").count() == 0
    assert problems == []


def json_of(site: Path, name: str):
    """The JSON a data script assigns to ``monoData[name]``."""
    file = f"chunk-{int(name[6:]):04d}" if name.startswith("chunk-") else name
    text = (site / "data" / f"{file}.js").read_text()
    return json.loads(text[text.index("] = ") + 4 :].rstrip().rstrip(";"))


def test_neuronpedia_batches_hold_what_saedashboard_writes(tmp_path, dash, sae) -> None:
    paths = write_neuronpedia(dash, sae, tmp_path, decode, model_id="tiny", layer=0,
                              sae_set="standard-40", dataset="random", per_batch=16)  # fmt: skip
    assert [p.name for p in paths] == ["batch-0.json", "batch-1.json", "batch-2.json"]
    batch = json.loads(paths[1].read_text())
    assert set(batch) == {"model_id", "layer", "sae_set", "sae_id_suffix", "features"}
    feature = batch["features"][4]
    latent = feature["feature_index"]
    assert latent == 20
    assert feature["frac_nonzero"] == pytest.approx(float(dash.stats.density[latent]), abs=1e-6)
    assert feature["pos_str"] == decode(dash.logits.raise_ids[latent].tolist())
    raised = dash.logits.raise_values[latent].tolist()
    assert feature["pos_values"] == pytest.approx(raised, abs=1e-4)
    assert sum(feature["freq_hist_data_bar_heights"]) == int(dash.stats.histogram[latent].sum())
    assert sum(feature["logits_hist_data_bar_heights"]) == VOCAB
    top = [a for a in feature["activations"] if a["bin_min"] == -1]
    strongest = dash.top.values[latent][:5].tolist()
    assert [max(a["values"]) for a in top] == pytest.approx(strongest, rel=1e-4)
    for record in feature["activations"]:
        i = record["qualifying_token_index"]
        assert len(record["tokens"]) == len(record["values"])
        if record["bin_min"] != -1:
            assert record["bin_min"] < record["values"][i] <= record["bin_max"] + 1e-4
            assert 0 <= record["bin_contains"] <= 1
    assert json.loads((tmp_path / "run_settings.json").read_text())["d_sae"] == 40


def test_browse_and_serve_commands(tmp_path, tiny_lm_folder, tiny_text, capsys) -> None:
    from cli_args import FAST, eval_args, text_args

    args = text_args(tiny_lm_folder, tiny_text)
    assert main(["train", *args, *FAST, "--out", str(tmp_path / "run")]) == 0
    (folder,) = (tmp_path / "run" / "saes").iterdir()
    capsys.readouterr()
    site = tmp_path / "site"
    browse = ["browse", str(folder), *eval_args(args), "--out", str(site), "--neuronpedia"]
    assert main(browse) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["tokens"] > 3000 and summary["peak_memory_mb"] > 0
    assert (site / "index.html").is_file() and (site / "neuronpedia" / "batch-0.json").is_file()
    vocab = json_of(site, "vocab")
    assert vocab[3] == "the" and vocab[4] == "king"  # the tiny tokenizer's ids

    with site_server(site, 0) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/index.html"
        assert urllib.request.urlopen(url).read() == (site / "index.html").read_bytes()
        server.shutdown()
    assert main(["serve", str(tmp_path)]) == 2
    assert "holds no index.html" in capsys.readouterr().err
    assert re.search("browse reads one hook point", _browse_error(tmp_path, folder, capsys))


def _browse_error(tmp_path, folder, capsys) -> str:
    """browse on a multi-layer SAE: refused by name."""
    config_path = folder / "cfg.json"
    cfg = json.loads(config_path.read_text())
    cfg["metadata"]["monosemantic"]["hook"] = "model.layers.*:output"
    config_path.write_text(json.dumps(cfg))
    assert main(["browse", str(folder), "--out", str(tmp_path / "x")]) == 2
    return capsys.readouterr().err


def test_browse_a_matrix_of_images(tmp_path, browser, capsys) -> None:
    """Rows of a matrix as examples: the sprite holds each latent's top rows' pixels (scaled to
    0-255 by the data's range), and the page draws them as tiles."""
    import numpy as np
    from PIL import Image

    g = np.random.default_rng(0)
    images = (g.random((300, 6, 5)) * (g.random((300, 1, 1)) < 0.5)).astype(np.float32)
    matrix = tmp_path / "images.npy"
    np.save(matrix, images.reshape(300, 30))
    run = tmp_path / "run"
    train = ["train", "--data", str(matrix), "--steps", "20", "--batch-size", "64",
             "--expansion", "2", "--k", "3", "--no-progress", "--out", str(run)]  # fmt: skip
    assert main(train) == 0
    (folder,) = (run / "saes").iterdir()
    site = tmp_path / "site"
    capsys.readouterr()
    browse = ["browse", str(folder), "--data", str(matrix), "--out", str(site), "--top", "4"]
    assert main([*browse, "--image-shape", "5", "5"]) == 2
    assert "holds 25 pixels but the rows" in capsys.readouterr().err
    assert main([*browse, "--neuronpedia"]) == 2
    assert "a matrix has no tokens" in capsys.readouterr().err
    assert main([*browse, "--image-shape", "6", "5"]) == 0, capsys.readouterr().err
    meta = json_of(site, "meta")
    assert meta["image"] == [6, 5, 4 + 16] and meta["unit"] == "rows"
    chunk = json_of(site, "chunk-0")
    latent = next(int(i) for i, e in chunk.items() if len(e["top"]["where"]) == 4)
    sprite = np.asarray(Image.open(site / "data" / "images-0000.png"), dtype=np.float64)
    low, high = images.min(), images.max()
    for column, row in enumerate(chunk[str(latent)]["top"]["where"]):
        tile = sprite[latent * 6 : latent * 6 + 6, column * 5 : column * 5 + 5]
        np.testing.assert_allclose(tile, np.round((images[row] - low) / (high - low) * 255))

    page, problems = open_page(browser, (site / "index.html").as_uri() + f"#{latent}")
    page.wait_for_selector("#panel .tile canvas")
    assert page.locator("#panel .examples").first.locator(".tile").count() == 4
    assert problems == []
