"""The experiment config: shipped configs, defaults, overrides, error messages, round trips,
and a property test that parsing never fails with anything but ConfigError."""

from __future__ import annotations

import inspect
import re
from dataclasses import asdict, fields
from pathlib import Path

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlptrain import nn
from mlptrain.config import (SECTIONS, Config, defaults_of, load_config, parse_config)
from mlptrain.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "configs").glob("*.toml"))


def _error(text: str, source: str = "exp.toml", overrides=()) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, source=source, overrides=overrides)
    return str(info.value)


def _line_number(text: str, needle: str) -> int:
    """1-based number of the first line of `text` that starts with `needle` (after spaces)."""
    for number, line in enumerate(text.split("\n"), start=1):
        if line.strip().startswith(needle):
            return number
    raise AssertionError(f"{needle!r} not in text")


# ----------------------------------------------------------------------------- shipped configs


def test_there_are_shipped_configs():
    assert {p.stem for p in SHIPPED} >= {"mnist", "xor"}


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_config_loads(path):
    cfg = load_config(path)
    assert isinstance(cfg, Config)
    assert cfg.name == path.stem  # both shipped configs name themselves after their file
    assert cfg.source == str(path)
    assert cfg.overrides == []


def test_shipped_xor_values():
    cfg = load_config(ROOT / "configs" / "xor.toml")
    assert cfg.data.dataset == "xor"
    assert cfg.model.hidden == [4]
    assert cfg.model.activation == "tanh"
    assert cfg.optimizer.lr == 0.05
    assert cfg.train.epochs == 200
    # unnamed keys keep their defaults
    assert cfg.schedule.name == defaults_of("schedule")["name"]
    assert cfg.train.dtype == defaults_of("train")["dtype"]


def test_name_defaults_to_file_stem(tmp_path):
    path = tmp_path / "my-exp.toml"
    path.write_text("[train]\nepochs = 3\n", encoding="utf-8")
    assert load_config(path).name == "my-exp"
    assert parse_config("").name == "run"
    assert parse_config("", default_name="other").name == "other"
    assert parse_config('name = ""', default_name="other").name == "other"


# ----------------------------------------------------------------------------- defaults


def test_empty_config_resolves_to_defaults():
    cfg = parse_config("")
    for section in SECTIONS:
        assert asdict(getattr(cfg, section)) == defaults_of(section), section
    assert cfg == Config(name="run")


def test_defaults_of_matches_dataclass_defaults():
    for section, cls in SECTIONS.items():
        assert defaults_of(section) == asdict(cls())
        assert set(defaults_of(section)) == {f.name for f in fields(cls)}


def test_list_defaults_are_not_shared():
    a, b = SECTIONS["model"](), SECTIONS["model"]()
    assert a.hidden == b.hidden
    assert a.hidden is not b.hidden
    a.hidden.append(7)
    assert SECTIONS["model"]().hidden == defaults_of("model")["hidden"]
    assert defaults_of("model")["hidden"] is not defaults_of("model")["hidden"]


def _field_lines(cls) -> dict[str, str]:
    """Each field's declaration line (joined with its continuation lines) in the class source."""
    source = inspect.getsource(cls)
    out = {}
    for line in source.splitlines():
        match = re.match(r"^\s+([A-Za-z_]\w*)\s*:\s*[^=]+=\s*option\(", line)
        if match:
            out[match.group(1)] = line
    return out


_FIELDS = [(section, f.name) for section, cls in SECTIONS.items() for f in fields(cls)]
@pytest.mark.parametrize("section,name", _FIELDS, ids=[f"{s}.{n}" for s, n in _FIELDS])
def test_every_field_has_a_commented_option_line(section, name):
    lines = _field_lines(SECTIONS[section])
    assert name in lines, f"{section}.{name} is not declared as `{name}: type = option(`"
    assert "#" in lines[name], f"{section}.{name} has no comment: {lines[name].strip()}"


def test_every_field_is_declared_with_option():
    for section, cls in SECTIONS.items():
        assert set(_field_lines(cls)) == {f.name for f in fields(cls)}, section


# ----------------------------------------------------------------------------- hidden


def test_hidden_int_becomes_list():
    assert parse_config("[model]\nhidden = 64\n").model.hidden == [64]


def test_hidden_list_stays():
    assert parse_config("[model]\nhidden = [256, 64, 8]\n").model.hidden == [256, 64, 8]


def test_no_hidden_layer_is_a_linear_model():
    assert parse_config("[model]\nhidden = []\n").model.hidden == []


