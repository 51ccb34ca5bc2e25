#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Checks a recorded chaos history against the final database.

Usage: check_history.py [--max-attempts N] HISTORY_DIR DBFILE

HISTORY_DIR holds one NAME.jsonl file per worker process (the file name
names the worker), the driver's driver.jsonl (kills, stops, continues) and
effects.log, the job bodies' side effects. Each worker line is a JSON
object with op, phase, key, pid, t (CLOCK_MONOTONIC ns) and, depending on
the op, attempt, fence, answer, rc, result_hash, lost. A call is an
"invoke" line followed by its "ok", "fail" or "unknown" line; an invoke
with no answer (the worker was killed inside the call) may or may not have
taken effect. A last line cut short by a SIGKILL is ignored.

Exit status: 0 when every invariant holds, 1 when one does not (the
offending key's history is printed), 2 on a usage or input error.
"""

import json
import os
import sqlite3
import sys

ELEASELOST = -4
STATE_NAMES = {1: "pending", 2: "completed", 3: "failed", 4: "poisoned"}


def fnv1a64(data):
    h = 14695981039346656037
    for b in data:
        h ^= b
        h = (h * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return "%016x" % h


class Call:
    """One operation of one worker: its invoke and, if it came, its end."""

    def __init__(self, worker, inv, end):
        first = inv or end
        self.worker = worker
        self.op = first["op"]
        self.key = first.get("key", "")
        self.pid = first.get("pid")
        self.invoke_t = first["t"]
        self.end_t = end["t"] if end else None
        # None: no answer, the call may or may not have happened.
        self.phase = end["phase"] if end else None
        src = end or inv
        self.answer = src.get("answer")
        self.rc = src.get("rc")
        self.attempt = src.get("attempt")
        self.fence = src.get("fence")
        self.lost = src.get("lost", 0)
        self.result_hash = src.get("result_hash") or first.get("result_hash")
        self.lines = [x["_src"] for x in (inv, end) if x]

    @property
    def t(self):
        return self.end_t if self.end_t is not None else self.invoke_t


# idem.h: the history keeps at least the last 4 attempts.
HISTORY_LEAST = 4


def parse_history(text):
    """The attempts of a row's history text (lib/history.h: one line per
    event), oldest first, as dicts."""
    attempts = []

    def of_fence(fence):
        for a in reversed(attempts):
            if a["fence"] == fence:
                return a
        return {}

    for line in (text or "").split("\n"):
        f = line.split(" ")
        if f[0] == "c" and len(f) >= 6:
            attempts.append({"fence": int(f[1]), "attempt": int(f[2]), "owner": f[3],
                             "pid": int(f[4]), "started": int(f[5])})
        elif f[0] == "e" and len(f) >= 6:
            of_fence(int(f[1])).update(outcome=f[2], ended=int(f[3]), code=int(f[4]))
        elif f[0] == "l" and len(f) == 2:
            of_fence(int(f[1])).update(outcome="lost")
    return attempts


def read_jsonl(path):
    """The objects of a JSON-lines file; a torn last line is dropped."""
    with open(path, "rb") as f:
        data = f.read().decode("utf-8", "replace")
    lines = data.split("\n")
    out = []
    for i, text in enumerate(lines):
        if text == "":
            continue
        try:
            obj = json.loads(text)
        except ValueError:
            if i == len(lines) - 1:
                continue  # cut short by a kill: the last line has no newline
            raise ValueError("%s:%d: not JSON: %r" % (path, i + 1, text))
        obj["_src"] = "%s:%d: %s" % (os.path.basename(path), i + 1, text)
        out.append(obj)
    return out


def pair_calls(worker, events):
    """Pairs each invoke with the answer that follows it in the worker's
    own order. Lines the heartbeat thread wrote (with "by") and exec lines
    stand alone."""
    calls = []
    pending = None
    for ev in events:
        if ev["op"] == "exec" or "by" in ev:
            calls.append(Call(worker, None, ev))
        elif ev["phase"] == "invoke":
            if pending is not None:
                calls.append(Call(worker, pending, None))
            pending = ev
        else:
            if pending is not None and pending["op"] == ev["op"]:
                calls.append(Call(worker, pending, ev))
            else:
                calls.append(Call(worker, None, ev))
            pending = None
    if pending is not None:
        calls.append(Call(worker, pending, None))
    return calls


class Checker:
    def __init__(self, hist_dir, db_path, max_attempts):
        self.max_attempts = max_attempts
        self.failures = {}  # key -> [messages]
        self.reruns = {}  # reason -> count, for the summary
        self.calls = []
        self.signals = []  # driver lines: kill, stop, cont
        self.effects = []
        for name in sorted(os.listdir(hist_dir)):
            path = os.path.join(hist_dir, name)
            if name == "driver.jsonl":
                self.signals = read_jsonl(path)
            elif name.endswith(".jsonl"):
                self.calls += pair_calls(name[: -len(".jsonl")], read_jsonl(path))
            elif name == "effects.log":
                self.effects = self.read_effects(path)
        self.killed = {s["w"] for s in self.signals if s["op"] == "kill"}
        self.stopped = {s["w"] for s in self.signals if s["op"] == "stop"}
        self.db_path = db_path
        self.rows = self.read_db(db_path)

    @staticmethod
    def read_effects(path):
        with open(path, "rb") as f:
            data = f.read().decode("utf-8", "replace")
        out = []
        lines = data.split("\n")
        for i, text in enumerate(lines):
            parts = text.split()
            if len(parts) != 3:
                if text and i < len(lines) - 1:
                    raise ValueError("effects.log:%d: malformed: %r" % (i + 1, text))
                continue
            out.append((parts[0], int(parts[1]), int(parts[2]), i + 1))
        return out

    def read_db(self, path):
        conn = sqlite3.connect(path)
        try:
            self.integrity = [r[0] for r in conn.execute("PRAGMA integrity_check")]
            rows = {}
            for key, state, attempts, fence, result, history in conn.execute(
                "SELECT key, state, attempts, fence, result, history FROM idem_keys"
            ):
                if isinstance(key, bytes):
                    key = key.decode("utf-8", "replace")
                if isinstance(result, str):
                    result = result.encode()
                rows[key] = {
                    "state": state,
                    "attempts": attempts,
                    "fence": fence,
                    "hash": fnv1a64(result) if result is not None else None,
                    "history": parse_history(history),
                }
            return rows
        finally:
            conn.close()

    def fail(self, key, msg):
        self.failures.setdefault(key, []).append(msg)

    # --- the invariants ---------------------------------------------------

    def check(self):
        if self.integrity != ["ok"]:
            self.fail("", "PRAGMA integrity_check: %s" % "; ".join(self.integrity))
        by_key = {}
        for c in self.calls:
            if c.key:
                by_key.setdefault(c.key, []).append(c)
        for key in sorted(set(by_key) | set(self.rows)):
            self.check_key(key, sorted(by_key.get(key, []), key=lambda c: c.t))
        self.check_effects(by_key)
        return not self.failures

    def check_key(self, key, calls):
        row = self.rows.get(key)
        resets = sorted(c.end_t for c in calls if c.op == "reset" and c.phase == "ok")

        def epoch(t):
            return sum(1 for r in resets if r < t)

        claims = [c for c in calls if c.op == "begin" and c.answer == "claimed"]
        execs = [c for c in calls if c.op == "exec"]
        claim_of = {}
        for c in claims:
            if c.fence in claim_of:
                self.fail(key, "fence %d granted twice" % c.fence)
            claim_of[c.fence] = c
            if not 1 <= c.attempt <= self.max_attempts:
                self.fail(key, "claim of attempt %d, max_attempts is %d"
                          % (c.attempt, self.max_attempts))

        # Fences and attempts grow in the order claims were granted: a
        # claim answered before another was asked for came first.
        for a in claims:
            for b in claims:
                if a.end_t < b.invoke_t:
                    if a.fence >= b.fence:
                        self.fail(key, "fence %d (%s) granted before fence %d (%s)"
                                  % (a.fence, a.worker, b.fence, b.worker))
                    if epoch(a.invoke_t) == epoch(b.invoke_t) and a.attempt >= b.attempt:
                        self.fail(key, "attempt %d granted before attempt %d"
                                  % (a.attempt, b.attempt))

        # A poisoned key runs no more until it is reset.
        for p in calls:
            if p.op == "begin" and p.answer == "poisoned":
                for c in claims + execs:
                    if c.invoke_t > p.end_t and epoch(c.invoke_t) == epoch(p.end_t):
                        self.fail(key, "%s of fence %d after the key was poisoned"
                                  % (c.op, c.fence))

        # Every job body ran under a claim of its own worker, once.
        ran = {}
        for e in execs:
            c = claim_of.get(e.fence)
            if c is None or c.worker != e.worker:
                self.fail(key, "exec of fence %d by %s without its claim"
                          % (e.fence, e.worker))
            if e.fence in ran:
                self.fail(key, "fence %d executed twice" % e.fence)
            ran[e.fence] = e

        # Every run after the first is explained by what befell the holder
        # before it.
        order = sorted(execs, key=lambda e: e.fence)
        for prev, nxt in zip(order, order[1:]):
            why = self.explain(key, calls, prev, nxt, resets)
            self.reruns[why] = self.reruns.get(why, 0) + 1
            if why is None:
                self.fail(key, "fence %d ran again after fence %d (%s) with no "
                          "crash, pause, lost lease or release to explain it"
                          % (nxt.fence, prev.fence, prev.worker))

        self.check_completions(key, calls, row, epoch, len(resets))
        if row is not None:
            self.check_row(key, calls, row, claim_of, epoch, len(resets))

    def explain(self, key, calls, prev, nxt, resets):
        """Why the job ran again after `prev`, or None."""
        mine = [c for c in calls if c.worker == prev.worker and c.fence == prev.fence
                and c.op in ("complete", "release", "fail", "heartbeat")]
        if any(c.op == "complete" and c.phase == "ok" for c in mine):
            self.fail(key, "fence %d ran after fence %d had completed"
                      % (nxt.fence, prev.fence))
            return None
        if any(c.rc == ELEASELOST or c.lost for c in mine):
            return "lost"
        if any(c.op == "release" for c in mine):
            return "released"
        failed = [c for c in mine if c.op == "fail" and c.phase == "ok"]
        if failed and any(failed[0].end_t < r < nxt.t for r in resets):
            return "failed, then reset"
        if prev.worker in self.killed:
            return "crashed"
        if prev.worker in self.stopped:
            return "paused"
        return None

    def check_completions(self, key, calls, row, epoch, last_epoch):
        completes = [c for c in calls if c.op == "complete"]
        done = {}
        for c in completes:
            if c.phase == "ok":
                e = epoch(c.invoke_t)
                if e in done:
                    self.fail(key, "completed twice: fences %d and %d"
                              % (done[e].fence, c.fence))
                else:
                    done[e] = c
        # What the database holds must be what an accepted completion
        # stored, or what one that got no clear answer tried to store.
        final = done.get(last_epoch)
        if row is not None and row["state"] == 2:
            if final is not None:
                if (row["hash"], row["fence"]) != (final.result_hash, final.fence):
                    self.fail(key, "stored result %s (fence %d), but the accepted "
                              "completion was %s (fence %d)"
                              % (row["hash"], row["fence"], final.result_hash,
                                 final.fence))
            elif not any(c.phase in (None, "unknown") and c.fence == row["fence"]
                         and c.result_hash == row["hash"] for c in completes):
                self.fail(key, "stored result %s (fence %d) that no completion "
                          "wrote" % (row["hash"], row["fence"]))
        # A stored result never changes: every cached answer of the final
        # epoch is the stored result, and none came before its completion.
        for c in calls:
            if c.op == "begin" and c.answer == "completed" and epoch(c.invoke_t) == last_epoch:
                if row is None or c.result_hash != row["hash"]:
                    self.fail(key, "%s was answered result %s, the stored one is %s"
                              % (c.worker, c.result_hash, row and row["hash"]))
                if final is not None and c.end_t < final.invoke_t:
                    self.fail(key, "%s was answered completed before the "
                              "completion was asked for" % c.worker)

    def check_row(self, key, calls, row, claim_of, epoch, last_epoch):
        if row["state"] != 2:
            self.fail(key, "left %s after the settle pass"
                      % STATE_NAMES.get(row["state"], row["state"]))
        if row["attempts"] > self.max_attempts:
            self.fail(key, "%d attempts, max_attempts is %d"
                      % (row["attempts"], self.max_attempts))
        hist = row["history"]
        total = row["attempts"] + (1 if row["state"] == 4 else 0)
        if len(hist) < min(HISTORY_LEAST, total):
            self.fail(key, "history keeps %d of %d attempts" % (len(hist), total))
        if hist and hist[-1].get("attempt") != total:
            self.fail(key, "history ends at attempt %s, the row has %d"
                      % (hist[-1].get("attempt"), total))
        last_fence = 0
        last_attempt = hist[0].get("attempt", 1) - 1 if hist else 0
        for h in hist:
            outcome, attempt, fence = h.get("outcome"), h.get("attempt"), h.get("fence")
            if attempt != last_attempt + 1:
                self.fail(key, "history: attempt %s follows %d" % (attempt, last_attempt))
            last_attempt = attempt
            if outcome == "poisoned":
                if attempt != self.max_attempts + 1:
                    self.fail(key, "history: poisoned at attempt %d" % attempt)
                continue
            if attempt > self.max_attempts:
                self.fail(key, "history: attempt %d ran" % attempt)
            if fence <= last_fence:
                self.fail(key, "history: fence %d after %d" % (fence, last_fence))
            last_fence = fence
            claim = claim_of.get(fence)
            if claim is None:
                continue  # killed between the claim's commit and its record
            if (claim.pid, claim.attempt) != (h.get("pid"), attempt):
                self.fail(key, "history: fence %d is attempt %s of pid %s, the "
                          "claim said attempt %s of pid %s"
                          % (fence, attempt, h.get("pid"), claim.attempt, claim.pid))
            self.check_outcome(key, calls, claim, outcome)
        # Every claim since the last reset is in the row's history, but for
        # the oldest attempts, which a long history drops.
        in_history = {h.get("fence") for h in hist}
        dropped_below = 0
        if hist and hist[0].get("attempt", 1) > 1:
            dropped_below = min(in_history - {0}, default=0)
        for fence, c in claim_of.items():
            if epoch(c.invoke_t) == last_epoch and fence not in in_history \
                    and fence >= dropped_below:
                self.fail(key, "claim of fence %d is missing from the history" % fence)

    def check_outcome(self, key, calls, claim, outcome):
        """The row's account of an attempt agrees with what its holder was
        told."""
        mine = [c for c in calls if c.worker == claim.worker and c.fence == claim.fence
                and c.op in ("complete", "release", "fail", "heartbeat")]
        expect = None
        for c in mine:
            if c.phase == "ok" and c.op in ("complete", "release", "fail"):
                expect = {"complete": "completed", "release": "released",
                          "fail": "failed"}[c.op]
                break
            if c.lost and c.op == "heartbeat":
                # Found by a heartbeat: the fenced calls after it do not
                # write, and the row says the lease expired.
                expect = ("lost", "expired")
                break
            if c.rc == ELEASELOST:
                expect = "lost"
                break
        if expect is None:
            return  # killed, or no clear answer: any ending is possible
        if outcome not in (expect if isinstance(expect, tuple) else (expect,)):
            self.fail(key, "history: attempt %d of fence %d ended %s, its holder "
                      "was told %s" % (claim.attempt, claim.fence, outcome, expect))

    def check_effects(self, by_key):
        seen = set()
        for key, fence, pid, lineno in self.effects:
            execs = [c for c in by_key.get(key, []) if c.op == "exec"
                     and c.fence == fence and c.pid == pid]
            if not execs:
                self.fail(key, "effects.log:%d: side effect of fence %d by pid %d "
                          "with no exec recorded" % (lineno, fence, pid))
            if (key, fence) in seen:
                self.fail(key, "effects.log:%d: fence %d took effect twice"
                          % (lineno, fence))
            seen.add((key, fence))

    # --- the report -------------------------------------------------------

    def report(self):
        for key, msgs in sorted(self.failures.items()):
            print("FAIL %s" % (key or "(database)"))
            for m in msgs:
                print("  " + m)
            if not key:
                continue
            calls = sorted((c for c in self.calls if c.key == key), key=lambda c: c.t)
            workers = {c.worker for c in calls}
            lines = [(c.t, l) for c in calls for l in c.lines]
            lines += [(s["t"], s["_src"]) for s in self.signals if s["w"] in workers]
            print("  history of %s:" % key)
            for _, line in sorted(lines):
                print("    " + line)
            row = self.rows.get(key)
            if row is not None:
                print("  database row: state %s attempts %d fence %d result %s"
                      % (STATE_NAMES.get(row["state"]), row["attempts"], row["fence"],
                         row["hash"]))
                for h in row["history"]:
                    print("    " + json.dumps(h, sort_keys=True))


def main(argv):
    max_attempts = 4
    args = argv[1:]
    if len(args) >= 2 and args[0] == "--max-attempts":
        max_attempts = int(args[1])
        args = args[2:]
    if len(args) != 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    try:
        checker = Checker(args[0], args[1], max_attempts)
    except (OSError, ValueError, sqlite3.Error) as e:
        print("check_history: %s" % e, file=sys.stderr)
        return 2
    ok = checker.check()
    ncalls = len(checker.calls)
    if not ok:
        checker.report()
        print("check_history: %d keys violate the invariants (%d calls read)"
              % (len(checker.failures), ncalls))
        return 1
    claims = sum(1 for c in checker.calls if c.op == "begin" and c.answer == "claimed")
    poisoned = len({c.key for c in checker.calls if c.answer == "poisoned"})
    reruns = ", ".join("%s %d" % kv for kv in sorted(checker.reruns.items()))
    print("check_history: %d calls, %d keys, %d claims, %d keys poisoned, "
          "runs again after: %s; all invariants hold"
          % (ncalls, len(checker.rows), claims, poisoned, reruns or "none"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
