"""`packrat serve` settings: the TOML file, command-line overrides, several models."""

from __future__ import annotations

from pathlib import Path

import pytest

from packrat.controller.batching import BatchingConfig
from packrat.controller.plan_choice import ChoiceKind, PlanChoice
from packrat.errors import PackratError
from packrat.server.launch_config import LaunchConfig, load_config_file, with_cli

CONFIG = """
[server]
port = 9090
management_port = 9091
model_store = "store"
max_batch_size = 16

[[models]]
spec = "resnet50"
cores = [0, 1]
plan = "<2,1,8>"

[[models]]
spec = "bert-base"
name = "bert"
cores = [2, 3]
max_batch_delay_ms = 20
"""


def test_file_with_two_models_on_their_own_cores(tmp_path: Path) -> None:
    path = tmp_path / "serve.toml"
    path.write_text(CONFIG)
    config = load_config_file(path)
    assert (config.port, config.management_port, config.metrics_port) == (9090, 9091, 8082)
    assert config.model_store == (tmp_path / "store").resolve()
    resnet, bert = config.models
    assert resnet.cores == (0, 1) and bert.cores == (2, 3)
    assert resnet.choice is not None and resnet.choice.describe() == "<2,1,8>"
    assert bert.name == "bert" and bert.batching.max_batch_delay_ms == 20
    assert (
        resnet.batching.max_batch_size == bert.batching.max_batch_size == 16
    )  # [server]'s, inherited
    assert resnet.batching.max_queue == 100  # the default


def test_command_line_overrides_only_what_was_given(tmp_path: Path) -> None:
    path = tmp_path / "serve.toml"
    path.write_text(CONFIG)
    config = with_cli(
        load_config_file(path), ["gpt2"], port=0, host=None, max_batch_size=None, fat=True
    )
    assert config.port == 0 and config.management_port == 9091 and config.host == "127.0.0.1"
    assert [m.spec for m in config.models] == ["resnet50", "bert-base", "gpt2"]
    gpt2 = config.models[-1]
    assert (
        gpt2.choice == PlanChoice(ChoiceKind.FAT) and gpt2.batching.max_batch_size == 16
    )  # the file's server-wide default


def test_defaults_follow_torchserve_ports() -> None:
    config = with_cli(LaunchConfig(), ["resnet50"])
    assert [(x.name, x.host, x.port) for x in config.listeners()] == [
        ("inference", "127.0.0.1", 8080),
        ("management", "127.0.0.1", 8081),
        ("metrics", "127.0.0.1", 8082),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[server]\nport = 'x'\n[[models]]\nspec='resnet50'\n", "port must be a port number"),
        ("[serve]\n", "unknown section"),
        ("[server]\nportt = 1\n", r"unknown \[server\] key"),
        ("[[models]]\nspec = 'resnet50'\nplan = '2,1,8'\n", "cannot read plan"),
        ("[[models]]\nspek = 'resnet50'\n", "unknown key"),
        ("not toml = = 1", "not valid TOML"),
        ("[server]\npolicy = 'sometimes'\n", "unknown plan policy 'sometimes'"),
        ("[server]\nbatch_timeout_s = 0\n", "batch_timeout_s must be a positive"),
        ("[server]\nprofile_kind = 'mixed'\n", "unknown profile kind 'mixed'"),
        ("[server]\nmax_in_flight = 0\n", "max_in_flight must be an integer >= 1"),
        ("[[models]]\nspec = 'resnet50'\npolicy = 'often'\n", "unknown plan policy 'often'"),
        ("[[models]]\nspec = 'r'\nestimator = { alpha = 2.0 }\n", "alpha must be in"),
        ("[[models]]\nspec = 'r'\nestimator = { windoww = 2 }\n", "windoww"),
        ("[[models]]\nspec = 'r'\nestimator = 3\n", "estimator must be a table"),
        ("[server]\nestimator = { window = 0 }\n", r"\[server\] EstimatorConfig.window"),
        ("[server]\nestimator = 'window=2'\n", r"\[server\] estimator must be a table"),
        ("[server]\nmax_batch_size = 0\n", r"\[server\] max_batch_size must be an int >= 1, got 0"),
        ("[server]\nmax_queue_wait_ms = -1\n", r"\[server\] max_queue_wait_ms must be a number"),
        (
            "[[models]]\nspec = 'r'\nmax_batch_delay_ms = 'x'\n",
            r"entry 1: ModelConfig.max_batch_delay_ms must be a finite number",
        ),
        ("[[models]]\nspec = 'r'\nmax_queue = 0\n", r"entry 1: ModelConfig.max_queue must be"),
    ],
)
def test_bad_files_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "serve.toml"
    path.write_text(text)
    with pytest.raises(PackratError, match=message):
        load_config_file(path)


