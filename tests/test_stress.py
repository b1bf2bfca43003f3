"""The stress script (two threads and two processes on one model and one cache folder, random
kills and resumes, damaged files, a full disk where a tmpfs can be mounted) passes a short run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_a_short_stress_run_passes(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CLIPSPAN_CACHE_DIR": str(tmp_path / "user")}
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "stress.py"), "--seconds", "20",
                           "--images", "16", "--workdir", str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    passed = re.search(r"^(\d+) passed, 0 failed", done.stdout, re.MULTILINE)
    assert passed and int(passed.group(1)) > 0, done.stdout
    for scenario in ["threads", "processes", "kill", "writers", "damage"]:
        assert re.search(rf"^{scenario}: [1-9]\d* runs", done.stdout, re.MULTILINE), scenario
    assert re.search(r"^full disk: ([1-9]\d* runs|skipped)", done.stdout, re.MULTILINE)
