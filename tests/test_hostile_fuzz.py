"""The atheris fuzzer, briefly, as CI runs it: 20,000 libFuzzer iterations over a fresh seed corpus."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = 20_000


def test_a_short_fuzz_run_finds_nothing(tmp_path):
    corpus, crashes = tmp_path / "corpus", tmp_path / "crashes"
    crashes.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "fuzz.fuzz_decode_validate", f"-runs={RUNS}", "-seed=1", "-timeout=10",
         f"-artifact_prefix={crashes}/", "-print_final_stats=1", str(corpus)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    output = done.stderr + done.stdout
    assert done.returncode == 0, output[-4000:]
    assert f"Done {RUNS} runs" in output, output[-4000:]
    assert not list(crashes.iterdir())
    seeded = int(re.search(r"seeding .* with (\d+) records", output).group(1))
    assert seeded > 100 and len(list(corpus.iterdir())) >= seeded  # valid and malformed seeds, plus findings
