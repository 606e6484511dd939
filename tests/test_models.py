"""The model manifest, the models directory, sha256 checks, safe loading and `gateway models`.

The real model files come from ../shared/models (or $GATEWAY_MODELS_DIR); downloads are served by
a local HTTP server, so nothing here needs the internet.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import http.server
import os
import re
import shutil
import threading
from pathlib import Path

import pytest
import yaml

from gateway import models_cli
from gateway.models import (
    MANIFEST_PATH,
    ModelCorruptError,
    ModelError,
    ModelFetchError,
    ModelManifest,
    ModelMissingError,
    models_dir,
    open_session,
    sha256_of,
)

SHARED_MODELS = Path(os.environ.get("GATEWAY_MODELS_DIR") or Path(__file__).resolve().parents[2] / "shared" / "models")
SHIPPED_HERE = ("yunet", "yolox_nano", "mobilefacenet", "osnet_x0_25")  # sface is bring-your-own


@pytest.fixture(scope="module")
def manifest() -> ModelManifest:
    return ModelManifest.load()


@pytest.fixture(scope="module")
def shared_models() -> Path:
    if not (SHARED_MODELS / "yolox_nano.onnx").is_file():
        pytest.skip(f"the shared test models are not in {SHARED_MODELS}")
    return SHARED_MODELS


def with_url(manifest: ModelManifest, name: str, url: str | None) -> ModelManifest:
    """The manifest with one model's download URL replaced."""
    models = [m.model_copy(update={"url": url}) if m.name == name else m for m in manifest.models]
    return manifest.model_copy(update={"models": models})


