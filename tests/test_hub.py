"""Loading by Hub id, through the real huggingface_hub download code, against a local stand-in for the Hub.

A small HTTP server on 127.0.0.1 answers the two requests hf_hub_download makes (HEAD for metadata, then GET)
under /<owner>/<name>/resolve/<revision>/<file>; ``HF_ENDPOINT`` points the client at it. The loading runs in a
subprocess because huggingface_hub reads HF_ENDPOINT when it is imported.
"""

import hashlib
import http.server
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from mtl import ClassNSeg, ModelLoadError, load_model
from mtl.hub import parse_hub_id

ROOT = Path(__file__).resolve().parents[1]
COMMIT = "0123456789abcdef0123456789abcdef01234567"


class _FakeHub(http.server.BaseHTTPRequestHandler):
    repos: dict = {}  # repo_id -> {revision: directory}
    requests: list = []

    def log_message(self, *args):
        pass

    def _lookup(self):
        parts = self.path.split("?")[0].strip("/").split("/")
        if len(parts) < 5 or parts[2] != "resolve":
            return None, "RepoNotFound"
        repo_id, revision, filename = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
        if repo_id not in self.repos:
            return None, "RepoNotFound"
        if revision not in self.repos[repo_id]:
            return None, "RevisionNotFound"
        path = self.repos[repo_id][revision] / filename
        return (path, None) if path.is_file() else (None, "EntryNotFound")

    def _answer(self, body: bool):
        self.requests.append((self.command, self.path))
        path, error = self._lookup()
        if error:
            self.send_response(404)
            self.send_header("X-Error-Code", error)
            self.send_header("X-Error-Message", error)
            self.end_headers()
            return
        data = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("ETag", '"%s"' % hashlib.sha256(data).hexdigest())
        self.send_header("X-Repo-Commit", COMMIT)
        self.end_headers()
        if body:
            self.wfile.write(data)

    def do_HEAD(self):
        self._answer(body=False)

    def do_GET(self):
        self._answer(body=True)


@pytest.fixture
def fake_hub(tmp_path):
    ckpt = tmp_path / "published"
    torch.manual_seed(3)
    model = ClassNSeg(name="hub-test")
    model.set_calibration(2.0, -0.25, threshold=0.6)
    model.save_pretrained(ckpt)
    _FakeHub.repos = {"someone/classnseg-tiny": {"main": ckpt, "v1": ckpt}}
    _FakeHub.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", model
    server.shutdown()


def _load_in_subprocess(endpoint, spec, home):
    code = (
        "import json, sys\n"
        "from mtl import load_model, ModelLoadError\n"
        "try:\n"
        f"    m = load_model({spec!r})\n"
        "    total = float(sum(p.double().sum() for p in m.state_dict().values()))\n"
        "    print(json.dumps({'ok': True, 'config': m.config, 'sum': total}))\n"
        "except ModelLoadError as e:\n"
        "    print(json.dumps({'ok': False, 'error': str(e)}))\n"
    )
    env = {"HF_ENDPOINT": endpoint, "HF_HOME": str(home), "HF_HUB_DISABLE_TELEMETRY": "1", "PATH": "/usr/bin:/bin",
           "HF_HUB_ETAG_TIMEOUT": "5", "HF_HUB_DOWNLOAD_TIMEOUT": "5", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_download_by_hub_id_through_a_local_hub(fake_hub, tmp_path):
    endpoint, published = fake_hub
    result = _load_in_subprocess(endpoint, "someone/classnseg-tiny", tmp_path / "hf")
    assert result["ok"], result
    assert result["config"]["threshold"] == 0.6 and result["config"]["name"] == "hub-test"
    expected = float(sum(p.double().sum() for p in published.state_dict().values()))
    assert result["sum"] == pytest.approx(expected, rel=1e-12)
    fetched = {path.rsplit("/", 1)[-1] for method, path in _FakeHub.requests if method == "GET"}
    assert fetched == {"config.json", "model.safetensors"}  # never a pickle
    # a pinned revision resolves too
    assert _load_in_subprocess(endpoint, "someone/classnseg-tiny@v1", tmp_path / "hf2")["ok"]


@pytest.mark.slow
def test_an_ensemble_downloads_its_members_through_a_local_hub(fake_hub, tmp_path):
    from mtl.ensemble import Ensemble

    endpoint, published = fake_hub
    torch.manual_seed(4)
    other = ClassNSeg(name="hub-test-2")
    ensemble = Ensemble([published, other], ["a", "b"], calibration_scale=0.5, threshold=0.7, name="hub-ensemble")
    ensemble.save_pretrained(tmp_path / "ens")
    _FakeHub.repos["someone/ensemble-tiny"] = {"main": tmp_path / "ens"}
    result = _load_in_subprocess(endpoint, "someone/ensemble-tiny", tmp_path / "hf")
    assert result["ok"], result
    assert result["config"]["members"] == ["a", "b"] and result["config"]["threshold"] == 0.7
    expected = float(sum(p.double().sum() for p in ensemble.state_dict().values()))
    assert result["sum"] == pytest.approx(expected, rel=1e-12)
    fetched = {path.split("/resolve/main/", 1)[-1] for method, path in _FakeHub.requests if method == "GET"}
    assert fetched == {"config.json", "a/config.json", "a/model.safetensors", "b/config.json", "b/model.safetensors"}
    # a member missing on the Hub is a clear error, not a half-loaded ensemble
    (tmp_path / "ens" / "b" / "model.safetensors").unlink()
    broken = _load_in_subprocess(endpoint, "someone/ensemble-tiny", tmp_path / "hf2")
    assert not broken["ok"] and "someone/ensemble-tiny" in broken["error"]


@pytest.mark.slow
def test_hub_errors_name_the_id_and_the_local_alternative(fake_hub, tmp_path):
    endpoint, _ = fake_hub
    missing = _load_in_subprocess(endpoint, "someone/does-not-exist", tmp_path / "hf")
    assert not missing["ok"] and "someone/does-not-exist" in missing["error"] and "directory" in missing["error"]
    bad_rev = _load_in_subprocess(endpoint, "someone/classnseg-tiny@nope", tmp_path / "hf")
    assert not bad_rev["ok"] and "nope" in bad_rev["error"]
    unreachable = _load_in_subprocess("http://127.0.0.1:9", "someone/classnseg-tiny", tmp_path / "hf3")
    assert not unreachable["ok"] and "someone/classnseg-tiny" in unreachable["error"]
    assert "local directory" in unreachable["error"]


def test_local_directory_errors_are_clear(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="lacks config.json, model.safetensors"):
        load_model(tmp_path / "empty")
    with pytest.raises(ModelLoadError, match="neither an existing checkpoint directory"):
        load_model("not a valid id at all")


def test_parse_hub_id():
    assert parse_hub_id("a/b") == ("a/b", None)
    assert parse_hub_id("owner/name@v1.2") == ("owner/name", "v1.2")
