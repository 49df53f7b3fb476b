"""The atheris fuzzer, briefly, as CI runs it: 20,000 libFuzzer iterations over a fresh seed corpus.

It asserts what a finding changes (exit status, artifacts, a run cut short), not libFuzzer's exact
wording: ``Done N runs`` counts the seed inputs too, so N is a little over ``-runs``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUNS = 20_000
ARTIFACT = re.compile(r"^(crash|leak|timeout|oom|slow-unit)-")  # libFuzzer's artifact names


def _artifacts(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir() if ARTIFACT.match(p.name)}


def test_a_short_fuzz_run_finds_nothing(tmp_path):
    corpus, crashes = tmp_path / "corpus", tmp_path / "crashes"
    crashes.mkdir()
    before = _artifacts(ROOT)  # libFuzzer writes to the working directory when the prefix is not honoured
    done = subprocess.run(
        [sys.executable, "-m", "fuzz.fuzz_decode_validate", f"-runs={RUNS}", "-seed=1", "-timeout=10",
         f"-artifact_prefix={crashes}/", "-print_final_stats=1", str(corpus)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    output = done.stderr + done.stdout
    tail = output[-4000:]
    assert done.returncode == 0, tail
    assert not list(crashes.iterdir()), (sorted(p.name for p in crashes.iterdir()), tail)
    assert not _artifacts(ROOT) - before, (sorted(_artifacts(ROOT) - before), tail)
    assert "Test unit written to" not in output, tail
    runs = re.search(r"Done (\d+) runs", output)
    assert runs and int(runs.group(1)) >= RUNS, tail  # at least as many as asked: none cut short
    seeded = int(re.search(r"seeding .* with (\d+) records", output).group(1))
    assert seeded > 100 and len(list(corpus.iterdir())) >= seeded  # valid and malformed seeds, plus findings
