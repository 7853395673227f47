from pathlib import Path

import pytest

from u2pl_ray.config import ConfigError, dump_config, load_config


def test_defaults_are_official_voc():
    cfg = load_config()
    assert cfg.method.variant == "official"
    assert cfg.method.contra_weight == 1.0
    assert cfg.data.label_pad_value == 0
    assert (cfg.method.num_queries, cfg.method.num_negatives) == (256, 50)
    assert cfg.eval.crop_size == cfg.data.crop_size


def test_paper_variant_resolves_its_defaults():
    cfg = load_config(None, ["method.variant=paper"])
    assert cfg.method.contra_weight == pytest.approx(0.1)
    assert cfg.data.label_pad_value == 255
    # an explicit value wins over the variant default
    cfg = load_config(None, ["method.variant=paper", "method.contra_weight=0.5", "data.label_pad_value=0"])
    assert cfg.method.contra_weight == 0.5 and cfg.data.label_pad_value == 0


def test_overrides_are_typed_yaml():
    cfg = load_config(None, ["data.scale_range=[0.75, 1.5]", "storage.name=abc", "model.pretrained=null"])
    assert cfg.data.scale_range == [0.75, 1.5]
    assert cfg.storage.name == "abc"
    assert cfg.model.pretrained is None


@pytest.mark.parametrize(
    "override, fragments",
    [
        (["method.drop_percnt=3"], ["method.drop_percnt", "did you mean 'method.drop_percent'", "allows:"]),
        (["optim.lr=abc"], ["optim.lr", "'abc'", "number"]),
        (["method.drop_percent=120"], ["method.drop_percent", "120", "less than or equal to 100"]),
        (["method.variant=foo"], ["method.variant", "'foo'", "'official' or 'paper'"]),
        (["method.low_rank=30"], ["method.low_rank", "30", "high_rank"]),
        (["data.batch_size=2.5"], ["data.batch_size", "2.5", "integer"]),
        (["ray_train_log_level=LOUD"], ["ray_train_log_level", "'LOUD'", "'DEBUG', 'INFO', 'WARNING' or 'ERROR'"]),
        (["bogus=1"], ["unknown config key 'bogus'", "method"]),
        (["method"], ["section.key=value"]),
    ],
)
def test_bad_values_name_key_given_and_allowed(override, fragments):
    with pytest.raises(ConfigError) as info:
        load_config(None, override)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_base_inheritance_and_loops(tmp_path):
    (tmp_path / "base.yaml").write_text("method:\n  drop_percent: 70\nschedule:\n  epochs: 5\n")
    (tmp_path / "child.yaml").write_text("_base_: base.yaml\nschedule:\n  epochs: 7\n")
    cfg = load_config(tmp_path / "child.yaml", ["schedule.poly_power=1.0"])
    assert (cfg.method.drop_percent, cfg.schedule.epochs, cfg.schedule.poly_power) == (70, 7, 1.0)

    (tmp_path / "a.yaml").write_text("_base_: b.yaml\n")
    (tmp_path / "b.yaml").write_text("_base_: a.yaml\n")
    with pytest.raises(ConfigError, match="loop"):
        load_config(tmp_path / "a.yaml")


def test_unreadable_and_non_mapping_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(tmp_path / "list.yaml")
    (tmp_path / "bad.yaml").write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")


def test_dump_round_trips(tmp_path):
    cfg = load_config(None, ["method.variant=paper", "schedule.epochs=3"])
    path = tmp_path / "dumped.yaml"
    path.write_text(dump_config(cfg))
    assert load_config(path) == cfg


def test_log_level_is_case_insensitive():
    assert load_config(None, ["ray_train_log_level=info"]).ray_train_log_level == "INFO"


def test_split_names_with_underscores_stay_strings():
    assert load_config(None, ["data.split=1_8"]).data.split == "1_8"
    assert load_config(None, ["data.split='1_16'"]).data.split == "1_16"


def test_split_names_need_no_quotes(tmp_path):
    from u2pl_ray.config import load_config

    assert load_config(None, ["data.split=732"]).data.split == "732"
    assert load_config(None, ["data.split=1_8"]).data.split == "1_8"
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  split: 1_16\n")
    assert load_config(path).data.split == "1_16"  # YAML 1.1 alone reads 116
    path.write_text("data:\n  split: 186\n")
    cfg = load_config(path, ["data.synthetic.num_train=320", "optim.lr=3e-4", "eval.scales=[0.75,1]"])
    assert cfg.data.split == "186" and cfg.data.synthetic.num_train == 320
    assert cfg.optim.lr == 3e-4 and cfg.eval.scales == [0.75, 1.0]  # other values read as before


def test_print_config_shows_the_resolved_config_and_starts_nothing(capsys, tmp_path):
    from u2pl_ray.config import load_yaml
    from u2pl_ray.train import main

    tiny = Path(__file__).resolve().parent.parent / "configs" / "tiny.yaml"
    args = ["--config", str(tiny), "--set", "data.split=732", "--set", f"storage.path={tmp_path / 'runs'}"]
    assert main([*args, "--print-config"]) == 0
    printed = load_yaml(capsys.readouterr().out)
    assert printed["name"] == "tiny" and printed["data"]["split"] == "732" and printed["method"]["name"] == "u2pl"
    assert not (tmp_path / "runs").exists()
