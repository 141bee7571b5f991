"""What the central server tells employees through the terminals: messages (per employee or all staff, with a
validity period in office-local dates) and cancelled apel pagi. Both travel in the next signed roster
bundle (sync/wire/rosterbundle.py), so a terminal shows only what this server signed.

Every change is followed by the caller publishing the next roster version (sync/server/republish.py).
Expired messages stay in the table (the record of what was said) but are no longer sent.
"""

from __future__ import annotations

import datetime as dt
import time

MAX_TEXT = 300


class NoticeError(ValueError):
    """The message or cancellation cannot be stored; the message says what to fix."""


def _date(what: str, text: str) -> str:
    try:
        return dt.date.fromisoformat(text).isoformat()
    except (TypeError, ValueError):
        raise NoticeError(f"{what} {text!r} is not a date; write YYYY-MM-DD") from None


def _text(text: str) -> str:
    text = " ".join(str(text or "").split())
    if not text or len(text) > MAX_TEXT:
        raise NoticeError(f"the text must be 1 to {MAX_TEXT} characters (one line)")
    return text


def add_message(store, text: str, valid_from: str, valid_until: str, employee: str | None = None) -> int:
    start, end = _date("--from", valid_from), _date("--until", valid_until)
    if end < start:
        raise NoticeError(f"--until {end} is before --from {start}")
    with store.transaction() as cur:
        store.execute(cur, "INSERT INTO staff_messages (employee, text, valid_from, valid_until, created_ns) "
                      "VALUES (?, ?, ?, ?, ?)", (employee, _text(text), start, end, time.time_ns()))
        return store.rows(cur, "SELECT max(id) FROM staff_messages")[0][0]


def messages(store) -> list[dict]:
    return store.query("SELECT id, employee, text, valid_from, valid_until FROM staff_messages ORDER BY id")


def remove_message(store, message_id: int) -> None:
    with store.transaction() as cur:
        if not store.rows(cur, "SELECT 1 FROM staff_messages WHERE id=?", (message_id,)):
            raise NoticeError(f"no message with id {message_id}; see `presensi server messages list`")
        store.execute(cur, "DELETE FROM staff_messages WHERE id=?", (message_id,))


def cancel_apel(store, date: str, reason: str = "") -> None:
    date = _date("date", date)
    with store.transaction() as cur:
        store.execute(cur, "DELETE FROM apel_cancellations WHERE date=?", (date,))
        store.execute(cur, "INSERT INTO apel_cancellations VALUES (?, ?, ?)",
                      (date, " ".join(str(reason or "").split())[:MAX_TEXT], time.time_ns()))


def restore_apel(store, date: str) -> None:
    date = _date("date", date)
    with store.transaction() as cur:
        store.execute(cur, "DELETE FROM apel_cancellations WHERE date=?", (date,))


def apel_cancellations(store) -> list[dict]:
    return store.query("SELECT date, reason FROM apel_cancellations ORDER BY date")


def for_bundle(store, employee_ids: set[str], today: dt.date | None = None) -> tuple[list[dict], list[dict]]:
    """(messages, apel_cancelled) for the next bundle: messages not yet expired (a day of slack for the
    timezones east of the server) for everyone or for an employee on the roster; cancellations from
    yesterday on."""
    today = today or dt.datetime.now(dt.UTC).date()
    since = (today - dt.timedelta(days=1)).isoformat()
    msgs = [m for m in messages(store) if m["valid_until"] >= since
            and (m["employee"] is None or m["employee"] in employee_ids)]
    apel = [a for a in apel_cancellations(store) if a["date"] >= since]
    return msgs, apel
