"""What README promises about resuming must hold: an exact resume needs the deterministic stream."""

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_every_bit_exact_claim_names_the_deterministic_stream():
    paragraphs = re.split(r"\n\s*\n|\n(?=\|)", README.read_text())
    claims = [p for p in paragraphs if "to the bit" in p]
    assert claims, "README states the resume guarantee"
    for paragraph in claims:
        assert "data.deterministic: true" in paragraph, paragraph
    resume = next(p for p in paragraphs if "--resume RUN" in p)
    assert "data.deterministic: false" in resume and "drawn anew" in resume, "the default mode's resume is described"
