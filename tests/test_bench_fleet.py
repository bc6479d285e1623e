"""tools/bench-fleet at its smallest: two providers, two launcher processes, a real ensemble.

No timing is asserted (the figures are the benchmark's to print): every request of the
stream is served, every provider runs on exactly one launcher at each check, a killed
launcher's provider is taken over and served, a joining launcher gets its share.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmark.fleet import run_size  # tools/, on sys.path (conftest)
from benchmark.fleet_run import Options
from benchmark.fleet_stack import Size


def test_smallest_fleet_serves_every_request_through_a_takeover_and_a_rebalance(
        zk_ensemble: Any, ensemble_tls: dict, tmp_path: Path) -> None:
    opts = Options(launchers=2, rate=5.0, warmup=0.5, steady=1.5, tail=0.5,
                   session_timeout=3.0, request_timeout=60.0, sessions=2)
    report = run_size(Size(2, 10), opts, tmp_path, ensemble=zk_ensemble,
                      chroot=ensemble_tls["chroot"])

    requests = report["requests"]
    assert report["all_ended"], report
    assert requests["made"] > 0
    assert requests["made"] == requests["fulfilled"] == requests["completed"], requests
    assert not requests["errors"], requests
    # Exactly one launcher ran each provider, its lease holder, at every check.
    assert report["ownership_problems"] == []
    assert report["ownership_checks"] == ["start", "after takeover", "after rebalance", "end"]
    assert report["start"]["providers_per_launcher"] == [1, 1]
    takeover = report["takeover"]
    assert takeover["providers"] == 1
    assert takeover["leases_taken_s"] is not None and takeover["served_s"] is not None
    assert takeover["probe_states"] == ["fulfilled"]
    rebalance = report["rebalance"]
    assert rebalance["its_share"] == 1
    assert rebalance["rebalanced_s"] is not None
    assert rebalance["probe_states"] == ["fulfilled"]
    assert report["all_deleted"]
