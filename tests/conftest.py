from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

# fixtures shared by the WebRTC test modules (loopback_only, server)
pytest_plugins = ["tests.streamkit"]

# the real media: $RTDUB_MEDIA, else the workplace's ../shared/media beside the clone (tests
# that need it skip when it is absent)
SHARED = Path(os.environ.get("RTDUB_MEDIA") or Path(__file__).resolve().parents[2] / "shared" / "media")


@pytest.fixture(scope="session")
def shared_media() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent (set RTDUB_MEDIA to the real media folder)")
    return SHARED


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def talking_clip(media_dir: Path) -> Path:
    """2 s of the astronaut portrait with head motion and speech-like audio, 25 fps."""
    from .factories import speechlike, talking_clip

    return talking_clip(media_dir / "talking.mp4", 2.0, 25, speechlike(2.0))


@pytest.fixture(scope="session")
def dubbed_wav(media_dir: Path) -> Path:
    from .factories import speechlike, write_wav

    return write_wav(media_dir / "dubbed.wav", speechlike(3.0, seed=3))
