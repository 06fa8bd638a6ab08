"""``rtdub serve --models-dir``: the page and ``/offer`` pick a bundle by name (an enrolled
person's), never by a path (rtdub/stream/models.py)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import aiohttp
import pytest
from aiortc import RTCSessionDescription

from rtdub.exceptions import InputError
from rtdub.model import DEFAULT_MODEL_DIR
from rtdub.stream.models import ModelCatalog
from rtdub.stream.server import DubServer, ServeConfig
from rtdub.stream.session import PipelineFactory, StreamConfig

from .streamkit import make_pipeline, portrait_frames
from .test_reference_bank import _bundle_with_bank
from .test_webrtc import _client


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """alice (a plain bundle), bob (enrolled: a reference bank), and what must never show:
    an enrolment's work folder, a broken bundle, a file, a link to a bundle elsewhere."""
    root = tmp_path_factory.mktemp("models")
    shutil.copytree(DEFAULT_MODEL_DIR, root / "alice")
    _bundle_with_bank(root / "bob")
    shutil.copytree(DEFAULT_MODEL_DIR, root / ".bob.enroll")
    (root / "broken").mkdir()
    (root / "broken" / "manifest.json").write_text("{not json")
    (root / "notes.txt").write_text("x")
    elsewhere = tmp_path_factory.mktemp("elsewhere") / "carol"
    shutil.copytree(DEFAULT_MODEL_DIR, elsewhere)
    os.symlink(elsewhere, root / "carol")
    return root.resolve()


def test_the_catalog_lists_bundles_by_name_only(models: Path) -> None:
    cat = ModelCatalog(models)
    assert [(c.name, c.enrolled) for c in cat.choices()] == [("alice", False), ("bob", True)]
    assert cat.resolve("bob") == models / "bob"
    for bad in ("../bob", str(models / "bob"), "bob/", ".bob.enroll", "broken", "carol", "nobody", "", 3, None):
        with pytest.raises(InputError):
            cat.resolve(bad)
    with pytest.raises(InputError, match="not a folder"):
        ModelCatalog(models / "notes.txt")


async def test_models_listing_and_a_named_model_in_an_offer(models: Path, loopback_only: None) -> None:
    built: list[Path] = []

    def model_factory(path: Path) -> PipelineFactory:
        built.append(path)
        return lambda: make_pipeline(warm=False)

    config = ServeConfig(port=0, stream=StreamConfig(budget_ms=150), models_dir=models)
    srv = DubServer(config, make_pipeline, model_factory=model_factory)
    await srv.start()
    base = f"http://127.0.0.1:{srv.port}"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/models") as r:
                assert r.status == 200
                assert [m["name"] for m in (await r.json())["models"]] == ["alice", "bob"]
            for bad in ("../bob", str(models / "alice"), ".bob.enroll", "carol", {"path": "/"}):
                body = {"sdp": "v=0", "type": "offer", "model": bad}
                async with http.post(f"{base}/offer", json=body) as r:
                    assert r.status == 400, bad
                    assert "models folder" in await r.text()
            assert built == [] and not srv.peers  # refused before any bundle or session was made
            pc, _, rx = _client(list(portrait_frames(10)), None)
            await pc.setLocalDescription(await pc.createOffer())
            body = {"sdp": pc.localDescription.sdp, "type": "offer", "model": "bob"}
            async with http.post(f"{base}/offer", json=body) as r:
                assert r.status == 200, await r.text()
                answer = await r.json()
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
            await pc.close()
            await rx.aclose()
        assert built == [models / "bob"]
    finally:
        await srv.aclose()


async def test_a_server_without_models_refuses_a_named_model(loopback_only: None) -> None:
    srv = DubServer(ServeConfig(port=0), make_pipeline)
    await srv.start()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{srv.port}/models") as r:
                assert await r.json() == {"models": []}
            body = {"sdp": "v=0", "type": "offer", "model": "bob"}
            async with http.post(f"http://127.0.0.1:{srv.port}/offer", json=body) as r:
                assert r.status == 400 and "--models-dir" in await r.text()
    finally:
        await srv.aclose()


async def test_the_default_factory_dubs_with_the_named_bundle(models: Path, loopback_only: None) -> None:
    """No fake: the session's pipeline is built from the bundle the client named."""
    config = ServeConfig(port=0, stream=StreamConfig(budget_ms=300), models_dir=models)
    srv = DubServer(config)
    await srv.start()
    try:
        pc, _, rx = _client(list(portrait_frames(30)), None)
        await pc.setLocalDescription(await pc.createOffer())
        async with aiohttp.ClientSession() as http:
            body = {"sdp": pc.localDescription.sdp, "type": "offer", "model": "bob"}
            async with http.post(f"http://127.0.0.1:{srv.port}/offer", json=body) as r:
                assert r.status == 200, await r.text()
                answer = await r.json()
        session = srv.peers[answer["session"]].session
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
        await rx.wait_for(10, timeout=20)
        assert session.pipeline is not None
        assert session.pipeline.bundle.root == models / "bob"
        assert [r.name for r in session.pipeline.bundle.references] == ["closed", "mid", "open"]
        await pc.close()
        await rx.aclose()
    finally:
        await srv.aclose()


def test_serve_refuses_a_models_dir_that_is_not_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rtdub.cli.main import main

    assert main(["serve", "--port", "0", "--models-dir", str(tmp_path / "none")]) == 2
    assert "--models-dir" in capsys.readouterr().err


def test_the_page_offers_the_listed_models() -> None:
    """The page fills its model choice from /models and sends the chosen name in the offer
    (driven in a browser by tests/test_page.py's machinery elsewhere; here the page's text)."""
    from rtdub.stream.webpage import PAGE

    assert '<select id="model">' in PAGE and 'fetch("/models"' in PAGE
    assert 'if ($("model").value) body.model = $("model").value;' in PAGE
