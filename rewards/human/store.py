"""The label store: one sqlite file (WAL) with pairs, annotators (token hashes only) and labels.

Tables:
  pairs(id, prompt, response_a, response_b)            the pairs to label, in make-pairs order
  annotators(name, token_hash, created)                 sha256 of each annotator's token, never the token
  assignments(annotator, pair_id, left)                 the pair an annotator is shown now and which
                                                        response ("A" or "B") is on the left
  labels(pair_id, annotator, choice, left, reason, created)
                                                        choice in A/B terms of the pair: A, B, tie, skip;
                                                        left: which response was shown on the left
  meta(key, value)                                      k: labels wanted per pair
Every write commits before it returns, so a crash loses nothing that was acknowledged.
"""
from __future__ import annotations

import contextlib
import hashlib
import random
import secrets
import sqlite3
import threading
import time
from pathlib import Path

CHOICES = ("A", "B", "tie", "skip")
DECISIVE = ("A", "B", "tie")  # skips never count towards k

SCHEMA = """
CREATE TABLE IF NOT EXISTS pairs (id TEXT PRIMARY KEY, prompt TEXT NOT NULL,
    response_a TEXT NOT NULL, response_b TEXT NOT NULL, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS annotators (name TEXT PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE, created REAL);
CREATE TABLE IF NOT EXISTS assignments (annotator TEXT PRIMARY KEY, pair_id TEXT NOT NULL,
    left TEXT NOT NULL CHECK (left IN ('A','B')));
CREATE TABLE IF NOT EXISTS labels (pair_id TEXT NOT NULL REFERENCES pairs(id), annotator TEXT NOT NULL,
    choice TEXT NOT NULL CHECK (choice IN ('A','B','tie','skip')), left TEXT NOT NULL CHECK (left IN ('A','B')),
    reason TEXT NOT NULL DEFAULT '', created REAL NOT NULL, PRIMARY KEY (pair_id, annotator));
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
MAX_REASON = 500


class LabelStoreError(ValueError):
    """Bad input to the store; the message says what to change."""


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class LabelStore:
    """Thread-safe (one connection behind a lock): the web app calls it from worker threads."""

    def __init__(self, path: str | Path, k: int | None = None):
        self.path = Path(path)
        self._lock = threading.Lock()
        self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")  # a committed label survives a power cut too
        self.db.executescript(SCHEMA)
        if k is not None:
            if k < 1:
                raise LabelStoreError(f"k must be at least 1, got {k}")
            self._write("INSERT OR REPLACE INTO meta VALUES ('k', ?)", (str(k),))

    @contextlib.contextmanager
    def _tx(self):
        """One locked transaction, committed before it returns (rolled back on an error)."""
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    def _write(self, sql: str, args: tuple = ()) -> sqlite3.Cursor:
        with self._tx() as db:
            return db.execute(sql, args)

    def _read(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self.db.execute(sql, args).fetchall()

    @property
    def k(self) -> int:
        row = self._read("SELECT value FROM meta WHERE key = 'k'")
        return int(row[0][0]) if row else 1

    def add_pairs(self, rows: list[dict]) -> int:
        """Insert {id, prompt, response_a, response_b} rows; an id already present is left alone."""
        start = self._read("SELECT COALESCE(MAX(seq), -1) + 1 FROM pairs")[0][0]
        with self._tx() as db:
            cur = db.executemany(
                "INSERT OR IGNORE INTO pairs VALUES (?, ?, ?, ?, ?)",
                [(str(r["id"]), r["prompt"], r["response_a"], r["response_b"], start + i) for i, r in enumerate(rows)])
        return cur.rowcount

    def add_annotator(self, name: str) -> str:
        """A new annotator's token (shown once; only its hash is kept)."""
        name = name.strip()
        if not name or len(name) > 64:
            raise LabelStoreError("annotator name must be 1-64 characters")
        token = secrets.token_urlsafe(24)
        try:
            self._write("INSERT INTO annotators VALUES (?, ?, ?)", (name, token_hash(token), time.time()))
        except sqlite3.IntegrityError:
            raise LabelStoreError(f"annotator {name!r} already exists; pick another name") from None
        return token

    def annotator(self, token: str | None) -> str | None:
        """The annotator a token belongs to, or None."""
        if not token:
            return None
        row = self._read("SELECT name FROM annotators WHERE token_hash = ?", (token_hash(token),))
        return row[0][0] if row else None

    def next_pair(self, annotator: str, rng: random.Random | None = None) -> dict | None:
        """The pair to show: the open assignment, else the first pair this annotator has not labelled
        that has fewer than k decisive labels (left/right drawn at random and recorded)."""
        row = self._read("SELECT p.id, p.prompt, p.response_a, p.response_b, a.left FROM assignments a "
                         "JOIN pairs p ON p.id = a.pair_id WHERE a.annotator = ?", (annotator,))
        if not row:
            cand = self._read(
                "SELECT p.id, p.prompt, p.response_a, p.response_b FROM pairs p "
                "WHERE p.id NOT IN (SELECT pair_id FROM labels WHERE annotator = ?) "
                "AND (SELECT COUNT(*) FROM labels l WHERE l.pair_id = p.id AND l.choice != 'skip') < ? "
                "ORDER BY p.seq LIMIT 1", (annotator, self.k))
            if not cand:
                return None
            left = (rng or random).choice("AB")
            self._write("INSERT OR REPLACE INTO assignments VALUES (?, ?, ?)", (annotator, cand[0][0], left))
            row = [(*cand[0], left)]
        pid, prompt, a, b, left = row[0]
        return {"id": pid, "prompt": prompt, "left": left,
                "left_text": a if left == "A" else b, "right_text": b if left == "A" else a}

    def record(self, annotator: str, pair_id: str, side: str, reason: str = "") -> str:
        """Record the answer to the assigned pair; side is left, right, tie or skip. Returns the choice
        in A/B terms. Raises LabelStoreError for a pair that is not this annotator's assignment."""
        if side not in ("left", "right", "tie", "skip"):
            raise LabelStoreError(f"choice must be left, right, tie or skip, got {side!r}")
        reason = (reason or "")[:MAX_REASON]
        with self._tx() as db:
            row = db.execute("SELECT left FROM assignments WHERE annotator = ? AND pair_id = ?",
                                  (annotator, str(pair_id))).fetchone()
            if row is None:
                raise LabelStoreError(f"pair {pair_id!r} is not the pair assigned to you; fetch the next pair")
            left = row[0]
            choice = {"left": left, "right": "B" if left == "A" else "A"}.get(side, side)
            db.execute("INSERT INTO labels VALUES (?, ?, ?, ?, ?, ?)",
                            (str(pair_id), annotator, choice, left, reason, time.time()))
            db.execute("DELETE FROM assignments WHERE annotator = ?", (annotator,))
        return choice

    def progress(self, annotator: str) -> dict:
        """This annotator's label count and how many pairs are still open to them."""
        done = self._read("SELECT COUNT(*) FROM labels WHERE annotator = ?", (annotator,))[0][0]
        open_ = self._read(
            "SELECT COUNT(*) FROM pairs p WHERE p.id NOT IN (SELECT pair_id FROM labels WHERE annotator = ?) "
            "AND (SELECT COUNT(*) FROM labels l WHERE l.pair_id = p.id AND l.choice != 'skip') < ?",
            (annotator, self.k))[0][0]
        return {"labelled": done, "remaining": open_}

    def labels(self) -> list[dict]:
        """Every label with its pair's text, for export and agreement."""
        rows = self._read("SELECT l.pair_id, l.annotator, l.choice, l.left, l.reason, p.prompt, p.response_a, "
                          "p.response_b FROM labels l JOIN pairs p ON p.id = l.pair_id ORDER BY p.seq, l.created")
        keys = ("pair_id", "annotator", "choice", "left", "reason", "prompt", "response_a", "response_b")
        return [dict(zip(keys, r)) for r in rows]

    def close(self) -> None:
        self.db.close()
