"""Rate–accuracy benchmark (the entry point; the code is :mod:`mvmic.evaluation.bench`).

python tools/bench_rate_accuracy.py                       # all parts: 96 min, 2 cores
python tools/bench_rate_accuracy.py --parts seg --minutes 20
python tools/bench_rate_accuracy.py --parts seg --data /data/CVC-ColonDB
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mvmic.evaluation.bench import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
