"""MQTT in and out: forecasts and a retained status go out, samples come in,
over one paho-mqtt client that reconnects by itself.

Topics under the URL's PREFIX (``mqtt://HOST[:PORT]/PREFIX``; STREAM is
optional, for several streams on one broker):

    PREFIX[/STREAM]/forecast  out  one JSON object per forecast, QoS 0, not retained
    PREFIX/status             out  retained JSON: {"state": "online", ...} while up
                                   (QoS 0, republished on every reconnection);
                                   {"state": "offline", "reason": "stopped"} after
                                   `MqttLink.close` (QoS 1); the broker's last will
                                   {"state": "offline", "reason": "connection lost"}
                                   (QoS 1) when the process or its network dies
    PREFIX[/STREAM]/sample    in   JSON samples (`parse_sample`), QoS 0

What happens on each failure:

* a bad URL, CA file or credentials file: ValueError or OSError from
  `parse_url`, `read_credentials` or `MqttLink`, one line naming the problem;
* `MqttLink.start` cannot connect: ConnectionError, one line.  Nothing
  listening, unreachable, timed out: retried with back-off until
  ``connect_timeout``.  TLS certificate not trusted, TLS handshake failed,
  bad credentials, not authorised: at once, without retrying;
* after `start` nothing raises for what the network or the broker does: a
  lost broker is reconnected in the background (back-off doubling from
  ``min_backoff`` to ``max_backoff`` s), the subscriptions and the last status
  are renewed, forecasts published meanwhile are dropped and counted
  (``dropped_offline``), and the first samples after the break come with
  ``gap`` set, since samples sent meanwhile are lost (QoS 0: a late sample is
  worth less to an online learner than the next one);
* a malformed sample is dropped and counted (``malformed``), its reason kept
  in ``last_error``; the samples around it are unaffected.

Online statuses go out at QoS 0 on purpose: paho keeps QoS 1 messages that
a lost connection left unacknowledged and resends them after reconnecting,
after the status republished then, so a stale status would stay retained.
At QoS 0 the latest status is the one retained.

Memory is bounded: ``queue`` samples per source wait to be read (when full
the oldest is dropped: ``overflows``); ``queue`` messages may be handed to
the network thread and not yet written to the socket, say while a broker
stalls (more forecasts are dropped: ``dropped_backlog``).

Threads: paho runs its network loop and our callbacks in its own thread; the
loop calls `MqttSource.read` and the ``publish_*`` methods from its own.  One
Condition guards this module's state.  No paho call that may wait for paho's
own locks is made while holding it: paho calls back while holding them.

paho-mqtt >= 2 is an optional extra (``pip install 'rtrl-edge[mqtt]'``),
imported when an `MqttLink` is made; this module imports without it.
The client speaks MQTT 3.1.1 with a clean session.
"""
from __future__ import annotations

import functools
import logging
import os
import socket
import ssl
import threading
import time
from collections import deque
from typing import Dict, List, Optional, Union

import numpy as np

# the wire formats, re-exported: what a user of the link also needs
from .mqtt_format import (EXPECTED, MAX_SAMPLE_BYTES, MqttUrl, _dumps,
                          _topic_problem, parse_sample, parse_url, read_credentials)

__all__ = ["EXPECTED", "MAX_SAMPLE_BYTES", "MqttLink", "MqttSource", "MqttUrl", "parse_sample",
           "parse_url", "read_credentials"]

log = logging.getLogger(__name__)

INSTALL = "pip install 'rtrl-edge[mqtt]'"


def _import_paho():
    try:
        import paho.mqtt.client as mqtt
    except ImportError as exc:
        raise ImportError(f"MQTT needs paho-mqtt >= 2, which is not installed ({exc}): "
                          f"{INSTALL}") from exc
    if not hasattr(mqtt, "CallbackAPIVersion"):
        raise ImportError(f"MQTT needs paho-mqtt >= 2, this is an older one: {INSTALL}")
    return mqtt


def _guarded(callback):
    """A paho callback that logs its own exceptions: none reaches paho's thread."""
    @functools.wraps(callback)
    def call(*args):
        try:
            callback(*args)
        except Exception:   # pragma: no cover - a bug; the link goes on
            log.exception("MQTT callback %s failed", callback.__name__)
    return call