BATCHING = """
[server]
max_batch_size = 16
max_queue = 50

[[models]]
spec = "resnet50"
max_batch_delay_ms = 5

[[models]]
spec = "bert-base"
max_batch_size = 4
"""


def test_flat_batching_keys_make_one_batching_config(tmp_path: Path) -> None:
    path = tmp_path / "serve.toml"
    path.write_text(BATCHING)
    config = load_config_file(path)
    assert config.batching == BatchingConfig(max_batch_size=16, max_queue=50)
    resnet, bert = config.models  # each entry's keys over [server]'s batching
    assert resnet.batching == BatchingConfig(16, 5.0, 50)
    assert bert.batching == BatchingConfig(max_batch_size=4, max_queue=50)
    cli = with_cli(config, ["gpt2"], max_queue_wait_ms=100.0, max_batch_size=None)
    assert cli.batching == BatchingConfig(16, max_queue=50, max_queue_wait_ms=100.0)
    assert cli.models[-1].batching == cli.batching  # models named on the command line
    assert cli.models[:2] == config.models  # the file's keep theirs
    with pytest.raises(PackratError, match="^max_queue must be an int >= 1, got 0"):
        with_cli(LaunchConfig(), ["gpt2"], max_queue=0)


def test_plan_fat_and_policy_make_a_models_plan_choice(tmp_path: Path) -> None:
    path = tmp_path / "serve.toml"
    path.write_text(
        "[[models]]\nspec = 'a'\nplan = '<2,1,8>'\n"
        "[[models]]\nspec = 'b'\nfat = true\n"
        "[[models]]\nspec = 'c'\npolicy = 'follow'\n"
        "[[models]]\nspec = 'd'\n"
    )
    a, b, c, d = load_config_file(path).models
    assert a.choice is not None and a.choice.kind is ChoiceKind.PLAN
    assert a.choice.describe() == "<2,1,8>"
    assert (b.choice, c.choice, d.choice) == (
        PlanChoice(ChoiceKind.FAT),
        PlanChoice(ChoiceKind.FOLLOW),
        None,
    )
    cli = with_cli(LaunchConfig(), ["m", "n"], plan="<1,2,4>").models
    assert [m.choice.describe() for m in cli if m.choice is not None] == ["<1,2,4>"] * 2
    assert with_cli(LaunchConfig(), ["m"], fat=True).models[0].choice == b.choice
    assert with_cli(LaunchConfig(), ["m"], fat=None).models[0].choice is None
    path.write_text("[[models]]\nspec = 'a'\nplan = '<2,1,8>'\nfat = true\n")
    with pytest.raises(PackratError, match="entry 1: plan and fat=True exclude each other"):
        load_config_file(path)
    with pytest.raises(PackratError, match="plan and fat=True exclude each other"):
        with_cli(LaunchConfig(), ["m"], plan="<2,1,8>", fat=True)


def test_profile_is_for_one_model() -> None:
    with pytest.raises(PackratError, match="--profile applies to one model"):
        with_cli(LaunchConfig(), ["resnet50", "gpt2"], profile=Path("p.json"))


POLICIES = """
[server]
policy = "follow"
profile_kind = "contention"

[[models]]
spec = "resnet50"
policy = "fixed"

[[models]]
spec = "bert-base"
estimator = { alpha = 0.5, window = 4, cooldown_s = 1.0 }
"""


