"""The ZK port-4370 server: TCP and UDP on `[zk] listen`, one thread per TCP client, one for UDP.

`serve_zk(cfg, state_dir, stop_event)` starts both and returns at once (a ZkServer with the bound
ports); the daemon calls it. `python -m sync.device.zk.server -c CONFIG` runs it alone, for tests and for
terminals that only speak ZK (`python -m sync.device.adms -c CONFIG` runs the ADMS client alone).
Garbage never crashes it: a frame that cannot be parsed closes that TCP connection (or is dropped on
UDP); a parseable one with a wrong checksum, session or size gets the protocol's error reply.
Attacks from the LAN are contained by sync/device/zk/guard.py: comm-key guessing is slowed per address,
session slots are shared out per address, and connections that do not authenticate within
[zk] handshake_seconds are closed, so the central server always gets a slot.
"""

from __future__ import annotations

import argparse
import logging
import select
import signal
import socket
import sys
import threading
import time
from collections import OrderedDict
from pathlib import Path

from sync.device.zk import codec as c
from sync.device.zk.data import TerminalView
from sync.device.zk.guard import AuthThrottle, Slot, SlotTable
from sync.device.zk.session import Session
from terminal import config as config_mod

log = logging.getLogger(__name__)
MAX_FRAME = 0x10000 + 64      # largest TCP frame a client may send (pyzk's writes are 1 KiB chunks)
POLL_SECONDS = 0.25            # how often live events, stop and idle limits are checked
SEND_BATCH = 256 * 1024
UDP_BURST = 16


def parse_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise config_mod.ConfigError(f"[zk] listen = {listen!r}: use HOST:PORT, e.g. 0.0.0.0:4370")
    return host.strip("[]"), int(port)