@pytest.mark.parametrize("value,expect", [
    ("[0]", ">= 1"),
    ("0", ">= 1"),
    ("[64, -1]", ">= 1"),
    ("[true]", "an integer or a list of integers"),
    ("true", "an integer or a list of integers"),
    ("[1.5]", "an integer or a list of integers"),
    ('"64"', "an integer or a list of integers"),
])
def test_bad_hidden(value, expect):
    msg = _error(f"[model]\nhidden = {value}\n")
    assert "[model] hidden" in msg
    assert expect in msg


# ----------------------------------------------------------------------------- overrides


def test_overrides_parse_values():
    cfg = parse_config("", overrides=[
        "train.epochs=5", "optimizer.lr=1e-3", "optimizer.nesterov=true",
        "model.activation=tanh", "model.hidden=[64, 32]", "name=foo", "optimizer.momentum=0.9"])
    assert cfg.train.epochs == 5 and type(cfg.train.epochs) is int
    assert cfg.optimizer.lr == 1e-3 and type(cfg.optimizer.lr) is float
    assert cfg.optimizer.nesterov is True
    assert cfg.model.activation == "tanh"
    assert cfg.model.hidden == [64, 32]
    assert cfg.name == "foo"
    assert cfg.overrides == ["train.epochs=5", "optimizer.lr=1e-3", "optimizer.nesterov=true",
                             "model.activation=tanh", "model.hidden=[64, 32]", "name=foo",
                             "optimizer.momentum=0.9"]


def test_overrides_beat_the_file():
    text = (ROOT / "configs" / "xor.toml").read_text(encoding="utf-8")
    cfg = parse_config(text, overrides=["train.epochs=3", "model.hidden=8", "optimizer.lr=1",
                                        " schedule.name = step "])
    assert cfg.train.epochs == 3
    assert cfg.model.hidden == [8]
    assert cfg.optimizer.lr == 1.0 and type(cfg.optimizer.lr) is float
    assert cfg.schedule.name == "step"
    assert cfg.name == "xor"
    assert cfg.data.samples == 800  # untouched keys keep the file's values


def test_later_override_wins():
    cfg = parse_config("", overrides=["train.epochs=5", "train.epochs=7"])
    assert cfg.train.epochs == 7


@pytest.mark.parametrize("item", ["train.epochs", "epochs=3", "a.b.c=1", ".epochs=1",
                                  "train.=1", "=1"])
def test_bad_override_form(item):
    msg = _error("", overrides=[item])
    assert "--set" in msg


def test_override_unknown_key_names_the_set_and_suggests():
    msg = _error("", overrides=["model.activaton=relu"])
    assert "--set model.activaton" in msg
    assert "Did you mean `activation`?" in msg


def test_override_bad_value_names_the_set():
    msg = _error("[train]\nepochs = 5\n", overrides=["train.epochs=0"])
    assert "--set train.epochs" in msg
    assert ">= 1" in msg


def test_override_into_a_non_table():
    msg = _error('name = "x"\n', overrides=["name.sub=1"])
    assert "--set" in msg


# ----------------------------------------------------------------------------- error messages


