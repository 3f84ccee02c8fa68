"""The line config: precedence, paths relative to the file, errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_sdk.errors import ConfigError
from edge_sdk.line.config import LineConfig, load_config
from edge_sdk.sinks import ArchiveSinkConfig, JsonlSinkConfig


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_precedence_cli_over_env_over_file_over_defaults(tmp_path: Path) -> None:
    line = write(
        tmp_path / "etc" / "line.yaml",
        "bundle: screw.bundle\ndeadline_ms: 300\nmode: free_run\nhealth: {port: 9000}\n",
    )
    env = {"EDGE_AD_DEADLINE_MS": "400", "EDGE_AD_HEALTH__HOST": "0.0.0.0"}
    config, origin = load_config(
        line, overrides={"deadline_ms": 500.0, "camera": None}, environ=env
    )
    assert config.pipeline.deadline_ms == 500.0
    assert origin["pipeline.deadline_ms"] == "command line"
    assert config.pipeline.mode == "free_run" and origin["pipeline.mode"] == str(line)
    # Nested keys merge: the port from the file, the host from the environment.
    assert (config.health.host, config.health.port) == ("0.0.0.0", 9000)
    assert config.pipeline.queue_size == 64  # default
    env_only, _ = load_config(line, environ=env)
    assert env_only.pipeline.deadline_ms == 400.0


def test_paths_in_the_file_are_relative_to_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    line = write(
        tmp_path / "etc" / "line.yaml",
        "bundle: models/screw.bundle\nprofile: ../calibration/cam.yaml\n"
        "sinks: [{type: jsonl, path: out/results.jsonl}, {type: archive, root: arch},\n"
        "        {type: mqtt, host: broker, tls_ca_file: certs/ca.pem}]\n",
    )
    monkeypatch.chdir("/")
    config, _ = load_config(line, environ={})
    assert config.bundle == tmp_path / "etc" / "models" / "screw.bundle"
    assert config.profile == tmp_path / "calibration" / "cam.yaml"
    jsonl, archive, mqtt = config.sinks
    assert jsonl.path == tmp_path / "etc" / "out" / "results.jsonl"
    assert archive.root == tmp_path / "etc" / "arch"
    assert mqtt.tls_ca_file == tmp_path / "etc" / "certs" / "ca.pem"


def test_errors_name_the_key_and_where_it_came_from(tmp_path: Path) -> None:
    line = write(tmp_path / "line.yaml", "bundle: b.bundle\ndeadline_ms: -5\nmdoe: x\n")
    with pytest.raises(ConfigError) as info:
        load_config(line, environ={"EDGE_AD_QUEUE_SIZE": "zero"})
    message = str(info.value)
    assert f"deadline_ms (from {line})" in message
    assert "mdoe" in message and "queue_size (from environment)" in message


def test_missing_bundle_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="bundle"):
        load_config(None, environ={})
    bad = write(tmp_path / "bad.yaml", "bundle: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad, environ={})
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml", environ={})


def test_json_in_the_environment(tmp_path: Path) -> None:
    env = {"EDGE_AD_BUNDLE": "x.bundle", "EDGE_AD_SINKS": '[{"type": "jsonl", "path": "-"}]'}
    config, _ = load_config(None, environ=env)
    assert config.sinks == [JsonlSinkConfig(type="jsonl", path=Path("-"))]
    with pytest.raises(ConfigError, match="EDGE_AD_SINKS"):
        load_config(None, environ={**env, "EDGE_AD_SINKS": "[oops"})


def test_gpu_and_recheck_keys_default_to_the_engine_defaults(tmp_path: Path) -> None:
    line = write(tmp_path / "line.yaml", "bundle: b.bundle\n")
    config, _ = load_config(line, environ={})
    # None: CUDA graphs on for the CUDA provider, off for TensorRT (EngineOptions decides).
    assert config.engine.cuda_graph is None and config.recheck is True
    env = {"EDGE_AD_RECHECK": "false", "EDGE_AD_CUDA_GRAPH": "false"}
    config, origin = load_config(line, environ=env)
    assert config.recheck is False and config.engine.cuda_graph is False
    assert origin["recheck"] == "environment"


def test_sinks_are_typed_models_validated_at_load(tmp_path: Path) -> None:
    line = write(
        tmp_path / "line.yaml",
        "bundle: b.bundle\nsinks: [{type: archive, root: arch}, {type: jsonl, pathh: x}]\n",
    )
    with pytest.raises(ConfigError, match=rf"sinks \(from {line}\)\[1\]\.jsonl\.pathh"):
        load_config(line, environ={})
    config = LineConfig.model_validate(
        {"bundle": "b.bundle", "sinks": [{"type": "archive", "root": "/a"}]}
    )
    assert config.sinks == [ArchiveSinkConfig(type="archive", root=Path("/a"))]
    assert isinstance(LineConfig(bundle=Path("b.bundle")).sinks[0], JsonlSinkConfig)
    with pytest.raises(ValueError, match="a second sink named 'jsonl'"):
        LineConfig.model_validate({"bundle": "b", "sinks": [{"type": "jsonl"}, {"type": "jsonl"}]})


def test_engine_and_pipeline_sections_are_the_options_the_runtime_takes(tmp_path: Path) -> None:
    from edge_sdk.line.pipeline import Mode, PipelineOptions
    from edge_sdk.runtime.engine import EngineOptions

    line = write(
        tmp_path / "etc" / "line.yaml",
        "bundle: b.bundle\nengine: {device: cpu, threads: 2, trt_cache_dir: cache}\n"
        "pipeline: {mode: free_run, deadline_ms: 250}\n",
    )
    config, origin = load_config(line, environ={"EDGE_AD_PIPELINE__QUEUE_SIZE": "8"})
    assert config.engine == EngineOptions(
        device="cpu", threads=2, trt_cache_dir=tmp_path / "etc" / "cache"
    )
    assert config.pipeline == PipelineOptions(mode=Mode.FREE_RUN, deadline_ms=250, queue_size=8)
    assert origin["engine.threads"] == str(line)
    assert origin["pipeline.queue_size"] == "environment"
    # The flat keys of older line.yaml files move into their sections, layer by layer, so
    # a flat key in the environment still beats a nested one in the file.
    config, origin = load_config(line, environ={"EDGE_AD_DEADLINE_MS": "400"})
    assert config.pipeline.deadline_ms == 400 and config.pipeline.mode is Mode.FREE_RUN
    assert origin["pipeline.deadline_ms"] == "environment"
    flat = write(tmp_path / "flat.yaml", "bundle: b.bundle\ndevice: cpu\nmode: free_run\n")
    config, _ = load_config(flat, environ={})
    assert config.engine.device == "cpu" and config.pipeline.mode is Mode.FREE_RUN
    assert LineConfig(bundle=Path("b"), deadline_ms=300).pipeline.deadline_ms == 300  # type: ignore[call-arg]
    both = write(tmp_path / "both.yaml", "bundle: b\ndevice: cpu\nengine: {device: cuda}\n")
    with pytest.raises(ConfigError, match=r"device is given twice.*engine\.device"):
        load_config(both, environ={})
    bad = write(tmp_path / "bad.yaml", "bundle: b\nengine: {threads: -1, devcie: cpu}\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad, environ={})
    assert f"engine.threads (from {bad})" in str(info.value)
    assert f"engine.devcie (from {bad})" in str(info.value)


def test_the_readme_line_config_loads(tmp_path: Path) -> None:
    readme = Path(__file__).resolve().parents[1] / "README.md"
    text = readme.read_text().split("A line config (`line.yaml`", 1)[1]
    block = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    config, _ = load_config(write(tmp_path / "line.yaml", block), environ={})
    assert config.engine.device == "auto" and config.pipeline.deadline_ms == 300
    assert [s.type for s in config.sinks] == ["jsonl", "modbus", "mqtt", "archive"]