@pytest.fixture
def file_server(tmp_path):
    """An HTTP server on loopback serving tmp_path/served; yields (directory, base URL)."""
    served = tmp_path / "served"
    served.mkdir()
    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    handler = functools.partial(QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


# ------------------------------------------------------------------------------------ manifest


def test_manifest_lists_every_known_model_with_its_input_spec(manifest):
    assert MANIFEST_PATH == Path(__file__).resolve().parents[1] / "models" / "manifest.yaml"
    assert manifest.names == ["yunet", "yolox_nano", "mobilefacenet", "osnet_x0_25", "sface"]
    assert {m.name: m.task for m in manifest.models} == {
        "yunet": "face_detection", "yolox_nano": "person_detection", "mobilefacenet": "face_embedding",
        "osnet_x0_25": "person_reid", "sface": "face_embedding"}
    assert {m.name: m.family for m in manifest.models} == {
        "yunet": "yunet", "yolox_nano": "yolox", "mobilefacenet": "arcface", "osnet_x0_25": "osnet", "sface": "arcface"}
    assert manifest.families["yolov8"].task == "person_detection"  # bring-your-own layout

    yolox = manifest.get("yolox_nano").input
    assert (yolox.size, yolox.color, yolox.resize, yolox.pad_value, yolox.scale) == \
        ((416, 416), "BGR", "letterbox", 114, 1.0)
    yunet = manifest.get("yunet").input
    assert (yunet.size, yunet.multiple_of, yunet.color) == ("dynamic", 32, "BGR")
    mobilefacenet = manifest.get("mobilefacenet").input
    assert (mobilefacenet.size, mobilefacenet.color, mobilefacenet.mean[0], mobilefacenet.std[0]) == \
        ((112, 112), "RGB", 127.5, 128.0)
    osnet = manifest.get("osnet_x0_25").input
    assert osnet.size == (128, 256) and osnet.scale == pytest.approx(1 / 255)
    assert osnet.mean == (0.485, 0.456, 0.406) and osnet.std == (0.229, 0.224, 0.225)
    assert manifest.get("osnet_x0_25").embedding_dim == 512 and manifest.get("mobilefacenet").embedding_dim == 128
    assert manifest.get("sface").size_bytes == 38_696_353


def test_manifest_hashes_and_licenses_agree_with_the_shared_readme(manifest, shared_models):
    readme = (shared_models / "README.md").read_text(encoding="utf-8")
    table = {m.group(1): (m.group(2), m.group(3).strip()) for m in
             re.finditer(r"^\| (\S+\.onnx) \| [^|]+ \| ([0-9a-f]{64}) \| [^|]+ \| ([^|]+) \|$", readme, re.MULTILINE)}
    assert len(table) == 4
    for spec in manifest.models:
        if spec.file in table:
            sha, license_ = table[spec.file]
            assert spec.sha256 == sha, spec.name
            assert spec.license == license_, spec.name
    assert manifest.get("sface").sha256 in readme


def test_unknown_model_and_bad_manifests_are_model_errors(manifest, tmp_path):
    with pytest.raises(ModelError, match="unknown model 'yolov9'.*yolox_nano"):
        manifest.get("yolov9")
    (tmp_path / "broken.yaml").write_text("models: [\n", encoding="utf-8")
    with pytest.raises(ModelError, match="cannot read the model manifest"):
        ModelManifest.load(tmp_path / "broken.yaml")
    raw = yaml.safe_load(MANIFEST_PATH.read_text(encoding="utf-8"))
    raw["models"][1]["family"] = "detr"
    (tmp_path / "family.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
    with pytest.raises(ModelError, match="unknown family 'detr'"):
        ModelManifest.load(tmp_path / "family.yaml")


def test_models_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("GATEWAY_MODELS_DIR", raising=False)
    assert models_dir(None) == Path("var") / "models"
    monkeypatch.setenv("GATEWAY_MODELS_DIR", str(tmp_path / "env"))
    assert models_dir(None) == tmp_path / "env"
    assert models_dir(tmp_path / "configured") == tmp_path / "configured"
    assert models_dir(str(tmp_path / "configured")) == tmp_path / "configured"


# ------------------------------------------------------------------------------ present models


def test_every_shared_model_matches_its_sha256_and_sface_is_reported_missing(manifest, shared_models):
    for name in SHIPPED_HERE:
        path = manifest.verify(name, shared_models)
        assert path == shared_models / manifest.get(name).file
        assert sha256_of(path) == manifest.get(name).sha256
        assert manifest.status(name, shared_models) == "present"
    assert manifest.status("sface", shared_models) == "missing"
    with pytest.raises(ModelMissingError, match="face_recognition_sface_2021dec.onnx"):
        manifest.verify("sface", shared_models)


def test_manifest_input_and_output_names_match_the_real_models(manifest, shared_models):
    for name in SHIPPED_HERE:
        spec = manifest.get(name)
        session = manifest.load_model(name, shared_models)
        (model_input,) = session.get_inputs()
        assert model_input.name == spec.input.name, name
        if spec.input.size == "dynamic":
            assert not isinstance(model_input.shape[2], int) and not isinstance(model_input.shape[3], int)
        else:
            assert [model_input.shape[3], model_input.shape[2]] == list(spec.input.size), name
        assert [o.name for o in session.get_outputs()] == spec.outputs, name
        if spec.embedding_dim:
            assert session.get_outputs()[0].shape[1] == spec.embedding_dim


def test_open_session_uses_the_requested_threads_on_cpu(shared_models):
    session = open_session(shared_models / "yolox_nano.onnx", threads=2)
    options = session.get_session_options()
    assert options.intra_op_num_threads == 2
    assert options.inter_op_num_threads == 1
    assert session.get_providers() == ["CPUExecutionProvider"]


# -------------------------------------------------------------------------- missing and corrupt


def test_missing_model_names_the_file_the_directory_and_the_fetch_command(manifest, tmp_path):
    with pytest.raises(ModelMissingError) as caught:
        manifest.load_model("yolox_nano", tmp_path)
    message = str(caught.value)
    assert message.startswith(f"model file yolox_nano.onnx not found in {tmp_path}: ")
    assert "run 'gateway models fetch yolox_nano'" in message
    assert manifest.get("yolox_nano").url in message
    assert isinstance(caught.value, ModelError)


def test_random_bytes_are_corrupt_by_sha256_and_unloadable_by_onnxruntime(manifest, tmp_path):
    path = tmp_path / "yolox_nano.onnx"
    path.write_bytes(os.urandom(64 * 1024))
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(ModelCorruptError) as caught:
        manifest.load_model("yolox_nano", tmp_path)
    message = str(caught.value)
    assert str(path) in message and actual in message and manifest.get("yolox_nano").sha256 in message
    assert manifest.status("yolox_nano", tmp_path) == "corrupt"

    with pytest.raises(ModelCorruptError, match="yolox_nano.onnx .*cannot be loaded by onnxruntime") as caught:
        manifest.load_model("yolox_nano", tmp_path, verify=False)
    assert caught.value.__suppress_context__  # the user sees one line, not onnxruntime's chain
    assert "\n" not in str(caught.value)


def test_a_truncated_model_is_corrupt_both_ways(manifest, shared_models, tmp_path):
    data = (shared_models / "yolox_nano.onnx").read_bytes()
    (tmp_path / "yolox_nano.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelCorruptError, match=f"expected {manifest.get('yolox_nano').sha256}"):
        manifest.verify("yolox_nano", tmp_path)
    with pytest.raises(ModelCorruptError, match="cannot be loaded by onnxruntime"):
        manifest.load_model("yolox_nano", tmp_path, verify=False)


# ------------------------------------------------------------------------------------- fetch


def test_fetch_without_network_is_a_clear_fetch_error_and_leaves_nothing(manifest, tmp_path):
    offline = with_url(manifest, "yolox_nano", "http://127.0.0.1:1/yolox_nano.onnx")
    target = tmp_path / "models"
    with pytest.raises(ModelFetchError) as caught:
        offline.fetch("yolox_nano", target, timeout=5)
    message = str(caught.value)
    assert message.startswith("cannot download yolox_nano.onnx from http://127.0.0.1:1/yolox_nano.onnx: ")
    assert "refused" in message.lower()
    assert "copy the file there by hand" in message
    assert list(target.iterdir()) == []  # no partial download left behind


def test_fetch_downloads_checks_and_installs(manifest, shared_models, file_server, tmp_path):
    served, base = file_server
    shutil.copy(shared_models / "face_detection_yunet_2026may.onnx", served)
    local = with_url(manifest, "yunet", f"{base}/face_detection_yunet_2026may.onnx")
    target = tmp_path / "models"
    path = local.fetch("yunet", target)
    assert path == target / "face_detection_yunet_2026may.onnx"
    assert local.verify("yunet", target) == path
    assert sorted(p.name for p in target.iterdir()) == ["face_detection_yunet_2026may.onnx"]
    # Already there: nothing is downloaded again (the server no longer has the file).
    (served / "face_detection_yunet_2026may.onnx").unlink()
    assert local.fetch("yunet", target) == path


def test_fetch_of_the_wrong_file_installs_nothing(manifest, shared_models, file_server, tmp_path):
    served, base = file_server
    shutil.copy(shared_models / "face_detection_yunet_2026may.onnx", served / "yolox_nano.onnx")  # smaller, wrong
    wrong = with_url(manifest, "yolox_nano", f"{base}/yolox_nano.onnx")
    target = tmp_path / "models"
    with pytest.raises(ModelFetchError, match=f"sha256 is {manifest.get('yunet').sha256}, expected "
                                              f"{manifest.get('yolox_nano').sha256}"):
        wrong.fetch("yolox_nano", target)
    assert list(target.iterdir()) == []

    missing = with_url(manifest, "yolox_nano", f"{base}/nothing-here.onnx")
    with pytest.raises(ModelFetchError, match="HTTP Error 404"):
        missing.fetch("yolox_nano", target)

    # A download larger than the manifest says stops early (yunet's size, yolox's bytes).
    too_big = with_url(manifest, "yunet", f"{base}/yolox_nano.onnx")
    shutil.copy(shared_models / "yolox_nano.onnx", served / "yolox_nano.onnx")
    with pytest.raises(ModelFetchError, match="more than the expected 229738 bytes"):
        too_big.fetch("yunet", target)
    assert list(target.iterdir()) == []


def test_fetch_without_a_url_says_to_copy_by_hand(manifest, tmp_path):
    with pytest.raises(ModelFetchError, match="osnet_x0_25 has no download URL: "
                                              "copy person_reid_osnet_x0_25_msmt17.onnx"):
        manifest.fetch("osnet_x0_25", tmp_path)


# --------------------------------------------------------------------------------------- CLI


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="gateway")
    models_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_list_prints_every_model_with_its_status(shared_models, tmp_path, capsys):
    assert run_cli(["models", "list", "--dir", str(shared_models)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"models directory: {shared_models}"
    assert lines[1].split() == ["NAME", "TASK", "FILE", "STATUS", "SIZE"]
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert rows["yolox_nano"][:4] == ["yolox_nano", "person_detection", "yolox_nano.onnx", "present"]
    assert rows["yolox_nano"][4:] == ["3.7", "MB"]
    assert rows["yunet"][3:] == ["present", "230", "kB"]
    assert rows["sface"][3] == "missing"

    (tmp_path / "yolox_nano.onnx").write_bytes(b"not a model")
    assert run_cli(["models", "list", "--dir", str(tmp_path)]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[2:]}
    assert rows["yolox_nano"][3] == "corrupt" and rows["yunet"][3] == "missing"


def test_cli_verify_exit_codes(shared_models, tmp_path, capsys, monkeypatch):
    assert run_cli(["models", "verify", "--dir", str(shared_models)]) == 0  # sface missing: not a failure
    out = capsys.readouterr().out
    assert "yolox_nano: ok" in out and "sface: missing (not checked)" in out

    assert run_cli(["models", "verify", "yolox_nano", "yunet", "--dir", str(shared_models)]) == 0
    assert run_cli(["models", "verify", "yolox_nano", "sface", "--dir", str(shared_models)]) == 1
    assert "sface: missing: model file face_recognition_sface_2021dec.onnx not found" in capsys.readouterr().out

    (tmp_path / "yolox_nano.onnx").write_bytes(b"not a model")
    assert run_cli(["models", "verify", "--dir", str(tmp_path)]) == 1  # present and wrong: always a failure
    assert "yolox_nano: corrupt: model file" in capsys.readouterr().out

    assert run_cli(["models", "verify", "yolo9000", "--dir", str(shared_models)]) == 2
    assert "unknown model(s): yolo9000" in capsys.readouterr().err

    monkeypatch.setenv("GATEWAY_MODELS_DIR", str(shared_models))  # --dir defaults to the environment
    assert run_cli(["models", "verify", "yunet"]) == 0


def test_cli_fetch_downloads_and_reports_failures(manifest, shared_models, file_server, tmp_path, capsys):
    served, base = file_server
    shutil.copy(shared_models / "yolox_nano.onnx", served)
    raw = manifest.model_dump(mode="json")
    for model in raw["models"]:
        if model["name"] == "yolox_nano":
            model["url"] = f"{base}/yolox_nano.onnx"
        if model["name"] == "yunet":
            model["url"] = "http://127.0.0.1:1/face_detection_yunet_2026may.onnx"
    local_manifest = tmp_path / "manifest.yaml"
    local_manifest.write_text(yaml.safe_dump(raw), encoding="utf-8")
    target = tmp_path / "models"

    common = ["--dir", str(target), "--manifest", str(local_manifest)]
    assert run_cli(["models", "fetch", "yolox_nano", *common]) == 0
    assert f"yolox_nano: downloaded: {target / 'yolox_nano.onnx'}" in capsys.readouterr().out
    assert sha256_of(target / "yolox_nano.onnx") == manifest.get("yolox_nano").sha256
    assert run_cli(["models", "fetch", "yolox_nano", *common]) == 0
    assert "yolox_nano: already present" in capsys.readouterr().out

    assert run_cli(["models", "fetch", "yunet", "yolox_nano", *common]) == 1
    captured = capsys.readouterr()
    assert "yunet: cannot download face_detection_yunet_2026may.onnx" in captured.err
    assert "yolox_nano: already present" in captured.out