def test_unknown_key_names_file_line_section_and_suggestion(tmp_path):
    path = tmp_path / "exp.toml"
    path.write_text('# comment\nname = "e"\n\n[train]\nbatch_size = 4\nepocs = 3\n',
                    encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert str(path) in msg
    assert "line 6" in msg
    assert "[train] epocs" in msg
    assert "Did you mean `epochs`?" in msg
    assert "batch_size" in msg  # the valid keys are listed


def test_unknown_key_without_close_match_has_no_suggestion():
    msg = _error("[train]\nzzzzqqq = 3\n")
    assert "[train] zzzzqqq" in msg
    assert "Did you mean" not in msg


def test_unknown_section_suggests():
    msg = _error("[data]\nlimit = 5\n\n[trian]\nepochs = 3\n")
    assert "exp.toml, line 4" in msg
    assert "trian" in msg
    assert "Did you mean `train`?" in msg


def test_unknown_top_level_key():
    msg = _error('nmae = "x"\n')
    assert "line 1" in msg
    assert "Did you mean `name`?" in msg


@pytest.mark.parametrize("value", ['"5"', "true", "5.0", "[5]"])
def test_int_field_wrong_type(value):
    msg = _error(f"[train]\nepochs = {value}\n")
    assert "[train] epochs" in msg
    assert "expected an integer" in msg


@pytest.mark.parametrize("text,expect", [
    ('[optimizer]\nlr = "fast"\n', "expected a number"),
    ("[optimizer]\nlr = true\n", "expected a number"),
    ("[optimizer]\nnesterov = 1\n", "expected true or false"),
    ("[model]\nactivation = 3\n", "expected a string"),
    ("[data]\nmirrors = [1]\n", "expected a list of strings"),
    ('[data]\nmirrors = "http://x"\n', "expected a list of strings"),
    ("[train]\nepochs = 5\n[train.sub]\nx = 1\n", "unknown key"),
    ("train = 3\n", "expected a table [train]"),
    ("[[train]]\nepochs = 3\n", "expected a table [train]"),
    ('name = "has space"\n', "run name"),
    ("name = 3\n", "run name"),
])
def test_other_wrong_types(text, expect):
    assert expect in _error(text)


def test_int_accepted_for_float_field():
    cfg = parse_config("[optimizer]\nlr = 1\n")
    assert cfg.optimizer.lr == 1.0 and type(cfg.optimizer.lr) is float


@pytest.mark.parametrize("text,key,bound", [
    ("[train]\nepochs = 0\n", "[train] epochs", ">= 1"),
    ("[optimizer]\nlr = 0\n", "[optimizer] lr", "> 0.0"),
    ("[optimizer]\nlr = -0.5\n", "[optimizer] lr", "> 0.0"),
    ("[data]\nval_fraction = 1.0\n", "[data] val_fraction", "< 1.0"),
    ("[data]\nval_fraction = -0.1\n", "[data] val_fraction", ">= 0.0"),
    ("[optimizer]\nmomentum = 1.0\n", "[optimizer] momentum", "< 1.0"),
    ("[data]\ntest_fraction = 0\n", "[data] test_fraction", "> 0.0"),
    ("[schedule]\ngamma = 1.5\n", "[schedule] gamma", "<= 1.0"),
    ("[train]\nseed = -1\n", "[train] seed", ">= 0"),
])
def test_range_errors_name_the_bound(text, key, bound):
    msg = _error(text)
    assert key in msg
    assert "expected a value" in msg
    assert bound in msg


@pytest.mark.parametrize("text", ["[data]\nval_fraction = 0.0\n", "[optimizer]\nmomentum = 0.99\n",
                                  "[schedule]\ngamma = 1.0\n", "[train]\nepochs = 1\n"])
def test_range_edges_that_are_allowed(text):
    parse_config(text)


def test_choice_error_lists_names_and_suggests():
    msg = _error('[model]\nactivation = "rleu"\n')
    assert "[model] activation = 'rleu'" in msg
    for name in nn.ACTIVATIONS:
        assert name in msg
    assert "Did you mean `relu`?" in msg


def test_invalid_toml_names_the_file(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[train]\nepochs = = 3\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert "not valid TOML" in str(info.value)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert "does not exist" in str(info.value)


def test_non_utf8_file(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes(b"name = \"caf\xe9\"\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "+inf", "-nan"])
def test_non_finite_floats_rejected(value):
    msg = _error(f"[optimizer]\nlr = {value}\n")
    assert "[optimizer] lr" in msg
    assert "finite" in msg


@pytest.mark.parametrize("value", ["inf", "nan"])
def test_non_finite_floats_rejected_in_overrides(value):
    msg = _error("", overrides=[f"train.min_delta={value}"])
    assert "--set train.min_delta" in msg
    assert "finite" in msg


def test_line_number_is_the_offending_line():
    text = (ROOT / "configs" / "xor.toml").read_text(encoding="utf-8")
    bad = text.replace("epochs = 200", "epochs = 0")
    assert bad != text
    msg = _error(bad)
    assert f"exp.toml, line {_line_number(bad, 'epochs =')}: [train] epochs = 0" in msg


def test_line_number_picks_the_right_section():
    # `name` appears in [optimizer] before the bad one in [schedule]
    text = ('name = "ok"\n'
            "\n[optimizer]\n"
            'name = "sgd"\n'
            "\n# a comment\n"
            "[schedule]\n"
            "gamma = 0.5\n"
            'name = "cosin"   # typo\n')
    msg = _error(text)
    assert "exp.toml, line 9: [schedule] name = 'cosin'" in msg
    assert "Did you mean `cosine`?" in msg


def test_line_number_with_indented_keys_and_spaced_headers():
    text = "[ model ]\n  hidden = 8\n  activation   =  'nope'\n"
    assert "line 3: [model] activation" in _error(text)


def test_line_number_after_a_multiline_comment_block():
    text = "# one\n# two\n# epochs = 0 (in a comment)\n[train]\n\n\nepochs = 0\n"
    assert "line 7: [train] epochs" in _error(text)


@pytest.mark.parametrize("sep", ["\u2028", "\u2029", "\x85"])
def test_line_number_with_unicode_line_separator_in_a_comment(sep):
    text = f"# see{sep}below\n[train]\nepochs = 0\n"
    assert "line 3: [train] epochs" in _error(text)


@pytest.mark.parametrize("where", ["file", "override"])
def test_huge_int_for_float_field(where):
    big = "9" * 400
    if where == "file":
        _error(f"[optimizer]\nlr = {big}\n")
    else:
        _error("", overrides=[f"optimizer.lr={big}"])


# ----------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_round_trip_shipped(path):
    cfg = load_config(path)
    text = cfg.to_toml()
    assert text.startswith(f"# resolved from {path}\n")
    again = parse_config(text)
    assert again == cfg
    assert again.to_dict() == cfg.to_dict()
    # every key is written, so the resolved file needs no defaults to be replayed
    for section in SECTIONS:
        assert f"[{section}]" in text


def test_round_trip_with_overrides():
    path = ROOT / "configs" / "xor.toml"
    overrides = ["train.epochs=5", "model.hidden=[16, 8]", "optimizer.nesterov=true",
                 "optimizer.momentum=0.5", "model.activation=relu", "name=xor-small"]
    cfg = load_config(path, overrides)
    text = cfg.to_toml()
    header = [line for line in text.splitlines() if line.startswith("#")]
    assert header[0] == f"# resolved from {path}"
    assert header[1:] == [f"# --set {o}" for o in overrides]
    again = parse_config(text, source="resolved.toml")
    assert again == cfg
    assert again.name == "xor-small"
    assert again.model.hidden == [16, 8]


def test_round_trip_defaults():
    cfg = parse_config("")
    assert parse_config(cfg.to_toml()) == cfg


# ----------------------------------------------------------------------------- property tests

_SCHEMA_KEYS = sorted({f.name for cls in SECTIONS.values() for f in fields(cls)})
_JUNK_KEYS = ["", " ", "x", "epoch", "Epochs", "lr ", "a.b", "[train]", "#", "é", "name\n"]
_CHOICES = sorted({c for cls in SECTIONS.values() for f in fields(cls)
                   for c in (f.metadata.get("choices") or ())})

_scalars = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),  # TOML integers are 64-bit
    st.sampled_from([0, 1, 2, -1, 64, 128]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, 0.5, 1.0, 1e-3, -0.0, float("inf"), float("nan")]),
    st.booleans(),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12),
    st.sampled_from(_CHOICES),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(_SCHEMA_KEYS + _JUNK_KEYS), inner, max_size=3)),
    max_leaves=8)
