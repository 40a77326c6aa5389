"""The running daemon: listeners, TLS, privilege drop, signals, graceful shutdown.

Order matters and is fixed here: bind every socket, then drop privileges,
then serve.  SIGTERM/SIGINT stop accepting, close every session with a reason
and exit within ``shutdown.timeout``; SIGHUP reloads ``[access]``,
``origins`` and the TLS certificate without touching live sessions.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import signal
from collections.abc import Callable
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from OpenSSL import SSL
from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IOpenSSLContextFactory
from twisted.protocols.tls import BufferingTLSTransport, TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from zope.interface import implementer

from orbited.access import AccessPolicy
from orbited.addresses import host_port
from orbited.config import Config, ConfigError, Listener, TLSFiles, changes_needing_restart, load_file
from orbited.context import ServerContext
from orbited.http import LeanSite
from orbited.listening import ListeningPort
from orbited.logs import reopen_log_files
from orbited.testservers import test_server_factory
from orbited.web import build_site, bundled_static_dir

log = logging.getLogger("orbited.service")

LISTEN_BACKLOG = 4096  # Twisted's 50 drops SYNs in a burst of connects


class StartupError(Exception):
    """Something outside the config file stops start-up (a port in use, a bad key file)."""


class TLSFilesError(StartupError):
    """An [ssl] file that does not load; ``key`` is the [ssl] key ('key', 'crt', 'chain') to blame."""

    def __init__(self, key: str, detail: str):
        self.key = key
        self.detail = detail
        super().__init__(f"cannot use TLS files: [ssl] {detail}")


@implementer(IOpenSSLContextFactory)
class ReloadableTLS:
    """A pyOpenSSL context factory whose certificate can be swapped while serving.

    Twisted asks ``getContext()`` for every new TLS connection, so a reload
    reaches new connections at once and leaves established ones alone.
    """

    def __init__(self, files: TLSFiles):
        self.context = tls_context(files)

    def reload(self, files: TLSFiles) -> None:
        self.context = tls_context(files)

    def getContext(self) -> SSL.Context:
        return self.context


class _PassphraseWanted(Exception):
    """The private key is encrypted: it needs a passphrase, which Orbited never asks for.

    OpenSSL's own answer to an encrypted key is a prompt on the terminal, read in the
    reactor's thread: a SIGHUP in a terminal session stopped every connection until
    someone typed.  The key is therefore read by ``cryptography`` (which cannot prompt),
    not by OpenSSL's file loader."""


def _load_private_key(context: SSL.Context, path: str) -> None:
    """The first private key of the PEM file ``path``, handed to ``context`` as a
    ``cryptography`` key: pyOpenSSL deprecated both its passphrase callback and its own key
    objects (a DeprecationWarning on every start and ``--check``, with pyOpenSSL >= 24.3)."""
    with open(path, "rb") as handle:
        data = handle.read()
    try:
        key = load_pem_private_key(data, password=None)
    except TypeError:  # "Password was not given but private key is encrypted"
        raise _PassphraseWanted() from None
    context.use_privatekey(key)


class CycleFreeTLS(BufferingTLSTransport):
    """Twisted's TLS transport, without the reference cycle that its every unclean end left.

    A browser that goes without a TLS close_notify (most do) makes OpenSSL raise an
    unexpected-EOF error in Twisted's ``_flushReceiveBIO``, which keeps the Failure it makes
    in a local of its own frame: the frame, the Failure and its exception's traceback hold
    each other, and with them the whole connection (its OpenSSL object and buffers, its
    session), until a full collection, rare by design (orbited/cli.py): 1,200 https
    requests kept 40 MB.  Cleaning the Failure as it arrives (its frames become strings,
    as for a logged one) breaks the cycle; what it says is unchanged.
    """

    def _tlsShutdownFinished(self, reason: Failure | None) -> None:
        if reason is not None:
            reason.cleanFailure()
        super()._tlsShutdownFinished(reason)


def tls_factory(context_factory: IOpenSSLContextFactory, factory: Any) -> TLSMemoryBIOFactory:
    """``factory`` over TLS, as ``listenSSL`` wraps it, with :class:`CycleFreeTLS` connections."""
    wrapped = TLSMemoryBIOFactory(context_factory, False, factory)
    wrapped.protocol = CycleFreeTLS
    return wrapped


