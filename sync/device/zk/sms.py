"""ZKTeco short messages (CMD_SMS_WRQ / CMD_DELETE_SMS, and CMD_UDATA_WRQ / CMD_DELETE_UDATA that give a
personal message to a user) feeding the terminal's message store (terminal/punch/notices.py): the kiosk
shows them after the employee's punch, like the central server's messages.

A message shows on every employee's screen, so it is taken only from a client that proved the comm key
([zk] comm_key not 0): with key 0 anyone on the office LAN could write to the screens. Every accepted or
refused write is audited. A public message (tag 254) is for everyone; a personal one (tag 253) for the
users UDATA names. Valid from its start time for its valid minutes (0: until deleted).
"""

from __future__ import annotations

import datetime as dt
import struct

from sync.device.zk import codec as c
from terminal.punch import notices

SOURCE = "zk"
FOREVER = "9999-12-31 23:59:59"
_UDATA = struct.Struct("<HH")  # uid, sms id


class SmsRefused(Exception):
    """The write is not taken; the message says why (for the audit entry)."""


def _check_keyed(comm_key: int) -> None:
    if comm_key == 0:
        raise SmsRefused("short messages need a comm key ([zk] comm_key): with key 0 any client on the LAN "
                         "could write to the kiosk")


def write(view, comm_key: int, actor: str, payload: bytes) -> dict:
    _check_keyed(comm_key)
    tag, sms_id, minutes, start, text = c.decode_sms(payload)
    until = (start + dt.timedelta(minutes=minutes)).strftime("%Y-%m-%d %H:%M:%S") if minutes else FOREVER
    audience = "all" if tag == c.SMS_PUBLIC else "listed"
    notices.put_message(view.log.conn, SOURCE, sms_id, audience, text, start.strftime("%Y-%m-%d %H:%M:%S"), until)
    details = {"sms_id": sms_id, "audience": audience, "valid_from": start.isoformat(), "valid_until": until,
               "chars": len(text)}
    view.log.audit(actor, "zk-sms-set", details)
    return details


def delete(view, comm_key: int, actor: str, payload: bytes) -> None:
    _check_keyed(comm_key)
    (sms_id,) = struct.unpack_from("<H", payload)
    notices.delete_message(view.log.conn, SOURCE, sms_id)
    view.log.audit(actor, "zk-sms-delete", {"sms_id": sms_id})


def assign(view, comm_key: int, actor: str, payload: bytes, *, remove: bool = False) -> None:
    """UDATA: message `sms id` is for user `uid` (remove=True: no longer)."""
    _check_keyed(comm_key)
    uid, sms_id = _UDATA.unpack_from(payload)
    employee = next((u.user_id for u in view.users() if u.uid == uid), None)
    if employee is None:
        raise SmsRefused(f"no user with uid {uid}")
    if sms_id not in notices.message_ids(view.log.conn, SOURCE):
        raise SmsRefused(f"no short message {sms_id}; send CMD_SMS_WRQ first")
    if remove:
        view.log.conn.execute("DELETE FROM local_message_recipients WHERE source=? AND ext_id=? AND employee=?",
                              (SOURCE, sms_id, employee))
    else:
        notices.add_recipient(view.log.conn, SOURCE, sms_id, employee)
    view.log.audit(actor, "zk-sms-user-remove" if remove else "zk-sms-user", {"sms_id": sms_id, "uid": uid,
                                                                               "employee": employee})
