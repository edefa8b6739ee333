"""reidtrain's command line."""

from __future__ import annotations

import numpy as np
from typer.testing import CliRunner

from reidtrain.cli import app as train_app

runner = CliRunner()


def test_reidtrain_rank_scores_a_saved_distance_matrix(tmp_path):
    arrays = tmp_path / "dist.npz"
    # Query 0 (id 1, cam 0): gallery 0 is the same camera (removed), gallery 1 a distractor, gallery 2 the match.
    np.savez(
        arrays,
        distmat=np.array([[0.1, 0.2, 0.3]]),
        q_pids=np.array([1]),
        g_pids=np.array([1, 2, 1]),
        q_camids=np.array([0]),
        g_camids=np.array([0, 1, 1]),
    )
    result = runner.invoke(train_app, ["rank", str(arrays), "--max-rank", "2"])
    assert result.exit_code == 0, result.output
    assert "mAP 50.00" in result.output and "R1 0.00" in result.output
    np.savez(arrays, distmat=np.zeros((1, 1)))
    result = runner.invoke(train_app, ["rank", str(arrays)])
    assert result.exit_code == 2 and "lacks the arrays" in result.output
