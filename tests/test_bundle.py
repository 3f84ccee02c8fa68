"""Bundles: reading, writing, and every way a bundle can be wrong."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from edge_sdk import Bundle, BundleError, BundleIntegrityError, Inspector
from edge_sdk.runtime import bundle as bundle_mod
from edge_sdk.runtime.bundle import write_bundle
from edge_sdk.runtime.verify import verify_bundle


def test_written_bundle_round_trips(s_bundle: Path) -> None:
    bundle = Bundle.open(s_bundle)
    m = bundle.manifest
    assert m.model.architecture == "efficientad-s"
    assert m.normalization.st.qb > m.normalization.st.qa
    assert m.threshold.policy.method == "robust_false_reject_rate"
    assert bundle.graph("fp32")[:4] != b""  # verified bytes
    assert bundle_mod.sha256_hex(bundle.graph()) == m.model.sha256


def test_directory_bundle_is_accepted(bundle_dir: Path) -> None:
    report = verify_bundle(bundle_dir)
    assert report["map_shapes"]["fp32"] == [1, 1, 56, 56]


def test_verify_runs_every_graph(s_bundle: Path) -> None:
    report = verify_bundle(s_bundle)
    assert any("sha256 matches" in c for c in report["checks"])
    assert any("runs on the CPU" in c for c in report["checks"])


def test_bundles_are_immutable(s_bundle: Path) -> None:
    manifest = Bundle.open(s_bundle).manifest
    with pytest.raises(BundleError, match="immutable"):
        write_bundle(s_bundle, manifest, {"model.onnx": b"x"})


def _expect(path: Path, error: type[Exception], *patterns: str) -> str:
    with pytest.raises(error) as info:
        Inspector.open(path, device="cpu", warmup=False)
    message = str(info.value)
    assert str(path) in message or path.name in message, message
    for pattern in patterns:
        assert pattern in message, message
    return message


def test_missing_graph(rebundle) -> None:
    _expect(rebundle(files={"model.onnx": None}), BundleError, "missing member 'model.onnx'")


def test_missing_manifest(rebundle) -> None:
    _expect(rebundle(files={"bundle.yaml": None}), BundleError, "bundle.yaml")


def test_wrong_hash(rebundle, s_bundle: Path) -> None:
    graph = Bundle.open(s_bundle).graph()
    tampered = graph[:-1] + bytes([graph[-1] ^ 1])
    msg = _expect(
        rebundle(files={"model.onnx": tampered}),
        BundleIntegrityError,
        "model.sha256",
        "'model.onnx'",
    )
    assert "corrupt or was altered" in msg


def test_manifest_that_does_not_parse(rebundle) -> None:
    _expect(rebundle(manifest_text="name: [unclosed\n  model: {"), BundleError, "not valid YAML")


def test_manifest_that_is_not_a_mapping(rebundle) -> None:
    _expect(rebundle(manifest_text="- just\n- a list\n"), BundleError, "mapping")


def test_quantiles_out_of_order(rebundle) -> None:
    def swap(m: dict) -> None:
        m["normalization"]["st"]["qa"], m["normalization"]["st"]["qb"] = 2.0, 1.0

    _expect(rebundle(swap), BundleError, "normalization.st", "qb must be greater than qa")


def test_equal_quantiles(rebundle) -> None:
    def equal(m: dict) -> None:
        m["normalization"]["ae"]["qa"] = m["normalization"]["ae"]["qb"] = 1.0

    _expect(rebundle(equal), BundleError, "normalization.ae")


def test_non_finite_threshold(rebundle) -> None:
    def nan(m: dict) -> None:
        m["threshold"]["image"] = float("nan")

    _expect(rebundle(nan), BundleError, "threshold.image", "finite")


def test_missing_field(rebundle) -> None:
    _expect(rebundle(lambda m: m.pop("threshold")), BundleError, "threshold", "Field required")


def test_unknown_field_is_refused(rebundle) -> None:
    _expect(rebundle(lambda m: m.update(thresold={"image": 1})), BundleError, "thresold")


def test_unknown_major_version(rebundle) -> None:
    def future(m: dict) -> None:
        m["format"] = "edge-ad-bundle/2.0"
        m["something_new"] = True  # must not drown the version message

    msg = _expect(rebundle(future), BundleError, "'format'", "major version 2", "upgrade edge-ad")
    assert "something_new" not in msg


def test_newer_minor_version_is_read(rebundle) -> None:
    Inspector.open(
        rebundle(lambda m: m.update(format="edge-ad-bundle/1.7")), device="cpu", warmup=False
    )


def test_input_shape_that_does_not_match_the_graph(rebundle) -> None:
    def smaller(m: dict) -> None:
        m["model"]["input"]["height"] = 128

    _expect(rebundle(smaller), BundleError, "model.input", "[batch, 3, 128, 256]")


def test_input_name_that_does_not_match_the_graph(rebundle) -> None:
    _expect(
        rebundle(lambda m: m["model"]["input"].update(name="pixels")),
        BundleError,
        "model.input.name",
        "'pixels'",
    )


def test_output_name_that_does_not_match_the_graph(rebundle) -> None:
    _expect(
        rebundle(lambda m: m["model"]["outputs"].update(map_ae="ae")),
        BundleError,
        "model.outputs.map_ae",
    )


def test_graph_that_is_not_onnx(rebundle) -> None:
    garbage = b"definitely not protobuf" * 10
    digest = bundle_mod.sha256_hex(garbage)
    path = rebundle(lambda m: m["model"].update(sha256=digest), files={"model.onnx": garbage})
    from edge_sdk import EngineError

    _expect(path, EngineError, "cannot load graph")


def test_missing_variant(s_bundle: Path) -> None:
    with pytest.raises(BundleError, match="no graph variant 'int8'"):
        Inspector.open(s_bundle, device="cpu", variant="int8", warmup=False)


def test_not_a_zip(tmp_path: Path) -> None:
    path = tmp_path / "junk.bundle"
    path.write_bytes(b"PK but not really")
    _expect(path, BundleError, "not a bundle")


def test_no_such_bundle(tmp_path: Path) -> None:
    _expect(tmp_path / "absent.bundle", BundleError, "no such bundle")


def test_path_traversal_in_manifest(rebundle) -> None:
    _expect(
        rebundle(lambda m: m["model"].update(file="../../etc/passwd")),
        BundleError,
        "model.file",
        "plain relative file name",
    )


def test_path_traversal_member_in_zip(rebundle) -> None:
    _expect(rebundle(files={"../evil.onnx": b"x"}), BundleError, "unsafe path")


def test_symlink_member_in_zip(tmp_path: Path, s_bundle: Path) -> None:
    out = tmp_path / "link.bundle"
    with zipfile.ZipFile(s_bundle) as src, zipfile.ZipFile(out, "w") as dst:
        for name in src.namelist():
            dst.writestr(name, src.read(name))
        info = zipfile.ZipInfo("model.card")
        info.external_attr = 0o120777 << 16  # a symlink entry
        dst.writestr(info, "/etc/passwd")
    _expect(out, BundleError, "symbolic link")


def test_symlink_member_in_directory(bundle_dir: Path, tmp_path: Path) -> None:
    real = tmp_path / "elsewhere.onnx"
    os.replace(bundle_dir / "model.onnx", real)
    (bundle_dir / "model.onnx").symlink_to(real)
    _expect(bundle_dir, BundleError, "symbolic link")


def test_member_over_the_size_cap(s_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bundle_mod, "MAX_MEMBER_BYTES", 1000)
    # The default argument was bound at definition: the cap must be read at call time.
    with pytest.raises(BundleError, match="larger than 1000 bytes"):
        Bundle.open(s_bundle).graph()


_OPEN_AND_MEASURE = """
import sys
from edge_sdk.runtime.bundle import Bundle
from edge_sdk.errors import BundleError
try:
    Bundle.open(sys.argv[1]).graph()
    print("opened")
