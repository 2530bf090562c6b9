"""With capture_layers, each decoder layer's output is kept at the batch's scored positions only, taken as
the layer runs: not whole layer outputs, which held layers x batch tokens x d_model until the batch was
scored (21 GB for an 80-layer, 8k-wide model at the GPU's 16,384-token budget). The states are those of
the model's own hidden states at those positions."""

from __future__ import annotations

import torch

from specprobe.core import ModelPair, scoring
from specprobe.core.architecture import split_model
from specprobe.core.items import ScoreItem


def test_layers_are_kept_at_the_scored_positions_only(tiny_llama, monkeypatch):
    base, _ = tiny_llama
    pair = ModelPair.load(str(base))
    tok = pair.tokenizer
    texts = ["Chest pain and a seizure, then cirrhosis.", "A long text about psoriasis " * 6]
    items = []
    for text in texts:
        ids = [tok.bos_token_id, *tok(text, add_special_tokens=False)["input_ids"]]
        items.append(ScoreItem(ids=tuple(ids), positions=(3, len(ids) - 1)))
    kept_shapes: list[tuple[int, ...]] = []

    class Spy(scoring._Capture):
        def keep(self, module, inputs, output):
            super().keep(module, inputs, output)
            kept_shapes.append(tuple(self.states[-1].shape))

    monkeypatch.setattr(scoring, "_Capture", Spy)
    split = split_model(pair.base_model)
    out = scoring.score_items(split, items, batch_size=2, capture_layers=True)
    n_layers, d_model = len(split.layers), pair.base_model.config.hidden_size
    assert kept_shapes == [(4, d_model)] * n_layers  # one batch: 2 items x 2 scored positions, per layer

    with torch.no_grad():  # the same states as the model's own hidden states (layer i's output: index i + 1)
        for item, scored in zip(items, out):
            states = pair.base_model(torch.tensor([item.ids]), output_hidden_states=True).hidden_states
            for layer in range(n_layers - 1):  # the last one is returned after the final norm
                want = states[layer + 1][0, [p - 1 for p in item.positions]]
                assert torch.allclose(scored.layer_states[layer], want, atol=1e-5)
