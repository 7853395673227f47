"""docs/config.md documents every config key and is current."""

from u2pl_ray.config.reference import DOC, fields, render
from u2pl_ray.config.schema import Config


def test_every_key_has_a_description():
    keys = fields(Config)
    assert len(keys) > 100
    assert [key for key, info in keys if not info.description] == []


def test_the_reference_is_current():
    assert DOC.read_text() == render(), "run `python -m u2pl_ray.config.reference --write`"
    text = DOC.read_text()
    for key, _ in fields(Config):
        assert f"| `{key}` |" in text
    assert r'| `method.name` | choice | `"u2pl"` | `u2pl` \| `unimatch` \| `supervised` |' in text
