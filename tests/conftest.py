"""Shared fixtures for the rtrl_edge test suite.

pytest runs with ``--import-mode=importlib`` (pyproject.toml), which does not
put this folder on sys.path; the float64 reference in ``reference.py`` is
imported by the test modules as a plain module, so the folder is added here.
"""

import os
import sys

import numpy as np
import pytest
from hypothesis import settings

# Under CI the property tests draw the same examples every run (their search
# goes on at random in developers' runs): a rare float32 case one run finds
# is then reproduced by the next instead of failing one submission in many.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


@pytest.fixture
def rng():
    """A freshly seeded generator, so every test is reproducible on its own."""
    return np.random.default_rng(20240611)


@pytest.fixture(scope="session")
def firmware_build(tmp_path_factory):
    """The firmware and its simulator, built once per test run."""
    import support
    return support.build_firmware(tmp_path_factory.mktemp("firmware-build"))


# -- MQTT: a real Mosquitto (tests/mqtt_broker.py) ------------------------------

@pytest.fixture
def mqtt():
    """paho's client module, with a mosquitto to run; without either a skip
    saying what is missing -- except under CI, which installs both."""
    from mqtt_broker import MOSQUITTO
    missing = ("mosquitto is not installed (apt-get install mosquitto)" if MOSQUITTO is None
               else None)
    try:
        import paho.mqtt.client as client
    except ImportError:
        client, missing = None, "paho-mqtt is not installed (pip install 'rtrl-edge[mqtt]')"
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"{missing}: .ci/run installs it")
        pytest.skip(missing)
    return client


@pytest.fixture
def broker(mqtt, tmp_path):
    """A broker of this test's own, started; stopped at the end."""
    from mqtt_broker import Broker
    b = Broker(tmp_path / "broker")
    b.start()
    yield b
    b.stop()


@pytest.fixture
def peers(mqtt):
    """make(port, topic="#") -> an independent client watching `topic`."""
    from mqtt_broker import Peer
    made = []

    def make(port, topic="#", **kw):
        made.append(Peer(mqtt, port, topic, **kw))
        return made[-1]
    yield make
    for p in made:
        p.close()
