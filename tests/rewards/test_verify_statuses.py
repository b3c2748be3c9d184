"""Every status the verifier can emit is in `STATUSES`, and the README's table lists exactly those."""
import re
from pathlib import Path

from rewards import types
from rewards.code.run_tests import SEVERITY
from rewards.verify import STATUSES

README = Path(__file__).resolve().parents[2] / "README.md"


def test_statuses_cover_code_and_math():
    math = {types.PASSED, types.FAILED, types.TIMEOUT, types.NO_ANSWER, types.ERROR}
    assert set(SEVERITY) | math | {"invalid_input"} == set(STATUSES)


def test_readme_lists_every_status():
    text = README.read_text()
    table = text[text.index("Every\nstatus the verifier emits"):]
    table = table[:table.index("\n\n", table.index("| status |"))]
    listed = re.findall(r"^\| `([a-z_]+)` \|", table, flags=re.M)
    assert sorted(listed) == sorted(STATUSES) and len(listed) == len(set(listed))
