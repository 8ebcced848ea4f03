from __future__ import annotations

from typing import Any

import pytest

from stream.settings import ConfigError, load_settings

REQUIRED = {
    "bootstrap": "127.0.0.1:9092",
    "input_topic": "events",
    "alerts_topic": "alerts",
    "dlq_topic": "dlq",
    "group": "vigil",
}


def test_flags_override_env_override_file(tmp_path):
    config = tmp_path / "vigil.toml"
    config.write_text('[vigil]\nbatch_size = 10\nquantile = 0.9\ngroup = "from-file"\n')
    env = {"VIGIL_BATCH_SIZE": "20", "VIGIL_BOOTSTRAP": "b:1"}
    settings = load_settings(
        {**REQUIRED, "bootstrap": None, "batch_size": None, "group": "from-flag"},
        config_file=config,
        env=env,
    )
    assert settings.batch_size == 20
    assert settings.quantile == 0.9
    assert settings.bootstrap == "b:1"
    assert settings.group == "from-flag"


def test_config_file_from_env(tmp_path):
    config = tmp_path / "vigil.toml"
    config.write_text("warmup = 5\n")
    settings = load_settings(REQUIRED, env={"VIGIL_CONFIG": str(config)})
    assert settings.warmup == 5


def test_bad_value_names_the_setting_and_its_source():
    with pytest.raises(ConfigError, match=r"'batch_size' \(env VIGIL_BATCH_SIZE\)"):
        load_settings(REQUIRED, env={"VIGIL_BATCH_SIZE": "lots"})
    with pytest.raises(ConfigError, match=r"'quantile' \(flag --quantile\)"):
        load_settings({**REQUIRED, "quantile": 1.5}, env={})


def test_missing_required_setting_is_named():
    with pytest.raises(ConfigError, match="'group'"):
        load_settings({k: v for k, v in REQUIRED.items() if k != "group"}, env={})


def test_unknown_setting_in_file_is_rejected(tmp_path):
    config = tmp_path / "vigil.toml"
    config.write_text("batchsize = 5\n")
    with pytest.raises(ConfigError, match="unknown setting 'batchsize'"):
        load_settings(REQUIRED, config_file=config, env={})


def test_settings_are_frozen_and_secret_is_hidden():
    settings = load_settings({**REQUIRED, "sasl_password": "hunter2"}, env={})
    with pytest.raises(ValueError, match="frozen"):
        settings.batch_size = 3  # type: ignore[misc]
    assert "hunter2" not in repr(settings)
    assert settings.kafka_common()["sasl.password"] == "hunter2"


def test_missing_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(REQUIRED, config_file=tmp_path / "nope.toml", env={})


@pytest.mark.parametrize(
    ("name", "value"),
    [("suspicious_quantile", 1.0), ("unproven_segments", "page"), ("arrival_kinds", ["shop"])],
)
def test_pattern_bar_and_unproven_mode_are_checked_at_start(name, value):
    with pytest.raises(ConfigError, match=rf"'{name}' \(flag --{name.replace('_', '-')}\)"):
        load_settings({**REQUIRED, name: value}, env={})


def test_arrival_kinds_reach_the_scorer():
    from stream.service import scoring_config

    assert scoring_config(load_settings(REQUIRED, env={})).arrival_kinds == ("device", "ip24")
    chosen = load_settings({**REQUIRED, "arrival_kinds": ["title"]}, env={})
    assert scoring_config(chosen).arrival_kinds == ("title",)
    assert (
        scoring_config(load_settings({**REQUIRED, "arrival_kinds": []}, env={})).arrival_kinds == ()
    )


def test_a_replay_runs_the_live_settings_without_metrics_alignment_or_feedback(tmp_path):
    from stream.replay import replay_settings

    live = tmp_path / "vigil.toml"
    live.write_text(
        "metrics_port = 9400\nmax_event_time_skew_s = 60.0\nquantile = 0.99\n"
        'labels_topic = "vigil.labels"\npattern_alerts_topic = "vigil.patterns"\n'
        'unproven_segments = "hold"\n'
    )
    assert load_settings({**REQUIRED}, config_file=live, env={}).labels_topic == "vigil.labels"
    settings = replay_settings("b:1", "events", None, live)
    assert settings.quantile == 0.99  # the live service's scoring
    assert settings.metrics_port is None
    # No feedback: what it would read depends on when reviewers and the pattern stage wrote.
    assert settings.labels_topic is None
    assert settings.pattern_alerts_topic is None
    # Without labels, "hold" would hold back every alert of the replay.
    assert settings.unproven_segments == "budget"
    assert settings.max_event_time_skew_s is None
    assert settings.guarantee == "at-least-once"
    assert not settings.observations


def test_a_replay_file_does_not_depend_on_the_order_partitions_were_met(tmp_path):
    import io
    import random

    import orjson

    from stream.replay import ReplaySink

    alerts: list[dict[str, Any]] = [
        {
            "alert_id": f"al-{p}-{o}",
            "occurred_at": f"2026-11-02T00:00:{o % 60:02d}.000Z",
            "source": {"topic": "events", "partition": p, "offset": o},
        }
        for p in range(3)
        for o in range(40)
    ]
    files = []
    for seed in range(3):
        shuffled = alerts[:]
        random.Random(seed).shuffle(shuffled)
        out = io.BytesIO()
        sink = ReplaySink("alerts", out)
        for alert in shuffled:
            sink.produce("alerts", key=alert["alert_id"].encode(), value=orjson.dumps(alert))
        sink.write_out()
        files.append(out.getvalue())
    assert files[0] == files[1] == files[2]
    lines = [orjson.loads(line) for line in files[0].splitlines()]
    assert len(lines) == len(alerts)
    assert [a["occurred_at"] for a in lines] == sorted(a["occurred_at"] for a in alerts)