class ZkServer:
    def __init__(self, cfg, state_dir: Path, stop_event: threading.Event):
        self.cfg, self.state_dir, self.stop_event = cfg, Path(state_dir), stop_event
        host, port = parse_listen(cfg.zk.listen)
        TerminalView(cfg, self.state_dir).close()  # fail now, with the punch log's message, if unusable
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.tcp.bind((host, port))
            self.udp.bind((host, self.tcp.getsockname()[1]))
        except OSError as e:
            self.tcp.close()
            self.udp.close()
            raise OSError(f"[zk] listen = {cfg.zk.listen}: cannot bind ({e}); choose a free port "
                          "(ports below 1024 need root or CAP_NET_BIND_SERVICE)") from None
        self.tcp.listen(16)
        self.tcp.settimeout(POLL_SECONDS)
        self.udp.settimeout(POLL_SECONDS)
        self.host, self.port = host, self.tcp.getsockname()[1]
        self.slots = SlotTable(cfg.zk.max_sessions, cfg.zk.max_sessions_per_address)
        self.throttle = AuthThrottle(sleep=stop_event.wait)
        self.threads: list[threading.Thread] = []
        self._refused_logged: dict[str, float] = {}

    def start(self) -> ZkServer:
        for target, name in ((self._accept_loop, "zk-tcp"), (self._udp_loop, "zk-udp")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self.threads.append(t)
        log.info("ZK server listening on tcp+udp %s:%d", self.host, self.port)
        return self

    def join(self, timeout: float | None = None) -> None:
        for t in self.threads:
            t.join(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving (sets the shared stop event) and wait for the listener threads; the daemon's
        shutdown calls this. Client threads end within POLL_SECONDS."""
        self.stop_event.set()
        self.join(timeout)

    # -- TCP ---------------------------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        with self.tcp:
            while not self.stop_event.is_set():
                try:
                    conn, addr = self.tcp.accept()
                except TimeoutError:
                    continue
                except OSError as e:
                    log.warning("zk accept failed: %s", e)
                    time.sleep(POLL_SECONDS)
                    continue
                slot = self.slots.take(addr[0], evict=lambda conn=conn: _shutdown(conn))
                if slot is None:
                    self._log_refused(addr[0])
                    conn.close()
                    continue
                threading.Thread(target=self._serve_tcp, args=(conn, addr, slot), name=f"zk-{addr[0]}",
                                 daemon=True).start()

    def _log_refused(self, client: str) -> None:
        """Once a minute per address: a connection flood must not fill the journal."""
        now = time.monotonic()
        if now - self._refused_logged.get(client, -60.0) >= 60.0:
            if len(self._refused_logged) > 1024:
                self._refused_logged.clear()
            self._refused_logged[client] = now
            log.warning("zk: %s refused: it holds %d of its %d sessions, or all %d are authenticated and busy",
                        client, self.slots.held(client), self.slots.per_address, self.slots.total)

    def _serve_tcp(self, conn: socket.socket, addr, slot: Slot) -> None:
        holder: list[Session] = []
        try:
            conn.settimeout(POLL_SECONDS)
            self._tcp_session(conn, addr[0], holder, slot)
        except c.FrameError as e:
            log.info("zk %s: %s; connection closed", addr[0], e)
        except OSError as e:
            log.info("zk %s: connection lost (%s)", addr[0], e)
        except Exception:
            log.exception("zk session %s failed; connection closed", addr[0])
        finally:
            conn.close()
            if holder:
                holder[0].view.close()
            self.slots.give(slot)

    def _tcp_session(self, conn: socket.socket, client: str, holder: list[Session], slot: Slot) -> None:
        """Frames in, replies out. The session (and its database connections) opens with the first valid
        frame, so port scans and garbage cost nothing but a socket. A connection not authenticated within
        [zk] handshake_seconds is closed: idle or half-open sockets cannot hold slots."""
        zk = self.cfg.zk
        pending = bytearray()
        started = last = time.monotonic()
        while not self.stop_event.is_set():
            session = holder[0] if holder else None
            now = time.monotonic()
            if session is not None and (session.closed or session.expired(zk.session_idle_seconds,
                                                                           zk.session_max_seconds)):
                return
            if session is None and (now - last > zk.session_idle_seconds or now - started > zk.session_max_seconds):
                return
            if not slot.authenticated and now - started > zk.handshake_seconds:
                log.info("zk %s: not authenticated within %.0f s; connection closed", client, zk.handshake_seconds)
                return
            try:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                pending += chunk
                last = time.monotonic()
            except TimeoutError:
                if session is not None:
                    self._send_tcp(conn, session.live_events())
                continue
            while len(pending) >= 8:
                length = c.tcp_length(bytes(pending[:8]))  # FrameError: not ZK, close
                if length < 8 or length > MAX_FRAME:
                    raise c.FrameError(f"TCP frame length {length} out of range")
                if len(pending) < 8 + length:
                    break
                pkt = c.parse_packet(bytes(pending[8:8 + length]))
                del pending[:8 + length]
                if not holder:
                    holder.append(Session(TerminalView(self.cfg, self.state_dir), client, udp=False,
                                          throttle=self.throttle))
                frames = holder[0].handle(pkt)
                # marked before the reply leaves: a client that just authenticated is never evicted
                slot.authenticated = holder[0].authenticated
                self._send_tcp(conn, frames)
                if holder[0].closed:
                    return

    @staticmethod
    def _send_tcp(conn: socket.socket, frames) -> None:
        out = bytearray()
        for frame in frames:
            out += c.tcp_wrap(frame)
            if len(out) >= SEND_BATCH:
                conn.sendall(out)
                out.clear()
        if out:
            conn.sendall(out)

    # -- UDP ---------------------------------------------------------------------------------------------

    def _udp_loop(self) -> None:
        view = TerminalView(self.cfg, self.state_dir)
        sessions: OrderedDict[int, tuple[tuple, Session, Slot]] = OrderedDict()
        try:
            with self.udp:
                housekeeping = 0.0
                while not self.stop_event.is_set():
                    if time.monotonic() - housekeeping >= POLL_SECONDS:  # not per datagram: floods stay cheap
                        self._udp_housekeeping(sessions)
                        housekeeping = time.monotonic()
                    ready, _, _ = select.select([self.udp], [], [], POLL_SECONDS)
                    if not ready:
                        continue
                    try:
                        data, addr = self.udp.recvfrom(65535)
                    except OSError:
                        continue
                    try:
                        self._udp_packet(view, sessions, data, addr)
                    except Exception:
                        log.exception("zk udp packet from %s failed", addr[0])
        finally:
            for _, _, slot in sessions.values():
                self.slots.give(slot)
            view.close()

    def _udp_packet(self, view: TerminalView, sessions: OrderedDict, data: bytes, addr) -> None:
        try:
            pkt = c.parse_packet(data)
        except c.FrameError:
            return  # not even a header: nothing to answer to
        if pkt.command == c.CMD_CONNECT:
            session = Session(view, addr[0], udp=True, throttle=self.throttle)
            while session.id in sessions:
                session = Session(view, addr[0], udp=True, throttle=self.throttle)
            slot = self._udp_slot(sessions, session)
            if slot is None:
                self.udp.sendto(c.build_packet(c.CMD_ACK_ERROR, 0, pkt.reply), addr)
                return
            sessions[session.id] = (addr, session, slot)
        else:
            entry = sessions.get(pkt.session)
            if entry is not None and entry[1].closed:  # evicted by a newer client
                self._drop_udp(sessions, pkt.session)
                entry = None
            if entry is None or entry[0] != addr:
                if pkt.command != c.CMD_ACK_OK:
                    self.udp.sendto(c.build_packet(c.CMD_ACK_UNAUTH, pkt.session, pkt.reply), addr)
                return
            session, slot = entry[1], entry[2]
        frames = session.handle(pkt)
        slot.authenticated = session.authenticated  # before the reply leaves, as for TCP
        for i, frame in enumerate(frames, 1):
            self.udp.sendto(frame, addr)
            if i % UDP_BURST == 0:
                time.sleep(0.001)  # a direct read streams thousands of datagrams: let the client's buffer drain
        if session.closed:
            self._drop_udp(sessions, session.id)

    def _udp_slot(self, sessions: OrderedDict, session: Session) -> Slot | None:
        def evict() -> None:  # may run in the TCP accept thread: only mark it, the UDP thread drops it
            session.closed = True

        slot = self.slots.take(session.client, evict)
        if slot is None and self._evict_idle_udp(sessions):
            slot = self.slots.take(session.client, evict)
        return slot

    def _drop_udp(self, sessions: OrderedDict, sid: int) -> None:
        entry = sessions.pop(sid, None)
        if entry is not None:
            self.slots.give(entry[2])

    def _evict_idle_udp(self, sessions: OrderedDict, min_idle: float = 5.0) -> bool:
        """UDP clients often never send EXIT: when every slot is taken, the longest-idle UDP session (not in
        live capture) gives its slot to the new one."""
        now = time.monotonic()
        idle = [(s.last_seen, sid) for sid, (_, s, _) in sessions.items()
                if s.live_after is None and now - s.last_seen >= min_idle]
        if not idle:
            return False
        _, _, slot = sessions.pop(min(idle)[1])
        self.slots.give(slot)
        return True

    def _udp_housekeeping(self, sessions: OrderedDict) -> None:
        zk = self.cfg.zk
        now = time.monotonic()
        for sid, (addr, session, _slot) in list(sessions.items()):
            if session.closed or session.expired(zk.session_idle_seconds, zk.session_max_seconds) or (
                    not session.authenticated and now - session.started > zk.handshake_seconds):
                self._drop_udp(sessions, sid)
                continue
            for frame in session.live_events():
                self.udp.sendto(frame, addr)


def _shutdown(conn: socket.socket) -> None:
    """End a TCP session from another thread: its recv returns and its thread closes the socket."""
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def serve_zk(cfg, state_dir, stop_event: threading.Event) -> ZkServer:
    """Start the ZK server's threads (TCP and UDP on [zk] listen) and return at once."""
    return ZkServer(cfg, Path(state_dir), stop_event).start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sync.device.zk.server",
                                     description="Serve the ZK port-4370 protocol")
    parser.add_argument("-c", "--config", help="configuration file (default: $PRESENSI_CONFIG or /etc/...)")
    parser.add_argument("--listen", help="override [zk] listen, e.g. 127.0.0.1:0")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        cfg = config_mod.load(args.config)
        if args.listen:  # checked by parse_listen below, as the configured value is
            cfg = cfg.model_copy(update={"zk": cfg.zk.model_copy(update={"listen": args.listen})})
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        server = serve_zk(cfg, cfg.state_dir, stop)
        threads = list(server.threads)
    except (config_mod.ConfigError, OSError, Exception) as e:
        print(f"presensi zk: error: {e}", file=sys.stderr)
        return 2
    print(f"listening on tcp+udp {server.host}:{server.port}", flush=True)
    while not stop.is_set():
        stop.wait(0.5)
    for t in threads:
        t.join(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
