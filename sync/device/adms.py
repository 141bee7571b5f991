"""ADMS / iclock push client: this terminal as a ZKTeco push device (../shared/reference/zkteco-protocols.md §2).

Delivery is exactly-once across restarts of either side: punches go out in seq order as ATTLOG lines with
`Stamp=<last seq of the batch>`; our high-water mark (state_dir/zkcompat.db) moves only after the server
answered OK, and at each handshake the server's stored ATTLOGStamp (the last batch it committed) takes
precedence, so a batch committed just before our crash is not re-sent, and one the server lost is. A stamp
counts only if this device posted a batch of this log ending there (zkcompat.db keeps them by serial number
and log_id): the stamp of a punch database since re-initialised never skips the new log's punches. Where a
batch is re-sent anyway, servers deduplicate by (SN, PIN, time). Commands answered are remembered by id, so
a command re-sent after a crash is answered, not executed twice.

ADMS is plain HTTP and the server is whoever answers at [adms] url, so nothing it says is trusted with
more than delivery: commands that change people (USERINFO, FINGERTMP, BIODATA, user DELETE, enrolment)
apply only with `[adms] roster_authority = true`; otherwise they are acknowledged (Return=0, so the server
does not retry them for ever), audited and ignored: the signed roster from the central server decides who
may punch. SET OPTION DateTime is a time claim (audited), never a trusted sample. Every reply is read as a
stream and cut off at `[adms] max_reply_bytes`.

`run_adms(cfg, state_dir, stop_event)` is the daemon's entry; `python -m sync.device.adms -c CONFIG` runs it alone.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import requests

from sync.device.zk import codec
from sync.device.zk.data import TerminalView, serial_number

log = logging.getLogger(__name__)
HWM_KEY = "adms_hwm"
DONE_PREFIX = "adms_cmd:"
MAX_COMMANDS = 50
QUERY_SCAN_LIMIT = 1_000_000
READ_CHUNK = 64 * 1024


class AdmsError(Exception):
    """The server refused or could not be reached; the data stays queued."""


class AdmsClient:
    def __init__(self, cfg, state_dir: Path, http: requests.Session | None = None,
                 on_reboot: Callable[[], None] | None = None):
        if not cfg.adms.url:
            raise ValueError("[adms] url is not set; set it to the ADMS server's base URL, e.g. http://host:8081")
        self.cfg = cfg
        self.view = TerminalView(cfg, Path(state_dir))
        self.http = http or requests.Session()
        self.base = cfg.adms.url.rstrip("/")
        self.sn = serial_number(cfg)
        self.on_reboot = on_reboot
        self.options: dict[str, str] = {}
        self.delay = cfg.adms.delay
        self.error_delay = cfg.adms.error_delay
        self.realtime = True
        self.trans_interval = 60.0
        self.trans_times: set[str] = set()
        self._trans_done = ""
        self.tz: dt.tzinfo = self.view.tz
        self.handshaken = False
        self.reboot_requested = False

    def close(self) -> None:
        self.view.close()

    # -- HTTP --------------------------------------------------------------------------------------------

    def _request(self, method: str, path: str, params: dict, body: str | None = None) -> str:
        url = f"{self.base}/iclock/{path}"
        try:
            with self.http.request(method, url, params={"SN": self.sn, **params},
                                   data=body.encode("utf-8") if body is not None else None,
                                   headers={"Content-Type": "text/plain"}, timeout=self.cfg.adms.timeout,
                                   stream=True) as r:
                raw = _read_bounded(r, self.cfg.adms.max_reply_bytes, url)
        except requests.RequestException as e:
            raise AdmsError(f"{self.base}: {type(e).__name__}: {e}") from None
        text = raw.decode(r.encoding or "utf-8", errors="replace")
        if r.status_code != 200:
            raise AdmsError(f"{url}: HTTP {r.status_code} {text[:200]!r}")
        return text

    # -- handshake ---------------------------------------------------------------------------------------

    def handshake(self) -> dict[str, str]:
        text = self._request("GET", "cdata", {"options": "all", "pushver": self.cfg.adms.push_version,
                                              "language": "69"})
        opts = {}
        for line in text.splitlines():
            key, sep, value = line.strip().partition("=")
            if sep and key:
                opts[key.strip()] = value.strip()
        self.options = opts
        self.delay = _number(opts.get("Delay"), self.cfg.adms.delay)
        self.error_delay = _number(opts.get("ErrorDelay"), self.cfg.adms.error_delay)
        self.realtime = opts.get("Realtime", "1").strip() != "0"
        self.trans_interval = 60.0 * _number(opts.get("TransInterval"), 1.0)
        self.trans_times = {t.strip() for t in opts.get("TransTimes", "").replace(",", ";").split(";") if t.strip()}
        self.tz = _server_zone(opts.get("TimeZone"), self.view.tz)
        self._adopt_server_stamp(opts.get("ATTLOGStamp", opts.get("Stamp")))
        self.handshaken = True
        log.info("ADMS handshake with %s: delay %.0fs, realtime %s, high-water mark %d",
                 self.base, self.delay, self.realtime, self.hwm())
        return opts

    def _adopt_server_stamp(self, stamp: str | None) -> None:
        """The server's stamp is what it committed last; trust it only when this device posted a batch of
        this log (log_id) ending there. A bare number cannot say which log it counts: after the punch
        database was re-initialised (new log_id, seq from 1 again) the server's stamp of the old log would
        otherwise skip the new log's first punches, which would then never be delivered. 0 (the server holds
        nothing) is true of any log; a stamp we cannot place leaves our own mark, at worst a re-send the
        server deduplicates."""
        if stamp is None or not stamp.strip().isdigit():
            return
        value, head, log_id = int(stamp), self.view.head(), self.view.log.log_id
        if value > head or value == self.hwm():
            return
        if value and not self.view.store.sent_stamp(self.sn, log_id, value):
            log.warning("ADMS: the server's ATTLOGStamp %d was not posted from this log (log_id %s); it is "
                        "ignored and delivery resumes after seq %d", value, log_id, self.hwm())
            return
        log.info("ADMS: server holds punches through seq %d (ours said %d)", value, self.hwm())
        self._set_hwm(value)

    def hwm(self) -> int:
        # keyed by log_id: a re-initialised punch database starts again at seq 1
        return int(self.view.store.get(f"{HWM_KEY}:{self.view.log.log_id}", "0"))

    def _set_hwm(self, seq: int) -> None:
        self.view.store.put(f"{HWM_KEY}:{self.view.log.log_id}", str(seq))

    # -- punches -----------------------------------------------------------------------------------------

    def upload_due(self, since_last: float) -> bool:
        """Realtime=1: always; else every TransInterval minutes and at each TransTimes HH:MM (server's zone)."""
        if self.realtime or since_last >= self.trans_interval:
            return True
        hhmm = dt.datetime.now(self.tz).strftime("%H:%M")
        if hhmm in self.trans_times and self._trans_done != hhmm:
            self._trans_done = hhmm
            return True
        return False

    def attlog_line(self, p) -> str:
        local = p.local.replace(tzinfo=self.view.tz).astimezone(self.tz).replace(tzinfo=None)
        return f"{p.user_id}\t{local:%Y-%m-%d %H:%M:%S}\t{p.state}\t{p.verify}\t{p.work_code}\t0\t0"

    def upload_pending(self, max_batches: int = 1000) -> int:
        """Send everything after the high-water mark, batch by batch; returns the punches the server took."""
        sent = 0
        for _ in range(max_batches):
            after, head = self.hwm(), self.view.head()
            if after >= head:
                break
            through = min(head, after + self.cfg.adms.batch_size)
            uids = {}
            punches = list(self.view.punches(after, through, uids))
            if not punches:
                break
            lines = self._lines(punches)
            body = "\n".join(lines.values()) + "\n"
            self.view.store.remember_stamp(self.sn, self.view.log.log_id, punches[-1].seq)
            reply = self._request("POST", "cdata", {"table": "ATTLOG", "Stamp": str(punches[-1].seq)}, body)
            if not reply.strip().upper().startswith("OK"):
                raise AdmsError(f"ATTLOG upload answered {reply[:100]!r}; the batch stays queued")
            self._set_hwm(punches[-1].seq)
            sent += len(punches)
        return sent

    def _lines(self, punches: list) -> dict[int, str]:
        """seq -> ATTLOG line; a punch sent before keeps its first line (stored before the first POST)."""
        log_id = self.view.log.log_id
        stored = self.view.store.sent_lines(log_id, [p.seq for p in punches])
        lines = {p.seq: stored.get(p.seq) or self.attlog_line(p) for p in punches}
        self.view.store.remember_lines(log_id, {k: v for k, v in lines.items() if k not in stored})
        return lines

    # -- commands ----------------------------------------------------------------------------------------

    def poll(self) -> int:
        info = f"Ver 6.60,{len(self.view.users())},0,{self.view.head()},127.0.0.1"
        text = self._request("GET", "getrequest", {"INFO": info})
        results = []
        for line in text.splitlines()[:MAX_COMMANDS]:
            if not line.startswith("C:"):
                continue
            _, cid, command = line.split(":", 2)
            results.append(self._answer(cid.strip(), command.strip()))
        if results:
            self._request("POST", "devicecmd", {}, "\n".join(results) + "\n")
        if self.reboot_requested and self.on_reboot is not None:
            self.on_reboot()
        return len(results)

    def _answer(self, cid: str, command: str) -> str:
        done = self.view.store.get(DONE_PREFIX + cid)
        if done is not None:  # executed before a crash or a lost reply: answer again, do not repeat
            return done
        verb, code, extra = self.execute(command)
        result = f"ID={cid}&Return={code}&CMD={verb}" + "".join(f"\n{k}={v}" for k, v in extra.items())
        self.view.store.put(DONE_PREFIX + cid, result)
        self._forget_old_commands()
        return result

    def _forget_old_commands(self, keep: int = 1000) -> None:
        self.view.store.conn.execute(
            "DELETE FROM state WHERE key LIKE ? AND rowid NOT IN "
            "(SELECT rowid FROM state WHERE key LIKE ? ORDER BY rowid DESC LIMIT ?)",
            (DONE_PREFIX + "%", DONE_PREFIX + "%", keep))

    def execute(self, command: str) -> tuple[str, int, dict]:
        """(verb for CMD=, return code (0 = OK), key=value lines) for one server command."""
        upper = command.upper()
        for prefix, apply in PEOPLE_COMMANDS:
            if upper.startswith(prefix):
                try:
                    return self._people(prefix, command[len(prefix):].strip(), apply)
                except Exception as e:  # a bad command must not stop the poll loop
                    log.warning("ADMS command %r failed: %s", prefix, e)
                    return prefix.split()[0], -1, {}
        for prefix, handler in COMMANDS:
            if upper.startswith(prefix):
                try:
                    return handler(self, command[len(prefix):].strip())
                except Exception as e:  # a bad command must not stop the poll loop
                    log.warning("ADMS command %r failed: %s", command[:80], e)
                    return prefix.split()[0], -1, {}
        log.info("ADMS command not supported: %r", command[:80])
        return command.split(" ", 1)[0] if command else "UNKNOWN", -1, {}

    def _info(self, _arg: str) -> tuple[str, int, dict]:
        return "INFO", 0, {"~DeviceName": self.cfg.device.name or "presensi-edge", "~SerialNumber": self.sn,
                           "FWVersion": "Ver 6.60 presensi-edge", "UserCount": len(self.view.users()),
                           "TransactionCount": self.view.head(), "PushVersion": self.cfg.adms.push_version}

    def _check(self, _arg: str) -> tuple[str, int, dict]:
        self.handshake()
        return "CHECK", 0, {}

    def _log(self, _arg: str) -> tuple[str, int, dict]:
        self.upload_pending()
        return "LOG", 0, {}

    def _people(self, command: str, arg: str, apply: Callable | None) -> tuple[str, int, dict]:
        """A command that changes people: applied only when the operator made this ADMS server the roster
        authority; else acknowledged and ignored, with an audit entry (PIN only: a template is biometric)."""
        verb = command.split(" ", 1)[0]
        if self.cfg.adms.roster_authority and apply is not None:
            self.view.log.audit(f"adms:{self.base}", "adms-roster-command", {"command": command})
            return apply(self, arg)
        fields = _kv(arg)
        pin = fields.get("PIN") or fields.get("Pin") or ""
        reason = "not supported" if self.cfg.adms.roster_authority else "[adms] roster_authority = false"
        self.view.log.audit(f"adms:{self.base}", "adms-roster-command-ignored",
                            {"command": command, "employee": pin[:64], "reason": reason})
        log.info("ADMS %s for PIN %r ignored (%s); the roster comes from the central server", command,
                 pin[:64], reason)
        return verb, 0, {}

    def _user_update(self, arg: str) -> tuple[str, int, dict]:
        fields = _kv(arg)
        pin = fields.get("PIN") or fields.get("Pin")
        if not pin:
            return "DATA", -1, {}
        self._apply_user({"id": pin, "name": fields.get("Name", "")}, fields)
        return "DATA", 0, {}

    def _user_delete(self, arg: str) -> tuple[str, int, dict]:
        pin = _kv(arg).get("PIN") or _kv(arg).get("Pin")
        if not pin:
            return "DATA", -1, {}
        self._apply_user({"id": pin, "delete": True}, {})
        return "DATA", 0, {}

    def _apply_user(self, update: dict, fields: dict) -> None:
        roster = self.view.roster_mod
        if roster is not None and hasattr(roster, "apply_user_update"):
            roster.apply_user_update(self.view.state_dir, update, actor="adms")
        elif update.get("delete"):
            self.view.store.delete_user(update["id"])
        else:
            self.view.store.upsert_user(update["id"], update.get("name", ""),
                                        int(fields.get("Pri", "0") or 0), fields.get("Card", ""))
        self.view.log.audit(f"adms:{self.base}", "adms-user-delete" if update.get("delete") else "adms-user-update",
                            {"employee": update["id"], "name": update.get("name")})

    def _query_attlog(self, arg: str) -> tuple[str, int, dict]:
        """Re-send punches whose local time lies in [StartTime, EndTime]; no Stamp (the cursor stays)."""
        fields = _kv(arg)
        start = dt.datetime.fromisoformat(fields["StartTime"].strip())
        end = dt.datetime.fromisoformat(fields["EndTime"].strip())
        count, head, chunk = 0, self.view.head(), []
        for p in self.view.punches(0, min(head, QUERY_SCAN_LIMIT), {}):
            chunk.append(p)
            if len(chunk) >= self.cfg.adms.batch_size or p.seq == head:
                count += self._send_range(self._lines(chunk), start, end)
                chunk = []
        if chunk:
            count += self._send_range(self._lines(chunk), start, end)
        return "DATA", 0, {"Count": count}

    def _send_range(self, lines: dict[int, str], start: dt.datetime, end: dt.datetime) -> int:
        chosen = [line for line in lines.values()
                  if start <= dt.datetime.fromisoformat(line.split("\t")[1]) <= end]
        if chosen:
            self._request("POST", "cdata", {"table": "ATTLOG"}, "\n".join(chosen) + "\n")
        return len(chosen)

    def _clear_log(self, _arg: str) -> tuple[str, int, dict]:
        # Marks what the server has (our high-water mark) as collected; the punch log is never emptied, and
        # punches not yet delivered stay queued.
        client = f"adms:{self.base}"
        self.view.store.mark_collected(f"{self.view.log.log_id}|{client}", self.hwm())
        self.view.log.audit(client, "adms-clear-log", {"collected_through_seq": self.hwm()})
        return "CLEAR", 0, {}

    def _set_option(self, arg: str) -> tuple[str, int, dict]:
        key, _, value = arg.partition("=")
        if key.strip() != "DateTime":
            return "SET", -1, {}
        value = value.strip()
        local = codec.decode_time(int(value)) if value.isdigit() else dt.datetime.fromisoformat(value)
        local = local.replace(tzinfo=self.tz).astimezone(self.view.tz).replace(tzinfo=None)
        # queued on the server, then polled: the value may be a poll interval old
        self.view.record_time_sample("adms-datetime", local, f"adms:{self.base}",
                                     uncertainty_s=self.delay + 2.0)
        return "SET", 0, {}

    def _reboot(self, _arg: str) -> tuple[str, int, dict]:
        self.view.log.audit(f"adms:{self.base}", "adms-reboot", {})
        self.reboot_requested = True
        return "REBOOT", 0, {}

    def _refuse(self, _arg: str) -> tuple[str, int, dict]:
        self.view.log.audit(f"adms:{self.base}", "adms-clear-data-refused", {})
        return "CLEAR", -1, {}


# Commands that change who may punch, and how they are applied with roster_authority (None: not supported,
# acknowledged and ignored either way). Checked before COMMANDS; longest prefixes first.
PEOPLE_COMMANDS: list[tuple[str, Callable | None]] = [
    ("DATA UPDATE USERINFO", AdmsClient._user_update), ("DATA DELETE USERINFO", AdmsClient._user_delete),
    ("DATA DEL_USER", AdmsClient._user_delete), ("DATA USER", AdmsClient._user_update),
    ("DATA UPDATE FINGERTMP", None), ("DATA DELETE FINGERTMP", None), ("DATA UPDATE BIODATA", None),
    ("DATA DELETE BIODATA", None), ("DATA UPDATE FACE", None), ("DATA DELETE FACE", None),
    ("DATA UPDATE USERPIC", None), ("DATA DELETE USERPIC", None), ("DATA FP", None), ("DATA DEL_FP", None),
    ("DATA DELETE", None), ("ENROLL_FP", None), ("ENROLL_BIO", None), ("CLEAR USERINFO", None),
]
COMMANDS: list[tuple[str, Callable]] = [  # longest prefixes first
    ("DATA QUERY ATTLOG", AdmsClient._query_attlog), ("CLEAR LOG", AdmsClient._clear_log),
    ("CLEAR DATA", AdmsClient._refuse), ("SET OPTION", AdmsClient._set_option), ("REBOOT", AdmsClient._reboot),
    ("INFO", AdmsClient._info), ("CHECK", AdmsClient._check), ("LOG", AdmsClient._log),
]


def _read_bounded(r: requests.Response, limit: int, url: str) -> bytes:
    """The body of a streamed reply, at most `limit` bytes: a longer one (declared or sent) is cut off and
    refused, so a hostile or broken server cannot make the daemon hold a 40 MB reply."""
    declared = r.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limit:
        raise AdmsError(f"{url}: reply of {int(declared)} bytes refused (limit [adms] max_reply_bytes = {limit})")
    body = bytearray()
    for chunk in r.iter_content(READ_CHUNK):
        body += chunk
        if len(body) > limit:
            raise AdmsError(f"{url}: reply longer than {limit} bytes cut off (limit [adms] max_reply_bytes)")
    return bytes(body)


def _kv(text: str) -> dict[str, str]:
    out = {}
    for part in text.split("\t"):
        key, sep, value = part.partition("=")
        if sep:
            out[key.strip()] = value
    return out


def _number(value: str | None, default: float) -> float:
    try:
        return max(float(value), 0.1) if value not in (None, "") else default
    except ValueError:
        return default


def _server_zone(value: str | None, default: dt.tzinfo) -> dt.tzinfo:
    """TimeZone= is hours (7, 5.5) or, on newer firmware, minutes (420); absent = our [device] timezone."""
    try:
        number = float(value) if value not in (None, "") else None
    except ValueError:
        number = None
    if number is None:
        return default
    minutes = number if abs(number) > 24 else number * 60
    return dt.timezone(dt.timedelta(minutes=minutes))


def run_adms(cfg, state_dir, stop_event: threading.Event, on_reboot: Callable[[], None] | None = None) -> None:
    """The push loop until stop_event is set. REBOOT from the server calls on_reboot (default: set
    stop_event, so the daemon exits and its supervisor starts it again)."""
    client = AdmsClient(cfg, Path(state_dir), on_reboot=on_reboot or stop_event.set)
    next_poll = 0.0
    last_upload = 0.0
    last_error = ""
    try:
        while not stop_event.is_set():
            try:
                if not client.handshaken:
                    client.handshake()
                now = time.monotonic()
                if last_error:
                    log.info("ADMS: %s reachable again", client.base)
                    last_error = ""
                if client.upload_due(now - last_upload):
                    client.upload_pending()
                    last_upload = now
                if now >= next_poll:
                    client.poll()
                    next_poll = time.monotonic() + client.delay
                stop_event.wait(min(1.0, client.delay))
            except AdmsError as e:
                # once per kind of failure at WARNING, repeats at DEBUG: a server down for a week must not
                # fill the journal
                (log.debug if str(e) == last_error else log.warning)(
                    "ADMS: %s; punches stay queued, retrying every %.0f s", e, client.error_delay)
                last_error = str(e)
                client.handshaken = False
                stop_event.wait(client.error_delay)
    finally:
        client.close()


def status_part(cfg) -> dict:
    """For `presensi status`: the ZKTeco compatibility settings and where ADMS delivery stands (no network)."""
    out = {"ok": True, "zk": {"enabled": cfg.zk.enabled, "listen": cfg.zk.listen, "comm_key": cfg.zk.comm_key != 0,
                              "serial_number": serial_number(cfg)},
           "adms": {"enabled": cfg.adms.enabled, "url": cfg.adms.url}}
    if cfg.adms.enabled:
        view = TerminalView(cfg, cfg.state_dir)
        try:
            hwm = int(view.store.get(f"{HWM_KEY}:{view.log.log_id}", "0"))
            out["adms"].update(delivered_through_seq=hwm, pending=max(view.head() - hwm, 0))
        finally:
            view.close()
    zk = f"ZK on {cfg.zk.listen}" if cfg.zk.enabled else "ZK off"
    adms = (f"ADMS to {cfg.adms.url}: {out['adms']['pending']} punch(es) pending" if cfg.adms.enabled
            else "ADMS off")
    out["summary"] = f"{zk}; {adms}"
    return out


def main(argv: list[str] | None = None) -> int:
    from terminal import config as config_mod

    parser = argparse.ArgumentParser(prog="python -m sync.device.adms", description="Push punches to an ADMS server")
    parser.add_argument("-c", "--config")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        cfg = config_mod.load(args.config)
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        print(f"pushing to {cfg.adms.url} as SN {serial_number(cfg)}", flush=True)
        run_adms(cfg, cfg.state_dir, stop)
    except Exception as e:
        print(f"presensi adms: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