def tls_context(files: TLSFiles) -> SSL.Context:
    """The server context for [ssl] files: what start-up, a reload and ``--check`` load.

    Raises :class:`TLSFilesError` naming the file that is missing, unreadable or not
    PEM, the key that is encrypted, or the key that does not match the certificate."""
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    context.set_min_proto_version(SSL.TLS1_2_VERSION)
    context.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_CIPHER_SERVER_PREFERENCE)
    # An idle connection gives its read and write buffers back (as Twisted's own CertificateOptions
    # does): 27 KB instead of 47 KB per idle https connection, 29 instead of 62 per idle wss session.
    context.set_mode(SSL.MODE_RELEASE_BUFFERS)
    mismatch = TLSFilesError("key", f"key '{files.key}' does not match the certificate in crt '{files.crt}'")
    steps: list[tuple[str, str | None, str, Callable[[str], object]]] = [
        ("crt", files.crt, "the certificate chain", context.use_certificate_chain_file),
        ("chain", files.chain, "the chain", lambda path: _load_chain(context, path)),
        ("key", files.key, "the private key", lambda path: _load_private_key(context, path)),
    ]
    for key, path, what, load in steps:
        if path is None:
            continue
        try:
            with open(path, "rb") as handle:
                handle.read(1)  # OpenSSL's own message for an unreadable file is only "system lib"
            load(path)
        except OSError as exc:
            raise TLSFilesError(key, f"{key} '{path}': cannot read {what}: {exc.strerror}") from None
        except _PassphraseWanted:
            raise TLSFilesError(key, f"{key} '{path}': {what} is encrypted with a passphrase, and Orbited does "
                                "not ask for one: store it decrypted (openssl pkey -in KEY -out NEW), readable "
                                "by root and [global] user only") from None
        except (SSL.Error, ValueError, UnsupportedAlgorithm) as exc:
            reason = _ssl_reason(exc)
            if "key values mismatch" in reason:  # OpenSSL compares a key with the certificate as it loads it
                raise mismatch from None
            raise TLSFilesError(key, f"{key} '{path}': cannot load {what}: {reason}") from None
    try:
        context.check_privatekey()
    except SSL.Error:
        raise mismatch from None
    return context


def _load_chain(context: SSL.Context, path: str) -> None:
    context.load_verify_locations(path)
    with open(path, "rb") as handle:
        for pem in _pem_blocks(handle.read()):
            context.add_extra_chain_cert(x509.load_pem_x509_certificate(pem))


def _ssl_reason(exc: Exception) -> str:
    """OpenSSL's error queue as text: 'PEM routines: no start line'."""
    errors = exc.args[0] if exc.args and isinstance(exc.args[0], list) else []
    reasons = [f"{lib}: {why}" if lib else why for lib, _func, why in errors if why]
    return ", ".join(dict.fromkeys(reasons)) or str(exc) or type(exc).__name__


def _pem_blocks(data: bytes) -> list[bytes]:
    marker = b"-----END CERTIFICATE-----"
    return [block + marker for block in data.split(marker) if b"-----BEGIN CERTIFICATE-----" in block]


def load_before_dropping_privileges() -> None:
    """Import now what Orbited would otherwise import on first use.

    After the drop, a Python installation that only root can read (a pyenv under
    /root, as on the CI image) fails every new import.  Host-name lookups need
    the idna codec: ``getaddrinfo`` encodes every host name with it, so without
    this the first TCPSocket to ``localhost:8001`` failed with "unknown encoding:
    idna" once Orbited ran as nobody.
    """
    import encodings.idna  # noqa: F401

    from twisted.internet import _resolver  # noqa: F401  (Twisted's getaddrinfo resolver)


def drop_privileges(config: Config) -> None:
    """Switch a root process to [global] user/group, with that user's supplementary groups."""
    if os.getuid() != 0:
        return
    load_before_dropping_privileges()
    problem = root_without_user(config)
    if problem:
        raise StartupError(problem)
    name, uid, gid = account_of(config)
    os.initgroups(name, gid)
    os.setgid(gid)
    os.setuid(uid)
    log.info("dropped privileges to user %s (uid %d), group %d, supplementary groups %s",
             name, uid, gid, os.getgroups())


