"""Config loading and validation (train.load_config / train.validate): every mistake stops
the run before any work, with a message naming the key and the fix."""
import glob
import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import train  # noqa: E402
from train import Config, ConfigError, load_config, parse_override, validate  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..")


def write(tmp_path, text, name="cfg.py"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_defaults_are_a_valid_config():
    validate(Config(), world_size=1)


def test_file_values_override_defaults_and_helpers_are_ignored(tmp_path):
    path = write(tmp_path, "import math\n_base = 3\nmax_steps = 10 * _base\nlearning_rate = 2e-2\n")
    cfg = load_config(path)
    assert cfg.max_steps == 30 and cfg.learning_rate == 2e-2


def test_config_file_does_not_touch_train_globals(tmp_path):
    path = write(tmp_path, "max_steps = 30\n")
    before = dict(vars(train))
    load_config(path)
    assert "max_steps" not in vars(train) and vars(train).keys() == before.keys()


def test_unknown_key_is_an_error_with_a_suggestion(tmp_path):
    path = write(tmp_path, "learning_rte = 1e-3\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'learning_rte'.*did you mean 'learning_rate'"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"did you mean 'max_steps'"):
        load_config(None, ["--max_step=5"])


def test_unknown_model_override_key_is_an_error_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"model_overrides key 'n_layers'.*did you mean 'n_layer'"):
        load_config(None, ["--model_overrides={'n_layers': 2}"])


def test_wrong_type_names_key_expected_and_got(tmp_path):
    path = write(tmp_path, "max_steps = '100'\n")
    with pytest.raises(ConfigError, match=r"'max_steps' expects int, got str '100'"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"'fp8' expects bool, got int 1"):
        load_config(None, ["--fp8=1"])
    with pytest.raises(ConfigError, match=r"'data'"):
        load_config(None, ["--data=['data/default']"])


def test_int_is_accepted_for_float_and_list_for_tuple():
    cfg = load_config(None, ["--learning_rate=1", "--batch_ramp=[[10, 32]]", "--max_steps=20"])
    assert cfg.learning_rate == 1.0 and isinstance(cfg.learning_rate, float)
    assert cfg.batch_ramp == ((10, 32),)


def test_overrides_are_parsed_as_python_literals_with_string_fallback():
    assert parse_override("--max_steps=100") == ("max_steps", 100)
    assert parse_override("--learning_rate=3e-4") == ("learning_rate", 3e-4)
    assert parse_override("--decay_start_step=None") == ("decay_start_step", None)
    assert parse_override("--data={'a': 1.0}") == ("data", {"a": 1.0})
    assert parse_override("--out_dir=out/run-1") == ("out_dir", "out/run-1")
    assert parse_override("--run_name=123") == ("run_name", "123")  # str field stays a string
    assert parse_override("--max-steps=7") == ("max_steps", 7)
    with pytest.raises(ConfigError, match="--key=value"):
        parse_override("max_steps=3")


def test_command_line_overrides_the_file(tmp_path):
    path = write(tmp_path, "max_steps = 30\nwarmup_steps = 3\n")
    cfg = load_config(path, ["--max_steps=40"])
    assert cfg.max_steps == 40 and cfg.warmup_steps == 3


