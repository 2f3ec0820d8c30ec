"""The bounded label sets of the metrics are the domain's own values."""

from __future__ import annotations

from graphql_api import metrics
from graphql_api.documents import DownloadMode, RollupStage


def test_label_sets_are_the_domain_values() -> None:
    """The roller's stage labels and the download mode labels are exactly the stages and modes there are."""
    assert tuple(stage.value for stage in RollupStage) == metrics.ROLLUP_STAGES
    assert set(metrics.MODES) == {mode.value for mode in DownloadMode}
