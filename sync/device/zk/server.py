"""The ZK port-4370 server: TCP and UDP on `[zk] listen`, one thread per TCP client, one for UDP.

`serve_zk(cfg, state_dir, stop_event)` starts both and returns at once (a ZkServer with the bound
ports); the daemon calls it. `python -m sync.device.zk.server -c CONFIG` runs it alone, for tests and for
terminals that only speak ZK (`python -m sync.device.adms -c CONFIG` runs the ADMS client alone).
Garbage never crashes it: a frame that cannot be parsed closes that TCP connection (or is dropped on
UDP); a parseable one with a wrong checksum, session or size gets the protocol's error reply.
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
        self.slots = threading.BoundedSemaphore(cfg.zk.max_sessions)
        self.threads: list[threading.Thread] = []

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
                if not self.slots.acquire(blocking=False):
                    log.warning("zk: %s refused, %d sessions busy", addr[0], self.cfg.zk.max_sessions)
                    conn.close()
                    continue
                threading.Thread(target=self._serve_tcp, args=(conn, addr), name=f"zk-{addr[0]}",
                                 daemon=True).start()

    def _serve_tcp(self, conn: socket.socket, addr) -> None:
        holder: list[Session] = []
        try:
            conn.settimeout(POLL_SECONDS)
            self._tcp_session(conn, addr[0], holder)
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
            self.slots.release()

    def _tcp_session(self, conn: socket.socket, client: str, holder: list[Session]) -> None:
        """Frames in, replies out. The session (and its database connections) opens with the first valid
        frame, so port scans and garbage cost nothing but a socket."""
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
                    holder.append(Session(TerminalView(self.cfg, self.state_dir), client, udp=False))
                self._send_tcp(conn, holder[0].handle(pkt))

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
        sessions: OrderedDict[int, tuple[tuple, Session]] = OrderedDict()
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
            for _ in sessions:
                self.slots.release()
            view.close()

    def _udp_packet(self, view: TerminalView, sessions: OrderedDict, data: bytes, addr) -> None:
        try:
            pkt = c.parse_packet(data)
        except c.FrameError:
            return  # not even a header: nothing to answer to
        if pkt.command == c.CMD_CONNECT:
            if not self.slots.acquire(blocking=False) and not self._evict_idle_udp(sessions):
                self.udp.sendto(c.build_packet(c.CMD_ACK_ERROR, 0, pkt.reply), addr)
                return
            session = Session(view, addr[0], udp=True)
            while session.id in sessions:
                session = Session(view, addr[0], udp=True)
            sessions[session.id] = (addr, session)
        else:
            entry = sessions.get(pkt.session)
            if entry is None or entry[0] != addr:
                if pkt.command != c.CMD_ACK_OK:
                    self.udp.sendto(c.build_packet(c.CMD_ACK_UNAUTH, pkt.session, pkt.reply), addr)
                return
            session = entry[1]
        for i, frame in enumerate(session.handle(pkt), 1):
            self.udp.sendto(frame, addr)
            if i % UDP_BURST == 0:
                time.sleep(0.001)  # a direct read streams thousands of datagrams: let the client's buffer drain
        if session.closed:
            sessions.pop(session.id, None)
            self.slots.release()

    @staticmethod
    def _evict_idle_udp(sessions: OrderedDict, min_idle: float = 5.0) -> bool:
        """UDP clients often never send EXIT: when every slot is taken, the longest-idle UDP session (not in
        live capture) gives its slot to the new one."""
        now = time.monotonic()
        idle = [(s.last_seen, sid) for sid, (_, s) in sessions.items()
                if s.live_after is None and now - s.last_seen >= min_idle]
        if not idle:
            return False
        sessions.pop(min(idle)[1])
        return True  # the slot passes to the new session without release/acquire

    def _udp_housekeeping(self, sessions: OrderedDict) -> None:
        zk = self.cfg.zk
        for sid, (addr, session) in list(sessions.items()):
            if session.expired(zk.session_idle_seconds, zk.session_max_seconds):
                sessions.pop(sid)
                self.slots.release()
                continue
            for frame in session.live_events():
                self.udp.sendto(frame, addr)


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