@pytest.mark.parametrize("overrides, message", [
    (["--start_step=100", "--max_steps=50"], r"start_step \(100\) must be < max_steps \(50\)"),
    (["--max_steps=10", "--warmup_steps=20"], r"warmup ends at start_step \+ warmup_steps = 20"),
    (["--warmup_steps=10", "--decay_start_step=5", "--decay_steps=5"],
     r"decay_start_step \(5\) must be >= start_step \+ warmup_steps \(10\)"),
    (["--max_steps=60", "--decay_start_step=50", "--decay_steps=20"],
     r"the decay ends at decay_start_step \+ decay_steps = 70, after max_steps \(60\)"),
    (["--decay_steps=10"], r"decay_steps = 10 needs decay_start_step"),
    (["--global_batch=20", "--micro_batch=8"], r"global_batch = 20 is not divisible by micro_batch x world_size"),
    (["--batch_ramp=((10, 24),)", "--micro_batch=16", "--global_batch=32"],
     r"batch_ramp at step 10 = 24 is not divisible"),
    (["--seq_len=512", "--max_seq_len=256"], r"seq_len \(512\) exceeds max_seq_len \(256\)"),
    (["--muon_switch_step=100", "--max_steps=60"], r"muon_switch_step \(100\) must be in \[0, max_steps=60\)"),
    (["--data={'data/a': 0.0}"], r"data\['data/a'\] weight must be > 0"),
    (["--data={}"], r"data is empty"),
    (["--parallel='zero'"], r"parallel must be 'ddp' or 'fsdp'"),
    (["--loss_reduction='sum'"], r"loss_reduction must be 'micro_batch' or 'token'"),
    (["--min_lr=1.0"], r"min_lr \(1.0\) must be in \[0, learning_rate"),
    (["--load_optimizer=True"], r"load_optimizer=True needs init_from"),
    # caught only by the first step's schedule check, or by the FP8 conversion, before:
    (["--decay_shape='exponential'", "--decay_start_step=30", "--decay_steps=10"],
     r"decay_shape='exponential' needs min_lr > 0"),
    (["--fp8_backend='tensorrt'"], r"fp8_backend must be 'auto', 'te' or 'native', got 'tensorrt'"),
    (["--recompute_elementwise=True", "--compile=False"], r"recompute_elementwise=True works through torch.compile"),
    (["--recompute_elementwise=True", "--device='cpu'"], r"compile='auto' means off on a CPU"),
])
def test_inconsistent_values_are_rejected_naming_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_batch_divisibility_depends_on_world_size():
    load_config(None, ["--global_batch=16", "--micro_batch=8"], world_size=2)
    with pytest.raises(ConfigError, match=r"8 x 4 = 32"):
        load_config(None, ["--global_batch=16", "--micro_batch=8"], world_size=4)


def test_all_errors_are_reported_at_once():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["--seq_len=8192", "--global_batch=15"])
    assert "seq_len" in str(e.value) and "global_batch = 15" in str(e.value)


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "config", "*.py"))))
def test_every_config_file_loads(path):
    name = os.path.basename(path)
    single = name == "quickstart.py" or name.startswith("proxy")  # one CPU / one small GPU
    cfg = load_config(path, world_size=1 if single else 8)  # the phases: 8 GPUs
    assert cfg.out_dir and cfg.data


def test_phase_configs_chain_in_global_steps():
    cfg = {n: load_config(os.path.join(ROOT, "config", f"{n}.py"), world_size=8)
           for n in ("stable_s1", "stable_s2", "decay_muon", "decay_adamw", "long_context")}
    assert cfg["stable_s1"].max_steps == cfg["stable_s2"].start_step == 270_000
    assert cfg["stable_s2"].max_steps == cfg["decay_muon"].start_step == 530_000
    assert cfg["decay_muon"].muon_switch_step == 530_000 and cfg["decay_adamw"].muon_switch_step is None
    assert cfg["decay_muon"].load_optimizer is False and cfg["stable_s2"].load_optimizer is True
    assert cfg["decay_muon"].max_steps == cfg["long_context"].start_step
    assert (cfg["stable_s1"].global_batch, cfg["stable_s2"].global_batch) == (480, 960)
    # decay_adamw differs from decay_muon only in the optimizer switch and its names
    a, b = vars(cfg["decay_muon"]), vars(cfg["decay_adamw"])
    assert {k for k in a if a[k] != b[k]} == {"muon_switch_step", "out_dir", "phase_name"}
    assert abs(sum(cfg["stable_s1"].data.values()) - 100) < 1e-6
    assert abs(sum(cfg["decay_muon"].data.values()) - 100) < 0.02  # 100.01 as published (rounding)


