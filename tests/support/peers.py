"""Real backends on random loopback ports: ngircd, prosody, RabbitMQ (STOMP).

Each is started the way ../shared/reference/machine-notes.md shows, with all
state in a scratch directory, and stopped when its context exits.  When the
program is missing, the caller gets ``PeerMissing`` (conftest turns that into
a failure in CI, where .ci/run installs everything).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.procs import free_port, scratch_dir, stop_process, wait_port


class PeerMissing(RuntimeError):
    pass


def _need(program: str) -> str:
    path = shutil.which(program) or (program if os.path.exists(program) else None)
    if path is None:
        raise PeerMissing(f"{program} is not installed (make test installs it with apt-get)")
    return path


@dataclass
class Peer:
    name: str
    port: int
    dir: Path
    procs: list[subprocess.Popen] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    def stop(self) -> None:
        for proc in self.procs:
            stop_process(proc)


def start_ngircd() -> Peer:
    binary = _need("ngircd")
    port = free_port()
    work = scratch_dir("ngircd-")
    conf = work / "ngircd.conf"
    conf.write_text(textwrap.dedent(f"""\
        [Global]
        Name = irc.test.local
        Info = Orbited test IRC server
        Listen = 127.0.0.1
        Ports = {port}
        ServerUID = 65534
        ServerGID = 65534
        PidFile = {work}/ngircd.pid
        [Limits]
        MaxConnectionsIP = 0
        MaxJoins = 0
        [Options]
        PAM = no
        Ident = no
        DNS = no
        """))
    log = open(work / "log", "wb")
    proc = subprocess.Popen([binary, "-n", "-f", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    peer = Peer("ngircd", port, work, [proc])
    try:
        wait_port(port, proc=proc)
    except Exception:
        peer.stop()
        raise
    return peer


def start_prosody(users: dict[str, str]) -> Peer:
    binary = _need("prosody")
    prosodyctl = _need("prosodyctl")
    port = free_port()
    work = scratch_dir("prosody-")
    data = work / "data"
    data.mkdir()
    conf = work / "prosody.cfg.lua"
    conf.write_text(textwrap.dedent(f"""\
        pidfile = "{data}/prosody.pid"
        data_path = "{data}"
        interfaces = {{ "127.0.0.1" }}
        c2s_ports = {{ {port} }}
        c2s_direct_tls_ports = {{}}
        s2s_ports = {{}}
        http_ports = {{}}
        https_ports = {{}}
        component_ports = {{}}
        modules_enabled = {{ "roster", "saslauth", "disco", "ping", "posix", "presence" }}
        modules_disabled = {{ "s2s", "tls" }}
        c2s_require_encryption = false
        allow_unencrypted_plain_auth = true
        authentication = "internal_hashed"
        log = {{ {{ levels = {{ min = "info" }}, to = "file", filename = "{data}/prosody.log" }} }}
        VirtualHost "localhost"
        Component "conference.localhost" "muc"
        """))
    subprocess.run(["chown", "-R", "prosody:prosody", str(data)], check=True)
    for user, password in users.items():
        subprocess.run([prosodyctl, "--config", str(conf), "register", user, "localhost", password],
                       check=True, capture_output=True)
    log = open(work / "out", "wb")
    cmd = [binary, "--config", str(conf), "-F"]
    if os.getuid() == 0:
        cmd = ["setpriv", "--reuid=prosody", "--regid=prosody", "--init-groups", *cmd]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    peer = Peer("prosody", port, work, [proc], {"domain": "localhost", "muc": "conference.localhost"})
    try:
        wait_port(port, proc=proc)
    except Exception:
        peer.stop()
        raise
    return peer


RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")


def rabbitmq_env(work: Path, node: str, amqp_port: int, dist_port: int, epmd_port: int) -> dict[str, str]:
    """A RabbitMQ node with every port on loopback and all state under ``work`` (run as root,
    without the Debian wrappers); ``work`` holds home/, mnesia/, log/ and rabbitmq.conf."""
    return {
        "HOME": str(work / "home"),
        "RABBITMQ_NODENAME": f"{node}@localhost",
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(amqp_port),
        "RABBITMQ_DIST_PORT": str(dist_port),
        "ERL_EPMD_ADDRESS": "127.0.0.1",
        "ERL_EPMD_PORT": str(epmd_port),
        "RABBITMQ_MNESIA_BASE": str(work / "mnesia"),
        "RABBITMQ_LOG_BASE": str(work / "log"),
        "RABBITMQ_CONFIG_FILE": str(work / "rabbitmq"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(work / "enabled_plugins"),
        "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        "PATH": f"{RABBITMQ_BIN}:{os.environ['PATH']}",
    }


def start_rabbitmq() -> Peer:
    """RabbitMQ with the STOMP plugin; peer.port is the STOMP port (guest/guest)."""
    bindir = RABBITMQ_BIN
    if not (bindir / "rabbitmq-server").exists():
        raise PeerMissing("rabbitmq-server is not installed (make test installs it with apt-get)")
    work = scratch_dir("rabbitmq-")
    stomp_port, amqp_port, dist_port, epmd_port = (free_port() for _ in range(4))
    for sub in ("home", "mnesia", "log"):
        (work / sub).mkdir()
    (work / "rabbitmq.conf").write_text(
        f"listeners.tcp.default = 127.0.0.1:{amqp_port}\n"
        f"stomp.listeners.tcp.1 = 127.0.0.1:{stomp_port}\n"
        "loopback_users = none\n"
    )
    env = {**os.environ, **rabbitmq_env(work, f"orbited{stomp_port}", amqp_port, dist_port, epmd_port)}
    subprocess.run([str(bindir / "rabbitmq-plugins"), "enable", "--offline", "rabbitmq_stomp"],
                   env=env, check=True, capture_output=True)
    log = open(work / "out", "wb")
    proc = subprocess.Popen([str(bindir / "rabbitmq-server")], env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    peer = Peer("rabbitmq", stomp_port, work, [proc], {"env": env, "amqp_port": amqp_port})
    try:
        wait_port(stomp_port, timeout=90, proc=proc)
        subprocess.run([str(bindir / "rabbitmqctl"), "await_startup", "--timeout", "60"],
                       env=env, check=True, capture_output=True, timeout=90)
    except Exception:
        stop_rabbitmq(peer)
        raise
    return peer


def stop_rabbitmq(peer: Peer) -> None:
    env = peer.extra["env"]
    subprocess.run(["/usr/lib/rabbitmq/bin/rabbitmqctl", "stop"], env=env, capture_output=True, timeout=60)
    peer.stop()
    subprocess.run(["epmd", "-kill"], env=env, capture_output=True, timeout=20)
