"""I/O adapters: where samples come from and where forecasts go.

Sources (`sources.py`): a shipped or given recording (`ReplaySource`), a
synthetic signal (`SyntheticSource`), the board on a serial line
(`SerialSource`), an MQTT topic (`mqtt.MqttSource`).  They share one
interface (see `sources`), so the loop never knows which one it reads.
Forecasts and status go out over MQTT through `mqtt.MqttLink` (paho-mqtt,
the optional extra ``rtrl-edge[mqtt]``, imported only when used).
"""
from .sources import ReplaySource, SerialSource, SyntheticSource

__all__ = ["ReplaySource", "SerialSource", "SyntheticSource"]