def _written(info) -> bool:
    """Has paho finished with this QoS 0 message (written, or lost with its socket)?"""
    try:
        return info.is_published()
    except (RuntimeError, ValueError):
        return True


# -- the link ------------------------------------------------------------------

class MqttLink:
    """One connection to a broker: forecasts and status out, samples in.

    Parameters
    ----------
    url : str or MqttUrl
        ``mqtt://HOST[:PORT]/PREFIX`` or ``mqtts://HOST[:PORT]/PREFIX`` (`parse_url`).
    ca_file : path, optional
        PEM CA certificate(s) that signed the broker's certificate, for
        ``mqtts://`` only (ValueError with ``mqtt://``, which would not use it).
        None with ``mqtts://``: the system's CAs, for a broker with a public
        certificate.  The broker's name (or IP) must match its certificate.
        Unreadable: OSError; no certificate in it: ValueError.
    credentials_file : path, optional
        ``USERNAME:PASSWORD`` (`read_credentials`), for either scheme; over
        ``mqtt://`` they cross the network in the clear.
    client_id : str, optional
        Default ``rtrl-edge-<hostname>-<pid>``; it is in every status.
    min_backoff, max_backoff : float
        Seconds between reconnection attempts, doubling from one to the other.
    queue : int
        Bound on each source's unread samples and on messages not yet
        written to the socket (see the module docstring).
    connect_timeout : float
        `start` gives up after this long; also each later connection attempt's
        and `close`'s wait.
    keepalive : int
        Seconds; a broker silent for 1.5x this long is taken to be lost.

    ``stats()`` counts: connects (accepted CONNACKs), disconnects (losses of
    an accepted connection), published (forecasts handed to the network),
    dropped_offline (forecasts dropped while disconnected), dropped_backlog
    (forecasts dropped while ``queue`` messages were unwritten), statuses
    (status messages sent), received (messages on sample topics), malformed (of
    those, rejected), overflows (samples dropped from a full source queue).
    ``last_error`` says in words what last went wrong (a lost connection, a
    refused subscription, a malformed sample).
    """

    def __init__(self, url: Union[str, MqttUrl], *, ca_file=None, credentials_file=None,
                 client_id: Optional[str] = None, min_backoff: float = 1.0,
                 max_backoff: float = 30.0, queue: int = 1000,
                 connect_timeout: float = 10.0, keepalive: int = 30):
        self.url = url if isinstance(url, MqttUrl) else parse_url(url)
        if not 0 < min_backoff <= max_backoff:
            raise ValueError(f"need 0 < min_backoff <= max_backoff, got {min_backoff} and "
                             f"{max_backoff}")
        if int(queue) < 1 or connect_timeout <= 0 or int(keepalive) < 1:
            raise ValueError(f"queue and keepalive must be >= 1 and connect_timeout > 0, got "
                             f"{queue}, {keepalive} and {connect_timeout}")
        if ca_file is not None and not self.url.tls:
            raise ValueError(f"a CA file is for mqtts:// only; this URL is plain mqtt:// (use "
                             f"mqtts://{self.where}/{self.url.prefix} to encrypt)")
        credentials = read_credentials(credentials_file) if credentials_file is not None else None
        mqtt = _import_paho()
        self.client_id = client_id or f"rtrl-edge-{socket.gethostname()}-{os.getpid()}"
        self.min_backoff, self.max_backoff = float(min_backoff), float(max_backoff)
        self.connect_timeout, self.keepalive = float(connect_timeout), int(keepalive)
        self._queue = int(queue)
        self.status_topic = f"{self.url.prefix}/status"
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             clean_session=True, protocol=mqtt.MQTTv311)
        if self.url.tls:
            try:
                client.tls_set(ca_certs=None if ca_file is None else os.fspath(ca_file),
                               cert_reqs=ssl.CERT_REQUIRED)
            except ssl.SSLError as exc:
                raise ValueError(f"the CA file {os.fspath(ca_file)!r} holds no usable "
                                 f"certificate: {exc.reason or exc}") from None
            except OSError as exc:
                err = type(exc)(f"cannot read the CA file {os.fspath(ca_file)!r}: "
                                f"{exc.strerror or exc}")
                err.errno = exc.errno
                raise err from None
        if credentials is not None:
            client.username_pw_set(*credentials)
        client.will_set(self.status_topic, _dumps({"state": "offline", "reason": "connection lost",
                                                   "client_id": self.client_id}),
                        qos=1, retain=True)
        client.reconnect_delay_set(self.min_backoff, self.max_backoff)
        client.connect_timeout = self.connect_timeout    # per TCP + TLS handshake
        client.max_queued_messages_set(self._queue)      # QoS 1: only close()'s status
        client.suppress_exceptions = True     # backstop: our callbacks catch their own
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        self._client = client
        self._cond = threading.Condition()    # an RLock underneath
        self._connected = self._started = self._closed = False
        self._refused: Optional[str] = None   # why the last CONNACK refused us
        self._dropped_early = False           # the broker hung up before its CONNACK
        self._sources: Dict[str, MqttSource] = {}
        self._sub_mids: Dict[int, str] = {}   # SUBSCRIBE mid -> topic, until its SUBACK
        self._early_acks: Dict[int, bool] = {}  # SUBACKs that beat subscribe()'s return
        self._unwritten: deque = deque()      # MQTTMessageInfo of forecasts not yet written
        self._status: Optional[str] = None    # the last status, republished on reconnect
        self._stats = dict(connects=0, disconnects=0, published=0, dropped_offline=0,
                           dropped_backlog=0, statuses=0, received=0, malformed=0, overflows=0)
        self.last_error: Optional[str] = None

    @property
    def where(self) -> str:
        """HOST:PORT of the broker, as the error messages name it."""
        host = self.url.host
        return f"[{host}]:{self.url.port}" if ":" in host else f"{host}:{self.url.port}"

    @property
    def connected(self) -> bool:
        with self._cond:
            return self._connected

    def stats(self) -> Dict[str, int]:
        with self._cond:
            return dict(self._stats)

    # -- connecting ------------------------------------------------------

    def start(self) -> None:
        """Connect and start paho's network thread.  Waits up to
        ``connect_timeout`` for the broker to accept (an attempt under way
        then may take up to as long again); raises ConnectionError
        (one line) if it does not: nothing listening, unreachable or timed out
        (retried with back-off until then); TLS certificate not trusted or
        handshake failed; credentials refused (at once).  After that,
        losing the broker never raises.  A second call does nothing."""
        with self._cond:
            if self._closed:
                raise RuntimeError("this MqttLink is closed; make a new one")
            if self._started:
                return
        client, where = self._client, self.where
        deadline = time.monotonic() + self.connect_timeout
        delay = self.min_backoff
        while True:
            try:
                client.connect(self.url.host, self.url.port, self.keepalive)
            except ssl.SSLCertVerificationError as exc:
                raise ConnectionError(f"TLS certificate of {where} not trusted (certificate "
                                      f"verify failed: {exc.verify_message or exc}); check the "
                                      f"CA file and the host name") from None
            except ssl.SSLError as exc:
                raise ConnectionError(f"TLS handshake with {where} failed: {exc.reason or exc} "
                                      f"(is it a TLS port?)") from None
            except OSError as exc:
                why = self._describe(exc)
            else:
                why = self._await_connack(deadline)
                if why is None:
                    return
            if time.monotonic() + delay >= deadline:
                raise ConnectionError(f"cannot connect to MQTT broker {where} within "
                                      f"{self.connect_timeout:g} s: {why}")
            time.sleep(delay)
            delay = min(delay * 2, self.max_backoff)

    def _describe(self, exc: OSError) -> str:
        if isinstance(exc, ConnectionRefusedError):
            return "connection refused (is the broker running and listening there?)"
        if isinstance(exc, (TimeoutError, socket.timeout)):   # one class from 3.10 on
            return "timed out"
        if isinstance(exc, socket.gaierror):
            return f"cannot resolve host {self.url.host!r} ({exc.strerror})"
        return exc.strerror or str(exc)

    def _await_connack(self, deadline: float) -> Optional[str]:
        """Run the network thread until the CONNACK; None if accepted, else
        why not (a refusal or a hang-up raises here, a silence is returned)."""
        with self._cond:
            self._refused, self._dropped_early = None, False
        self._client.loop_start()
        with self._cond:
            self._cond.wait_for(lambda: self._connected or self._refused or self._dropped_early,
                                max(deadline - time.monotonic(), 0))
            if self._connected:
                self._started = True
                return None
            refused, dropped = self._refused, self._dropped_early
        self._client.disconnect()
        self._client.loop_stop()
        if refused:
            raise ConnectionError(f"MQTT broker {self.where} {refused}")
        if dropped:
            raise ConnectionError(f"MQTT broker {self.where} closed the connection before "
                                  f"accepting it (a TLS port? then use mqtts://)")
        return "no CONNACK (is it an MQTT broker?)"

    # -- paho's callbacks (network thread; they never raise) ---------------

    @_guarded
    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            code = reason_code.value
            why = ("bad user name or password (check the credentials file)" if code == 134 else
                   "not authorised (bad user name or password, or no permission to connect)"
                   if code == 135 else str(reason_code))
            with self._cond:
                self._refused = self.last_error = f"refused the connection: {why}"
                self._cond.notify_all()
            return
        with self._cond:
            self._connected, self._refused = True, None
            self._stats["connects"] += 1
            self._sub_mids.clear()
            self._early_acks.clear()
            topics = list(self._sources)
            status = self._status or _dumps({"state": "online", "client_id": self.client_id})
            self._cond.notify_all()
        for topic in topics:
            self._subscribe(topic)
        self._send_status(status)

    @_guarded
    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        with self._cond:
            if self._connected:
                if not self._closed:
                    self._stats["disconnects"] += 1
                    self.last_error = f"lost the connection to {self.where} ({reason_code})"
                for src in self._sources.values():
                    src._break = True
                    src.subscribed = False
            elif not self._refused:
                self._dropped_early = True
            self._connected = False
            self._cond.notify_all()

    @_guarded
    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        with self._cond:
            topic = self._sub_mids.pop(mid, None)
            if topic is None:
                self._early_acks[mid] = not reason_codes[0].is_failure
                return
            self._subscribed(topic, not reason_codes[0].is_failure, reason_codes[0])

    def _subscribed(self, topic: str, ok: bool, reason=None) -> None:
        src = self._sources.get(topic)
        if src is None:
            return
        if ok:
            src.subscribed = True
        else:
            src.last_error = self.last_error = (f"the broker refused the subscription to "
                                                f"{topic!r} ({reason})")
        self._cond.notify_all()

    @_guarded
    def _on_message(self, client, userdata, msg):
        src = self._sources.get(msg.topic)
        if src is not None:
            src._offer(msg.payload)

    # -- out -------------------------------------------------------------

    def _subscribe(self, topic: str) -> None:
        rc, mid = self._client.subscribe(topic, qos=0)
        if rc == 0:
            with self._cond:
                if mid in self._early_acks:
                    self._subscribed(topic, self._early_acks.pop(mid))
                else:
                    self._sub_mids[mid] = topic

    def _send(self, topic: str, data: str, retain: bool) -> Optional[str]:
        """Hand one QoS 0 message to paho: None if it was, else the counter
        it is dropped under."""
        with self._cond:
            if not self._connected or self._closed:
                return "dropped_offline"
            pending = self._unwritten   # info locks are leaves: safe under ours
            while pending and _written(pending[0]):
                pending.popleft()
            if len(pending) >= self._queue:
                return "dropped_backlog"
        info = self._client.publish(topic, data, qos=0, retain=retain)
        with self._cond:
            if info.rc != 0:
                return "dropped_offline"
            self._unwritten.append(info)
        return None

    def _send_status(self, data: str) -> None:
        if self._send(self.status_topic, data, retain=True) is None:
            with self._cond:
                self._stats["statuses"] += 1

    def _topic(self, stream: Optional[str], leaf: str) -> str:
        if stream is None:
            return f"{self.url.prefix}/{leaf}"
        why = _topic_problem(stream) if isinstance(stream, str) else "is not a str"
        if why:
            raise ValueError(f"bad MQTT stream name {stream!r}: it {why}")
        return f"{self.url.prefix}/{stream}/{leaf}"

    def publish_forecast(self, payload: dict, stream: Optional[str] = None) -> bool:
        """Publish `payload` as JSON on PREFIX[/STREAM]/forecast, QoS 0, not
        retained (numpy arrays and scalars become lists and numbers, NaN and
        infinities null).  True if handed to the network; False (counted) if
        dropped: disconnected or closed (``dropped_offline``), or ``queue``
        forecasts still unwritten (``dropped_backlog``).  Raises only for the
        caller's mistakes: TypeError (not JSON-able), ValueError (stream)."""
        dropped = self._send(self._topic(stream, "forecast"), _dumps(payload), retain=False)
        with self._cond:
            self._stats[dropped or "published"] += 1
        return dropped is None

    def publish_status(self, payload: dict) -> None:
        """Publish `payload` as retained JSON on PREFIX/status, QoS 0 (see
        the module docstring), with "state": "online" and "client_id" added
        unless present.  It becomes the last status, republished as it is
        after every reconnection; while disconnected, or while ``queue``
        messages are unwritten, it is only kept for then.  Raises TypeError
        if it is not JSON-able (nothing changed then)."""
        if not isinstance(payload, dict):
            raise TypeError(f"a status is a dict, got {type(payload).__name__}")
        data = _dumps({"state": "online", "client_id": self.client_id, **payload})
        with self._cond:
            self._status = data
        self._send_status(data)

    # -- in --------------------------------------------------------------

    def source(self, stream: Optional[str] = None, channels: Optional[int] = None) -> "MqttSource":
        """A source of the samples on PREFIX[/STREAM]/sample, subscribed at
        QoS 0 now (if connected) and after every reconnection.  Make it
        before `start` to miss nothing.  `channels` fixes the width; None:
        the first well-formed sample fixes it.  ValueError for a second
        source on the same topic or a bad stream name."""
        if channels is not None and (isinstance(channels, bool) or not isinstance(channels, int)
                                     or channels < 1):
            raise ValueError(f"channels must be an int >= 1 or None, got {channels!r}")
        topic = self._topic(stream, "sample")
        with self._cond:
            if self._closed:
                raise RuntimeError("this MqttLink is closed; make a new one")
            if topic in self._sources:
                raise ValueError(f"there is a source on {topic!r} already")
            src = self._sources[topic] = MqttSource(self, topic, channels, self._queue)
            connected = self._connected
        if connected:
            self._subscribe(topic)
        return src

    def wait(self, timeout: float) -> bool:
        """Block until one of this link's sources holds a sample to read, at
        most `timeout` s; True if one does (at once if one already does)."""
        with self._cond:
            return self._cond.wait_for(
                lambda: self._closed or any(s._q for s in self._sources.values()), timeout
            ) and any(s._q for s in self._sources.values())

    # -- closing ---------------------------------------------------------

    def close(self, reason: str = "stopped") -> None:
        """Publish the retained status {"state": "offline", "reason": reason},
        wait up to ``connect_timeout`` for the broker to take it, disconnect
        cleanly (so the last will is not sent) and stop the network thread.
        If disconnected at the time, the broker has sent, or will send, the
        last will instead.  Idempotent; sources keep their unread samples."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            started, connected = self._started, self._connected
            self._cond.notify_all()
        if not started:
            return
        if connected:
            info = self._client.publish(self.status_topic, _dumps(
                {"state": "offline", "reason": str(reason), "client_id": self.client_id}),
                qos=1, retain=True)
            try:
                info.wait_for_publish(timeout=self.connect_timeout)
            except (RuntimeError, ValueError):
                pass
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> "MqttLink":
        self.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        ok = exc_type is None or issubclass(exc_type, KeyboardInterrupt)
        self.close("stopped" if ok else f"error: {exc_type.__name__}")


class MqttSource:
    """The loop's source interface over one sample topic of an `MqttLink`.

    ``channels`` (None until the first well-formed sample unless given),
    ``rate_hz`` None (MQTT has no fixed rate), ``exhausted`` (True once the
    link is closed and every sample read), ``gap`` (True on the `read`
    whose first sample follows a break: a reconnection, a "seq" that skips,
    or samples dropped from the full queue; a read stops before a break so
    that a gap always applies to a whole batch), ``last_t`` (the "t" of the
    last sample `read` returned, None if it had none), ``subscribed``
    (the broker has acknowledged the subscription), ``last_error`` (why the
    last malformed sample was rejected), ``max_backlog`` (the queue's size:
    a burst of samples over MQTT is data to learn from, not lateness, so
    the loop learns all of one read; the bounded queue caps it).
    """

    rate_hz = None

    def __init__(self, link: MqttLink, topic: str, channels: Optional[int], queue: int):
        self.link, self.topic, self.channels = link, topic, channels
        self.gap = False
        self.last_t: Optional[float] = None
        self.subscribed = False
        self.last_error: Optional[str] = None
        self._q: deque = deque()        # (values, t, break before it), at most `queue`
        self._maxlen = self.max_backlog = queue
        self._break = False             # the next sample follows a break
        self._seq: Optional[int] = None
        self._stats = dict(received=0, malformed=0, overflows=0, seq_gaps=0, read=0)

    @property
    def exhausted(self) -> bool:
        with self.link._cond:
            return self.link._closed and not self._q

    def _offer(self, payload: bytes) -> None:
        """One message from the network thread: queue it or count why not."""
        link = self.link
        try:
            values, t, seq = parse_sample(payload, self.channels)
        except ValueError as exc:
            with link._cond:
                for stats in (self._stats, link._stats):
                    stats["received"] += 1
                    stats["malformed"] += 1
                self.last_error = link.last_error = f"malformed sample on {self.topic!r}: {exc}"
            return
        with link._cond:
            for stats in (self._stats, link._stats):
                stats["received"] += 1
            if self.channels is None:
                self.channels = values.size
            brk = self._break
            if seq is not None:
                if self._seq is not None and seq != self._seq + 1:
                    brk = True
                    self._stats["seq_gaps"] += 1
                self._seq = seq
            if len(self._q) >= self._maxlen:
                self._q.popleft()
                self._stats["overflows"] += 1
                link._stats["overflows"] += 1
                if self._q:
                    v, t0, _ = self._q[0]
                    self._q[0] = (v, t0, True)
                else:
                    brk = True
            self._q.append((values, t, brk))
            self._break = False
            link._cond.notify_all()

    def read(self) -> List[np.ndarray]:
        """The samples queued since the last call, oldest first, each a 1-D
        float64 array; never blocks.  Stops before a break (the rest comes
        on the next call, with ``gap`` set)."""
        out: List[np.ndarray] = []
        with self.link._cond:
            q = self._q
            self.gap = bool(q) and q[0][2]
            while q and not (out and q[0][2]):
                values, t, _ = q.popleft()
                out.append(values)
                self.last_t = t
            self._stats["read"] += len(out)
        return out

    def wait(self, timeout: float) -> bool:
        """Block until a sample is queued, at most `timeout` s; True if one is."""
        with self.link._cond:
            return self.link._cond.wait_for(lambda: self._q or self.link._closed,
                                            timeout) and bool(self._q)

    def wait_subscribed(self, timeout: float) -> bool:
        """Block until the broker has acknowledged this source's subscription
        (or refused it: then `last_error` says so), at most `timeout` s;
        True if it is subscribed."""
        with self.link._cond:
            self.link._cond.wait_for(lambda: self.subscribed or self.last_error is not None
                                     or self.link._closed, timeout)
            return self.subscribed

    def wait_for_first(self, timeout: Optional[float] = None) -> int:
        """Block until ``channels`` is known (at once if it was given) and
        return it; None waits for ever.  TimeoutError saying what did arrive
        and the link's state; ConnectionError if the link is closed first."""
        with self.link._cond:
            self.link._cond.wait_for(lambda: self.channels is not None or self.link._closed,
                                     timeout)
            if self.channels is not None:
                return self.channels
            if self.link._closed:
                raise ConnectionError(f"the MQTT link was closed before a sample arrived on "
                                      f"{self.topic!r}")
            seen = (f"{self._stats['malformed']} malformed, the last: {self.last_error}"
                    if self._stats["malformed"] else "nothing arrived")
            state = ("connected" if self.link._connected else
                     f"not connected: {self.link.last_error or 'connecting'}")
            raise TimeoutError(f"no well-formed sample on {self.topic!r} within {timeout:g} s "
                               f"({seen}; {state})")

    def stats(self) -> Dict[str, int]:
        """The link's counters with this source's own received, malformed and
        overflows (the link's totals over all its sources are in
        ``link.stats()``), seq_gaps, read (samples returned) and queued."""
        with self.link._cond:
            return {**self.link._stats, **self._stats, "queued": len(self._q)}
