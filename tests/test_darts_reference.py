"""The DARTS sanity benchmark: published parameter counts and ranks against random genotypes."""

from __future__ import annotations

import json

from benchmarks.darts_reference import main


def test_reports_published_sizes_and_ranks(capsys):
    assert main(["--n", "3", "--proxies", "params,naswot", "--batch-size", "4", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    # DARTS's own training script logs 3.349342 MB for DARTS-V2 at C=36, 20 cells.
    assert report["published_params_c36_l20"]["DARTS-V2"] == 3_349_342
    assert set(report["scores"]) == {"DARTS-V1", "DARTS-V2"}
    v2 = report["scores"]["DARTS-V2"]
    assert v2["params"] == 246_106 and v2["naswot"] is not None
    for label in ("DARTS-V1", "DARTS-V2"):
        beaten, total = map(int, report["beats_random"][label]["params"].split("/"))
        assert total == 3 and 0 <= beaten <= 3


def test_bad_count_is_a_usage_error(capsys):
    assert main(["--n", "0"]) == 2
    assert "--n" in capsys.readouterr().err