def test_policies_from_the_file_and_the_command_line(tmp_path: Path) -> None:
    from packrat.controller.estimator import EstimatorConfig
    from packrat.controller.policy import PolicyKind
    from packrat.profiler.contention import ProfileKindSetting

    path = tmp_path / "serve.toml"
    path.write_text(POLICIES)
    config = load_config_file(path)
    assert config.policy is PolicyKind.FOLLOW  # the server-wide default
    assert config.profile_kind is ProfileKindSetting.CONTENTION
    isolated = with_cli(config, [], profile_kind="isolated")
    assert isolated.profile_kind is ProfileKindSetting.ISOLATED
    assert LaunchConfig().profile_kind is ProfileKindSetting.AUTO
    resnet, bert = config.models
    assert resnet.choice == PlanChoice(ChoiceKind.FIXED)
    assert bert.choice is None  # takes the server's
    assert bert.estimator == EstimatorConfig(alpha=0.5, window=4, cooldown_s=1.0)
    overridden = with_cli(config, ["gpt2"], policy="auto")
    assert overridden.policy is PolicyKind.AUTO and overridden.models[-1].choice is None
    assert with_cli(LaunchConfig(), ["gpt2"]).policy is PolicyKind.AUTO
    assert with_cli(LaunchConfig(), ["gpt2"], batch_timeout_s=5.0).batch_timeout_s == 5.0
    with pytest.raises(PackratError, match="unknown plan policy 'often'"):
        with_cli(LaunchConfig(), ["gpt2"], policy="often")
    with pytest.raises(
        PackratError, match="unknown profile kind 'mixed': choose one of auto, isolated"
    ):
        with_cli(LaunchConfig(), ["gpt2"], profile_kind="mixed")
    with pytest.raises(PackratError, match="policy must be a PolicyKind, got 'auto'"):
        LaunchConfig(policy="auto")  # type: ignore[arg-type]
    with pytest.raises(PackratError, match="profile_kind must be a ProfileKindSetting"):
        LaunchConfig(profile_kind="isolated")  # type: ignore[arg-type]


ESTIMATORS = """
[server]
estimator = { window = 4 }

[[models]]
spec = "resnet50"

[[models]]
spec = "bert-base"
estimator = { alpha = 0.5 }
"""


def test_estimator_settings_from_the_file_and_the_command_line(tmp_path: Path) -> None:
    from packrat.controller.estimator import EstimatorConfig

    path = tmp_path / "serve.toml"
    path.write_text(ESTIMATORS)
    config = load_config_file(path)
    assert config.estimator == EstimatorConfig(window=4)
    resnet, bert = config.models
    assert resnet.estimator == EstimatorConfig(window=4)  # the server's
    assert bert.estimator == EstimatorConfig(alpha=0.5)  # its own table, whole
    overridden = with_cli(config, ["gpt2"], estimator="alpha=1,cooldown_s=0")
    assert overridden.estimator == EstimatorConfig(alpha=1.0, cooldown_s=0.0)
    assert overridden.models[-1].estimator == overridden.estimator  # models named here
    assert overridden.models[0].estimator == EstimatorConfig(window=4)  # the file's keep theirs
    assert with_cli(LaunchConfig(), ["gpt2"]).models[0].estimator == EstimatorConfig()
    with pytest.raises(PackratError, match="--estimator: estimator setting 'windw=2'"):
        with_cli(LaunchConfig(), ["gpt2"], estimator="windw=2")


def test_name_equals_model_serves_it_under_that_name(tmp_path: Path) -> None:
    odd = tmp_path / "a=b.onnx"  # an existing file is a file, whatever its name
    odd.write_bytes(b"")
    config = with_cli(LaunchConfig(), ["resnet=resnet50", "gpt2", str(odd), "kserve=/mnt/models"])
    assert [(m.name, m.spec) for m in config.models] == [
        ("resnet", "resnet50"),
        (None, "gpt2"),
        (None, str(odd)),
        ("kserve", "/mnt/models"),
    ]


FLAG_FILE = """
[server]
{flag} = false

[[models]]
spec = "resnet50"

[[models]]
spec = "bert-base"
{flag} = true
"""


