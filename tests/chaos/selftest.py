#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Feeds check_history.py doctored histories and expects it to refuse
them, so that a passing chaos run means something.

Usage: selftest.py PYTHON CHECKER
"""

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check_history import fnv1a64  # noqa: E402

KEY = "key-00"


def result(fence, pid):
    return "%s fence %d attempt %d pid %d" % (KEY, fence, fence, pid)


def good_history():
    """Worker A claims, runs and is killed; worker B takes over and
    completes; worker C reads the result. Returns (files, row)."""
    ra, rb = result(1, 100), result(2, 200)
    ha, hb = fnv1a64(ra.encode()), fnv1a64(rb.encode())
    a = [
        {"op": "begin", "phase": "invoke", "t": 10},
        {"op": "begin", "phase": "ok", "answer": "claimed", "attempt": 1, "fence": 1, "t": 11},
        {"op": "exec", "phase": "ok", "attempt": 1, "fence": 1, "t": 12},
        {"op": "complete", "phase": "invoke", "attempt": 1, "fence": 1,
         "result_hash": ha, "t": 13},
    ]
    b = [
        {"op": "begin", "phase": "invoke", "t": 20},
        {"op": "begin", "phase": "ok", "answer": "claimed", "attempt": 2, "fence": 2, "t": 21},
        {"op": "exec", "phase": "ok", "attempt": 2, "fence": 2, "t": 22},
        {"op": "complete", "phase": "invoke", "attempt": 2, "fence": 2,
         "result_hash": hb, "t": 23},
        {"op": "complete", "phase": "ok", "attempt": 2, "fence": 2, "rc": 0,
         "result_hash": hb, "t": 24},
    ]
    c = [
        {"op": "begin", "phase": "invoke", "t": 30},
        {"op": "begin", "phase": "ok", "answer": "completed", "attempt": 2, "fence": 2,
         "result_hash": hb, "t": 31},
    ]
    for ev, pid in [(e, 100) for e in a] + [(e, 200) for e in b] + [(e, 300) for e in c]:
        ev.update(key=KEY, pid=pid)
    files = {
        "wa.jsonl": a,
        "wb.jsonl": b,
        "wc.jsonl": c,
        "driver.jsonl": [{"op": "kill", "phase": "ok", "w": "wa", "pid": 100, "t": 15}],
    }
    history = [
        {"attempt": 1, "fence": 1, "pid": 100, "outcome": "expired"},
        {"attempt": 2, "fence": 2, "pid": 200, "outcome": "completed"},
    ]
    row = {"state": 2, "attempts": 2, "fence": 2, "result": rb, "history": history}
    return files, row


def history_text(entries):
    """The row's history as the library writes it (lib/history.h)."""
    lines = []
    for h in entries:
        fence, outcome = h["fence"], h.get("outcome")
        lines.append("c %d %d - %d 0" % (fence, h["attempt"], h.get("pid", 0)))
        if outcome == "lost":
            lines += ["e %d expired 0 0 -" % fence, "l %d" % fence]
        elif outcome:
            lines.append("e %d %s 0 0 -" % (fence, outcome))
    return "".join(line + "\n" for line in lines)


def write_case(files, row, torn=""):
    d = tempfile.mkdtemp(prefix="idem-chaos-selftest-")
    hist = os.path.join(d, "history")
    os.mkdir(hist)
    for name, events in files.items():
        with open(os.path.join(hist, name), "w") as f:
            for ev in events:
                f.write(json.dumps(ev) + "\n")
    if torn:
        with open(os.path.join(hist, "wc.jsonl"), "a") as f:
            f.write(torn)
    db = os.path.join(d, "idem.db")
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE idem_keys (key BLOB PRIMARY KEY, state INTEGER, "
                 "attempts INTEGER, fence INTEGER, result BLOB, history TEXT)")
    conn.execute("INSERT INTO idem_keys VALUES (?, ?, ?, ?, ?, ?)",
                 (KEY.encode(), row["state"], row["attempts"], row["fence"],
                  row["result"].encode(), history_text(row["history"])))
    conn.commit()
    conn.close()
    return d, hist, db


def doctor_two_completes(files, row):
    a = files["wa.jsonl"]
    a.append({"op": "complete", "phase": "ok", "key": KEY, "pid": 100, "attempt": 1,
              "fence": 1, "rc": 0, "result_hash": a[-1]["result_hash"], "t": 14})


def doctor_fence_backwards(files, row):
    files["wb.jsonl"][1]["fence"] = 1
    files["wb.jsonl"][2]["fence"] = 1


def doctor_unexplained_rerun(files, row):
    files["driver.jsonl"] = []


def doctor_result_changed(files, row):
    files["wc.jsonl"][1]["result_hash"] = "0123456789abcdef"


def doctor_stuck(files, row):
    row["state"] = 1


def doctor_poisoned_runs(files, row):
    files["wc.jsonl"] = [
        {"op": "begin", "phase": "invoke", "key": KEY, "pid": 300, "t": 16},
        {"op": "begin", "phase": "ok", "answer": "poisoned", "key": KEY, "pid": 300,
         "t": 17},
    ]


def doctor_too_many_attempts(files, row):
    for ev in files["wb.jsonl"][1:]:
        ev["attempt"] = 5
    row["history"][1]["attempt"] = 5
    row["history"].insert(1, {"attempt": 2, "fence": 0, "outcome": "released"})


def doctor_claim_dropped(files, row):
    del row["history"][0]


def doctor_history_short(files, row):
    row["history"].pop()


def doctor_stored_by_nobody(files, row):
    row["result"] = "forged"


CASES = [
    ("a valid history", None, 0, ""),
    ("a torn last line", None, 0, '{"op":"begin","pha'),
    ("two ok completions", doctor_two_completes, 1, ""),
    ("fences not increasing", doctor_fence_backwards, 1, ""),
    ("a second run without a crash", doctor_unexplained_rerun, 1, ""),
    ("a cached result that changed", doctor_result_changed, 1, ""),
    ("a key left pending", doctor_stuck, 1, ""),
    ("a run after poisoning", doctor_poisoned_runs, 1, ""),
    ("attempts over the limit", doctor_too_many_attempts, 1, ""),
    ("a stored result nobody wrote", doctor_stored_by_nobody, 1, ""),
    ("a claim missing from the history", doctor_claim_dropped, 1, ""),
    ("a history without its last attempt", doctor_history_short, 1, ""),
]


def main(argv):
    if len(argv) != 3:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    python, checker = argv[1], argv[2]
    bad = 0
    for name, doctor, want, torn in CASES:
        files, row = good_history()
        if doctor:
            doctor(files, row)
        d, hist, db = write_case(files, row, torn)
        p = subprocess.run([python, checker, hist, db], capture_output=True, text=True)
        verdict = "ok" if p.returncode == want else "WRONG"
        print("%-32s exit %d, expected %d: %s" % (name, p.returncode, want, verdict))
        if p.returncode != want:
            print(p.stdout + p.stderr)
            bad += 1
        else:
            shutil.rmtree(d)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