def test_resolved_config_json_is_itself_a_config(tmp_path):
    cfg = load_config(None, ["--max_steps=33", f"--out_dir={tmp_path}", "--batch_ramp=((10, 32),)"])
    path = tmp_path / "config.json"
    train.write_resolved_config(cfg)
    again = load_config(str(path))
    assert again == cfg
    assert json.loads(path.read_text())["max_steps"] == 33


def test_include_takes_all_settings_or_only_the_named_keys(tmp_path):
    write(tmp_path, "max_steps = 30\nlearning_rate = 2e-2\nwarmup_steps = 3\n", "base.py")
    child = write(tmp_path, "include('base.py')\nwarmup_steps = 5\n", "child.py")
    cfg = load_config(child)
    assert (cfg.max_steps, cfg.learning_rate, cfg.warmup_steps) == (30, 2e-2, 5)
    (tmp_path / "sub").mkdir()
    some = write(tmp_path, "include('../base.py', 'max_steps')\n", "sub/some.py")  # relative to itself
    cfg = load_config(some)
    assert cfg.max_steps == 30 and cfg.learning_rate == Config.learning_rate


def test_include_of_an_unset_key_or_a_cycle_is_an_error(tmp_path):
    write(tmp_path, "max_steps = 30\n", "base.py")
    with pytest.raises(ConfigError, match=r"names \['nope'\], which base.py does not set"):
        load_config(write(tmp_path, "include('base.py', 'nope')\n", "bad.py"))
    write(tmp_path, "include('b.py')\n", "a.py")
    write(tmp_path, "include('a.py')\n", "b.py")
    with pytest.raises(ConfigError, match=r"include each other \(a.py -> b.py -> a.py\)"):
        load_config(str(tmp_path / "a.py"))


def test_proxy_is_one_uncommented_line_from_the_stable_mix_and_nothing_else_of_s1(tmp_path):
    text = open(os.path.join(ROOT, "config", "proxy.py")).read()
    line = '# include("stable_s1.py", "data")'
    assert line in text
    s1_path = os.path.abspath(os.path.join(ROOT, "config", "stable_s1.py"))
    path = write(tmp_path, text.replace(line, f"include({s1_path!r}, 'data')"), "proxy.py")
    proxy, s1 = load_config(path, world_size=1), load_config(s1_path, world_size=8)
    assert proxy.data == s1.data and s1.fp8 and not proxy.fp8  # the mix, nothing else of S1


def test_loss_impl_is_checked_before_any_work():
    with pytest.raises(ConfigError, match="loss_impl='fused' is not one of"):
        load_config(None, ["--loss_impl='fused'"])
    import model
    assert model.check_loss_impl("chunked") is None  # the default needs no package


def test_a_fused_loss_package_on_a_cpu_is_refused_before_any_work():
    # liger-kernel and cut-cross-entropy are Triton kernels: a CPU run must stop at the config,
    # whether or not the package is installed here.
    for impl in ("liger", "cce"):
        with pytest.raises(ConfigError, match=f"loss_impl='{impl}' runs Triton kernels, which need a GPU"):
            load_config(None, [f"--loss_impl='{impl}'", "--device=cpu"])


def test_a_model_key_on_the_command_line_points_at_model_overrides():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["--vocab_size=8192"])
    assert str(e.value) == (
        "command line: unknown config key 'vocab_size'; 'vocab_size' is a model setting: put it "
        "in model_overrides, e.g. --model_overrides=\"{'vocab_size': 8192}\" (or model_overrides = "
        "dict(vocab_size=8192) in a config file)")
    # ... and the suggested override is accepted as written.
    assert load_config(None, ["--model_overrides={'vocab_size': 8192}"]).model_overrides == {"vocab_size": 8192}


def test_the_default_model_fits_the_default_data():
    # A bare `python train.py` trains on data/default (prepare.py's BPE): the vocabularies agree.
    import model
    import prepare
    cfg = Config()
    assert cfg.data == {"data/default": 1.0}
    assert model.model_config(cfg.model_preset, **cfg.model_overrides).vocab_size == prepare.DEFAULT_BPE_VOCAB