@pytest.mark.parametrize("flag", ["chunks", "calibrate"])
def test_on_off_settings_from_the_file_and_the_command_line(tmp_path: Path, flag: str) -> None:
    path = tmp_path / "serve.toml"
    path.write_text(FLAG_FILE.format(flag=flag))
    config = load_config_file(path)
    resnet, bert = config.models
    assert (getattr(config, flag), getattr(resnet, flag), getattr(bert, flag)) == (
        False, False, True,
    )  # fmt: skip
    assert getattr(with_cli(LaunchConfig(), ["gpt2"]).models[0], flag) is True  # on by default
    overridden = with_cli(config, ["gpt2"], **{flag: True})
    assert getattr(overridden.models[-1], flag) is True  # the command line's, for models there
    assert getattr(overridden.models[0], flag) is False  # the file's keep theirs
    assert getattr(with_cli(LaunchConfig(), ["gpt2"], **{flag: False}).models[0], flag) is False
    path.write_text(f"[server]\n{flag} = 'no'\n")
    with pytest.raises(PackratError, match=f"{flag} must be true or false, got 'no'"):
        load_config_file(path)
    path.write_text(f"[[models]]\nspec = 'r'\n{flag} = 1\n")
    with pytest.raises(PackratError, match=f"ModelConfig.{flag} must be true or false, got 1"):
        load_config_file(path)


def test_max_workers_from_the_file_and_the_command_line(tmp_path: Path) -> None:
    path = tmp_path / "serve.toml"
    path.write_text(
        "[server]\nmax_workers = 6\n\n[[models]]\nspec = 'resnet50'\n\n"
        "[[models]]\nspec = 'bert-base'\nmax_workers = 3\n"
    )
    config = load_config_file(path)
    assert [config.max_workers, *(m.max_workers for m in config.models)] == [6, 6, 3]
    assert with_cli(LaunchConfig(), ["gpt2"]).models[0].max_workers is None  # 2 x its cores
    overridden = with_cli(config, ["gpt2"], max_workers=4)
    assert [m.max_workers for m in overridden.models] == [6, 3, 4]
    for bad in ("0", "'many'", "true"):
        path.write_text(f"[server]\nmax_workers = {bad}\n")
        with pytest.raises(PackratError, match="max_workers must be an integer >= 1"):
            load_config_file(path)
    path.write_text("[[models]]\nspec = 'r'\nmax_workers = 0\n")
    with pytest.raises(PackratError, match="ModelConfig.max_workers must be an integer >= 1"):
        load_config_file(path)


def test_a_model_registered_through_the_management_api_gets_the_servers_settings(
    tmp_path: Path,
) -> None:
    """`POST /models?url=...` builds its model from the repository's defaults: the server's
    backend, precision, max_workers, chunks, calibrate and estimator, as a model named on the
    command line gets them (before, a server started with --precision fp32 registered models
    on precision auto)."""
    import asyncio

    from packrat.server.launch import repository_defaults
    from packrat.server.repository import ModelConfig, Repository

    path = tmp_path / "serve.toml"
    path.write_text("[server]\nbackend = 'openvino'\nmax_workers = 6\nchunks = false\n")
    config = with_cli(
        load_config_file(path), ["resnet50"], precision="fp32", calibrate=False, estimator="alpha=1"
    )
    (named,) = config.models
    repository = Repository(repository_defaults(config, (0,)))
    registered: list[ModelConfig] = []

    async def register(model: ModelConfig, progress: object, *, files_anywhere: bool) -> None:
        registered.append(model)

    repository._register = register  # type: ignore[method-assign,assignment]
    asyncio.run(repository.register("bert-base", name="bert"))
    (model,) = registered
    settings = ("backend", "precision", "max_workers", "chunks", "calibrate", "estimator")
    assert [getattr(model, key) for key in settings] == [
        "openvino", "fp32", 6, False, False, config.estimator,
    ]  # fmt: skip
    assert [getattr(named, key) for key in settings] == [getattr(model, k) for k in settings]
    assert (model.spec, model.name, model.cores) == ("bert-base", "bert", (0,))
