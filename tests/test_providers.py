"""Provider choice: the order asked of ONNX Runtime, and OpenVINO (the plugin execution
provider) run for real when its wheel is installed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge_sdk import Inspector
from edge_sdk.errors import EngineError
from edge_sdk.runtime.providers import EngineOptions, provider_chain

_CPU, _OV = "CPUExecutionProvider", "OpenVINOExecutionProvider"
_CUDA, _TRT = "CUDAExecutionProvider", "TensorrtExecutionProvider"


def _names(chain: list) -> list[str]:
    return [c if isinstance(c, str) else c[0] for c in chain]


def test_auto_prefers_openvino_on_a_cpu_box() -> None:
    assert _names(provider_chain("auto", [_OV, _CPU], EngineOptions())) == [_OV, _CPU]
    assert _names(provider_chain("auto", [_CPU], EngineOptions())) == [_CPU]


def test_auto_leaves_openvino_out_when_a_gpu_leads() -> None:
    chain = provider_chain("auto", [_TRT, _CUDA, _OV, _CPU], EngineOptions())
    assert _names(chain) == [_TRT, _CUDA, _CPU]


def test_openvino_runs_float_layers_in_float32_with_the_threads_asked() -> None:
    (name, opts), _ = provider_chain("openvino", [_OV, _CPU], EngineOptions(threads=3))
    config = json.loads(opts["load_config"])["CPU"]
    assert name == _OV
    assert config["INFERENCE_PRECISION_HINT"] == "f32"
    assert config["INFERENCE_NUM_THREADS"] == "3"
    assert config["PERFORMANCE_HINT"] == "LATENCY"
    (_, default), _ = provider_chain("openvino", [_OV, _CPU], EngineOptions())
    assert "INFERENCE_NUM_THREADS" not in json.loads(default["load_config"])["CPU"]


def test_forced_openvino_without_the_plugin_says_what_to_install() -> None:
    import importlib.util

    installed = importlib.util.find_spec("onnxruntime_ep_openvino") is not None
    hint = r"installed but offers no CPU device" if installed else r"edge-ad\[openvino\]"
    with pytest.raises(EngineError, match=hint):
        provider_chain("openvino", [_CPU], EngineOptions())


@pytest.fixture(scope="module")
def openvino() -> None:
    pytest.importorskip("onnxruntime_ep_openvino", reason="pip install 'edge-ad[openvino]'")
    import onnxruntime as ort

    from edge_sdk.runtime.providers import openvino_plugin_devices

    if not openvino_plugin_devices(ort):
        pytest.skip("the OpenVINO plugin lists no CPU device here (a non-Intel CPU)")


def test_openvino_matches_the_cpu_provider_on_the_fp32_graph(s_bundle: Path, openvino) -> None:
    rng = np.random.default_rng(5)
    images = [rng.integers(0, 256, (300, 420), dtype=np.uint8) for _ in range(2)]
    with (
        Inspector.open(s_bundle, device="cpu") as cpu,
        Inspector.open(s_bundle, device="openvino") as ov,
    ):
        assert ov.provider == _OV and cpu.provider == _CPU
        for image in images:
            a, b = cpu.inspect(image), ov.inspect(image)
            # float32 in both (the precision hint): no bfloat16 drift on AMX CPUs.
            assert b.score == pytest.approx(a.score, rel=1e-4)
            assert a.anomaly_map is not None and b.anomaly_map is not None
            np.testing.assert_allclose(
                b.anomaly_map, a.anomaly_map, rtol=1e-3, atol=1e-4 * np.abs(a.anomaly_map).max()
            )


def test_openvino_is_what_auto_picks_and_peak_runs_on_it(s_bundle: Path, openvino) -> None:
    from edge_sdk.tools.peak import measure_peak

    with Inspector.open(s_bundle) as auto:
        assert auto.provider == _OV
    peak = measure_peak(int8=True, rounds=2, device="openvino")
    assert peak["gops"] > 0 and peak["gmac"] > 1


def test_cuda_graphs_are_asked_of_both_gpu_providers() -> None:
    chain = provider_chain("tensorrt", [_TRT, _CUDA, _CPU], EngineOptions(cuda_graph=True))
    options = dict(c for c in chain if not isinstance(c, str))
    assert options[_TRT]["trt_cuda_graph_enable"] == "1"
    assert options[_CUDA]["enable_cuda_graph"] == "1"
    plain = provider_chain("cuda", [_CUDA, _CPU], EngineOptions(cuda_graph=False))
    assert plain == [_CUDA, _CPU]  # no options: no CUDA graphs


def test_cuda_graphs_are_on_by_default_for_cuda_only() -> None:
    from edge_sdk.runtime.providers import _captures_graphs

    chain = provider_chain("auto", [_TRT, _CUDA, _CPU], EngineOptions())
    options = dict(c for c in chain if not isinstance(c, str))
    assert options[_CUDA]["enable_cuda_graph"] == "1"
    assert "trt_cuda_graph_enable" not in options[_TRT]  # not measured on TensorRT yet
    assert _captures_graphs(chain, _CUDA) and not _captures_graphs(chain, _TRT)
    assert not _captures_graphs(chain, _CPU)


def test_tensorrt_is_left_out_where_its_library_is_missing() -> None:
    """onnxruntime-gpu lists TensorRT even without TensorRT installed (seen on an H200
    box); asking for it there only buys a fallback banner on every session."""
    from edge_sdk.runtime.providers import available_providers, tensorrt_loadable

    class FakeOrt:  # what onnxruntime-gpu reports; OpenVINO's plugin is not looked up
        @staticmethod
        def get_available_providers() -> list[str]:
            return [_TRT, _CUDA, _OV, _CPU]

    if tensorrt_loadable():
        pytest.skip("TensorRT is installed here")
    assert available_providers(FakeOrt()) == [_CUDA, _OV, _CPU]
    with pytest.raises(EngineError, match=r"TensorRT 10 \(libnvinfer\.so\.10"):
        provider_chain("tensorrt", available_providers(FakeOrt()), EngineOptions())


def test_tensorrt_cache_is_one_folder_per_graph(tmp_path: Path) -> None:
    from edge_sdk.runtime.providers import trt_cache_folder

    a, b = trt_cache_folder(tmp_path, b"graph a"), trt_cache_folder(tmp_path, b"graph b")
    assert a != b and a.parent == b.parent == tmp_path
    assert trt_cache_folder(tmp_path, b"graph a") == a
    options = EngineOptions(trt_cache_dir=a)
    (_, trt), *_ = provider_chain("tensorrt", [_TRT, _CUDA, _CPU], options)
    assert trt["trt_engine_cache_enable"] == "1" and trt["trt_engine_cache_path"] == str(a)
