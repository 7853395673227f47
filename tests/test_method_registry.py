"""The method interface: the registry, what each method asks of the engine, legacy configs."""

import pytest

from u2pl_ray.config import load_config
from u2pl_ray.config.schema import MethodConfig
from u2pl_ray.method import METHODS, U2PL, Method, MethodContext, SupOnly, build_method, method_class


def test_every_registered_method_implements_the_interface_and_is_named_in_the_config():
    allowed = set(MethodConfig.model_fields["name"].annotation.__args__)
    assert set(METHODS) == allowed, "a registered method must be a value of method.name (and back)"
    for name, cls in METHODS.items():
        assert issubclass(cls, Method) and cls.name == name
        method = build_method(
            MethodConfig(name=name), MethodContext(num_classes=3, rep_dim=4, total_epochs=2, iters_per_epoch=2)
        )
        assert isinstance(method, cls)
        assert set(type(method).rank_shared_state) <= set(method.state_dict())


def test_what_the_engine_reads_from_each_method():
    assert (U2PL.needs_unlabeled, U2PL.uses_teacher, U2PL.rank_shared_state) == (True, True, ("memory_bank",))
    assert (SupOnly.needs_unlabeled, SupOnly.uses_teacher, SupOnly.rank_shared_state) == (False, False, ())
    cfg = MethodConfig(sup_only_epochs=2)
    assert [U2PL.teacher_selected(cfg, e) for e in (1, 2, 3)] == [False, False, True]
    assert not SupOnly.teacher_selected(cfg, 10)
    u2pl = U2PL(
        MethodConfig(drop_percent=80), MethodContext(num_classes=3, rep_dim=4, total_epochs=4, iters_per_epoch=2)
    )
    assert u2pl.picture_drop_percent(2) == pytest.approx(90.0)
    assert set(u2pl.progress_values()) == {"bank_fill/0", "bank_fill/1", "bank_fill/2"}


def test_unknown_method_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown method.name 'fixmatch'; known: supervised, u2pl, unimatch$"):
        method_class("fixmatch")


def test_configs_written_with_the_old_mode_key_still_load():
    assert MethodConfig.model_validate({"mode": "supervised"}).name == "supervised"
    assert load_config(None, ["method.name=supervised"]).method.name == "supervised"
