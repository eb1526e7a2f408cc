"""Export a ``Dashboard`` as SAEDashboard's Neuronpedia batch files, to publish features.

    OUT/batch-0.json, batch-1.json, …   {model_id, layer, sae_set, sae_id_suffix, features}
    OUT/run_settings.json               what was exported and from what

Each feature carries what SAEDashboard writes (its ``NeuronpediaDashboardFeature``): the tokens
its decoder direction raises and lowers most (``pos_str``/``pos_values``, ``neg_str``/
``neg_values``), ``frac_nonzero``, histograms of its activations and of its logit effects
(``*_bar_values`` bin centres, ``*_bar_heights`` counts), the three output dimensions its
decoder row weighs most, and ``activations``: the top group (``bin_min`` −1) then the uniform
sample grouped into 5 equal-width intervals of [0, max], highest first. Two differences, both
from streaming: an example's ``tokens`` are its context window, not a whole prompt; the
activation histogram has the dashboard's log-spaced bins (restricted to the occupied ones) and
an interval's ``bin_contains`` is read from it, so it is exact only up to a bin. The logit
values include the final norm's gain (see ``logit_effects``); correlations are not computed
(empty lists).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from monosemantic.files import write_json
from monosemantic.interpret.dashboard import Dashboard
from monosemantic.interpret.examples import Examples
from monosemantic.sae.base import SAE

QUANTILE_GROUPS = 5
PER_GROUP = 5


def r5(values: torch.Tensor) -> list[float]:
    return [round(float(v), 5) for v in values]


def activation_records(
    examples: Examples,
    latent: int,
    decode: Callable[[list[int]], list[str]],
    keep: torch.Tensor,
    bin_min: float,
    bin_max: float,
    bin_contains: float,
) -> list[dict[str, Any]]:
    """The examples of ``latent`` in slots ``keep`` as SAEDashboard activation objects."""
    records = []
    for slot in keep.tolist():
        ids = examples.context_ids[latent, slot]
        inside = ids >= 0
        records.append(
            {
                "bin_min": bin_min,
                "bin_max": bin_max,
                "bin_contains": bin_contains,
                "tokens": decode(ids[inside].tolist()),
                "values": r5(examples.context_values[latent, slot][inside]),
                "qualifying_token_index": int(inside[: examples.left].sum()),
            }
        )
    return records


def share_between(dash: Dashboard, latent: int, low: float, high: float) -> float:
    """The fraction of all tokens with an activation in [low, high] (zeros included when
    low == 0), from the log-binned histogram, each bin placed at its geometric centre."""
    edges = dash.stats.edges
    centres = (edges[:-1] * edges[1:]).sqrt()
    counts = dash.stats.histogram[latent].double()
    inside = counts[(centres >= low) & (centres <= high)].sum().item()
    if low == 0:
        inside += dash.n_tokens * (1 - dash.stats.density[latent].item())
    return round(inside / dash.n_tokens, 5)


def feature_record(
    dash: Dashboard, sae: SAE, latent: int, decode: Callable[[list[int]], list[str]], dataset: str
) -> dict[str, Any]:
    stats, logits = dash.stats, dash.logits
    row = sae.W_dec.detach()[latent].float()
    alignment = row.abs().topk(min(3, row.numel()))
    counts = stats.histogram[latent]
    occupied = counts.nonzero().squeeze(-1)
    bins = slice(int(occupied[0]), int(occupied[-1]) + 1) if len(occupied) else slice(0, 0)
    centres = (stats.edges[:-1] * stats.edges[1:]).sqrt()
    top_max = float(stats.max[latent])
    activations = activation_records(
        dash.top,
        latent,
        decode,
        torch.arange(int(dash.top.count()[latent])),
        -1,
        round(top_max, 5),
        -1,
    )
    intervals = torch.linspace(0, top_max, QUANTILE_GROUPS + 1).tolist()
    filled = dash.samples.where[latent] >= 0
    values = dash.samples.values[latent]
    for group in reversed(range(QUANTILE_GROUPS)):
        low, high = intervals[group], intervals[group + 1]
        inside = filled & (values > low) & (values <= high)
        slots = inside.nonzero().squeeze(-1)[-PER_GROUP:]
        contains = share_between(dash, latent, low, high)
        activations += activation_records(
            dash.samples, latent, decode, slots, round(low, 5), round(high, 5), contains
        )
    record: dict[str, Any] = {
        "feature_index": latent,
        "neuron_alignment_indices": alignment.indices.tolist(),
        "neuron_alignment_values": r5(row[alignment.indices]),
        "neuron_alignment_l1": r5(alignment.values / row.abs().sum().clamp_min(1e-12)),
        "correlated_neurons_indices": [],
        "correlated_neurons_pearson": [],
        "correlated_neurons_l1": [],
        "correlated_features_indices": [],
        "correlated_features_pearson": [],
        "correlated_features_l1": [],
        "neg_str": [],
        "neg_values": [],
        "pos_str": [],
        "pos_values": [],
        "frac_nonzero": round(float(stats.density[latent]), 7),
        "freq_hist_data_bar_heights": counts[bins].tolist(),
        "freq_hist_data_bar_values": r5(centres[bins]),
        "logits_hist_data_bar_heights": [],
        "logits_hist_data_bar_values": [],
        "n_prompts_total": dash.n_windows,
        "n_tokens_in_prompt": dash.top.context_ids.shape[2],
        "dataset": dataset,
        "decoder_weights_dist": [],
        "activations": activations,
        "vector": [],
    }
    if logits is not None:
        edges = logits.hist_edges[latent]
        record |= {
            "neg_str": decode(logits.lower_ids[latent].tolist()),
            "neg_values": r5(logits.lower_values[latent]),
            "pos_str": decode(logits.raise_ids[latent].tolist()),
            "pos_values": r5(logits.raise_values[latent]),
            "logits_hist_data_bar_heights": logits.hist_counts[latent].tolist(),
            "logits_hist_data_bar_values": r5((edges[:-1] + edges[1:]) / 2),
        }
    return record


def write_neuronpedia(
    dash: Dashboard,
    sae: SAE,
    out: Path,
    decode: Callable[[list[int]], list[str]],
    *,
    model_id: str,
    layer: int,
    sae_set: str,
    dataset: str,
    per_batch: int = 128,
) -> list[Path]:
    """Write ``batch-N.json`` of ``per_batch`` features each (the last may hold fewer) and
    ``run_settings.json`` into ``out``; returns the batch paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for number, start in enumerate(range(0, sae.d_sae, per_batch)):
        latents = range(start, min(start + per_batch, sae.d_sae))
        batch = {
            "model_id": model_id,
            "layer": layer,
            "sae_set": sae_set,
            "sae_id_suffix": None,
            "features": [feature_record(dash, sae, i, decode, dataset) for i in latents],
        }
        paths.append(write_json(out / f"batch-{number}.json", batch, indent=None))
    settings = {
        "model_id": model_id,
        "layer": layer,
        "sae_set": sae_set,
        "dataset": dataset,
        "hook": sae.cfg.hook,
        "d_sae": sae.d_sae,
        "n_tokens": dash.n_tokens,
        "n_features_per_batch": per_batch,
        "writer": "monosemantic",
    }
    write_json(out / "run_settings.json", settings)
    return paths
