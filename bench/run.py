"""`make bench`: run every benchmark and print its figures (medians, ratios side by side)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import display_refresh, littles_law, pacing, resume_startup, validation


def main() -> int:
    res = littles_law.main()
    print(
        f"littles-law: ours {res['ours_req_s']:.0f} req/s = {res['ours_pct_of_limit']:.1f}% of "
        f"{res['limit_req_s']:.0f} (goal >= 90%); bare aiohttp {res['reference_req_s']:.0f} "
        f"req/s; ratio {res['ratio_ours_vs_reference']:.3f}; server max in flight "
        f"{res['max_in_flight']:.0f} (limit {littles_law.CONCURRENCY})",
        flush=True,
    )
    print(resume_startup.summary(resume_startup.main()), flush=True)
    print(validation.summary(validation.main()), flush=True)
    print(display_refresh.summary(display_refresh.main()), flush=True)
    # The issue-11 scenarios: ~7 min, one of them the real 60 s window.
    print(pacing.summary(pacing.main()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