except BundleError as exc:
    print(exc)
# The peak of this process's own memory (ru_maxrss would include the forking parent's).
peak = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(int(peak.split()[1]) // 1024)  # MiB
"""


def test_a_zip_bomb_is_refused_before_it_is_inflated(tmp_path: Path, s_bundle: Path) -> None:
    bomb = tmp_path / "bomb.bundle"
    with zipfile.ZipFile(s_bundle) as src, zipfile.ZipFile(bomb, "w") as dst:
        dst.writestr("bundle.yaml", src.read("bundle.yaml"))
        info = zipfile.ZipInfo("model.onnx")
        info.compress_type = zipfile.ZIP_DEFLATED
        with dst.open(info, "w") as member:  # 1.1 GB of zeros in about 1 MB
            zeros = bytes(1 << 20)
            for _ in range(1100):
                member.write(zeros)
    assert bomb.stat().st_size < 2 << 20
    done = subprocess.run(
        [sys.executable, "-c", _OPEN_AND_MEASURE, str(bomb)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    message, peak_mib = done.stdout.strip().rsplit("\n", 1)
    assert "larger than" in message and "model.onnx" in message
    assert int(peak_mib) < 400  # nothing near 1.1 GB was inflated
    # Within the size cap, a member that inflates a thousandfold is refused too.
    small = tmp_path / "small-bomb.bundle"
    with zipfile.ZipFile(s_bundle) as src, zipfile.ZipFile(small, "w") as dst:
        dst.writestr("bundle.yaml", src.read("bundle.yaml"))
        dst.writestr("model.onnx", bytes(50 << 20), zipfile.ZIP_DEFLATED)
    _expect(small, BundleError, "zip bomb")


def test_too_many_members(rebundle, monkeypatch: pytest.MonkeyPatch) -> None:
    path = rebundle(files={f"thumb/{i}.png": b"x" for i in range(20)})
    monkeypatch.setattr(bundle_mod, "MAX_MEMBERS", 10)
    _expect(path, BundleError, "members, more than the 10 allowed")


def test_manifest_round_trip_is_stable(s_bundle: Path) -> None:
    manifest = Bundle.open(s_bundle).manifest
    text = bundle_mod.dump_manifest(manifest)
    again = bundle_mod.parse_manifest(text, source="round trip")
    assert again == manifest
    assert yaml.safe_load(text)["format"].startswith("edge-ad-bundle/1.")


def test_threshold_policy_is_typed_and_reads_back_as_written() -> None:
    from edge_sdk.runtime.manifest import Threshold

    written = {"method": "false_reject_rate", "target_false_reject_rate": 0.01, "k": [1, 2]}
    threshold = Threshold.model_validate({"image": 0.5, "pixel": 0.5, "policy": written})
    assert threshold.policy.target_false_reject_rate == 0.01
    assert threshold.policy.small_sample is False and threshold.policy.notes == ()
    # An older bundle's record gains no keys on the way back (and keeps the unknown one).
    assert threshold.model_dump(mode="json")["policy"] == written
    with pytest.raises(ValueError, match="target_false_reject_rate"):
        Threshold.model_validate(
            {"image": 0.5, "pixel": 0.5, "policy": {"target_false_reject_rate": "x"}}
        )