_keys = st.one_of(st.sampled_from(_SCHEMA_KEYS), st.sampled_from(_JUNK_KEYS),
                  st.text(max_size=8))
_sections = st.dictionaries(_keys, _values, max_size=6)


@st.composite
def _plausible_section(draw, section):
    """Mostly the section's own keys with mostly plausible values, so deeper checks run."""
    own = [f.name for f in fields(SECTIONS[section])]
    keys = draw(st.lists(st.one_of(*[st.sampled_from(own)] * 6, _keys),
                         max_size=5, unique=True))
    return {key: draw(st.one_of(_scalars, _values)) for key in keys}


@st.composite
def _plausible_document(draw):
    names = draw(st.lists(st.sampled_from(list(SECTIONS)), max_size=5, unique=True))
    doc = {name: draw(_plausible_section(name)) for name in names}
    if draw(st.booleans()):
        doc["name"] = draw(st.one_of(st.sampled_from(["exp", "a.b-c_1", ""]), _scalars))
    return doc


_top = st.one_of(
    _plausible_document(),  # shaped like a config
    st.dictionaries(  # anything at all
        st.one_of(st.sampled_from(["name", *SECTIONS]), st.sampled_from(_JUNK_KEYS)),
        st.one_of(_sections, _sections, _values),
        max_size=6))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=_top)
def test_random_documents_give_config_or_config_error(doc):
    text = tomli_w.dumps(doc)
    try:
        cfg = parse_config(text, source="random.toml")
    except ConfigError as exc:
        assert str(exc)
    else:
        assert isinstance(cfg, Config)
        assert parse_config(cfg.to_toml()) == cfg  # whatever loads also round-trips


_MUTATION_CHARS = st.one_of(st.sampled_from(list('[]="\'#.,{}\n \t0123456789-+_eEtruefalsnix')),
                            st.characters(blacklist_categories=("Cs",)))
_mutation = st.tuples(st.sampled_from(["insert", "delete", "replace"]),
                      st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
                      _MUTATION_CHARS)