def root_without_user(config: Config) -> str | None:
    """Why this process, as root, must not start with ``config`` (no [global] user), or None.
    Said by --check, by start-up before anything is bound, and by the privilege drop."""
    if os.getuid() != 0 or config.settings["user"]:
        return None
    if config.path.startswith("<"):
        return ("refusing to run --quickstart as root: run it as an ordinary user (its ports, 8000 "
                "and 61613, need no root), or write a config file with [global] user = <account>")
    return (f"refusing to run as root without [global] user in {config.path}: add 'user = <account>' "
            "(Orbited binds its ports, then switches to that account)")


def account_of(config: Config) -> tuple[str, int, int]:
    """[global] user's name and uid, and the gid of [global] group or else of the user's own group;
    KeyError for an account or group this system does not have."""
    account = pwd.getpwnam(config.settings["user"])
    group = config.settings["group"]
    return account.pw_name, account.pw_uid, grp.getgrnam(group).gr_gid if group else account.pw_gid


class OrbitedServer:
    """One Orbited process: build with a config, ``listen()``, then run the reactor."""

    def __init__(self, config: Config, reactor: Any, extra_children: dict[bytes, Resource] | None = None):
        self.config = config
        self.reactor = reactor
        self.context = ServerContext(config, reactor)
        self.tls = ReloadableTLS(config.tls) if config.tls else None
        self.ports: list[Any] = []
        self.extra_children = extra_children
        self.site = None
        self._stomp_factory = None

    # --- binding

    def listen(self) -> None:
        """Bind every [listen] line; raises StartupError naming the line that failed."""
        self._attach_broker()
        self.site = build_site(self.context, self.extra_children)
        for listener in self.config.listeners:
            factory = self._factory_for(listener)
            try:
                port = self._bind(listener, factory)
            except CannotListenError as exc:
                self.stop_listening()
                raise StartupError(f"{self.config.path}:{listener.line}: cannot listen on "
                                   f"{listener}: {exc.socketError}") from None
            self.ports.append(port)
            address = port.getHost()
            log.info("listening on %s://%s", listener.scheme, host_port(address.host, address.port))

    def _attach_broker(self) -> None:
        from orbited import stomp

        stomp.attach(self.context)

    def _factory_for(self, listener: Listener) -> Any:
        if listener.scheme in ("http", "https"):
            return self.site
        if listener.scheme == "stomp":
            from orbited import stomp

            return stomp.stomp_factory(self.context)
        return test_server_factory(listener.scheme, self.context)

    def _bind(self, listener: Listener, factory: Any) -> Any:
        interfaces = [listener.host] if listener.host else ["::", "0.0.0.0"]
        port_type: type[ListeningPort] = ListeningPort
        if listener.scheme == "https":
            factory = tls_factory(self.tls, factory)
        elif listener.scheme == "http" and self.config.settings["workers"]:
            from orbited.workers import HandoffPort

            port_type = HandoffPort
        for index, interface in enumerate(interfaces):
            try:
                # what reactor.listenTCP does, with a port that can take both IP versions
                port = port_type(listener.port, factory, LISTEN_BACKLOG, interface, self.reactor)
                port.every_interface = not listener.host
                if listener.scheme == "https":
                    port._type = "TLS"  # as listenSSL marks it, for Twisted's log lines
                port.startListening()
                return port
            except CannotListenError:
                # '::' fails where IPv6 is off; then every IPv4 interface will do.
                if index == len(interfaces) - 1:
                    raise
        raise AssertionError("unreachable")

    def stop_listening(self) -> defer.Deferred:
        ports, self.ports = self.ports, []
        return defer.DeferredList([defer.maybeDeferred(port.stopListening) for port in ports])

    def bound_ports(self) -> list[tuple[str, int]]:
        return [(lst.scheme, port.getHost().port) for lst, port in zip(self.config.listeners, self.ports)]

    # --- privileges

    def drop_privileges(self) -> None:
        """Switch to [global] user/group with its supplementary groups, after binding."""
        started_as_root = os.getuid() == 0
        drop_privileges(self.config)
        if started_as_root:
            self.warn_unreadable_for_reload()
            self.warn_unreadable_static()

    def warn_unreadable_for_reload(self) -> None:
        """A SIGHUP re-reads these as [global] user: say now, not at the next certificate renewal."""
        files = [self.config.path] if not self.config.path.startswith("<") else []
        if self.config.tls is not None:
            files += [path for path in (self.config.tls.key, self.config.tls.crt, self.config.tls.chain) if path]
        for path in files:
            if not os.access(path, os.R_OK):
                log.warning("%s is not readable by user %s: a reload (SIGHUP) cannot re-read it; make it "
                            "readable by that user or group, or restart to apply changes", path,
                            self.config.settings["user"])

    def warn_unreadable_static(self) -> None:
        """Files are served as [global] user: a directory it cannot enter (a clone under root's
        0700 home, run by `make run` as nobody) would answer every request with a silent 404."""
        user = self.config.settings["user"]
        mounts = [(f"/{name}/" if name else "/", directory) for name, directory in self.config.static]
        mounts.append(("/static/ (Orbited.js and the protocol clients)", bundled_static_dir()))
        for where, directory in mounts:
            if not os.access(directory, os.R_OK | os.X_OK):
                log.error("%s is not readable by user %s, so %s answers 404 to every request; make it and "
                          "each directory above it readable by that user (chmod o+rx), or choose another "
                          "[global] user", directory, user, where)

    # --- worker processes

    def start_workers(self, config_args: list[str]) -> None:
        """[global] workers: start them and let the site hand them /ws and /sockjs connections.

        Called after binding and before dropping privileges, so that starting the
        interpreter needs no more than root can do; each worker drops to [global]
        user itself before it touches the network.  ``config_args`` tell a worker
        how to load our config."""
        count = self.config.settings["workers"]
        if not count:
            return
        from orbited.workers import WorkerPool

        pool = WorkerPool(self.context, count, config_args)
        pool.start()
        self.context.workers = pool
        if isinstance(self.site, LeanSite) and self.site.has_delegable_endpoints():
            self.site.router = pool
            pool.site = self.site

    # --- signals and shutdown

    def install_signal_handlers(self) -> None:
        """SIGHUP reloads; SIGTERM/SIGINT are the reactor's (they call reactor.stop)."""
        signal.signal(signal.SIGHUP, lambda signum, frame: self.reactor.callFromThread(self.reload))
        self.reactor.addSystemEventTrigger("before", "shutdown", self.shutdown)

    def reload(self) -> bool:
        """Reopen log files; re-read the config file; apply [access], origins and TLS; keep everything else."""
        reopened, problems = reopen_log_files()
        for problem in problems:
            log.error("%s", problem)
        if reopened:
            log.info("reopened log files: %s", ", ".join(reopened))
        try:
            fresh = load_file(self.config.path, files_must_exist=False)  # tls.reload judges them
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("reload refused: %s", problem)
            return False
        tls_reloaded = self.tls is not None and fresh.tls is not None
        if tls_reloaded:
            try:
                self.tls.reload(fresh.tls)  # type: ignore[union-attr]
            except StartupError as exc:
                # The rules still apply: a renewal gone wrong must not keep a revoked destination open.
                log.error("reload kept the running TLS certificate: %s", exc)
                tls_reloaded = False
        self.context.policy = AccessPolicy.from_config(fresh)
        if self.context.workers is not None:
            self.context.workers.reload()
        log.info("reloaded %s: %d access rules, origins %s%s", fresh.path, len(fresh.access),
                 " ".join(fresh.settings["origins"]) or "(same host)",
                 ", TLS certificate" if tls_reloaded else "")
        unapplied = changes_needing_restart(self.config, fresh)
        if unapplied:
            log.warning("reload: %s changed in %s since start; a reload applies [access], origins and the "
                        "TLS files only, so these take effect at the next restart", ", ".join(unapplied), fresh.path)
        return True

    def shutdown(self) -> defer.Deferred:
        """Stop accepting, close sessions with a reason, wait for them (bounded)."""
        sessions = self.context.sessions
        log.info("shutting down: closing %d sessions", len(sessions.live))
        stopped = self.stop_listening()
        sessions.close_all()
        if self.context.broker is not None and hasattr(self.context.broker, "shutdown"):
            self.context.broker.shutdown()
        timeout = self.config.settings["shutdown.timeout"]
        workers = self.context.workers.stop(timeout) if self.context.workers is not None else defer.succeed(None)
        done = defer.Deferred()
        deadline = self.reactor.seconds() + timeout

        def check() -> None:
            if not sessions.live or self.reactor.seconds() >= deadline:
                if sessions.live:
                    log.warning("shutdown: %d sessions did not close in %.1fs", len(sessions.live), timeout)
                done.callback(None)
            else:
                self.reactor.callLater(0.05, check)

        check()
        return defer.DeferredList([stopped, done, workers])