def _mutate(text: str, ops) -> str:
    for op, where, char in ops:
        i = int(where * (len(text) + (1 if op == "insert" else 0)))
        if op == "insert":
            text = text[:i] + char + text[i:]
        elif text and op == "delete":
            text = text[:i] + text[i + 1:]
        elif text:
            text = text[:i] + char + text[i + 1:]
    return text


_SHIPPED_TEXTS = [p.read_text(encoding="utf-8") for p in SHIPPED]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(which=st.integers(min_value=0, max_value=len(_SHIPPED_TEXTS) - 1),
       ops=st.lists(_mutation, min_size=1, max_size=8))
def test_mutated_shipped_config_gives_config_or_config_error(which, ops):
    text = _mutate(_SHIPPED_TEXTS[which], ops)
    try:
        cfg = parse_config(text, source="mutated.toml")
    except ConfigError as exc:
        assert str(exc)
    else:
        assert isinstance(cfg, Config)


_override_values = st.one_of(
    st.sampled_from(["5", "0", "-1", "1e-3", "true", "nan", "inf", "[64, 32]", "[]", "relu",
                     '"x"', "{a = 1}", "", "1 2", "[", "0x10", "1979-05-27"]),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=10))
_override_keys = st.one_of(
    st.builds(lambda s, k: f"{s}.{k}", st.sampled_from([*SECTIONS, "name", "x", ""]),
              st.sampled_from(_SCHEMA_KEYS + ["", "nope"])),
    st.sampled_from(["name", "epochs", "a.b.c"]),
    st.text(max_size=8))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=st.lists(st.builds(lambda k, v: f"{k}={v}", _override_keys, _override_values),
                      max_size=4),
       which=st.integers(min_value=0, max_value=len(_SHIPPED_TEXTS) - 1))
def test_random_overrides_give_config_or_config_error(items, which):
    try:
        cfg = parse_config(_SHIPPED_TEXTS[which], overrides=items)
    except ConfigError as exc:
        assert str(exc)
    else:
        assert cfg.overrides == items


# ----------------------------------------------------------------------------- across keys


@pytest.mark.parametrize("overrides, blamed, message", [
    (["optimizer.nesterov=true"], "--set optimizer.nesterov = true", "needs [optimizer] momentum > 0"),
    (["optimizer.name=adam", "optimizer.nesterov=true", "optimizer.momentum=0.9"],
     "--set optimizer.nesterov", "nesterov belongs to sgd"),
    (["model.loss=sigmoid_bce", "model.label_smoothing=0.1"], "--set model.label_smoothing",
     "needs the softmax_cross_entropy loss"),
    (["data.dataset=xor", "model.label_smoothing=0.1"], "--set model.label_smoothing",
     "loss = auto with the 2-class xor data"),
    (["train.patience=3", "data.val_fraction=0"], "--set train.patience", "val_fraction = 0"),
    (["data.dataset=npz"], "[data] path", "needs [data] path"),
    (["data.dataset=xor", "data.augment_rotate=5"], "--set data.augment_rotate",
     "samples are flat vectors"),
    (["data.dataset=xor", "data.normalize_width=14"], "--set data.normalize_width",
     "samples are flat vectors"),
    (["schedule.warmup_epochs=10", "train.epochs=10"], "--set schedule.warmup_epochs",
     "must end before the last epoch"),
    (["schedule.name=cosine", "schedule.min_lr=0.5", "optimizer.lr=0.1"],
     "--set schedule.min_lr", "would end above [optimizer] lr = 0.1"),
    (["schedule.name=onecycle", "schedule.momentum_low=0.95", "optimizer.momentum=0.9"],
     "--set schedule.momentum_low", "must be below [optimizer] momentum = 0.9"),
])
def test_rules_across_keys_are_config_errors(overrides, blamed, message):
    with pytest.raises(ConfigError) as caught:
        parse_config("", overrides=overrides)
    assert blamed in str(caught.value) and message in str(caught.value)


def test_a_rule_across_keys_names_the_line_in_the_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[optimizer]\nname = "sgd"\nnesterov = true\n')
    with pytest.raises(ConfigError, match=r"bad.toml, line 3: \[optimizer\] nesterov = true"):
        load_config(path)


@pytest.mark.parametrize("config", sorted(p.name for p in (ROOT / "configs").glob("*.toml")))
def test_every_shipped_config_keeps_the_rules(config):
    load_config(ROOT / "configs" / config)


def test_config_check_catches_a_rule_across_keys():
    from typer.testing import CliRunner

    from mlptrain.cli import app

    result = CliRunner().invoke(app, ["config", "check", str(ROOT / "configs" / "mnist.toml"),
                                      "--set", "optimizer.momentum=0"])
    assert result.exit_code == 1 and "Nesterov momentum needs" in result.stderr
